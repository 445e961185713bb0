"""The command line as a user meets it: bad input gives one clear message and a non-zero exit, nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TINY_OVERRIDES, compose_config

from shiftlab.data.pairs import PreferenceDataError
from shiftlab.experiment.lifecycle import run

ROOT = Path(__file__).resolve().parents[2]


def _train(tmp_path, *overrides):
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), *TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}",
           f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_out_of_range_value_names_the_key_without_a_traceback(tmp_path):
    out = _train(tmp_path, "loss.beta=-1")
    assert out.returncode == 2
    assert "config key `loss.beta` must be > 0" in out.stderr
    assert "Traceback" not in out.stderr


def test_misspelt_key_fails_at_start_up(tmp_path):
    out = _train(tmp_path, "train.stepz=3")
    assert out.returncode != 0
    assert "stepz" in out.stderr


def test_a_smoke_run_is_recorded_and_filed_under_the_cell_that_ran(tmp_path):
    """`mode=offline` with on-policy pairs is oaif: run.json and Hydra's run directory say so (shiftlab/cell.py)."""
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "debug=tiny", "mode=offline", "source=onpolicy",
           f"cache_dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert run_dir.name == "oaif"
    (run_dir,) = run_dir.iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert (meta["cell"], meta["source"], meta["reference"], meta["status"]) == ("oaif", "onpolicy", "fixed", "finished")


def test_a_renamed_key_fails_naming_the_new_key_without_a_traceback(tmp_path):
    out = _train(tmp_path, "loss.name=ipo")
    assert out.returncode == 2
    assert "config key `loss.name` was renamed `loss.kind`: write loss.kind=ipo" in out.stderr
    assert "Traceback" not in out.stderr


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"prompt": "the movie", "chosen": " is great .", "rejected": " is awful ."}


def test_bad_user_preference_file_names_file_and_line(tmp_path):
    prefs = _write(tmp_path / "prefs.jsonl", [GOOD, GOOD, {"prompt": "the film", "chosen": 3, "rejected": " bad ."}])
    out = _train(tmp_path, f"task.preferences_path={prefs}")
    assert out.returncode == 2
    assert "prefs.jsonl:3" in out.stderr and "chosen" in out.stderr
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "failed"  # the run directory still says what happened


def test_user_preference_file_with_skips_trains_and_counts_them(tmp_path):
    rows = [GOOD | {"prompt": f"review {i} of the movie"} for i in range(12)]
    rows += [{"prompt": "x", "chosen": "same", "rejected": "same"}, "{not json", {"prompt": "y", "chosen": " "}]
    prefs = _write(tmp_path / "prefs.jsonl", rows)
    cfg = compose_config([f"cache_dir={tmp_path / 'cache'}", f"task.preferences_path={prefs}", "task.on_invalid=skip"])
    run_dir = run(cfg, tmp_path / "run")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    info = next(e for e in events if e["event"] == "preference_set")
    assert info["loaded"] == 12
    assert info["skipped"] == {"identical_responses": 1, "invalid_json": 1, "missing_field": 1}
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_eval = [m for m in metrics if "eval/reward" in m][-1]
    assert "eval/ess" not in last_eval or last_eval["eval/ess"] is None  # β unknown for a user file
    assert last_eval["eval/mmd2"] is not None  # behaviour-agnostic divergences still run


def test_bad_preference_file_raises_from_the_library(tmp_path):
    prefs = _write(tmp_path / "prefs.jsonl", [GOOD, {"prompt": "p", "chosen": " a", "rejected": " a"}])
    cfg = compose_config([f"cache_dir={tmp_path / 'cache'}", f"task.preferences_path={prefs}"])
    with pytest.raises(PreferenceDataError, match=r"prefs\.jsonl:2"):
        run(cfg, tmp_path / "run")
