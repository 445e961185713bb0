"""Data notes: a run far slower than its cell's others is named, and undefined values are explained."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from synthetic_runs import write_run, write_study

from shiftlab.report import load_study
from shiftlab.report.anomalies import slow_runs, undefined_values


def test_a_run_ten_times_slower_than_its_cell_is_named(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=3)
    meta = json.loads((root / "4" / "run.json").read_text())
    (root / "4" / "run.json").write_text(json.dumps(meta | {"wall_time_s": 876.0}))
    notes = slow_runs(load_study([root]).runs)
    assert len(notes) == 1 and notes[0].startswith("run sweep/4 took 14.6 min")
    assert "the 3 online runs" in notes[0]


def test_equal_wall_times_raise_no_note_and_two_runs_are_too_few_to_judge():
    runs = pd.DataFrame({"run": ["a", "b", "c"], "cell": "offline", "status": "finished",
                         "wall_time_s": [60.0, 62.0, 61.0]})
    assert slow_runs(runs) == []
    assert slow_runs(runs.iloc[:2].assign(wall_time_s=[60.0, 900.0])) == []


def test_an_undefined_ratio_is_counted_and_explained():
    evals = pd.DataFrame({"eval/kl_shift_ratio": [np.nan, 1.2, np.nan, 0.9]})
    (note,) = undefined_values(evals)
    assert "undefined at 2 of 4 evaluations" in note and "0/0" in note
    assert undefined_values(evals.iloc[[1, 3]]) == []


def test_a_broken_run_json_and_a_garbage_run_log_are_named_with_what_is_wrong(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2)
    (root / "0" / "run.json").write_text('{"cell": "offline", "seed": ')
    bad = write_run(root / "9", "online", 9)
    (bad / "metrics.jsonl").write_text("garbage\nmore garbage\n" + (bad / "metrics.jsonl").read_text())
    notes = load_study([root]).notes
    assert any("sweep/0: " in n and "run.json is not valid JSON (line 1, column" in n for n in notes)
    assert any("sweep/9: skipped 2 unreadable line(s)" in n and "the first at line 1" in n for n in notes)
