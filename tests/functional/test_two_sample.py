"""Behaviour-agnostic two-sample divergences (shiftlab.functional.two_sample): MMD², the classifier test, n-gram JS.

Every logged measure passes two tests: (a) calibration — when both samples come from one distribution its excess
over its null averages 0 within 4 standard errors of the mean over repeats (and the TV bound is 0 in ≥ 95% of the
repeats), for independent samples and for samples paired by a shared prompt; (b) power — it grows with a planted
shift, monotonically over three shift sizes.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from exact_testbed import EOS

from shiftlab.functional.two_sample import (
    classifier_two_sample_test,
    median_bandwidth,
    mmd2_unbiased,
    mmd_permutation_test,
    ngram_js_divergence,
    ngram_js_permutation_test,
    permutation_assignments,
)

# --------------------------------------------------------------------------- two-sample divergences


def gaussians(shift: float, n: int = 300, d: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen) + shift


def test_mmd2_unbiased_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    x, y, sigma = torch.randn(5, 3, generator=gen).double(), torch.randn(4, 3, generator=gen).double() + 0.5, 1.3

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / (5 * 4)
    assert mmd2_unbiased(x, y, sigma) == pytest.approx(xx + yy - 2 * xy, abs=1e-10)
    pooled = torch.cat([x, y])
    dists = [float((pooled[i] - pooled[j]).norm()) for i in range(9) for j in range(i + 1, 9)]
    assert median_bandwidth(x, y) == pytest.approx(float(torch.tensor(dists).median()), rel=1e-6)


def test_mmd_permutation_test_null_and_shift():
    same = mmd_permutation_test(*gaussians(0.0), n_permutations=200, seed=0)
    shifted = mmd_permutation_test(*gaussians(0.3), n_permutations=200, seed=0)
    assert same["p_value"] > 0.05
    assert shifted["p_value"] == pytest.approx(1 / 201)  # the +1 correction: never exactly 0
    assert shifted["mmd2"] > 10 * abs(same["mmd2"])
    assert mmd_permutation_test(*gaussians(0.3), n_permutations=200, seed=0) == shifted  # deterministic


def test_classifier_two_sample_test_null_and_shift():
    same = classifier_two_sample_test(*gaussians(0.0), seed=0)
    shifted = classifier_two_sample_test(*gaussians(0.3), seed=0)
    assert same["ci_low"] <= 0.5 <= same["ci_high"]
    assert shifted["accuracy"] > 0.75 and shifted["ci_low"] > 0.5
    assert shifted["tv_lower_bound"] == pytest.approx(2 * shifted["ci_low"] - 1)  # from the lower limit, not a
    assert 0 < shifted["tv_lower_bound"] < 2 * shifted["accuracy"] - 1
    assert same["tv_lower_bound"] == 0.0 and same["null"] == shifted["null"] == 0.5
    x, y = gaussians(0.3)
    unbalanced = classifier_two_sample_test(x, y[:120], seed=0)  # the larger sample is subsampled
    assert unbalanced["n_test"] == 120
    assert classifier_two_sample_test(*gaussians(0.3), seed=0) == shifted  # deterministic given seed


def test_ngram_js_divergence():
    a = [[0, 1, 2, EOS], [1, 1, EOS]]
    b = [[2, 2, 0, EOS], [0, EOS], [1, 2, 1, 0, EOS]]
    ident = ngram_js_divergence(a, a)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in ident.values())
    disjoint = ngram_js_divergence([[0, 1, 0]], [[5, 6, 7, 5]])
    assert all(v == pytest.approx(1.0) for v in disjoint.values())
    smoothed = ngram_js_divergence([[0, 1, 0]], [[5, 6, 7, 5]], alpha=0.01)
    assert 0.9 < smoothed["js/1"] < 1.0
    ab, ba = ngram_js_divergence(a, b, alpha=0.5), ngram_js_divergence(b, a, alpha=0.5)
    assert ab == pytest.approx(ba)
    assert all(0.0 < v < 1.0 for v in ab.values())
    # Unigrams by hand: a has counts {0:1, 1:3, 2:1, EOS:2}, b has {0:3, 1:2, 2:3, EOS:3}.
    pa = [1 / 7, 3 / 7, 1 / 7, 2 / 7]
    pb = [3 / 11, 2 / 11, 3 / 11, 3 / 11]
    m = [(u + v) / 2 for u, v in zip(pa, pb)]
    js = 0.5 * sum(u * math.log2(u / w) for u, w in zip(pa, m)) + 0.5 * sum(v * math.log2(v / w) for v, w in zip(pb, m))
    assert ngram_js_divergence(a, b)["js/1"] == pytest.approx(js)
    assert set(ab) == {"js/1", "js/2", "js/3", "js/mean"}
    short = ngram_js_divergence([[1, 2]], [[1, 2]], n_max=3)
    assert math.isnan(short["js/3"]) and short["js/mean"] == pytest.approx(0.0)


def test_ngram_js_permutation_test_matches_the_plain_estimate():
    a = [[0, 1, 2, EOS], [1, 1, EOS], [2, EOS]]
    b = [[2, 2, 0, EOS], [0, EOS], [1, 2, 1, 0, EOS]]
    out = ngram_js_permutation_test(a, b, alpha=0.5, n_permutations=50, seed=0)
    assert out["js"] == pytest.approx(ngram_js_divergence(a, b, alpha=0.5)["js/mean"])
    assert 1 / 51 <= out["p_value"] <= 1 and 0 < out["null"] < 1
    assert ngram_js_permutation_test(a, b, alpha=0.5, n_permutations=50, seed=0) == out  # deterministic
    paired = ngram_js_permutation_test(a, b, alpha=0.5, n_permutations=50, seed=0, paired=True)
    assert paired["js"] == out["js"] and paired["null"] != out["null"]
    with pytest.raises(ValueError, match="equal sizes"):
        ngram_js_permutation_test(a, b[:2], paired=True)


def test_permutation_assignments_keep_group_sizes_and_pairs():
    gen = torch.Generator().manual_seed(0)
    unpaired = permutation_assignments(5, 3, 40, gen)
    assert unpaired.shape == (40, 8) and (unpaired.sum(-1) == 5).all()
    assert len({tuple(row.tolist()) for row in unpaired}) > 10
    paired = permutation_assignments(4, 4, 40, gen, paired=True)
    assert (paired[:, :4] ^ paired[:, 4:]).all()  # each pair keeps one member in each group
    assert 0.3 < paired[:, :4].float().mean() < 0.7


# --------------------------------------------------------------------------- calibration and power
# Samples of one law, independent or paired: a pair (x_i, y_i) shares a "prompt" that both depend on, as μ's and
# π_θ's completions of one eval prompt do. A planted shift moves y's law only.

N, D, REPEATS = 64, 20, 60
SHIFTS = (0.1, 0.3, 0.6)


def features(shift: float, paired: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prompt_x = torch.randn(N, D, generator=gen)
    prompt_y = prompt_x if paired else torch.randn(N, D, generator=gen)
    return prompt_x + torch.randn(N, D, generator=gen), prompt_y + torch.randn(N, D, generator=gen) + shift


V, ZIPF = 40, 1.0 / torch.arange(1, 41, dtype=torch.float64)


def corpora(shift: float, paired: bool, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token sequences: each prompt ranks the vocabulary its own way and tokens follow a Zipf law over that
    ranking; a shifted y-sequence is, with probability `shift`, drawn from one other, global ranking."""
    gen = torch.Generator().manual_seed(seed)
    other = torch.randperm(V, generator=gen)

    def draw(ranking: torch.Tensor) -> list[int]:
        length = int(torch.randint(4, 12, (1,), generator=gen))
        return ranking[torch.multinomial(ZIPF, length, replacement=True, generator=gen)].tolist() + [V]

    rank_x = [torch.randperm(V, generator=gen) for _ in range(N)]
    rank_y = rank_x if paired else [torch.randperm(V, generator=gen) for _ in range(N)]
    xs = [draw(r) for r in rank_x]
    ys = [draw(other if float(torch.rand(1, generator=gen)) < shift else r) for r in rank_y]
    return xs, ys


