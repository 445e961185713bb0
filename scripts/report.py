"""Write the HTML and Markdown report of a study: python scripts/report.py <run or sweep dirs> [key=value ...]"""

import sys

from shiftlab.report.cli import main_report

if __name__ == "__main__":
    sys.exit(main_report(sys.argv[1:]))
