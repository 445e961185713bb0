"""The study bench (shiftlab.bench.study): its commands, its count of finished runs and its figures. The sweeps it
times are the launcher tests' own commands (tests/e2e/test_launchers.py), so no sweep runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftlab.bench.study import (
    DEFAULT_STUDY,
    StudyRun,
    count_finished,
    parallel_launcher,
    study_command,
    study_section,
)


def test_the_parallel_sweep_is_the_serial_one_under_the_joblib_launcher(tmp_path):
    serial = study_command(Path("/repo"), DEFAULT_STUDY, tmp_path / "s", tmp_path / "c", [])
    parallel = study_command(Path("/repo"), DEFAULT_STUDY, tmp_path / "s", tmp_path / "c", parallel_launcher(2))
    assert parallel == serial + ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]
    assert serial[1:3] == ["/repo/scripts/train.py", "-m"] and "mode=offline,trdpo,oaif,online,rl" in serial


def test_only_finished_runs_count(tmp_path):
    for name, status in (("0_offline_seed0", "finished"), ("1_online_seed0", "failed"), ("2_rl_seed0", "finished")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"status": status}))
    (tmp_path / "3_oaif_seed0").mkdir()  # never started
    assert count_finished(tmp_path) == 2


def test_the_section_reports_runs_per_hour_and_the_speed_up():
    serial, parallel = [StudyRun(1800.0, 15)], [StudyRun(900.0, 15)]
    figures = {(f.name, f.metric): f for f in study_section(serial, parallel, 2, "full").figures}
    assert figures[("study · serial", "runs/hour")].stat.median == pytest.approx(30.0)
    assert figures[("study · hydra/launcher=parallel n_jobs=2", "wall time")].stat.median == pytest.approx(15.0)
    speedup = figures[("study · parallel ÷ serial", "runs/hour")]
    assert speedup.stat.median == pytest.approx(2.0) and speedup.met is True
    assert figures[("study · hydra/launcher=parallel n_jobs=2", "wall time")].met is False  # 15 min > 10


def test_the_wall_target_is_judged_on_the_full_study_only():
    serial, parallel = [StudyRun(600.0, 4)], [StudyRun(400.0, 4)]
    figures = {(f.name, f.metric): f for f in study_section(serial, parallel, 2, "slice").figures}
    assert figures[("study · hydra/launcher=parallel n_jobs=2", "wall time")].target is None
    assert figures[("study · parallel ÷ serial", "runs/hour")].met is True  # 1.5× exactly meets ≥ 1.5
