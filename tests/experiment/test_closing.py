"""What a finished run says (shiftlab/experiment/closing.py): the closing summary from a metrics row, and the
report command a multirun ends with (the Hydra callback, in a real 2-run sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shiftlab.experiment.closing import (
    format_duration,
    format_run_summary,
    format_sweep_summary,
    last_eval_row,
    report_command,
    sweep_statuses,
)

ROOT = Path(__file__).resolve().parents[2]
META = {"cell": "online", "seed": 3, "status": "finished", "steps": 200, "steps_done": 200, "wall_time_s": 754.0}
ROW = {"step": 200, "eval/reward": 0.61234, "eval/reward_se": 0.0311, "eval/gold_reward": 0.25, "eval/gold_reward_se": 0.02,
       "eval/kl_sft": 12.5, "eval/kl_sft_se": 0.8, "eval/kl_ref": 1.75, "eval/kl_ref_se": 0.1, "eval/state_kl": 3.0,
       "eval/state_kl_se": None}


def _line(text: str, label: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(label)]
    return line


def test_the_summary_gives_each_finding_with_its_standard_error_and_unit():
    text = format_run_summary(ROW, META, Path("/runs/a b"))
    assert text.splitlines()[0] == "[shiftlab] online seed 3: finished, 200 steps in 12.6 min"
    assert "step 200" in text
    assert _line(text, "eval reward (proxy)").split(None, 3)[-1] == "0.6123 ± 0.0311"
    assert _line(text, "eval reward (gold)").endswith("0.25 ± 0.02")
    assert _line(text, "KL(π_θ‖π_sft)").endswith("12.5 ± 0.8 nats")
    assert _line(text, "KL(π_θ‖π_ref)").endswith("1.75 ± 0.1 nats")
    assert "3 nats" in _line(text, "state shift") and "±" not in _line(text, "state shift")  # no s.e. logged
    assert _line(text, "run directory").endswith("/runs/a b")
    assert _line(text, "report").endswith("python scripts/report.py '/runs/a b'")  # pastes into a shell as is


def test_an_offline_run_says_why_its_state_shift_repeats_its_kl_to_sft():
    offline = format_run_summary(ROW | {"eval/state_kl": 12.5}, META | {"source": "offline"}, "r")
    assert _line(offline, "state shift").endswith("; μ = π_sft here, so it equals KL(π_θ‖π_sft)")
    assert "μ = π_sft" not in format_run_summary(ROW, META | {"source": "onpolicy"}, "r")


def test_columns_a_run_did_not_log_are_left_out_and_null_ones_say_so():
    row = {"step": 4, "eval/reward": None, "eval/reward_se": None, "eval/kl_sft": 0.5, "eval/kl_ref": 0.5}
    text = format_run_summary(row, META, "r")
    assert "gold" not in text and "state shift" not in text
    assert _line(text, "eval reward (proxy)").endswith("n/a")
    assert "(no evaluation row" in format_run_summary(None, META, "r")


def test_durations_read_in_a_sensible_unit():
    assert [format_duration(s) for s in (2.26, 119.0, 754.0, 9000.0)] == ["2.3 s", "119.0 s", "12.6 min", "2.5 h"]


def test_the_last_evaluation_row_is_found_past_training_rows_and_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "eval/kl_sft": 0.0, "eval/reward": 0.1}, {"step": 0, "loss": 0.7},
            {"step": 2, "eval/kl_sft": 0.3}, {"step": 2, "loss": 0.6}]  # no oracle at step 2: still an eval row
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 4, "eval/rew')  # a killed run's last line
    assert last_eval_row(path) == {"step": 2, "eval/kl_sft": 0.3}
    assert last_eval_row(tmp_path / "absent.jsonl") is None


def test_the_sweep_summary_counts_how_runs_ended(tmp_path):
    for name, status in (("0_a", "finished"), ("1_b", "failed"), ("2_c", "finished")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"status": status}))
    (tmp_path / "3_d").mkdir()
    (tmp_path / "3_d" / "run.json").write_text("{not json")
    statuses = sweep_statuses(tmp_path)
    assert statuses == ["finished", "failed", "finished", "unreadable"]
    text = format_sweep_summary(tmp_path, statuses)
    assert "2 finished, 1 failed, 1 unreadable" in text and text.endswith(report_command(tmp_path))


@pytest.mark.slow
def test_a_multirun_ends_with_the_report_command_for_its_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "-m", "debug=tiny", "seed=0,1", "eval.divergences=false",
           f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    # each run's closing summary, then the sweep's, whose report command is the last line printed
    for run in ("0_offline_seed0", "1_offline_seed1"):
        assert any(line.endswith(report_command(sweep / run)) for line in lines), out.stdout
    assert "[shiftlab] sweep done: 2 finished" in out.stdout
    assert lines[-1].split(None, 1)[1] == report_command(sweep), out.stdout