@functools.cache  # shared by the calibration and TV-bound tests
def c2st(shift, paired, seed):
    out = classifier_two_sample_test(*features(shift, paired, seed), seed=seed, paired=paired)
    return out["accuracy"] - out["null"], out["tv_lower_bound"]


@functools.cache
def mmd(shift, paired, seed):
    out = mmd_permutation_test(*features(shift, paired, seed), n_permutations=100, seed=seed, paired=paired)
    return out["mmd2"] - out["null"], out["mmd2"]


@functools.cache
def js(shift, paired, seed):
    out = ngram_js_permutation_test(*corpora(shift, paired, seed), alpha=0.01, n_permutations=100, seed=seed, paired=paired)
    return out["js"] - out["null"], out["js"]


def mean_and_se(values) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std() / len(t) ** 0.5)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("measure", [c2st, mmd, js])
def test_excess_over_the_null_is_zero_without_a_shift(measure, paired):
    excess, _ = zip(*(measure(0.0, paired, seed) for seed in range(REPEATS)))
    mean, se = mean_and_se(excess)
    assert abs(mean) <= 4 * se, f"{measure.__name__} excess {mean:.4f} ± {se:.4f} under the null"
    assert se < 0.02  # the repeats resolve a bias of a few hundredths


def test_the_null_carries_what_the_raw_statistic_cannot_see():
    """Read raw, each statistic is off under the null: plug-in JS by its size bias (most of the issue's
    0.5 bits between two draws of one Zipf law), and, on paired samples, the unpaired C2ST and MMD² by the
    prompt shared within a pair. The excess over the matching null is what test_excess_… checks is 0."""
    raw_js = [js(0.0, False, seed)[1] for seed in range(10)]
    assert min(raw_js) > 0.2
    unpaired_c2st = [classifier_two_sample_test(*features(0.0, True, s), seed=s)["accuracy"] for s in range(REPEATS)]
    mean, se = mean_and_se(unpaired_c2st)
    assert mean < 0.5 - 4 * se  # a prompt seen in training is misread in the held-out half
    paired_mmd = [mmd(0.0, True, seed)[1] for seed in range(REPEATS)]  # raw: below 0 by the shared prompts
    assert mean_and_se(paired_mmd)[0] < -4 * mean_and_se(paired_mmd)[1]


@pytest.mark.parametrize("paired", [False, True])
def test_tv_bound_is_zero_without_a_shift(paired):
    bounds = [c2st(0.0, paired, seed)[1] for seed in range(REPEATS)]
    assert sum(b == 0 for b in bounds) >= 0.95 * len(bounds)
    point_estimates = [2 * (c2st(0.0, paired, seed)[0] + 0.5) - 1 for seed in range(REPEATS)]
    assert sum(e > 0 for e in point_estimates) >= 0.25 * len(bounds)  # the old 2a − 1 was no bound


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("measure", [c2st, mmd, js])
def test_excess_grows_with_a_planted_shift(measure, paired):
    means = [mean_and_se([measure(shift, paired, seed)[0] for seed in range(8)])[0] for shift in SHIFTS]
    assert means[0] < means[1] < means[2], f"{measure.__name__}: {means}"
    assert means[2] > 0


@pytest.mark.parametrize("paired", [False, True])
def test_tv_bound_grows_with_a_planted_shift(paired):
    means = [mean_and_se([c2st(shift, paired, seed)[1] for seed in range(8)])[0] for shift in (0.25, 0.5, 1.0)]
    assert means[0] <= means[1] < means[2] and means[2] > 0.3
