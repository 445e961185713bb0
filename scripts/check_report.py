"""Check a report in headless Chromium: python scripts/check_report.py reports/<name>/report.html [--out DIR]

Exit status 0: no problem; 1: the page has problems (listed); 2: the check could not run (no such file, no
Chromium, Chromium failed).
"""

import sys

from shiftlab.report.browser import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
