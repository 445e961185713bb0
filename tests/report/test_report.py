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
    compute_contrast,
    compute_gap_table,
    load_study,
    parse_args,
)
from shiftlab.report.cli import main_plot, main_report
from shiftlab.report.stats import KL_SFT, interpolate_on_kl, match_values
from shiftlab.report.tables import missing_metrics

REPO = Path(__file__).resolve().parents[2]
N_BOOT = 1000
GAP = 0.2


def _row(table: pd.DataFrame, axis: str, contrast: str) -> pd.Series:
    return table[(table["axis"] == axis) & (table["contrast"] == contrast)].iloc[0]


@pytest.fixture(scope="module")
def gap_study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("gap") / "sweep",
                       gaps={"offline": 0.0, "trdpo": 0.05, "oaif": 0.15, "online": GAP})


@pytest.fixture(scope="module")
def gap_table(gap_study) -> pd.DataFrame:
    study = load_study([gap_study])
    return compute_gap_table(study.evals, study.cells, n_boot=N_BOOT)


def test_gap_at_matched_kl_recovers_injected_gap(gap_table):
    row = _row(gap_table, KL_SFT, "total")
    assert abs(row["estimate"] - GAP) < 0.06
    assert row["ci_low"] <= GAP <= row["ci_high"]
    assert row["welch_low"] <= GAP <= row["welch_high"]
    assert row["ci_low"] > 0 and row["welch_low"] > 0, "a large gap must give an interval excluding 0"
    assert row["p_welch"] < 0.05
    assert row["seeds"] == "online 3, offline 3"


def test_no_injected_gap_gives_interval_including_zero(tmp_path):
    root = write_study(tmp_path / "null", gaps={c: 0.0 for c in ("offline", "trdpo", "oaif", "online")})
    study = load_study([root])
    row = _row(compute_gap_table(study.evals, study.cells, n_boot=N_BOOT), KL_SFT, "total")
    assert row["ci_low"] <= 0 <= row["ci_high"]
    assert row["welch_low"] <= 0 <= row["welch_high"]


def test_decomposition_rows_exist_and_add_up(gap_table):
    for axis in (KL_SFT, "step", "oracle_calls"):
        parts = {k: _row(gap_table, axis, k)["estimate"] for k in ("total", "sampling", "refresh", "interaction")}
        assert all(np.isfinite(v) for v in parts.values()), axis
        assert parts["sampling"] + parts["refresh"] + parts["interaction"] == pytest.approx(parts["total"])
    assert _row(gap_table, KL_SFT, "sampling")["estimate"] == pytest.approx(0.15, abs=0.06)
    assert "rl" not in set(gap_table["contrast"])


def test_missing_cells_are_not_available_and_rl_row_appears(tmp_path):
    root = write_study(tmp_path / "s", cells=("offline", "online", "rl"), seeds=2)
    study = load_study([root])
    table = compute_gap_table(study.evals, study.cells, n_boot=N_BOOT)
    assert np.isfinite(_row(table, KL_SFT, "total")["estimate"])
    assert _row(table, KL_SFT, "sampling")["note"] == "not available: no oaif runs"
    assert "not available" in _row(table, KL_SFT, "interaction")["note"]
    assert np.isfinite(_row(table, KL_SFT, "rl")["estimate"])


def test_interpolation_sorts_non_monotone_kl():
    # KL goes up then back down: the evals are read as frontier points sorted by KL.
    ev = pd.DataFrame({"run": "r", "cell": "offline", "step": [0, 10, 20, 30],
                       KL_SFT: [0.0, 2.0, 4.0, 3.0], "eval/reward": [0.0, 0.2, 0.4, 0.3]})
    out = interpolate_on_kl(ev, np.array([1.0, 3.5, 5.0]))
    assert out["value"].iloc[:2].tolist() == pytest.approx([0.1, 0.35])
    assert np.isnan(out["value"].iloc[2])  # beyond the run's KL range


def test_contrast_with_one_seed_has_no_interval():
    out = compute_contrast({"a": np.array([1.0]), "b": np.array([0.5, 0.7])}, {"a": 1.0, "b": -1.0})
    assert out["estimate"] == pytest.approx(0.4)
    assert np.isnan(out["ci_low"]) and np.isnan(out["p_welch"])


def test_truncated_last_line_loads(tmp_path):
    run = write_run(tmp_path / "r0", "offline", 0, truncate=True)
    assert not (run / "metrics.jsonl").read_text().endswith("\n")
    study = load_study([run])
    assert study.train["step"].max() == 99 and study.evals["step"].max() == 100
    assert any("unreadable" in n for n in study.notes)


