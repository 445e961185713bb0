"""Entry points of `scripts/report.py` and `scripts/plot.py`: parse, build, print where it went.

Input problems (missing directory, no run log, incompatible runs, unknown option) are printed as one
line and give exit status 2, without a traceback.
"""

from __future__ import annotations

import sys

from shiftlab.report.load import ReportError
from shiftlab.report.options import PlotConfig, ReportConfig, parse_args

USAGE_REPORT = ("usage: python scripts/report.py <run or sweep dirs ...> [name=NAME] [out=reports] [kl_grid=20] "
                "[n_boot=2000] [allow_mixed=false] [smooth=10] [seed=0]")
USAGE_PLOT = "usage: python scripts/plot.py <run or sweep dirs ...> [name=NAME] [out=reports] [allow_mixed=false]"


def main_report(argv: list[str]) -> int:
    try:
        paths, cfg = parse_args(argv, ReportConfig)
        if not paths:
            raise ReportError("no run directories given\n" + USAGE_REPORT)
        # seaborn and friends are imported only once the arguments parse
        from shiftlab.report.build import build_report

        html_path, md_path = build_report(paths, cfg)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {html_path}\nwrote {md_path}")
    return 0


def main_plot(argv: list[str]) -> int:
    try:
        paths, cfg = parse_args(argv, PlotConfig)
        if not paths:
            raise ReportError("no run directories given\n" + USAGE_PLOT)
        from shiftlab.report.build import build_kl_plot

        png = build_kl_plot(paths, cfg)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {png} (and .svg)")
    return 0
