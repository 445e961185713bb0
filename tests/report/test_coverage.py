"""Coverage shown, not assumed: the gap's nominal 95% intervals on simulated studies with a known gap.

Each simulated study has the design the report is built for: five cells × seeds × a β grid of three values, eleven
evaluations per run with KL growing roughly geometrically (as it does in the committed study), a common frontier
f(KL) plus a planted per-cell gap g_c·(1 − e^{−KL/2}), heavy-tailed (Student-t, 4 df) per-seed offsets and
per-evaluation noise, per-run offsets and KL jitter; π_sft's evaluation at KL 0 is shared by a seed's runs. The
estimator is the report's own (frontier.py's per-seed curves, gap.py's Welch contrasts and Holm), run on all
studies at once as arrays; one study is also taken through compute_gap_table to tie the two paths together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shiftlab.report.frontier import mean_over_range, pack_units, read_curves, spans
from shiftlab.report.gap import holm, welch_contrast
from shiftlab.report.stats import CONTRASTS, KL_GRID, compute_gap_table

CELLS = ("offline", "trdpo", "oaif", "online", "rl")
KL_END = np.array([6.0, 9.0, 40.0, 120.0, 1.5])  # at β = 0.1; KL_end ∝ 1/β
BETAS = np.array([0.05, 0.1, 0.2])
EVALS = 11
STUDIES = 400
NULL = np.zeros(5)
PLANTED = np.array([0.0, -0.04, 0.06, 0.1, 0.08])  # total +0.10, sampling +0.06, refresh −0.04, interaction +0.08
GRID = np.array(KL_GRID)


def frontier(kl):
    return 0.1 + 0.5 * (1.0 - np.exp(-kl / 3.0))


def gap_shape(kl):
    return 1.0 - np.exp(-kl / 2.0)


def simulate(rng: np.random.Generator, studies: int, seeds: int, gaps: np.ndarray, df: int = 4):
    """Evaluations (S, C, n, B, T) of `studies` studies, packed into units (S·C·n, P)."""
    shape = (studies, len(CELLS), seeds)

    def t(*s):  # unit variance, heavy tails
        return rng.standard_t(df, s) / np.sqrt(df / (df - 2))

    kl_end = KL_END[:, None, None] * (0.1 / BETAS) * np.exp(0.2 * rng.standard_normal((*shape, len(BETAS))))
    growth = np.expm1(5.0 * np.arange(EVALS) / (EVALS - 1)) / np.expm1(5.0)
    kl = kl_end[..., None] * growth * np.exp(0.1 * rng.standard_normal((*shape, len(BETAS), EVALS)))
    reward = (frontier(kl) + gaps[:, None, None, None] * gap_shape(kl) + 0.03 * t(*shape)[..., None, None]
              + 0.01 * rng.standard_normal((*shape, len(BETAS)))[..., None] + 0.02 * t(*kl.shape))
    reward[..., 0] = 0.1 + 0.02 * t(*shape)[..., None]  # π_sft itself, evaluated once per seed
    kl[..., 0] = 0.0
    unit = np.broadcast_to(np.arange(np.prod(shape)).reshape(shape)[..., None, None], kl.shape)
    x, y = pack_units(unit.ravel(), kl.ravel(), reward.ravel(), int(np.prod(shape)))
    return kl, reward, x, y


def evaluate(x, y, studies: int, seeds: int, gaps: np.ndarray) -> dict:
    """Per contrast: coverage of the mean-gap and pointwise intervals, rejections and Holm's adjusted p's."""
    shape = (studies, len(CELLS), seeds)
    lo, hi = (v.reshape(shape) for v in spans(x))
    at_grid = read_curves(x, y, GRID).reshape(*shape, len(GRID))
    ranges = {"main": [0, 1, 2, 3], "rl": [4, 0]}  # as stats.py: the 2x2 contrasts share one range
    means = {}
    for name, cs in ranges.items():
        start, end = lo[:, cs].max(axis=(1, 2)), hi[:, cs].min(axis=(1, 2))
        per_unit = mean_over_range(x, y, np.repeat(start, len(CELLS) * seeds), np.repeat(end, len(CELLS) * seeds))
        means[name] = per_unit.reshape(shape), start, end
    out = {}
    for con in CONTRASTS:
        idx, w = [CELLS.index(c) for c in con.weights], list(con.weights.values())
        true_gap = sum(wi * gaps[i] for i, wi in zip(idx, w))
        vals, start, end = means["rl" if con.key == "rl" else "main"]
        res = welch_contrast([vals[:, i].T for i in idx], w)
        # the mean of gap_shape over [start, end]
        truth = true_gap * (1 - 2 * (np.exp(-start / 2) - np.exp(-end / 2)) / (end - start))
        own_lo, own_hi = lo[:, idx].max(axis=(1, 2)), hi[:, idx].min(axis=(1, 2))
        inside = (GRID >= own_lo[:, None]) & (GRID <= own_hi[:, None])
        pts = welch_contrast([np.moveaxis(at_grid[:, i], 1, 0) for i in idx], w)
        hit = (pts["ci_low"] <= true_gap * gap_shape(GRID)) & (true_gap * gap_shape(GRID) <= pts["ci_high"])
        out[con.key] = {"mean": np.mean((res["ci_low"] <= truth) & (truth <= res["ci_high"])),
                        "points": {k: hit[inside[:, j], j].mean() for j, k in enumerate(KL_GRID)
                                   if inside[:, j].sum() >= STUDIES // 4},
                        "rejected": np.mean(res["p"] < 0.05), "p": res["p"], "estimate": res["estimate"]}
    return out


@pytest.fixture(scope="module")
def results() -> dict:
    rng = np.random.default_rng(20240516)
    out = {}
    for seeds in (5, 3):
        for name, gaps in (("null", NULL), ("planted", PLANTED)):
            _, _, x, y = simulate(rng, STUDIES, seeds, gaps)
            out[seeds, name] = evaluate(x, y, STUDIES, seeds, gaps)
    for (seeds, name), res in out.items():  # for the record (pytest -s shows it)
        print(f"\n{seeds} seeds per cell, {name} gap, {STUDIES} studies: Welch 95% coverage")
        for key, r in res.items():
            pts = " ".join(f"{k:g}:{v:.3f}" for k, v in r["points"].items())
            print(f"  {key:<12} mean gap {r['mean']:.3f}  grid {pts}  rejected {r['rejected']:.2f}")
    return out


@pytest.mark.parametrize("name", ["null", "planted"])
def test_mean_gap_intervals_cover_at_five_seeds(results, name):
    for key, r in results[5, name].items():
        assert r["mean"] >= 0.93, f"{key}: mean-gap coverage {r['mean']:.3f} < 0.93 ({name} gap, 5 seeds)"


@pytest.mark.parametrize("name", ["null", "planted"])
def test_gap_curve_intervals_cover_at_five_seeds(results, name):
    for key, r in results[5, name].items():
        assert len(r["points"]) >= 2, f"{key}: too few grid points inside the common range to check"
        cov = np.array(list(r["points"].values()))
        # ~100–400 studies per point: one point may dip by sampling error, their average may not
        assert cov.mean() >= 0.93 and cov.min() >= 0.91, f"{key}: pointwise coverage {r['points']} ({name} gap)"


def test_holm_holds_the_familywise_error_under_the_null(results):
    p = np.stack([r["p"] for r in results[5, "null"].values()], axis=1)  # (studies, contrasts)
    any_call = np.mean([np.nanmin(holm(row)[0]) < 0.05 for row in p])
    assert any_call <= 0.06, f"Holm called some contrast in {any_call:.1%} of null studies"
    assert np.mean(np.nanmin(p, axis=1) < 0.05) > any_call, "unadjusted p's should call more often than Holm's"


def test_a_planted_gap_is_found(results):
    """The intervals are not trivially wide: at 5 seeds the planted total gap is detected most of the time."""
    r = results[5, "planted"]["total"]
    assert r["rejected"] > 0.7 and abs(np.mean(r["estimate"]) - 0.1 * 0.8) < 0.05


def test_the_report_path_gives_the_same_numbers_as_the_array_path():
    rng = np.random.default_rng(7)
    kl, reward, x, y = simulate(rng, 1, 3, PLANTED)
    idx = np.indices(kl.shape[1:]).reshape(4, -1)
    evals = pd.DataFrame({"cell": np.array(CELLS)[idx[0]], "seed": idx[1],
                          "run": [f"{CELLS[c]}-s{s}-b{bi}" for c, s, bi in zip(idx[0], idx[1], idx[2])],
                          "step": idx[3] * 20, "eval/kl_sft": kl[0].ravel(), "eval/reward": reward[0].ravel()})
    table = compute_gap_table(evals, list(CELLS))
    res = evaluate(x, y, 1, 3, PLANTED)
    for key, r in res.items():
        row = table[(table["contrast"] == key) & (table["axis"] == "kl_sft_mean")].iloc[0]
        assert row["estimate"] == pytest.approx(r["estimate"][0]) and row["p"] == pytest.approx(r["p"][0])
        assert row["seeds"] == 3
