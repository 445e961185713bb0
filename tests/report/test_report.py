"""The report stage on synthetic run logs with a known off-policy gap (tests/synthetic_runs.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import write_run, write_study

from shiftlab.report import (
    ReportConfig,
    ReportError,
    compute_gap_table,
    load_study,
    parse_args,
)
from shiftlab.report.cli import main_plot, main_report
from shiftlab.report.stats import CSV_COLUMNS, describe_label_budget
from shiftlab.report.summary import contrast_verdicts, write_summary
from shiftlab.report.tables import missing_metrics

REPO = Path(__file__).resolve().parents[2]
GAP = 0.2


def _row(table: pd.DataFrame, axis: str, contrast: str, at: float | None = None) -> pd.Series:
    hit = table[(table["axis"] == axis) & (table["contrast"] == contrast)]
    return (hit if at is None else hit[hit["at"] == at]).iloc[0]


@pytest.fixture(scope="module")
def gap_study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("gap") / "sweep",
                       gaps={"offline": 0.0, "trdpo": 0.05, "oaif": 0.15, "online": GAP})


@pytest.fixture(scope="module")
def gap_table(gap_study) -> pd.DataFrame:
    study = load_study([gap_study])
    return compute_gap_table(study.evals, study.cells)


def test_gap_curve_recovers_injected_gap(gap_table):
    # the offset is planted once training has moved; at 4 nats every run is past its first evaluation
    row = _row(gap_table, "kl_sft", "total", at=4.0)
    assert abs(row["estimate"] - GAP) < 0.06
    assert row["ci_low"] <= GAP <= row["ci_high"] and row["ci_low"] > 0, "a large gap must give an interval excluding 0"
    assert row["seeds"] == 3 and row["seeds_by_cell"] == "online 3, offline 3"
    assert set(gap_table.loc[gap_table["axis"] == "kl_sft", "at"]) <= {0.5, 1.0, 2.0, 4.0, 8.0}  # the fixed grid
    assert gap_table.loc[gap_table["axis"] == "kl_sft", "at"].max() <= row["kl_high"]


def test_mean_gap_is_the_claim_with_holm_and_a_verdict(gap_table):
    row = _row(gap_table, "kl_sft_mean", "total")
    assert 0 < row["estimate"] < GAP  # ramps up from 0 at π_sft, so below the plateau
    assert row["ci_low"] > 0 and row["p_adjusted"] >= row["p"] and row["verdict"] == "better"
    assert row["adj_low"] < row["ci_low"] and row["adj_low"] > 0  # wider, still excluding 0
    fam = gap_table[gap_table["axis"] == "kl_sft_mean"]
    assert fam["p_adjusted"].notna().all() and gap_table.loc[gap_table["axis"] != "kl_sft_mean", "p_adjusted"].isna().all()
    assert ((fam["adj_low"] > 0) | (fam["adj_high"] < 0)).tolist() == (fam["p_adjusted"] < 0.05).tolist()
    assert (fam["verdict"] != "").all() and np.isfinite(row["seeds_needed"])


def test_no_injected_gap_is_inconclusive(tmp_path):
    root = write_study(tmp_path / "null", gaps={c: 0.0 for c in ("offline", "trdpo", "oaif", "online")})
    study = load_study([root])
    table = compute_gap_table(study.evals, study.cells)
    row = _row(table, "kl_sft_mean", "total")
    assert row["ci_low"] <= 0 <= row["ci_high"] and row["adj_low"] <= 0 <= row["adj_high"]
    assert contrast_verdicts(table)["total"] == "inconclusive"
    summary = " ".join(write_summary(study, table))
    assert "inconclusive, the adjusted interval includes 0" in summary and "seeds per cell would resolve" in summary


def test_decomposition_adds_up_on_every_axis(gap_table):
    for axis, at in (("kl_sft_mean", None), ("kl_sft", 4.0), ("step", None)):
        parts = {k: _row(gap_table, axis, k, at)["estimate"] for k in ("total", "sampling", "refresh", "interaction")}
        assert all(np.isfinite(v) for v in parts.values()), axis
        assert parts["sampling"] + parts["refresh"] + parts["interaction"] == pytest.approx(parts["total"])
    assert _row(gap_table, "kl_sft", "sampling", at=4.0)["estimate"] == pytest.approx(0.15, abs=0.06)
    assert "rl" not in set(gap_table["contrast"])


def test_matched_labels_are_not_tabled_when_they_repeat_matched_steps(gap_study):
    study = load_study([gap_study])
    ev = study.evals.copy()
    # the on-policy cells spend exactly the offline set's 1024 labels by their last step (as in the default study)
    ev.loc[ev["cell"].isin(["oaif", "online"]), "oracle_calls"] *= 1024 / 1600
    line = describe_label_budget(ev, study.cells)
    assert "would repeat the step table" in line and "by construction" in line
    assert "oracle_calls" not in set(compute_gap_table(ev, study.cells)["axis"])


def test_matched_labels_are_tabled_where_they_differ(gap_study, gap_table):
    # on-policy cells label 16 texts a step: they reach the offline set's 1024 labels at step 64, not 100
    assert describe_label_budget(load_study([gap_study]).evals, ["offline", "trdpo", "oaif", "online"]) == ""
    row, step = _row(gap_table, "oracle_calls", "total"), _row(gap_table, "step", "total")
    assert row["at"] == 1024 and step["at"] == 100
    assert np.isfinite(row["estimate"]) and row["estimate"] != step["estimate"]


def test_pooled_beta_runs_and_five_seeds(tmp_path):
    root = write_study(tmp_path / "beta", cells=("offline", "online"), seeds=5, betas=(0.1, 0.3),
                       gaps={"offline": 0.0, "online": GAP})
    study = load_study([root])
    table = compute_gap_table(study.evals, study.cells)
    row = _row(table, "kl_sft_mean", "total")
    assert row["seeds"] == 5 and row["seeds_by_cell"] == "online 5, offline 5"  # 20 runs, 10 units
    assert row["verdict"] == "better"
    assert "online (10 runs: 5 seeds × 2 β values)" in write_summary(study, table)[0]
    assert "online DPO does better on this evidence" in " ".join(write_summary(study, table))


def test_missing_cells_are_not_available_and_rl_row_appears(tmp_path):
    root = write_study(tmp_path / "s", cells=("offline", "online", "rl"), seeds=2)
    study = load_study([root])
    table = compute_gap_table(study.evals, study.cells)
    assert np.isfinite(_row(table, "kl_sft_mean", "total")["estimate"])
    assert _row(table, "kl_sft_mean", "sampling")["note"] == "not available: no oaif runs"
    assert "not available" in _row(table, "step", "interaction")["note"]
    assert np.isfinite(_row(table, "kl_sft_mean", "rl")["estimate"])
    fam = table[(table["axis"] == "kl_sft_mean") & table["p"].notna()]
    assert set(fam["contrast"]) == {"total", "rl"}  # Holm's family: the mean gaps that exist


def test_in_progress_run_is_reported(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2)
    write_run(root / "9", "online", 5, GAP, last_step=60, status="running")
    study = load_study([root])
    assert any("status running, last step 60 of 100" in n for n in study.notes)
    row = _row(compute_gap_table(study.evals, study.cells), "step", "total")
    assert row["at"] == 50 and row["seeds_by_cell"] == "online 3, offline 2"  # its last evaluation was at step 50


def test_run_that_has_logged_nothing_yet_is_reported(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2)
    fresh = root / "9"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text("")  # the trainer creates the file before the first row
    (fresh / "run.json").write_text(json.dumps({"cell": "online", "seed": 9, "status": "running", "steps": 100}))
    study = load_study([root])
    assert "run sweep/9 has status running, nothing logged yet (100 steps planned)" in study.notes
    assert missing_metrics(study) == ["no evaluation rows yet in run sweep/9"]
    assert np.isfinite(_row(compute_gap_table(study.evals, study.cells), "kl_sft_mean", "total")["estimate"])


def test_missing_divergence_columns_are_named(tmp_path):
    root = tmp_path / "sweep"
    write_run(root / "0", "offline", 0, drop=("eval/mmd2",))
    write_run(root / "1", "offline", 1)
    study = load_study([root])
    notes = missing_metrics(study)
    assert "eval/mmd2 is missing in run sweep/0" in notes
    assert not any("eval/ess" in n for n in notes)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    root = write_study(tmp_path_factory.mktemp("rep") / "sweep", cells=("offline", "trdpo", "oaif", "online"),
                       betas=(0.1, 0.3))
    write_run(root / "99", "online", 3, GAP, last_step=60, status="running", drop=("eval/c2st_acc",))
    out = tmp_path_factory.mktemp("out")
    assert main_report([str(root), f"out={out}", "name=study", "n_boot=500"]) == 0  # old option still parses
    return out / "study"


def test_report_files_written(report_dir):
    for name in ("report.html", "report.md"):
        assert (report_dir / name).stat().st_size > 0
    stems = ["kl_curves", "frontier", "gap_curve", "depth_curves", "state_divergence", "dpo_diagnostics"]
    for stem in stems:
        assert (report_dir / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (report_dir / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
        assert f"]({stem}.png)" in (report_dir / "report.md").read_text()


def test_report_writes_gap_and_frontier_csv(report_dir):
    gap = pd.read_csv(report_dir / "gap.csv")
    assert list(gap.columns) == CSV_COLUMNS
    # the running online run has spent 960 labels, fewer than the offline set's 1024: no common budget, and rows
    # without an estimate are left out of gap.csv (the report says why)
    assert set(gap["axis"]) == {"kl_sft", "kl_sft_mean", "step"}
    assert gap["estimate"].notna().all()
    mean = gap[gap["axis"] == "kl_sft_mean"]
    assert len(mean) == 4 and mean["at"].isna().all() and mean["p_adjusted"].notna().all()
    assert (gap["seeds"] == 3).all()  # the fewest seeds of any cell in the contrast (online has a 4th, running)
    frontier = pd.read_csv(report_dir / "frontier.csv")
    assert list(frontier.columns) == ["cell", "kl", "reward", "gold_reward", "band_low", "band_high", "optimum"]
    assert set(frontier["cell"]) == {"offline", "trdpo", "oaif", "online"}
    assert (frontier["band_low"] <= frontier["reward"]).all() and frontier["gold_reward"].isna().all()
    md = (report_dir / "report.md").read_text()
    assert "not available: no common oracle_calls range" in md and "would repeat the step table" not in md
    assert "Holm" in md and "Mean gap over the common KL" in md


def test_frontier_csv_takes_the_optimum_from_report_optimum(gap_study, tmp_path, monkeypatch):
    from shiftlab.report import optimum
    from shiftlab.report.build import build_frontier_table

    frontier = pd.DataFrame({"sft": "m", "kl": [0.0, 2.0, 4.0, 8.0], "reward": [0.1, 0.5, 0.7, 0.9],
                             "reliable": [True, True, True, False]})
    monkeypatch.setattr(optimum, "load_optimum", lambda study: frontier)
    table = build_frontier_table(load_study([gap_study]), 10)
    at = table.set_index(["cell", "kl"])["optimum"]
    assert at[("offline", 1.0)] == pytest.approx(0.3)
    assert np.isnan(table.loc[table["kl"] > 4.0, "optimum"]).all()  # not beyond the KL it is reliable to


def test_report_html_is_self_contained_and_says_what_is_missing(report_dir):
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 7
    assert "has status running, last step 60 of 100" in page
    assert "eval/c2st_acc is missing in run sweep/99" in page
    assert "off-policy gap" in page and "Summary" in page


def test_plot_script_entry_writes_kl_figure(gap_study, tmp_path):
    assert main_plot([str(gap_study / "0"), str(gap_study / "9"), f"out={tmp_path}", "name=kl"]) == 0
    assert (tmp_path / "kl" / "kl_curves.png").is_file() and (tmp_path / "kl" / "kl_curves.svg").is_file()


def test_options_are_typed_and_checked(tmp_path):
    paths, cfg = parse_args(["d", "kl_grid=7", "allow_mixed=true", "name=x"], ReportConfig)
    assert paths == ["d"] and cfg.kl_grid == 7 and cfg.allow_mixed is True and cfg.name == "x"
    with pytest.raises(ReportError, match="unknown option 'kl_grids'"):
        parse_args(["d", "kl_grids=7"], ReportConfig)
    with pytest.raises(ReportError, match="option kl_grid expects int"):
        parse_args(["d", "kl_grid=seven"], ReportConfig)
    with pytest.raises(ReportError, match="option allow_mixed expects true or false"):
        parse_args(["d", "allow_mixed=maybe"], ReportConfig)
    odd = tmp_path / "mode=offline"  # Hydra override-named run dirs stay paths
    odd.mkdir()
    assert parse_args([str(odd)], ReportConfig)[0] == [str(odd)]


def test_script_prints_error_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), str(tmp_path / "nope"), "n_boot=500"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr and "Traceback" not in proc.stderr


def test_report_never_imports_training_code():
    code = "import sys, shiftlab.report.build, shiftlab.report.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    mods = json.loads(out.stdout)
    # shiftlab.cell: the cell names and one pure function; shiftlab.config: the schema and the config flattener
    allowed = ("shiftlab.report", "shiftlab.metrics", "shiftlab.cell", "shiftlab.config", "shiftlab.launch")
    assert not [m for m in mods if m.startswith("shiftlab.") and not m.startswith(allowed)]
    assert "torch" not in mods, "the report stage reads run directories; it needs no torch"


def test_the_runs_section_says_how_long_the_study_took(report_dir):
    md = (report_dir / "report.md").read_text()
    runs = pd.read_csv(report_dir / "runs.csv")
    total = runs["wall_time_s"].sum() / 3600
    assert f"Run time: {total:.2f} h in all over {runs['wall_time_s'].notna().sum()} runs" in md
    assert "offline " in md.split("Run time:")[1].split("\n")[0]


def test_the_wall_clock_span_runs_from_the_first_start_to_the_last_finish():
    from shiftlab.report.tables import describe_span

    runs = pd.DataFrame({"started_at": ["2026-12-03T06:25:07+00:00", "2026-12-03T06:28:01+00:00"],
                         "finished_at": ["2026-12-03T06:28:00+00:00", "2026-12-03T07:47:19+00:00"]})
    assert describe_span(runs).startswith(" Wall clock: 82 min from the first run's start (2026-12-03 06:25)")
    assert "(2026-12-03 07:47 UTC)" in describe_span(runs)
    assert describe_span(runs.assign(finished_at=[runs["finished_at"][0], None])) == ""  # one still going
    assert describe_span(runs.drop(columns="started_at")) == ""  # runs older than the fields


def test_the_gold_judge_gets_the_same_contrasts_and_a_sentence(gap_study):
    from shiftlab.report.build import gold_gap_table

    study = load_study([gap_study])
    assert gold_gap_table(study).empty  # no run logs a gold reward
    study.evals["eval/gold_reward"] = study.evals["eval/reward"] - 0.5  # a judge one constant below the oracle
    gold, proxy = gold_gap_table(study), compute_gap_table(study.evals, study.cells)
    g, p = _row(gold, "kl_sft_mean", "total"), _row(proxy, "kl_sft_mean", "total")
    assert g["estimate"] == pytest.approx(p["estimate"]) and g["verdict"] == p["verdict"] == "better"
    lines = write_summary(study, proxy, gold)
    assert any(s.startswith("Scored by the gold judge") and "online DPO does better" in s for s in lines)
