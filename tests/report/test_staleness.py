"""A staleness study (report/staleness.py): levels found from the configs, the gap per level and the trend across
levels recovered from synthetic runs with a planted slope, the trend interval's coverage by simulation, and the
report built around them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import write_run, write_study

from shiftlab.report import staleness as S
from shiftlab.report.build import build_report
from shiftlab.report.gap import welch_contrast
from shiftlab.report.load import load_study
from shiftlab.report.options import ReportConfig

EVERY = (4, 16, 64)


def write_staleness_study(root, slope: float, seeds: int = 5, base: float = 0.3, **kw):
    """Offline runs (gap 0) and online runs at each sample_every with gap base + slope·log2(every / 4)."""
    i = 0
    for seed in range(seeds):
        write_run(root / f"{i}_offline", "offline", seed, 0.0, **kw)
        i += 1
        for every in EVERY:
            gap = base + slope * np.log2(every / 4)
            write_run(root / f"{i}_online_every{every}", "online", seed, gap, noise_seed=every,
                      config={"source": {"kind": "onpolicy", "sample_every": every}}, **kw)
            i += 1
    return root


def test_levels_are_found_only_where_an_on_policy_cell_varies_sample_every(tmp_path):
    study = load_study([write_staleness_study(tmp_path / "s", slope=0.0, seeds=2)])
    levels = S.find_levels(study)
    assert [(lv.name, lv.every) for lv in levels] == [(f"online every {e}", e) for e in EVERY]
    split = S.split_levels(study, levels)
    assert split.cells == ["offline", "online every 4", "online every 16", "online every 64"]  # natural order
    assert set(split.evals["cell"]) == set(split.cells) and set(split.curves["cell"]) == set(split.cells)
    assert S.find_levels(load_study([write_study(tmp_path / "plain", seeds=2)])) == []


def test_trend_weights_are_a_least_squares_slope():
    w = S.trend_weights([4, 10, 25, 50, 200])
    x = np.log2([4, 10, 25, 50, 200])
    assert w.sum() == pytest.approx(0.0, abs=1e-12)
    assert (w * x).sum() == pytest.approx(1.0)
    y = 0.3 - 0.07 * x
    assert (w * y).sum() == pytest.approx(-0.07)


@pytest.mark.parametrize("slope", [-0.06, 0.0])
def test_planted_slope_and_level_gaps_are_recovered(tmp_path, slope):
    study = load_study([write_staleness_study(tmp_path / "s", slope=slope, seed_sd=0.01, eval_sd=0.005)])
    levels = S.find_levels(study)
    table = S.compute_staleness_table(S.split_levels(study, levels).evals, levels)
    trend = table[(table["contrast"] == S.TREND) & (table["axis"] == "kl_sft_mean")].iloc[0]
    # the gap is planted once training has moved (π_sft's evaluation at step 0 carries none), so the mean over the
    # KL range is slightly smaller than the planted value: read it with a tolerance (coverage is simulated below)
    assert trend["estimate"] == pytest.approx(slope, abs=0.012)
    assert (trend["ci_high"] < 0) if slope < 0 else (trend["ci_low"] < 0 < trend["ci_high"])
    assert trend["verdict"] == ("falls" if slope < 0 else "inconclusive")
    gaps = table[(table["axis"] == "kl_sft_mean") & (table["contrast"] != S.TREND)]
    assert list(gaps["contrast"]) == [f"every{e}" for e in EVERY]
    assert (gaps["verdict"] == "better").all()  # planted gaps 0.3, 0.18, 0.06 (or 0.3 each) ≫ noise
    assert np.isfinite(table.loc[table["axis"] == "kl_sft_mean", "p_adjusted"]).all()  # one Holm family
    assert (gaps["kl_low"].nunique(), gaps["kl_high"].nunique()) == (1, 1)  # one shared range


def test_no_reference_cell_means_no_table(tmp_path):
    root = write_staleness_study(tmp_path / "s", slope=0.0, seeds=2)
    for d in root.glob("*_offline"):
        (d / "metrics.jsonl").write_text("")
    study = load_study([root])
    levels = S.find_levels(study)
    assert S.compute_staleness_table(S.split_levels(study, levels).evals, levels).empty


def test_state_shift_table_has_a_row_per_level_the_reference_and_the_trend(tmp_path):
    study = load_study([write_staleness_study(tmp_path / "s", slope=0.0, seeds=3)])
    levels = S.find_levels(study)
    state = S.state_shift_table(S.split_levels(study, levels).evals, levels)
    assert list(state["cell"]) == [lv.name for lv in levels] + ["offline", "trend"]
    assert (state["seeds"] == 3).all()
    assert (state["ci_low"] <= state["estimate"]).all() and (state["estimate"] <= state["ci_high"]).all()


def test_trend_interval_covers_the_true_slope_at_five_seeds():
    """Welch coverage of the slope contrast: 5 levels × 5 seeds, heavy-tailed (t, 4 df) seed values with level-
    dependent spread, null and planted slopes; nominal 95% must cover ≥ 93%."""
    rng = np.random.default_rng(0)
    every = np.array([4, 10, 25, 50, 200])
    w = S.trend_weights(every)
    x = np.log2(every)
    sd = np.array([0.02, 0.03, 0.03, 0.04, 0.06])
    for slope in (0.0, -0.03):
        means = 0.2 + slope * x
        noise = rng.standard_t(4, (4000, 5, 5)) / np.sqrt(2.0) * sd[None, :, None]
        values = means[None, :, None] + noise  # (studies, levels, seeds)
        res = welch_contrast([values[:, i, :].T for i in range(5)], w)
        covered = (res["ci_low"] <= slope) & (slope <= res["ci_high"])
        assert covered.mean() >= 0.93, (slope, covered.mean())


def test_staleness_report_leads_with_the_trend(tmp_path):
    root = write_staleness_study(tmp_path / "s", slope=-0.06, seed_sd=0.01, eval_sd=0.005)
    html, md = build_report([str(root)], ReportConfig(out=str(tmp_path / "reports"), name="st"))
    text = md.read_text()
    assert "Off-policyness as a dial" in text
    first = text.split("## Summary")[0]  # the finding comes before every section
    assert "per doubling of the sampling interval" in first and "falls with staleness" in first
    assert first.index("staleness.png") < first.index("frontier.png")  # the dial leads
    assert "Noukhovitch" in text and "does not reproduce" in text
    gap = pd.read_csv(md.parent / "gap.csv")
    assert {"every4", "every16", "every64", "trend"} <= set(gap["contrast"])
    assert (md.parent / "staleness.png").is_file() and (md.parent / "frontier.png").is_file()
    assert "online every 64" in pd.read_csv(md.parent / "frontier.csv")["cell"].tolist()
