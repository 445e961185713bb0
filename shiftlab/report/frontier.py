"""A cell's reward-vs-KL(π_θ‖π_sft) frontier from all its runs and checkpoints, one curve per seed.

The resampling unit is a (cell, seed): the runs of one seed over the β grid (`loss.beta`) are pooled into one
unit, since they share the seed's randomness (data order, eval samples), and units of different seeds are
independent. A run that recorded no seed is a unit of its own.

Estimator, fixed before seeing any study:
1. Per unit, pool the evaluations of all its runs (every β, every checkpoint), average evaluations at equal KL and
   sort by KL. The unit's curve is the piecewise-linear interpolant of reward against √KL through these points,
   defined on [its smallest, its largest KL] only — never extrapolated.
2. A cell's frontier is the mean of its units' curves, at KLs every unit of the cell covers; its band is the 95%
   Student-t interval over units.

Why an interpolant and not the running maximum (upper envelope): the envelope of noisy evaluations is a maximum
of noise, biased upwards by an amount that grows with the number of checkpoints and β values near a KL. That
number differs between cells (a cell that moves fast has few evaluations at low KL), so the bias would not cancel
in a contrast. An interpolant's noise averages out; its mean over a KL range weights the β runs by their
evaluation density there.
Why √KL: training moves KL roughly geometrically, so neighbouring evaluations can be far apart in KL where the
frontier bends most; reward is close to linear in d = √KL at small d (Gao et al. 2023's R(d) = d(α − b·log d)),
so chords in d bend with the curve instead of cutting under it. KL is still the axis everything is read on.

Arrays: U units, P evaluations per unit (NaN-padded on the right), G points read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

REWARD = "eval/reward"
GOLD_REWARD = "eval/gold_reward"
KL_SFT = "eval/kl_sft"
MEAN_POINTS = 401  # KLs at which a unit's curve is averaged over a range (error ≪ the seed spread)


@dataclass(frozen=True)
class Units:
    """Every (cell, seed) unit's pooled evaluations, ready to be read at any KL."""

    cell: np.ndarray  # (U,) cell name
    seed: np.ndarray  # (U,) seed, or the run name for a run that recorded none
    runs: tuple[tuple[str, ...], ...]  # (U,) the runs pooled in each unit (one per β value)
    kl: np.ndarray  # (U, P) KL(π_θ‖π_sft) of the unit's evaluations: sorted, unique, NaN-padded
    value: np.ndarray  # (U, P) the metric at those KLs (averaged where KLs were equal)

    def of(self, cells: list[str] | tuple[str, ...]) -> np.ndarray:
        """(U,) mask of the units of `cells`."""
        return np.isin(self.cell, list(cells))

    def label(self, u: int) -> str:
        return f"{self.cell[u]} seed {self.seed[u]}"


def pack_units(unit: np.ndarray, kl: np.ndarray, value: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, P) KL and value arrays: unit u's points sorted by KL, equal KLs averaged, NaN-padded on the right.

    unit (M,) ints in [0, n_units); kl, value (M,); points with a non-finite kl or value are dropped."""
    keep = np.isfinite(kl) & np.isfinite(value)
    unit, kl, value = np.asarray(unit)[keep], np.asarray(kl, float)[keep], np.asarray(value, float)[keep]
    order = np.lexsort((kl, unit))
    unit, kl, value = unit[order], kl[order], value[order]
    new = np.r_[True, (unit[1:] != unit[:-1]) | (kl[1:] != kl[:-1])]
    group = np.cumsum(new) - 1  # one group per (unit, distinct KL)
    mean = np.bincount(group, value) / np.bincount(group)
    g_unit, g_kl = unit[new], kl[new]
    first = np.r_[True, g_unit[1:] != g_unit[:-1]]
    pos = np.arange(len(g_unit)) - np.maximum.accumulate(np.where(first, np.arange(len(g_unit)), 0))
    width = int(pos.max()) + 1 if len(pos) else 1
    out_kl, out_value = np.full((n_units, width), np.nan), np.full((n_units, width), np.nan)
    out_kl[g_unit, pos], out_value[g_unit, pos] = g_kl, mean
    return out_kl, out_value


def read_curves(kl: np.ndarray, value: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(U, G): each unit's curve (step 1 of the estimator) at `at` ((G,) or (U, G)); NaN outside its KL range."""
    at = np.broadcast_to(np.asarray(at, float), (kl.shape[0], np.shape(at)[-1]))
    out = np.full(at.shape, np.nan)
    for u in range(kl.shape[0]):
        ok = np.isfinite(kl[u])
        if ok.any():
            out[u] = np.interp(np.sqrt(np.maximum(at[u], 0.0)), np.sqrt(np.maximum(kl[u, ok], 0.0)), value[u, ok],
                               left=np.nan, right=np.nan)
            out[u, at[u] < kl[u, ok][0]] = np.nan  # √ clamps negative KLs (estimator noise) to 0: keep them outside
    return out


