"""Per-seed frontiers: pooling a seed's runs over β, interpolation in √KL, averages over a KL range, cell bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shiftlab.report.frontier import (
    build_units,
    common_range,
    compute_frontiers,
    limiting_unit,
    mean_over_range,
    pack_units,
    read_curves,
)


def test_pack_units_sorts_averages_equal_kls_and_pads():
    unit = np.array([1, 0, 0, 1, 0, 1])
    kl = np.array([2.0, 1.0, 0.0, 0.0, 1.0, np.nan])
    value = np.array([5.0, 2.0, 0.0, 1.0, 4.0, 9.0])
    x, y = pack_units(unit, kl, value, 3)
    assert x.shape == (3, 2)
    assert x[0].tolist() == [0.0, 1.0] and y[0].tolist() == [0.0, 3.0]  # the two evaluations at KL 1 averaged
    assert x[1].tolist() == [0.0, 2.0] and y[1].tolist() == [1.0, 5.0]  # the NaN KL dropped
    assert np.isnan(x[2]).all()  # a unit with no evaluation stays empty


def test_curves_are_linear_in_sqrt_kl_and_never_extrapolated():
    x, y = np.array([[0.0, 1.0, 4.0, np.nan]]), np.array([[0.0, 1.0, 2.0, np.nan]])  # reward = √KL at the knots
    at = np.array([0.25, 2.25, 4.0, 5.0, -0.1])
    out = read_curves(x, y, at)[0]
    assert out[:3] == pytest.approx([0.5, 1.5, 2.0])
    assert np.isnan(out[3]) and np.isnan(out[4])


def test_non_monotone_kl_is_read_as_frontier_points():
    # KL goes up then back down over training (as online runs do): the points are sorted by KL
    x, y = pack_units(np.zeros(4, int), np.array([0.0, 4.0, 16.0, 9.0]), np.array([0.0, 2.0, 4.0, 3.0]), 1)
    assert read_curves(x, y, np.array([1.0, 12.25]))[0] == pytest.approx([1.0, 3.5])


def test_mean_over_range_is_area_over_range():
    x = np.array([[0.0, 1.0, 4.0, 9.0], [0.0, 9.0, np.nan, np.nan]])
    y = np.sqrt(np.nan_to_num(x))  # reward = √KL, exactly representable by both units' chords in √KL
    y[1, 1] = 3.0
    # mean of √k over [1, 4] = (2/3)(4^1.5 − 1)/3 = 14/9
    assert mean_over_range(x, y, 1.0, 4.0) == pytest.approx([14 / 9, 14 / 9], rel=1e-4)
    assert np.isnan(mean_over_range(x, y, 1.0, 10.0)).all()  # beyond both units' largest KL


def _evals() -> pd.DataFrame:
    rows = []
    for cell, speed in (("offline", 1.0), ("online", 3.0)):
        for seed in range(3):
            for beta, scale in ((0.1, 1.0), (0.5, 0.3)):
                for k in range(5):
                    kl = speed * scale * k * (1 + 0.1 * seed)
                    rows.append({"run": f"{cell}-{seed}-{beta}", "cell": cell, "seed": seed, "step": 10 * k,
                                 "eval/kl_sft": kl, "eval/reward": np.sqrt(kl) + 0.01 * seed})
    return pd.DataFrame(rows)


def test_a_seed_runs_over_beta_are_one_unit():
    units = build_units(_evals())
    assert len(units.cell) == 6  # 2 cells × 3 seeds, each pooling its 2 β runs
    assert all(len(r) == 2 for r in units.runs)
    # a unit's points: step 0 of both runs is the same KL 0 (averaged), then 4 + 4 evaluations
    assert np.isfinite(units.kl).sum(axis=1).tolist() == [9] * 6
    lo, hi = common_range(units, ["offline", "online"])
    assert lo == 0.0 and hi == pytest.approx(4.0)  # offline seed 0 reaches KL 4 at most
    assert limiting_unit(units, ["offline", "online"]) == ("offline seed 0", ("offline-0-0.1", "offline-0-0.5"))


def test_run_without_a_seed_is_its_own_unit():
    ev = _evals()
    ev.loc[ev["run"].str.startswith("offline-0"), "seed"] = None
    units = build_units(ev)
    assert sorted(map(len, units.runs)) == [1, 1, 2, 2, 2, 2, 2]


def test_cell_frontiers_have_a_band_over_seeds():
    table = compute_frontiers(build_units(_evals()), ["offline", "online"], n_points=6, extra=(0.5, 1.0, 100.0))
    off = table[table["cell"] == "offline"]
    assert off["kl"].min() == 0.0 and off["kl"].max() == pytest.approx(4.0)
    assert {0.5, 1.0} <= set(off["kl"]) and 100.0 not in set(off["kl"])  # grid points inside the range only
    assert (off["band_low"] <= off["reward"]).all() and (off["reward"] <= off["band_high"]).all()
    at1 = off[off["kl"] == 1.0].iloc[0]
    assert at1["reward"] == pytest.approx(1.01, abs=0.02) and at1["seeds"] == 3
    assert off["gold_reward"].isna().all()
    gold = build_units(_evals().assign(**{"eval/gold_reward": lambda d: -d["eval/reward"]}), "eval/gold_reward")
    with_gold = compute_frontiers(build_units(_evals()), ["offline"], 6, gold=gold)
    assert with_gold["gold_reward"].to_numpy() == pytest.approx(-with_gold["reward"].to_numpy())
