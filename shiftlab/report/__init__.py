"""The report stage: read run directories (never training code) and write the study's report.

load.py    run directories → Study (tidy DataFrames)     frontier.py  per-seed reward-vs-KL frontiers over β
gap.py     Welch intervals, Holm, verdicts, power        stats.py     the gap table (curve, mean gap, step)
plots.py   DataFrame → Figure (no I/O)                   tables.py    display tables
summary.py sentences derived from the gap table          render.py    HTML / Markdown writer
build.py   load → stats → figures → sections, CSVs       cli.py       script entry points
optimum.py the optimum frontier (optimum.jsonl), each cell's shortfall from it, the over-optimisation law
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
