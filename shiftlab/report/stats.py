"""The off-policy gap: eval reward differences between cells at matched KL, step and oracle budget.

Each comparison is a linear contrast of cell means, Σ_c w_c · mean_c, estimated over seeds (one value per
run). The 2x2 design splits the total gap (online − offline) into an on-policy-sampling part
(oaif − offline), a reference-refresh part (trdpo − offline) and their interaction
(online − oaif − trdpo + offline); the three add up to the total.

Matching on KL(π_θ‖π_sft): each run's evals are sorted by KL (equal KLs averaged) and its reward is linearly
interpolated (np.interp) onto a common grid spanning the KL range every compared run covers. KL need not
grow with the step: the evals are treated as points of the run's reward-vs-KL frontier, and the range is the
overlap [max of the runs' smallest KL, min of their largest KL]. The headline value is at the top of that
overlap, the largest KL every run reached. Matching on step or oracle_calls takes each run's last eval at or
before the last point all compared runs reached.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from shiftlab.cell import MAIN_CELLS  # the 2x2 cells; named in shiftlab/cell.py only

REWARD = "eval/reward"
KL_SFT = "eval/kl_sft"
MATCH_AXES = (KL_SFT, "step", "oracle_calls")


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


def interpolate_on_kl(evals: pd.DataFrame, grid: np.ndarray, metric: str = REWARD,
                      kl: str = KL_SFT) -> pd.DataFrame:
    """Each run's `metric` interpolated onto `grid` of KL values (NaN outside the run's KL range)."""
    out = []
    for (run, cell), ev in _usable(evals, [kl, metric]).groupby(["run", "cell"], sort=False):
        pts = ev.groupby(kl)[metric].mean().sort_index()
        y = np.interp(grid, pts.index.to_numpy(float), pts.to_numpy(float), left=np.nan, right=np.nan)
        out.append(pd.DataFrame({"run": run, "cell": cell, "kl": grid, "value": y}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["run", "cell", "kl", "value"])


def kl_overlap(evals: pd.DataFrame, cells: list[str], kl: str = KL_SFT) -> tuple[float, float] | str:
    """(lo, hi) of the KL range every run of `cells` covers, or the reason there is none."""
    ev = _usable(evals[evals["cell"].isin(cells)], [kl, REWARD])
    if ev.empty:
        return f"no run of {', '.join(cells)} has both {kl} and {REWARD}"
    span = ev.groupby("run")[kl].agg(["min", "max"])
    lo, hi = float(span["min"].max()), float(span["max"].min())
    if not hi > lo:
        return f"the {kl} ranges of the runs do not overlap (largest start {lo:.3g}, smallest end {hi:.3g})"
    return lo, hi


def kl_limiting_run(evals: pd.DataFrame, cells: list[str], kl: str = KL_SFT) -> str:
    """The run whose largest KL is the smallest: it sets the top of the common KL range."""
    ev = _usable(evals[evals["cell"].isin(cells)], [kl, REWARD])
    return "" if ev.empty else str(ev.groupby("run")[kl].max().idxmin())


def match_values(evals: pd.DataFrame, cells: list[str], axis: str) -> tuple[pd.Series, float] | str:
    """Per-run eval reward at the matched point of `axis`, and that point; or the reason it is unavailable."""
    if axis not in evals.columns or REWARD not in evals.columns:
        return f"{axis if axis not in evals.columns else REWARD} is not logged"
    ev = _usable(evals[evals["cell"].isin(cells)], [axis, REWARD])
    if axis == KL_SFT:
        overlap = kl_overlap(ev, cells)
        if isinstance(overlap, str):
            return overlap
        at = overlap[1]
        table = interpolate_on_kl(ev, np.array([at]))
        return table.set_index("run")["value"], at
    if ev.empty:
        return f"no run has both {axis} and {REWARD}"
    ends, starts = ev.groupby("run")[axis].max(), ev.groupby("run")[axis].min()
    at = float(ends.min())
    late = starts[starts > at]
    if len(late):
        return (f"no common {axis} range: run {ends.idxmin()} ends at {at:g}, before {len(late)} run(s) start "
                f"(e.g. {late.index[0]} at {late.iloc[0]:g})")
    ev = ev[ev[axis] <= at].sort_values([axis, "step"], kind="stable")
    values = ev.groupby("run", sort=False)[REWARD].last()
    return values, at


def compute_contrast(samples: dict[str, np.ndarray], weights: dict[str, float], n_boot: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Estimate Σ w_c·mean_c with a percentile bootstrap CI (each cell's seeds resampled independently),
    a Welch t-test of the contrast (Welch–Satterthwaite df) and, for two cells, an exact/Monte-Carlo
    permutation test. Arrays are one value per run."""
    cells = list(weights)
    xs = [np.asarray(samples[c], dtype=float) for c in cells]
    w = np.array([weights[c] for c in cells])
    out = {"estimate": float(sum(wi * x.mean() for wi, x in zip(w, xs))), "ci_low": np.nan,
           "ci_high": np.nan, "welch_low": np.nan, "welch_high": np.nan, "p_welch": np.nan, "p_perm": np.nan}
    if min(len(x) for x in xs) < 2:
        return out  # one seed in some cell: no spread to resample

    def statistic(*data, axis=-1):
        return sum(wi * d.mean(axis=axis) for wi, d in zip(w, data))

    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = stats.bootstrap(xs, statistic, n_resamples=n_boot, method="percentile", vectorized=True,
                               axis=-1, rng=rng)
        out["ci_low"], out["ci_high"] = map(float, boot.confidence_interval)
        if len(xs) == 2:
            perm = stats.permutation_test(xs, statistic, permutation_type="independent", vectorized=True,
                                          n_resamples=n_boot, axis=-1, rng=rng)
            out["p_perm"] = float(perm.pvalue)
    out.update(_welch_contrast(xs, w))
    return out


