"""Off-policyness as a dial: the on-policy cell at several sampling intervals (`source.sample_every`), each level
against the offline cell at matched KL, and the trend across levels.

A study is a staleness study when the runs of one on-policy cell (oaif, online) differ in `source.sample_every`
(conf/experiment/staleness.yaml). Its runs are then split into levels, one per (cell, sample_every), named
"online every 25" and so on; each level is a cell of its own for every figure and table, and a (level, seed) is the
unit, as a (cell, seed) is everywhere else (report/frontier.py).

Rows (the gap table's columns, so gap.csv and the display tables are shared with report/stats.py):
- per level, `kl_sft_mean`: the level's frontier minus the reference cell's, averaged over the KL range every seed
  of every level and of the reference covers (one range, so the levels are comparable); `kl_sft`: the same on the
  fixed KL grid inside that range (pointwise, unadjusted).
- `trend`, `kl_sft_mean`: the least-squares slope of the levels' mean gaps against x = log2(sample_every), i.e. how
  the reward at matched KL changes per doubling of the sampling interval. A slope is a linear contrast of the level
  means, Σ_i w_i · mean_i with w_i = (x_i − x̄) / Σ_j (x_j − x̄)², so its Welch interval is the one the coverage
  tests check (report/gap.py), with levels as the cells. The reference cell drops out of a slope.
The family Holm adjusts is every `kl_sft_mean` row (the levels' gaps and the trend).

The state shift against staleness: each run's mean eval/state_kl over its evaluations after step 0 (KL of the
policy's states from those of the behaviour policy μ that sampled the pairs it trains on; the evaluation falls at
a different point of a round in different levels, so a run's mean over the whole run is what is compared), a t
interval per level over seeds, and its slope per doubling like the reward's.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from shiftlab.report import gap as G
from shiftlab.report.frontier import REWARD, build_units, common_range, mean_over_range, read_curves, t_band
from shiftlab.report.load import Study
from shiftlab.report.stats import KL_GRID, Contrast, adjust_family, base_row

KEY = "source.sample_every"
ON_POLICY_CELLS = ("oaif", "online")
REFERENCE = "offline"
STATE = "eval/state_kl"
TREND = "trend"


@dataclasses.dataclass(frozen=True)
class Level:
    name: str  # the level's cell label in the split study, e.g. "online every 25"
    cell: str  # the cell its runs recorded
    every: int  # source.sample_every


def find_levels(study: Study) -> list[Level]:
    """The staleness levels of a study, freshest first: one per (on-policy cell, sample_every) when some on-policy
    cell was run at two or more values of source.sample_every; [] otherwise (an ordinary study)."""
    pairs = {}
    for run, cell in zip(study.runs["run"], study.runs["cell"]):
        every = study.configs.get(run, {}).get(KEY)
        if cell in ON_POLICY_CELLS and every is not None:
            pairs.setdefault(cell, set()).add(int(every))
    if not any(len(v) > 1 for v in pairs.values()):
        return []
    return [Level(f"{cell} every {e}", cell, e) for cell in ON_POLICY_CELLS for e in sorted(pairs.get(cell, ()))]


def split_levels(study: Study, levels: list[Level]) -> Study:
    """The study with each on-policy run's cell replaced by its level's name, in every frame."""
    by_key = {(lv.cell, lv.every): lv.name for lv in levels}
    label = {}
    for run, cell in zip(study.runs["run"], study.runs["cell"]):
        every = study.configs.get(run, {}).get(KEY)
        if (cell, None if every is None else int(every)) in by_key:
            label[run] = by_key[(cell, int(every))]

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty or "run" not in frame.columns:
            return frame
        return frame.assign(cell=frame["run"].map(label).fillna(frame["cell"]))

    frames = {f.name: relabel(getattr(study, f.name)) for f in dataclasses.fields(study)
              if isinstance(getattr(study, f.name), pd.DataFrame)}
    return dataclasses.replace(study, **frames)


def trend_weights(every: list[int]) -> np.ndarray:
    """(L,) weights w_i = (x_i − x̄) / Σ (x_j − x̄)², x = log2(every): Σ w_i · y_i is the least-squares slope of y
    on x, a linear contrast of the level means."""
    x = np.log2(np.asarray(every, float))
    d = x - x.mean()
    return d / np.sum(d**2)


def shared_span(units, names: list[str]) -> tuple[float, float] | str:
    """The KL range every seed of the named levels and of the reference cell covers: the one range the gaps, the
    trend and the level means are all read over. A reason string where there is none."""
    return common_range(units, [*names, REFERENCE]) if names else "no level"


def compute_staleness_table(evals: pd.DataFrame, levels: list[Level], metric: str = REWARD,
                            higher_is_better: bool = True) -> pd.DataFrame:
    """The gap table of a staleness study (module docstring): per level its gap to the reference cell on the
    shared KL range and grid, and the trend across levels; Holm-adjusted over the mean rows. Empty without the
    reference cell or with fewer than two levels."""
    ev = evals.assign(**{REWARD: evals[metric]}) if metric != REWARD else evals
    units = build_units(ev)
    present = [lv for lv in levels if units.of([lv.name]).any()]
    if len(present) < 2 or not units.of([REFERENCE]).any():
        return pd.DataFrame()
    names = [lv.name for lv in present]
    span = shared_span(units, names)
    rows = []
    if isinstance(span, str):
        for lv in present:
            rows.append(base_row(_level_contrast(lv)) | {"axis": "kl_sft_mean", "note": f"not available: {span}"})
        return pd.DataFrame(rows)
    lo, hi = span
    grid = np.array([k for k in KL_GRID if lo <= k <= hi])
    ref = units.of([REFERENCE])
    ref_mean = mean_over_range(units.kl[ref], units.value[ref], lo, hi)
    means = {}
    for lv in present:
        con = _level_contrast(lv)
        mask = units.of([lv.name])
        seeds = {"seeds": int(min(mask.sum(), ref.sum())), "seeds_by_cell": f"{lv.name} {int(mask.sum())}, "
                 f"{REFERENCE} {int(ref.sum())}", "kl_low": lo, "kl_high": hi}
        if len(grid):
            res = G.welch_contrast([read_curves(units.kl[g], units.value[g], grid) for g in (mask, ref)], [1, -1])
            rows += [base_row(con) | seeds | {"axis": "kl_sft", "at": k}
                     | {key: float(np.asarray(v)[i]) for key, v in res.items()} for i, k in enumerate(grid)]
        means[lv.name] = mean_over_range(units.kl[mask], units.value[mask], lo, hi)
        sd = G.pooled_sd([means[lv.name], ref_mean])
        row = base_row(con) | seeds | {"axis": "kl_sft_mean", "sd": sd}
        row |= {key: float(v) for key, v in G.welch_contrast([means[lv.name], ref_mean], [1, -1]).items()}
        row["seeds_needed"] = G.seeds_needed(row["estimate"], sd, [1, -1])
        rows.append(row)
    w = trend_weights([lv.every for lv in present])
    values = [means[n] for n in names]
    con = Contrast(TREND, "trend per doubling of the sampling interval", dict(zip(names, w)))
    sd = G.pooled_sd(values)
    row = base_row(con) | {"axis": "kl_sft_mean", "kl_low": lo, "kl_high": hi, "sd": sd, "formula": _trend_formula(present),
                           "seeds": min(len(v) for v in values),
                           "seeds_by_cell": ", ".join(f"{n} {len(v)}" for n, v in zip(names, values))}
    row |= {key: float(v) for key, v in G.welch_contrast(values, w).items()}
    row["seeds_needed"] = G.seeds_needed(row["estimate"], sd, w)
    rows.append(row)
    table = adjust_family(pd.DataFrame(rows), higher_is_better)
    trend = table.index[table["contrast"] == TREND]
    resolved = table.loc[trend, "verdict"].isin(["better", "worse"])
    # a slope has no "better": it rises or falls with staleness
    table.loc[trend[resolved], "verdict"] = np.where(table.loc[trend[resolved], "estimate"] > 0, "rises", "falls")
    return table


def run_state_shift(evals: pd.DataFrame, metric: str = STATE) -> pd.DataFrame:
    """One row per run: cell, seed and the run's mean `metric` over its evaluations after step 0 (NaN if none)."""
    if metric not in evals.columns:
        return pd.DataFrame(columns=["run", "cell", "seed", metric])
    ev = evals[evals["step"] > 0]
    return ev.groupby("run", sort=False).agg(cell=("cell", "first"), seed=("seed", "first"),
                                             value=(metric, "mean")).reset_index().rename(columns={"value": metric})