def mean_over_range(kl: np.ndarray, value: np.ndarray, lo, hi) -> np.ndarray:
    """(U,): each unit's curve averaged over [lo, hi] in KL (area ÷ range; lo, hi scalars or (U,)); NaN where
    the unit does not cover the range."""
    lo, hi = np.broadcast_to(lo, kl.shape[:1]), np.broadcast_to(hi, kl.shape[:1])
    at = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, MEAN_POINTS)[None, :]
    return np.trapezoid(read_curves(kl, value, at), dx=1.0 / (MEAN_POINTS - 1), axis=1)


def spans(kl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U,), (U,): each unit's smallest and largest KL."""
    with np.errstate(all="ignore"):
        return np.nanmin(kl, axis=1, initial=np.inf), np.nanmax(kl, axis=1, initial=-np.inf)


def build_units(evals: pd.DataFrame, metric: str = REWARD) -> Units:
    """The units of a study's evaluation rows (columns run, cell, seed, eval/kl_sft and `metric`)."""
    cols = ["run", "cell", "seed", KL_SFT, metric]
    if any(c not in evals.columns for c in cols):
        return Units(np.array([], object), np.array([], object), (), np.empty((0, 1)), np.empty((0, 1)))
    ev = evals[cols].dropna(subset=[KL_SFT, metric])
    seed = ev["seed"].where(ev["seed"].notna(), ev["run"]).astype(str)
    key = ev["cell"].astype(str) + "\x00" + seed
    codes, names = pd.factorize(key)
    cell_seed = [n.split("\x00") for n in names]
    runs = ev.groupby(codes)["run"].unique()
    kl, value = pack_units(codes, ev[KL_SFT].to_numpy(float), ev[metric].to_numpy(float), len(names))
    return Units(np.array([c for c, _ in cell_seed], object), np.array([s for _, s in cell_seed], object),
                 tuple(tuple(sorted(map(str, runs[i]))) for i in range(len(names))), kl, value)


def common_range(units: Units, cells: list[str] | tuple[str, ...]) -> tuple[float, float] | str:
    """(lo, hi) of the KL range every unit of `cells` covers, or the reason there is none."""
    mask = units.of(cells)
    if not mask.any():
        return f"no run of {', '.join(cells)} has both {KL_SFT} and {REWARD}"
    lo, hi = spans(units.kl[mask])
    if not hi.min() > lo.max():
        return (f"the {KL_SFT} ranges of the seeds do not overlap (largest start {lo.max():.3g}, smallest end "
                f"{hi.min():.3g})")
    return float(lo.max()), float(hi.min())


def limiting_unit(units: Units, cells: list[str] | tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The unit whose largest KL is the smallest (it sets the top of the common range) and its runs."""
    idx = np.flatnonzero(units.of(cells))
    if not len(idx):
        return "", ()
    u = idx[np.argmin(spans(units.kl[idx])[1])]
    return units.label(u), units.runs[u]


def frontier_points(lo: float, hi: float, n: int, extra=()) -> np.ndarray:
    """`n` KLs evenly spaced in log(1 + KL) over [lo, hi], plus the `extra` KLs inside it."""
    grid = np.expm1(np.linspace(np.log1p(max(lo, 0.0)), np.log1p(hi), n))
    grid = np.clip(grid, lo, hi)  # expm1(log1p(x)) may miss x by an ulp
    return np.unique(np.r_[grid, [k for k in extra if lo <= k <= hi]])


def compute_frontiers(units: Units, cells: list[str], n_points: int = 20, extra=(),
                      gold: Units | None = None) -> pd.DataFrame:
    """Each cell's frontier (mean over its seeds) with a 95% t band, on its own common range; the gold reward's
    frontier (same estimator, same KLs) where `gold` units are given. Columns: cell, kl, reward, gold_reward,
    band_low, band_high, seeds."""
    out = []
    for cell in cells:
        span = common_range(units, [cell])
        if isinstance(span, str):
            continue
        at = frontier_points(*span, n_points, extra)
        curves = read_curves(units.kl[units.of([cell])], units.value[units.of([cell])], at)
        mean, low, high = t_band(curves)
        g = np.full_like(at, np.nan)
        if gold is not None and gold.of([cell]).any():  # NaN wherever some seed's gold curve does not reach
            g = read_curves(gold.kl[gold.of([cell])], gold.value[gold.of([cell])], at).mean(axis=0)
        out.append(pd.DataFrame({"cell": cell, "kl": at, "reward": mean, "gold_reward": g, "band_low": low,
                                 "band_high": high, "seeds": len(curves)}))
    cols = ["cell", "kl", "reward", "gold_reward", "band_low", "band_high", "seeds"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def t_band(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over units (axis 0) and its Student-t interval; the interval is NaN with fewer than two units."""
    n = curves.shape[0]
    mean = curves.mean(axis=0)
    if n < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * curves.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half
