"""Contrasts over seeds: Welch t intervals, Holm's adjustment, verdicts, and the seeds a question needs.

A contrast is Σ_c w_c · mean_c of seed-level values (one per (cell, seed) unit: a frontier read at a KL, its mean
over a KL range, or a reward at a matched step). Cells are independent samples of seeds.

Interval: the Welch t interval, est ± t_{0.975, ν} · se with se² = Σ_c w_c² s_c² / n_c and the
Welch–Satterthwaite ν = se⁴ / Σ_c (w_c² s_c² / n_c)² / (n_c − 1); p is the matching two-sided t test, so p < α
exactly when the 1 − α interval excludes 0. Why not the percentile bootstrap: it resamples the n_c values of each
cell, so its interval is the spread of an n_c-point empirical distribution — about √((n−1)/n) too narrow and with
normal instead of t tails; at 3 vs 3 seeds it covered the truth 79% of the time. Coverage of the Welch interval is
measured, not assumed: tests/report/test_coverage.py simulates studies with a known gap (heavy-tailed per-seed
offsets, noisy checkpoints, KL jitter) and requires ≥ 93% at 5 seeds per cell (3 seeds is printed). Seeds of
different cells that share randomness (the eval samples at step 0 depend on the seed) make the interval
conservative for a difference, never anti-conservative.

Multiplicity (Holm 1979): the family is the mean-gap p-values of the contrasts the report states (online −
offline, the 2×2 split — sampling, refresh, interaction — and rl − offline where present). With the m p's
sorted, p_(1) ≤ … ≤ p_(m), the adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)); a contrast is called
only when its adjusted p < α. Holm is valid under any dependence (the split is linearly dependent on the total).
The adjusted interval is the Welch interval at level 1 − α_i with α_i = α / (m − min(i, s) + 1), s the first
step Holm does not reject (the Bonferroni level of the Holm step, frozen where Holm stops): it excludes 0
exactly when the adjusted p < α. It is a display consistent with the test, not a simultaneous confidence region.

Power: the seeds per cell at which a two-sided level-α Welch test of the observed effect δ has power 1 − β, at
the observed pooled seed-level SD σ and equal seeds per cell: n = Σ w_c² · ((z_{1−α/2} + z_{1−β}) σ / δ)², then
refined with t quantiles at the pooled df k(n − 1) until stable (k cells). It takes δ at face value, so it is
optimistic when |δ| is inflated by noise, and grows without bound as δ → 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8


def welch_contrast(groups: Sequence[np.ndarray], weights: Sequence[float], level: float = 1 - ALPHA) -> dict:
    """Σ w_c·mean_c of `groups` (each (n_c, ...), seeds on axis 0) with its Welch t interval and p-value.

    Returns arrays of the trailing shape: estimate, se, df, ci_low, ci_high, p (NaN with fewer than two seeds in
    a cell or no spread at all)."""
    w = np.asarray(weights, float)
    groups = [np.asarray(g, float) for g in groups]
    est = sum(wi * g.mean(axis=0) for wi, g in zip(w, groups))
    nan = np.full_like(np.asarray(est, float), np.nan)
    out = {"estimate": est, "se": nan, "df": nan, "ci_low": nan, "ci_high": nan, "p": nan}
    if min(g.shape[0] for g in groups) < 2:
        return out
    parts = [wi**2 * g.var(axis=0, ddof=1) / g.shape[0] for wi, g in zip(w, groups)]
    var = sum(parts)
    with np.errstate(all="ignore"):
        df = var**2 / sum(p**2 / (g.shape[0] - 1) for p, g in zip(parts, groups))
        se = np.where(var > 0, np.sqrt(var), np.nan)
        df = np.where(var > 0, df, np.nan)
        half = stats.t.ppf(0.5 + level / 2, df) * se
        p = 2 * stats.t.sf(np.abs(est) / se, df)
    return out | {"se": se, "df": df, "ci_low": est - half, "ci_high": est + half, "p": p}


def t_interval(estimate, se, df, alpha) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided 1 − `alpha` t interval (alpha may be an array, one per contrast)."""
    half = stats.t.ppf(1 - np.asarray(alpha, float) / 2, df) * se
    return estimate - half, estimate + half


def holm(p: Sequence[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and each hypothesis' interval level α_i (see the module docstring); NaN p's are
    not in the family and stay NaN."""
    p = np.asarray(p, float)
    adj, level = np.full_like(p, np.nan), np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if not m:
        return adj, level
    order = idx[np.argsort(p[idx], kind="stable")]
    factor = m - np.arange(m)  # m, m − 1, …, 1
    adj[order] = np.minimum(1.0, np.maximum.accumulate(factor * p[order]))
    rejected = adj[order] < alpha
    stop = int(np.argmin(rejected)) if not rejected.all() else m  # first step not rejected (0-based)
    level[order] = alpha / factor[np.minimum(np.arange(m), stop)]
    return adj, level


def pooled_sd(groups: Sequence[np.ndarray]) -> float:
    """√(Σ_c (n_c − 1) s_c² / Σ_c (n_c − 1)) of seed-level values; NaN without two seeds in some cell."""
    groups = [np.asarray(g, float) for g in groups]
    dof = sum(len(g) - 1 for g in groups)
    if min(len(g) for g in groups) < 2 or dof < 1:
        return math.nan
    return math.sqrt(sum((len(g) - 1) * g.var(ddof=1) for g in groups) / dof)


def seeds_needed(effect: float, sd: float, weights: Sequence[float], alpha: float = ALPHA,
                 power: float = POWER) -> float:
    """Seeds per cell for a two-sided level-`alpha` test of `effect` to have `power` (normal, then t refined);
    NaN when the effect is 0 or the SD is not positive."""
    k = float(np.sum(np.square(weights)))
    if not (np.isfinite(effect) and np.isfinite(sd) and sd > 0 and effect != 0):
        return math.nan
    ratio = k * (sd / effect) ** 2
    n = ratio * (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) ** 2
    for _ in range(50):
        df = len(weights) * (max(n, 2.0) - 1)
        new = ratio * (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) ** 2
        if abs(new - n) < 1e-6:
            break
        n = new
    return float(max(2, math.ceil(n)))


def verdict(estimate: float, p_adjusted: float, alpha: float = ALPHA, higher_is_better: bool = True) -> str:
    """'better' / 'worse' (the contrast's first cell, after adjustment) or 'inconclusive'."""
    if not (np.isfinite(p_adjusted) and p_adjusted < alpha):
        return "inconclusive"
    return "better" if (estimate > 0) == higher_is_better else "worse"