def state_shift_table(evals: pd.DataFrame, levels: list[Level], metric: str = STATE) -> pd.DataFrame:
    """Per level and for the reference cell: the run-mean `metric` over seeds with a 95% t interval; and its trend
    per doubling of sample_every with a Welch interval. Columns: cell, every, estimate, ci_low, ci_high, p, seeds."""
    per_run = run_state_shift(evals, metric)
    rows, values = [], []
    for lv in levels:
        v = per_run.loc[per_run["cell"] == lv.name, metric].dropna().to_numpy(float)
        if len(v):
            rows.append(_mean_row(lv.name, lv.every, v))
            values.append((lv, v))
    ref = per_run.loc[per_run["cell"] == REFERENCE, metric].dropna().to_numpy(float)
    if len(ref):
        rows.append(_mean_row(REFERENCE, math.nan, ref))
    if len(values) >= 2:
        res = G.welch_contrast([v for _, v in values], trend_weights([lv.every for lv, _ in values]))
        rows.append({"cell": TREND, "every": math.nan, "estimate": float(res["estimate"]),
                     "ci_low": float(res["ci_low"]), "ci_high": float(res["ci_high"]), "p": float(res["p"]),
                     "seeds": min(len(v) for _, v in values)})
    return pd.DataFrame(rows, columns=["cell", "every", "estimate", "ci_low", "ci_high", "p", "seeds"])


