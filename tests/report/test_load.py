"""Reading run directories (shiftlab/report/load.py): partial logs, what the loader refuses and how it says so, the
cell each run recorded, and how a report names the directories it read."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from synthetic_runs import write_run, write_study

from shiftlab.report import ReportError, load_study
from shiftlab.report.cli import main_report

GAP = 0.2


def test_truncated_last_line_loads(tmp_path):
    run = write_run(tmp_path / "r0", "offline", 0, truncate=True)
    assert not (run / "metrics.jsonl").read_text().endswith("\n")
    study = load_study([run])
    assert study.train["step"].max() == 99 and study.evals["step"].max() == 100
    assert any("unreadable" in n for n in study.notes)


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


def test_runs_csv_names_run_directories_relative_to_the_working_directory(tmp_path, monkeypatch):
    sweep = write_study(tmp_path / "work" / "sweep", cells=("offline", "online"), seeds=2)
    monkeypatch.chdir(sweep.parent)
    assert main_report([sweep.name, f"out={tmp_path / 'out'}", "name=rep"]) == 0
    paths = pd.read_csv(tmp_path / "out" / "rep" / "runs.csv")["path"]
    assert all(not Path(p).is_absolute() and (sweep.parent / p / "run.json").is_file() for p in paths)
