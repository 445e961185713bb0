"""The report stage: read run directories (never training code) and write the study's report.

load.py    run directories → Study (tidy DataFrames)     frontier.py  per-seed reward-vs-KL frontiers over β
gap.py     Welch intervals, Holm, verdicts, power        stats.py     the gap table (curve, mean gap, step)
plots.py   curves over training (DataFrame → Figure)     tables.py    display tables
frontier_plots.py the frontier beside the optimum, the gap curve   drawing.py   shared figure pieces (units, symlog, bands)
summary.py sentences derived from the gap table          render.py    HTML / Markdown writer
build.py   load → stats → figures → sections, CSVs       cli.py       script entry points
optimum.py the optimum frontier (optimum.jsonl), each cell's shortfall from it, the over-optimisation law
browser.py the written report in headless Chromium: errors, images, overflow, screenshots
methods.py how each number is estimated; the study's configuration table
anomalies.py data notes: runs far slower than their cell's, undefined values and why
colours.py cell colours, markers and line styles, checked under colour-blind simulation
staleness.py a staleness study: levels of source.sample_every, each against offline DPO, the trend across them
"""

from shiftlab.report.load import ReportError, Study, load_study
from shiftlab.report.options import PlotConfig, ReportConfig, parse_args
from shiftlab.report.stats import compute_gap_curve, compute_gap_table

__all__ = [
    "PlotConfig",
    "ReportConfig",
    "ReportError",
    "Study",
    "compute_gap_curve",
    "compute_gap_table",
    "load_study",
    "parse_args",
]