def _welch_contrast(xs: list[np.ndarray], w: np.ndarray) -> dict[str, float]:
    parts = np.array([wi**2 * x.var(ddof=1) / len(x) for wi, x in zip(w, xs)])
    var = parts.sum()
    if not var > 0:
        return {}
    df = var**2 / sum(p**2 / (len(x) - 1) for p, x in zip(parts, xs))
    est, se = sum(wi * x.mean() for wi, x in zip(w, xs)), math.sqrt(var)
    half = stats.t.ppf(0.975, df) * se
    return {"p_welch": float(2 * stats.t.sf(abs(est) / se, df)), "welch_low": est - half, "welch_high": est + half}


def compute_gap_table(evals: pd.DataFrame, cells: list[str], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (matched axis, contrast): estimate, 95% CI, p-values, seeds per cell, or why not available.

    The four 2x2 contrasts are matched on the runs of all 2x2 cells present, so that they add up; the rl row
    is matched on the rl and offline runs alone."""
    rows, cache = [], {}
    main = [c for c in MAIN_CELLS if c in cells]
    for axis in MATCH_AXES:
        for con in CONTRASTS:
            if con.key == "rl" and "rl" not in cells:
                continue
            row = {"axis": axis, "contrast": con.key, "comparison": con.label, "formula": con.formula,
                   "at": np.nan, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "welch_low": np.nan,
                   "welch_high": np.nan, "p_welch": np.nan,
                   "p_perm": np.nan, "seeds": "", "note": ""}
            missing = [c for c in con.weights if c not in cells]
            if missing:
                rows.append(row | {"note": f"not available: no {', '.join(missing)} runs"})
                continue
            group = ("rl", "offline") if con.key == "rl" else tuple(main)
            if (axis, group) not in cache:
                cache[axis, group] = match_values(evals, list(group), axis)
            matched = cache[axis, group]
            if isinstance(matched, str):
                rows.append(row | {"note": f"not available: {matched}"})
                continue
            values, at = matched
            cell_of = evals.drop_duplicates("run").set_index("run")["cell"]
            samples = {c: values[cell_of.reindex(values.index) == c].to_numpy() for c in con.weights}
            row["seeds"] = ", ".join(f"{c} {len(samples[c])}" for c in con.weights)
            row["at"] = at
            if any(len(s) == 0 for s in samples.values()):
                rows.append(row | {"note": "not available: a cell has no run with a value at this point"})
                continue
            row.update(compute_contrast(samples, con.weights, n_boot=n_boot, seed=seed))
            if min(len(s) for s in samples.values()) < 2:
                row["note"] = "one seed in a cell: no interval or test"
            rows.append(row)
    return pd.DataFrame(rows)


def compute_gap_curve(evals: pd.DataFrame, cells: list[str], n_grid: int = 20, n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """The total/sampling/refresh contrasts at every point of the common KL grid, with pointwise 95% CIs."""
    main = [c for c in MAIN_CELLS if c in cells]
    overlap = kl_overlap(evals, main) if len(main) >= 2 else "fewer than two cells"
    if isinstance(overlap, str):
        return pd.DataFrame(columns=["contrast", "kl", "estimate", "ci_low", "ci_high"])
    grid = np.linspace(*overlap, n_grid)
    curves = interpolate_on_kl(evals[evals["cell"].isin(main)], grid)
    out = []
    for con in CONTRASTS[:3]:
        if any(c not in main for c in con.weights):
            continue
        xs = [curves[curves["cell"] == c].pivot(index="run", columns="kl", values="value").to_numpy()
              for c in con.weights]
        weights = np.array(list(con.weights.values()))

        def statistic(*data, axis=0, weights=weights):
            return sum(w * d.mean(axis=axis) for w, d in zip(weights, data))

        est = statistic(*xs)
        low = high = np.full_like(est, np.nan)
        if min(len(x) for x in xs) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                boot = stats.bootstrap(xs, statistic, n_resamples=n_boot, method="percentile", vectorized=True,
                                       axis=0, rng=np.random.default_rng(seed))
            low, high = boot.confidence_interval
        out.append(pd.DataFrame({"contrast": f"{con.label} ({con.formula})", "kl": grid, "estimate": est,
                                 "ci_low": low, "ci_high": high}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["contrast", "kl", "estimate", "ci_low", "ci_high"])


def min_permutation_p(n1: int, n2: int) -> float:
    """Smallest two-sided p-value an exact permutation test of two samples of these sizes can give."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def _usable(evals: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    if any(c not in evals.columns for c in cols):
        return evals.iloc[0:0]
    return evals.dropna(subset=cols)