def test_in_progress_run_is_reported(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2)
    write_run(root / "9", "online", 5, GAP, last_step=60, status="running")
    study = load_study([root])
    assert any("status running, last step 60 of 100" in n for n in study.notes)
    values, at = match_values(study.evals, ["offline", "online"], "step")
    assert at == 50 and len(values) == 5  # its last evaluation was at step 50


def test_run_that_has_logged_nothing_yet_is_reported(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2)
    fresh = root / "9"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text("")  # the trainer creates the file before the first row
    (fresh / "run.json").write_text(json.dumps({"cell": "online", "seed": 9, "status": "running", "steps": 100}))
    study = load_study([root])
    assert "run sweep/9 has status running, nothing logged yet (100 steps planned)" in study.notes
    assert missing_metrics(study) == ["no evaluation rows yet in run sweep/9"]
    assert np.isfinite(_row(compute_gap_table(study.evals, study.cells, n_boot=N_BOOT), KL_SFT, "total")["estimate"])


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
    root = write_study(tmp_path_factory.mktemp("rep") / "sweep", cells=("offline", "trdpo", "oaif", "online"))
    write_run(root / "12", "online", 3, GAP, last_step=60, status="running", drop=("eval/c2st_acc",))
    out = tmp_path_factory.mktemp("out")
    assert main_report([str(root), f"out={out}", "name=study", f"n_boot={N_BOOT}"]) == 0
    return out / "study"


def test_report_files_written(report_dir):
    for name in ("report.html", "report.md"):
        assert (report_dir / name).stat().st_size > 0
    stems = ["kl_curves", "frontier", "gap_curve", "depth_curves", "state_divergence", "dpo_diagnostics"]
    for stem in stems:
        assert (report_dir / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (report_dir / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
        assert f"]({stem}.png)" in (report_dir / "report.md").read_text()


def test_report_html_is_self_contained_and_says_what_is_missing(report_dir):
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 6
    assert "has status running, last step 60 of 100" in page
    assert "eval/c2st_acc is missing in run sweep/12" in page
    assert "off-policy gap" in page and "Summary" in page


def test_plot_script_entry_writes_kl_figure(gap_study, tmp_path):
    assert main_plot([str(gap_study / "0"), str(gap_study / "9"), f"out={tmp_path}", "name=kl"]) == 0
    assert (tmp_path / "kl" / "kl_curves.png").is_file() and (tmp_path / "kl" / "kl_curves.svg").is_file()


def test_missing_directory_error_names_it(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main_report([str(missing)]) == 2
    assert f"no such directory: {missing}" in capsys.readouterr().err


def test_directory_without_run_log_error_names_it(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert main_report([str(empty)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "metrics.jsonl" in err


def test_incompatible_configs_error_names_both_dirs_and_key(tmp_path, capsys):
    a = write_run(tmp_path / "a", "offline", 0)
    b = write_run(tmp_path / "b", "online", 0, config={"model": {"name": "tiny-gpt", "n_layer": 4, "n_embd": 64}})
    assert main_report([str(a), str(b), f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert str(a) in err and str(b) in err and "model.n_layer" in err
    with pytest.raises(ReportError, match="task.name"):
        load_study([a, write_run(tmp_path / "c", "online", 1, config={"task": {"name": "other", "max_len": 32,
                                                                          "eval_prompts": 64}})])
    assert len(load_study([a, b], allow_mixed=True).runs) == 2


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


def test_the_report_uses_the_cell_the_run_recorded_and_derives_none(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2)
    # the pairs and π_ref it records say offline + fixed; only the recorded cell is believed (shiftlab/cell.py
    # derived it when the run started, from what actually ran)
    relabelled = write_run(root / "8", "offline", 7, GAP)
    meta = json.loads((relabelled / "run.json").read_text())
    (relabelled / "run.json").write_text(json.dumps(meta | {"cell": "oaif"}))
    unlabelled = write_run(root / "9", "offline", 8, GAP)
    (unlabelled / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "cell"}))
    study = load_study([root])
    cells = study.runs.set_index("run")["cell"]
    assert cells["sweep/8"] == "oaif" and cells["sweep/9"] == "unknown"
    assert study.cells == ["offline", "oaif", "online", "unknown"]
    assert "run sweep/9: its run.json records no cell, so it is in no contrast" in study.notes
