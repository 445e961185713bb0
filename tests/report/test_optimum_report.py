"""The optimum in the report (shiftlab.report.optimum): optimum.jsonl files of synthetic runs → the averaged optimum
frontier, its reliable range, each cell's shortfall at matched KL, the over-optimisation law, the plot's line."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import write_run

from shiftlab.report.frontier_plots import plot_frontier
from shiftlab.report.load import ReportError, load_study
from shiftlab.report.optimum import (
    COLUMNS,
    fit_cells,
    fit_overoptimisation,
    load_optimum,
    optimum_at,
    overoptimisation_law,
    reliable_kl,
    shortfall,
)
from shiftlab.report.tables import format_law


def _optimum_rows(key: str, scale: float, upto: float, sft: str = "s0", gold: bool = True) -> list[dict]:
    """A draw whose frontier is reward = scale·√KL on KL ∈ [0, 3], reliable up to `upto`."""
    kl = np.linspace(0.0, 3.0, 13)
    rows = []
    for beta, k in zip(np.logspace(1, -2, 13), kl):
        row = {"beta": beta, "kl": k, "reward": scale * math.sqrt(k), "ess": math.exp(-k), "reliable": bool(k <= upto),
               "samples": 64, "reliable_kl": upto, "key": key, "sft": sft}
        if gold:
            row["gold_reward"] = 0.5 * math.sqrt(k)
        rows.append(row)
    return rows


def _write_optimum(run_dir, rows):
    (run_dir / "optimum.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def study_dir(tmp_path):
    runs = {"0": ("offline", 0, _optimum_rows("a", 1.0, 2.0)), "1": ("online", 0, _optimum_rows("a", 1.0, 2.0)),
            "2": ("offline", 1, _optimum_rows("b", 1.2, 1.5))}  # runs 0 and 1 share seed 0's draw
    for name, (cell, seed, rows) in runs.items():
        _write_optimum(write_run(tmp_path / name, cell, seed), rows)
    return tmp_path


def test_distinct_draws_are_averaged_and_trusted_to_the_smallest_reliable_kl(study_dir):
    optimum = load_optimum(load_study([study_dir]))
    assert list(optimum.columns) == COLUMNS and set(optimum["draws"]) == {2}  # the shared draw counts once
    assert np.allclose(optimum["reward"], 1.1 * np.sqrt(optimum["kl"]))
    assert np.allclose(optimum["reward_se"], 0.1 * np.sqrt(optimum["kl"]))  # sd 0.1·√2·√KL over √2 draws
    assert np.allclose(optimum["gold_reward"], 0.5 * np.sqrt(optimum["kl"]))
    assert reliable_kl(optimum) == pytest.approx(1.5)
    assert optimum.equals(load_optimum([study_dir]))  # from paths as from a Study


def test_optimum_at_reads_only_the_reliable_range(study_dir):
    optimum = load_optimum([study_dir])
    got = optimum_at(optimum, [0.25, 1.0, 1.5, 1.6, 10.0])
    # linear between grid points 0.25 apart: exact at the points themselves
    assert got[:3] == pytest.approx(1.1 * np.sqrt([0.25, 1.0, 1.5])) and np.isnan(got[3:]).all()


def test_shortfall_is_the_optimum_minus_the_cell_at_matched_kl(study_dir):
    optimum = load_optimum([study_dir])
    kl = np.linspace(0.0, 1.2, 25)
    frontier = pd.concat([
        pd.DataFrame({"cell": "offline", "kl": kl, "reward": 1.1 * np.sqrt(kl) - 0.2, "gold_reward": 0.1}),
        pd.DataFrame({"cell": "online", "kl": kl[kl < 0.51], "reward": 1.1 * np.sqrt(kl[kl < 0.51]) - 0.05}),
    ])
    gap = shortfall(frontier, optimum, [0.4, 0.5, 1.0, 2.0])
    off = gap[gap["cell"] == "offline"].set_index("kl")
    assert off.loc[0.5, "shortfall"] == pytest.approx(0.2, abs=0.01) and off.loc[1.0, "shortfall"] == pytest.approx(0.2, abs=0.01)
    assert np.isnan(off.loc[2.0, "shortfall"])  # past the reliable KL and past the cell's range
    assert off.loc[1.0, "gold_shortfall"] == pytest.approx(0.5 - 0.1)
    on = gap[gap["cell"] == "online"].set_index("kl")
    assert on.loc[0.4, "shortfall"] == pytest.approx(0.05, abs=0.01) and np.isnan(on.loc[1.0, "shortfall"])
    with pytest.raises(ReportError, match="cell, kl, reward"):
        shortfall(frontier.drop(columns="reward"), optimum, [1.0])


def test_no_optimum_files_give_an_empty_frame_and_no_values(tmp_path):
    write_run(tmp_path / "0", "offline", 0)
    optimum = load_optimum([tmp_path])
    assert optimum.empty and list(optimum.columns) == COLUMNS
    assert np.isnan(optimum_at(optimum, [1.0])).all() and math.isnan(reliable_kl(optimum))
    frontier = pd.DataFrame({"cell": "offline", "kl": [0.0, 1.0], "reward": [0.0, 0.5]})
    assert shortfall(frontier, optimum, [0.5])["shortfall"].isna().all()


def test_runs_of_two_sft_models_are_not_mixed(tmp_path):
    _write_optimum(write_run(tmp_path / "0", "offline", 0), _optimum_rows("a", 1.0, 2.0, sft="s0"))
    _write_optimum(write_run(tmp_path / "1", "offline", 1), _optimum_rows("b", 1.0, 2.0, sft="s1"))
    optimum = load_optimum([tmp_path])
    assert set(optimum["sft"]) == {"s0", "s1"}
    with pytest.raises(ReportError, match="different π_sft"):
        optimum_at(optimum, [1.0])


def test_the_overoptimisation_law_is_recovered_from_noisy_points():
    rng = np.random.default_rng(0)
    kl = rng.uniform(0.05, 30.0, 200)
    gain = overoptimisation_law(kl, 0.6, 0.25) + 0.01 * rng.standard_normal(200)
    alpha, b = fit_overoptimisation(kl, gain)
    assert alpha == pytest.approx(0.6, abs=0.02) and b == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ReportError, match="≥ 2 points"):
        fit_overoptimisation([0.0, 1.0], [0.0, 0.1])


def test_the_law_is_fitted_per_cell_on_gains_over_step_zero():
    rows = []
    for cell, (alpha, b) in {"offline": (0.5, 0.3), "online": (0.8, 0.2)}.items():
        for run, offset in ((f"{cell}/0", 0.1), (f"{cell}/1", -0.3)):  # a run's level cancels in its gain
            for step, kl in enumerate([0.0, 0.5, 1, 2, 4, 8, 16]):
                rows.append({"run": run, "cell": cell, "step": step, "eval/kl_sft": kl,
                             "eval/reward": offset + float(overoptimisation_law([kl], alpha, b)[0])})
    fits = fit_cells(pd.DataFrame(rows)).set_index("cell")
    assert fits.loc["offline", "alpha"] == pytest.approx(0.5) and fits.loc["online", "b"] == pytest.approx(0.2)
    assert fits.loc["offline", "peak_kl"] == pytest.approx(math.exp(2 * (0.5 / 0.3 - 1)))
    assert (fits["rmse"] < 1e-9).all()
    assert (fits["max_kl"] == 16).all()
    shown = format_law(fits.reset_index(), None, cells=["online", "offline", "rl"])
    assert list(shown["cell"]) == ["online", "offline"]  # the report's cell order; absent cells skipped
    assert shown.loc[1, "peak KL [nats]"] == f"{math.exp(2 * (0.5 / 0.3 - 1)):.3g}"
    rising = fits.reset_index().assign(b=-0.1, peak_kl=float("nan"))
    assert (format_law(rising)["peak KL [nats]"] == "no peak (b ≤ 0)").all()


def test_the_frontier_plot_draws_the_optimum_dashed_up_to_its_reliable_kl(study_dir):
    study = load_study([study_dir])
    fig = plot_frontier(study.evals, pd.DataFrame(), study.cells, optimum=load_optimum(study))
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--" and ln.get_color() == "black"]
    assert max(line.get_xdata()) == pytest.approx(1.5)
    assert not [ln for ln in plot_frontier(study.evals, pd.DataFrame(), study.cells).axes[0].get_lines()
                if ln.get_linestyle() == "--" and ln.get_color() == "black"]
