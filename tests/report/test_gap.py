"""Welch contrasts, Holm's adjustment with its consistent intervals, verdicts and the seeds a question needs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shiftlab.report.gap import holm, pooled_sd, seeds_needed, t_interval, verdict, welch_contrast


def test_two_cell_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1.0, 5), rng.normal(0.0, 2.0, 7)
    res = welch_contrast([a, b], [1.0, -1.0])
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert res["estimate"] == pytest.approx(a.mean() - b.mean())
    assert res["p"] == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((lo, hi))


def test_welch_is_vectorised_over_trailing_axes_and_handles_one_seed():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))  # seeds × grid points
    res = welch_contrast([a, b], [1.0, -1.0])
    assert res["p"].shape == (6,)
    assert res["p"][2] == pytest.approx(stats.ttest_ind(a[:, 2], b[:, 2], equal_var=False).pvalue)
    single = welch_contrast([np.array([1.0]), np.array([0.5, 0.7])], [1.0, -1.0])
    assert single["estimate"] == pytest.approx(0.4) and np.isnan(single["ci_low"]) and np.isnan(single["p"])
    flat = welch_contrast([np.ones(3), np.ones(3)], [1.0, -1.0])
    assert np.isnan(flat["p"])  # no spread: no test, not p = 0


def test_holm_adjusts_by_hand():
    adj, level = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 with a running maximum
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(adj[4])
    # Holm stops at its third step (0.06 ≥ 0.05): later hypotheses keep that step's level
    assert level[:4] == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4]) and np.isnan(level[4])


def test_adjusted_interval_excludes_zero_exactly_when_the_adjusted_p_is_below_alpha():
    rng = np.random.default_rng(2)
    for _ in range(200):
        m = rng.integers(1, 7)
        est, se, df = rng.normal(0, 3, m), rng.uniform(0.5, 2, m), rng.uniform(2, 30, m)
        p = 2 * stats.t.sf(np.abs(est) / se, df)
        adj, level = holm(p)
        lo, hi = t_interval(est, se, df, level)
        assert np.array_equal((lo > 0) | (hi < 0), adj < 0.05)


def test_seeds_needed_matches_the_textbook_t_test_sample_sizes():
    # two-sample t test, α = 0.05 two-sided, power 0.8: d = 0.5 → 64, 0.8 → 26, 1 → 17 per group (Cohen 1988)
    assert [seeds_needed(d, 1.0, [1.0, -1.0]) for d in (0.5, 0.8, 1.0)] == [64, 26, 17]
    assert seeds_needed(-0.5, 1.0, [1.0, -1.0]) == 64
    # the interaction's four unit weights double the variance of a two-cell contrast
    assert seeds_needed(0.5, 1.0, [1, -1, -1, 1]) > 1.9 * seeds_needed(0.5, 1.0, [1.0, -1.0])
    assert np.isnan(seeds_needed(0.0, 1.0, [1.0, -1.0])) and np.isnan(seeds_needed(0.1, 0.0, [1.0, -1.0]))


def test_seeds_needed_gives_the_power_it_promises():
    rng = np.random.default_rng(3)
    n = int(seeds_needed(0.6, 1.0, [1.0, -1.0]))
    a, b = rng.normal(0.6, 1.0, (4000, n)), rng.normal(0.0, 1.0, (4000, n))
    power = np.mean(welch_contrast([a.T, b.T], [1.0, -1.0])["p"] < 0.05)
    assert 0.77 <= power <= 0.86


def test_pooled_sd_and_verdicts():
    assert pooled_sd([np.array([0.0, 2.0]), np.array([1.0, 1.0, 4.0])]) == pytest.approx(np.sqrt((2 + 6) / 3))
    assert np.isnan(pooled_sd([np.array([1.0]), np.array([1.0, 2.0])]))
    assert verdict(0.1, 0.01) == "better" and verdict(-0.1, 0.01) == "worse"
    assert verdict(-0.1, 0.01, higher_is_better=False) == "better"
    assert verdict(0.1, 0.05) == "inconclusive" and verdict(0.1, np.nan) == "inconclusive"