def level_frontier_means(evals: pd.DataFrame, levels: list[Level], metric: str = REWARD) -> pd.DataFrame:
    """Each level's and the reference's frontier averaged over the shared KL range (the numbers the gaps are
    differences of), with a t interval over seeds. Columns: cell, every, estimate, ci_low, ci_high, seeds."""
    ev = evals.assign(**{REWARD: evals[metric]}) if metric != REWARD else evals
    units = build_units(ev)
    names = [lv.name for lv in levels if units.of([lv.name]).any()]
    span = shared_span(units, names)
    if isinstance(span, str):
        return pd.DataFrame(columns=["cell", "every", "estimate", "ci_low", "ci_high", "seeds"])
    rows = []
    for name, every in [(lv.name, lv.every) for lv in levels if lv.name in names] + [(REFERENCE, math.nan)]:
        mask = units.of([name])
        v = mean_over_range(units.kl[mask], units.value[mask], *span)
        mean, low, high = t_band(v[:, None])
        rows.append({"cell": name, "every": every, "estimate": float(mean[0]), "ci_low": float(low[0]),
                     "ci_high": float(high[0]), "seeds": len(v)})
    return pd.DataFrame(rows)


def _mean_row(cell: str, every: float, v: np.ndarray) -> dict:
    mean, low, high = t_band(v[:, None])
    return {"cell": cell, "every": every, "estimate": float(mean[0]), "ci_low": float(low[0]),
            "ci_high": float(high[0]), "p": math.nan, "seeds": len(v)}


def _level_contrast(lv: Level) -> Contrast:
    return Contrast(f"every{lv.every}", f"{lv.name} vs {REFERENCE}", {lv.name: 1.0, REFERENCE: -1.0})


def _trend_formula(levels: list[Level]) -> str:
    every = ", ".join(str(lv.every) for lv in levels)
    return f"least-squares slope of the levels' frontier means on log2(sample_every), sample_every ∈ {{{every}}}"
