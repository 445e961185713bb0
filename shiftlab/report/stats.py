"""The off-policy gap: differences of cell frontiers at matched KL(π_θ‖π_sft), and rewards at a matched step.

Each comparison is a linear contrast of cell means, Σ_c w_c · mean_c, over seed-level values (report/frontier.py:
one unit per (cell, seed), pooling the seed's runs over β). The 2x2 design splits the total gap (online −
offline) into an on-policy-sampling part (oaif − offline), a reference-refresh part (trdpo − offline) and their
interaction (online − oaif − trdpo + offline); the three add up to the total.

Axes (the `axis` column, as written to gap.csv):
- `kl_sft`: the gap curve, read on KL_GRID — fixed before any study was run — at the grid points inside the
  common KL range of the contrast's own cells (every seed of every cell covers them). Pointwise intervals,
  unadjusted: descriptive.
- `kl_sft_mean`: the summary number, the mean gap over the common range (area between the frontiers ÷ range).
  The four 2x2 contrasts use the range common to all 2x2 cells present, so that they add up; rl − offline uses
  the rl and offline seeds' range. These are the family Holm adjusts (report/gap.py), and the only rows with a
  verdict and a power estimate.
- `step`: each run's last evaluation at or before the last step all compared runs reached, averaged over the
  seed's runs.
- `oracle_calls`: the same within the labelling budget all compared runs reached — included only where it
  differs from `step`; when every run is read at the same evaluation on both axes (the offline set spends its
  whole budget at step 0, so a common budget is reached only at the last step), `describe_label_budget` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shiftlab.cell import MAIN_CELLS  # the 2x2 cells; named in shiftlab/cell.py only
from shiftlab.report import gap as G
from shiftlab.report.frontier import KL_SFT, REWARD, Units, build_units, common_range, mean_over_range, read_curves

KL_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # nats; fixed before seeing the data (issue 16)
AXES = ("kl_sft", "kl_sft_mean", "step", "oracle_calls")
CSV_COLUMNS = ["contrast", "axis", "at", "estimate", "ci_low", "ci_high", "p", "p_adjusted", "seeds", "kl_low",
               "kl_high"]


@dataclass(frozen=True)
class Contrast:
    key: str
    label: str
    weights: dict[str, float]  # cell -> coefficient of its mean

    @property
    def formula(self) -> str:
        terms = [("+ " if w > 0 else "− ") + c for c, w in self.weights.items()]
        return " ".join(terms).removeprefix("+ ")


CONTRASTS = (
    Contrast("total", "off-policy gap", {"online": 1.0, "offline": -1.0}),
    Contrast("sampling", "on-policy sampling", {"oaif": 1.0, "offline": -1.0}),
    Contrast("refresh", "reference refresh", {"trdpo": 1.0, "offline": -1.0}),
    Contrast("interaction", "interaction", {"online": 1.0, "oaif": -1.0, "trdpo": -1.0, "offline": 1.0}),
    Contrast("rl", "rl vs offline", {"rl": 1.0, "offline": -1.0}),
)


def compute_gap_table(evals: pd.DataFrame, cells: list[str], higher_is_better: bool = True) -> pd.DataFrame:
    """One row per (contrast, axis, at): estimate, Welch 95% CI, p, and for the mean-gap rows the Holm-adjusted
    p, the adjusted interval, the verdict and the seeds per cell that would resolve it; or why not available."""
    units = build_units(evals)
    rows, labels_differ = [], describe_label_budget(evals, cells) == ""
    for con in CONTRASTS:
        missing = [c for c in con.weights if c not in cells]
        if con.key == "rl" and missing:
            continue
        base = base_row(con)
        if missing:
            rows += [base | {"axis": a, "note": f"not available: no {', '.join(missing)} runs"} for a in AXES[:3]]
            continue
        rows += _kl_rows(units, con, base, cells)
        rows += _budget_rows(evals, units, con, base, cells, "step")
        if labels_differ:
            rows += _budget_rows(evals, units, con, base, cells, "oracle_calls")
    table = pd.DataFrame(rows, columns=list(base_row(CONTRASTS[0])) + ["axis"]) if rows else pd.DataFrame()
    return adjust_family(table, higher_is_better) if len(table) else table


def describe_label_budget(evals: pd.DataFrame, cells: list[str]) -> str:
    """One line when matching on oracle_calls reads every run at the same evaluation as matching on step (so a
    table would repeat the step table); "" when the two differ or either is unavailable."""
    main = [c for c in MAIN_CELLS if c in cells]
    by_step, by_labels = _matched_rows(evals, main, "step"), _matched_rows(evals, main, "oracle_calls")
    if isinstance(by_step, str) or isinstance(by_labels, str):
        return ""
    if not by_step[0]["step"].equals(by_labels[0]["step"].reindex(by_step[0].index)):
        return ""
    offline = evals[evals["cell"].isin(["offline", "trdpo"])].groupby("run")["oracle_calls"].nunique()
    why = ("; by construction: the offline set is labelled once, before step 0, so the on-policy runs reach the "
           "budget every run shares only at their last step" if len(offline) and (offline == 1).all() else "")
    return (f"Matched on a labelling budget ({by_labels[1]:.0f} oracle calls), every run is read at the same "
            f"evaluation as matched on step, so that table would repeat the step table{why}.")


def compute_gap_curve(table: pd.DataFrame) -> pd.DataFrame:
    """The kl_sft rows of the gap table for plotting: contrast (label and formula), kl, estimate, ci_low, ci_high."""
    cols = ["contrast", "kl", "estimate", "ci_low", "ci_high"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    d = table[(table["axis"] == "kl_sft") & np.isfinite(table["estimate"].astype(float))]
    return pd.DataFrame({"contrast": d["comparison"] + " (" + d["formula"] + ")", "kl": d["at"],
                         "estimate": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}, columns=cols)


def write_gap_csv(table: pd.DataFrame, path) -> None:
    """gap.csv: one row per (contrast, axis, at) with an estimate (see CSV_COLUMNS and the module docstring)."""
    rows = table[np.isfinite(table["estimate"].astype(float))] if len(table) else table
    rows.reindex(columns=CSV_COLUMNS).to_csv(path, index=False)


def base_row(con: Contrast) -> dict:
    return {"contrast": con.key, "comparison": con.label, "formula": con.formula, "at": np.nan, "kl_low": np.nan,
            "kl_high": np.nan, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
            "p_adjusted": np.nan, "adj_low": np.nan, "adj_high": np.nan, "adj_level": np.nan, "se": np.nan,
            "df": np.nan, "sd": np.nan, "seeds_needed": np.nan, "seeds": 0, "seeds_by_cell": "", "verdict": "",
            "note": ""}


def _kl_rows(units: Units, con: Contrast, base: dict, cells: list[str]) -> list[dict]:
    own = common_range(units, list(con.weights))
    if isinstance(own, str):
        return [base | {"axis": a, "note": f"not available: {own}"} for a in ("kl_sft", "kl_sft_mean")]
    main = [c for c in MAIN_CELLS if c in cells]
    joint = common_range(units, main) if con.key != "rl" else own
    lo, hi = joint if not isinstance(joint, str) else own
    groups = [units.of([c]) for c in con.weights]
    seeds = {"seeds": min(int(g.sum()) for g in groups),
             "seeds_by_cell": ", ".join(f"{c} {int(g.sum())}" for c, g in zip(con.weights, groups))}
    w = list(con.weights.values())
    rows = []
    grid = np.array([k for k in KL_GRID if own[0] <= k <= own[1]])
    if len(grid):
        res = G.welch_contrast([read_curves(units.kl[g], units.value[g], grid) for g in groups], w)
        for i, k in enumerate(grid):
            rows.append(base | seeds | {"axis": "kl_sft", "at": k, "kl_low": own[0], "kl_high": own[1]}
                        | {key: float(np.asarray(v)[i]) for key, v in res.items()})
    else:
        rows.append(base | seeds | {"axis": "kl_sft", "kl_low": own[0], "kl_high": own[1],
                                    "note": f"not available: no point of the KL grid in {own[0]:.3g}–{own[1]:.3g}"})
    values = [mean_over_range(units.kl[g], units.value[g], lo, hi) for g in groups]
    sd = G.pooled_sd(values)
    rows.append(base | seeds | {"axis": "kl_sft_mean", "kl_low": lo, "kl_high": hi, "sd": sd}
                | {key: float(v) for key, v in G.welch_contrast(values, w).items()})
    rows[-1]["seeds_needed"] = G.seeds_needed(rows[-1]["estimate"], sd, w)
    return rows


def _budget_rows(evals: pd.DataFrame, units: Units, con: Contrast, base: dict, cells: list[str],
                 axis: str) -> list[dict]:
    group = list(con.weights) if con.key == "rl" else [c for c in MAIN_CELLS if c in cells]
    matched = _matched_rows(evals, group, axis)
    if isinstance(matched, str):
        return [base | {"axis": axis, "note": f"not available: {matched}"}]
    rows, at = matched
    per_unit = rows.assign(unit=rows["seed"].where(rows["seed"].notna(), rows.index.to_series()).astype(str))
    per_unit = per_unit.groupby(["cell", "unit"])[REWARD].mean()
    values = [per_unit.loc[c].to_numpy() if c in per_unit.index.get_level_values(0) else np.array([])
              for c in con.weights]
    row = base | {"axis": axis, "at": at, "seeds": min(len(v) for v in values),
                  "seeds_by_cell": ", ".join(f"{c} {len(v)}" for c, v in zip(con.weights, values))}
    if any(len(v) == 0 for v in values):
        return [row | {"note": "not available: a cell has no run with a value at this point"}]
    return [row | {k: float(v) for k, v in G.welch_contrast(values, list(con.weights.values())).items()}]


def _matched_rows(evals: pd.DataFrame, cells: list[str], axis: str) -> tuple[pd.DataFrame, float] | str:
    """Each run's last evaluation at or before the last `axis` value every run of `cells` reached (one row per
    run, indexed by run), and that value; or the reason there is none."""
    if axis not in evals.columns or REWARD not in evals.columns:
        return f"{axis if axis not in evals.columns else REWARD} is not logged"
    ev = evals[evals["cell"].isin(cells)].dropna(subset=[axis, REWARD])
    if ev.empty:
        return f"no run has both {axis} and {REWARD}"
    ends, starts = ev.groupby("run")[axis].max(), ev.groupby("run")[axis].min()
    at = float(ends.min())
    late = starts[starts > at]
    if len(late):
        return (f"no common {axis} range: run {ends.idxmin()} ends at {at:g}, before {len(late)} run(s) start "
                f"(e.g. {late.index[0]} at {late.iloc[0]:g})")
    ev = ev[ev[axis] <= at].sort_values([axis, "step"], kind="stable")
    return ev.groupby("run", sort=True)[["cell", "seed", "step", REWARD]].last(), at


def adjust_family(table: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Holm over the mean-gap rows (the family), their adjusted intervals and verdicts."""
    fam = table.index[table["axis"] == "kl_sft_mean"]
    adj, level = G.holm(table.loc[fam, "p"].to_numpy(float))
    table.loc[fam, "p_adjusted"], table.loc[fam, "adj_level"] = adj, level
    low, high = G.t_interval(table.loc[fam, "estimate"].to_numpy(float), table.loc[fam, "se"].to_numpy(float),
                             table.loc[fam, "df"].to_numpy(float), np.where(np.isfinite(level), level, np.nan))
    table.loc[fam, "adj_low"], table.loc[fam, "adj_high"] = low, high
    for i in fam:
        if np.isfinite(table.at[i, "estimate"]):
            table.at[i, "verdict"] = G.verdict(table.at[i, "estimate"], table.at[i, "p_adjusted"],
                                               higher_is_better=higher_is_better)
    return table


__all__ = ["CONTRASTS", "KL_GRID", "KL_SFT", "REWARD", "adjust_family", "base_row", "compute_gap_curve",
           "compute_gap_table", "describe_label_budget", "write_gap_csv"]
