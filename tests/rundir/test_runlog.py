"""run.json's wall-clock fields (shiftlab/rundir/runlog.py): when a run started and finished, kept across a resume."""

from __future__ import annotations

import datetime as dt
import json

from shiftlab.rundir.runlog import RunLog


def _meta(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_run_json_records_its_start_and_finish_in_utc(tmp_path):
    log = RunLog(tmp_path, {"cell": "offline"})
    started = dt.datetime.fromisoformat(_meta(tmp_path)["started_at"])
    assert started.tzinfo is not None and started.utcoffset() == dt.timedelta(0)
    assert "finished_at" not in _meta(tmp_path)
    log.finish("finished", 3)
    meta = _meta(tmp_path)
    assert dt.datetime.fromisoformat(meta["finished_at"]) >= started and meta["status"] == "finished"


def test_a_resumed_run_keeps_the_start_it_first_recorded(tmp_path):
    first = "2026-01-02T03:04:05+00:00"
    RunLog(tmp_path, {"cell": "offline", "started_at": first}).finish("finished", 1)
    assert _meta(tmp_path)["started_at"] == first
