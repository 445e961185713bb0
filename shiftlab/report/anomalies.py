"""Data notes a reader should see before trusting a figure: runs far slower than their cell's others (a loaded
machine, a swap storm: their timings mean little), and evaluation values that are undefined where a figure breaks."""

from __future__ import annotations

import pandas as pd

from shiftlab.report.load import Study

SLOW_FACTOR = 3.0  # a run this many times its cell's median wall time is named
# ratios that are 0/0 by construction at some evaluations, and why (a figure shows a gap there)
UNDEFINED_WHY = {
    "eval/kl_shift_ratio": "KL(π_θ‖π_ref) on data and on policy states are both 0 right after a hard refresh of π_ref "
                           "(and at step 0), so their ratio is 0/0",
}


def find_anomalies(study: Study) -> list[str]:
    return slow_runs(study.runs) + undefined_values(study.evals)


def slow_runs(runs: pd.DataFrame, factor: float = SLOW_FACTOR) -> list[str]:
    """Sentences naming each finished run whose wall time is ≥ `factor` × the median of its cell's runs."""
    if runs.empty or "wall_time_s" not in runs:
        return []
    notes = []
    done = runs[(runs["status"] == "finished") & runs["wall_time_s"].notna()]
    for cell, d in done.groupby("cell"):
        if len(d) < 3:  # a median of two says nothing about which is odd
            continue
        median = float(d["wall_time_s"].median())
        for r in d[d["wall_time_s"] >= factor * median].itertuples():
            notes.append(f"run {r.run} took {r.wall_time_s / 60:.1f} min, {r.wall_time_s / median:.1f}× the median "
                         f"of the {len(d)} {cell} runs ({median / 60:.1f} min): its time columns (time/…) reflect "
                         "the machine, not the method")
    return notes


def undefined_values(evals: pd.DataFrame) -> list[str]:
    """Sentences counting evaluations where a metric is undefined (NaN in the run log) and saying why."""
    notes = []
    for name, why in UNDEFINED_WHY.items():
        if name not in evals.columns:
            continue
        values = pd.to_numeric(evals[name], errors="coerce")
        missing = int(values.isna().sum())
        if missing and not values.isna().all():
            notes.append(f"{name} is undefined at {missing} of {len(values)} evaluations: {why}; its figure "
                         "leaves a gap there rather than draw a value")
    return notes
