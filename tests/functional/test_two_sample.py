"""Behaviour-agnostic two-sample divergences (shiftlab.functional.two_sample): MMD², the classifier test, n-gram JS."""

from __future__ import annotations

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
    assert shifted["tv_lower_bound"] == pytest.approx(2 * shifted["accuracy"] - 1)
    assert same["tv_lower_bound"] == max(0.0, 2 * same["accuracy"] - 1)
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
