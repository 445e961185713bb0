"""Plot the KL curves of runs alone: python scripts/plot.py <run or sweep dirs> [out=reports] [name=NAME]"""

import sys

from shiftlab.report.cli import main_plot

if __name__ == "__main__":
    sys.exit(main_plot(sys.argv[1:]))
