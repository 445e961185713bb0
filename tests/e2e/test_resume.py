"""Reliability of whole runs: kill and resume, what a resume refuses, and the non-finite guards.

The resume tests compare a run that was stopped (SIGKILL in a subprocess, an exception in-process, a kill during
a checkpoint write) and then resumed with the same run uninterrupted: every log row must match exactly, except
wall-clock columns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_compare import assert_same_run, mark_failed
from tiny import TINY_OVERRIDES, compose_config

import shiftlab.rundir.checkpoint as ckpt
import shiftlab.training.loop as trainer
import shiftlab.training.objectives as objectives
from shiftlab.cli import user_errors
from shiftlab.experiment.lifecycle import run
from shiftlab.report.build import build_report
from shiftlab.report.load import load_study
from shiftlab.report.options import ReportConfig
from shiftlab.rundir.checkpoint import CheckpointError, list_checkpoints, read_checkpoint, read_latest
from shiftlab.rundir.runlog import RunDirError, hold_run_dir
from shiftlab.training.loop import NonFiniteError

ROOT = Path(__file__).resolve().parents[2]
LOGS = ("metrics", "events", "curves", "samples", "sft")
# Offline pairs with a soft-refreshed π_ref, and on-policy pairs with a hard-refreshed one: between them every
# stateful piece (epoch order, sampling rounds, behaviour snapshot, owned π_ref). Checkpoints every 2 steps.
FAST = ["sft.steps=20", "train.max_new_tokens=10"]
CONFIGS = {
    "offline_soft": ["mode=trdpo", "reference=soft", "train.steps=6", "checkpoint.every=2", *FAST],
    "online": ["mode=online", "train.steps=6", "checkpoint.every=2", *FAST],
    # LoRA: π_ref is π_θ's base (moved by merges, saved inside π_θ), the behaviour snapshot a peft model
    "online_lora": ["mode=online", "model.lora.r=4", "train.steps=4", "checkpoint.every=2", *FAST],
    # both speed-ups of a fixed offline set: a table of log π_ref rebuilt (not saved) on resume, packed forwards
    "offline_fast": ["mode=offline", "reference.precompute_logps=true", "train.packing=true", "train.steps=6",
                     "checkpoint.every=2", *FAST],
}
NO_EVAL = "train.eval_every=100"  # the guard tests stop before evaluations could tell them anything


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    """The reference run of each configuration, run once per module and only when a test asks for it."""
    root, done = tmp_path_factory.mktemp("uninterrupted"), {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = run(compose_config([f"cache_dir={cache}", *CONFIGS[name]]), root / name)
        return done[name]

    return get


def _config(cache, name: str, *extra: str):
    return compose_config([f"cache_dir={cache}", *CONFIGS[name], *extra])








# --- kill and resume ------------------------------------------------------------------------------------------


def _command(tmp_path: Path, cache: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts/train.py"), *TINY_OVERRIDES, f"cache_dir={cache}",
            f"hydra.run.dir={run_dir}", *overrides]


def _wait_past_a_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 300) -> int:
    """Poll until a checkpoint at step ≥ 2 exists and the run log holds rows written after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        saved = list_checkpoints(run_dir)
        if saved and saved[-1][0] >= 2:
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            steps = [json.loads(line)["step"] for line in lines[:-1]]  # the last line may be half written
            if steps and max(steps) >= saved[-1][0]:
                return saved[-1][0]
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_run(tmp_path, cache, uninterrupted):
    expected = uninterrupted("online")  # also fills the cache, so the subprocesses skip π_sft training
    run_dir = tmp_path / "killed"
    with open(tmp_path / "first.log", "w") as err:
        proc = subprocess.Popen(_command(tmp_path, cache, run_dir, *CONFIGS["online"]), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            _wait_past_a_checkpoint(proc, run_dir)
            os.kill(proc.pid, signal.SIGKILL)
        finally:  # never leave a training process behind, whatever failed above
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # nobody could say otherwise
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 0.6')  # as if the kill had landed mid-write

    # the report reads the killed run: the partial line is skipped and said so
    study = load_study([run_dir])
    assert any("unreadable" in n for n in study.notes) and any("status running" in n for n in study.notes)
    html, _ = build_report([str(run_dir)], ReportConfig(out=str(tmp_path / "reports"), n_boot=100))
    assert html.is_file()

    out = subprocess.run(_command(tmp_path, cache, run_dir, *CONFIGS["online"], "resume=true"), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    resumed_at = json.loads((run_dir / "run.json").read_text())["resumed_at"]
    assert f"resuming {run_dir} at step {resumed_at[0]}" in out.stderr and resumed_at[0] >= 2
    assert_same_run(expected, run_dir)


class _Stop(BaseException):
    """Stands in for a kill in-process: not an Exception, so nothing on the way up may swallow it."""


def _stop_at(monkeypatch, step: int) -> None:
    real = trainer._train_step

    def train_step(*args, **kwargs):
        if args[-1] == step:
            raise _Stop(f"stopped at step {step}")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_step", train_step)


def test_run_stopped_before_its_first_checkpoint_starts_over(tmp_path, cache, uninterrupted, monkeypatch):
    expected = uninterrupted("offline_soft")
    with monkeypatch.context() as patch:
        _stop_at(patch, 1)
        with pytest.raises(_Stop):
            run(_config(cache, "offline_soft"), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    assert list_checkpoints(tmp_path / "run") == []
    started = json.loads((tmp_path / "run" / "run.json").read_text())["started_at"]
    run(_config(cache, "offline_soft", "resume=true"), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["resumed_at"] == [0] and meta["started_at"] == started and meta["finished_at"] >= started
    assert_same_run(expected, tmp_path / "run")


def _stopped_at_3_then_resumed(run_dir: Path, cache, name: str, monkeypatch) -> Path:
    with monkeypatch.context() as patch:
        _stop_at(patch, 3)
        with pytest.raises(_Stop):
            run(_config(cache, name), run_dir)
    run(_config(cache, name, "resume=true"), run_dir)
    assert json.loads((run_dir / "run.json").read_text())["resumed_at"] == [2]
    return run_dir


def test_lora_run_stopped_after_a_checkpoint_resumes_exactly(tmp_path, cache, uninterrupted, monkeypatch):
    pytest.importorskip("peft")
    expected = uninterrupted("online_lora")
    assert_same_run(expected, _stopped_at_3_then_resumed(tmp_path / "run", cache, "online_lora", monkeypatch))


def test_packed_run_on_precomputed_reference_resumes_exactly(tmp_path, cache, uninterrupted, monkeypatch):
    expected = uninterrupted("offline_fast")
    resumed = _stopped_at_3_then_resumed(tmp_path / "run", cache, "offline_fast", monkeypatch)
    assert_same_run(expected, resumed)  # exact, though the resumed process rebuilt the table
    events = [json.loads(line) for line in (resumed / "events.jsonl").read_text().splitlines()]
    precomputed = [e for e in events if e["event"] == "reference_precomputed"]
    assert len(precomputed) == 1 and precomputed[0]["packing"] is True and precomputed[0]["time/precompute"] >= 0


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, cache, uninterrupted, monkeypatch):
    expected = uninterrupted("offline_soft")
    real_save = ckpt.save_file

    def dying_save(tensors, path):
        if "step_000004" in str(path):
            real_save(tensors, path)
            with open(path, "r+b") as f:  # half the file is on disk when the process dies
                f.truncate(os.path.getsize(path) // 2)
            raise _Stop("killed while writing a checkpoint")
        real_save(tensors, path)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "save_file", dying_save)
        with pytest.raises(_Stop):
            run(_config(cache, "offline_soft"), tmp_path / "run")
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_000002", "step_000004.tmp"]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert read_latest(tmp_path / "run")["step"] == 2
    run(_config(cache, "offline_soft", "resume=true"), tmp_path / "run")
    assert_same_run(expected, tmp_path / "run")
    assert sorted(p.name for p in root.iterdir()) == ["step_000004", "step_000006"]  # keep_last=2, no .tmp left


def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, cache, uninterrupted, capsys):
    expected = uninterrupted("offline_soft")
    run_dir = tmp_path / "run"
    shutil.copytree(expected, run_dir)
    mark_failed(run_dir)
    damaged = run_dir / "checkpoints" / "step_000006" / "tensors.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    run(_config(cache, "offline_soft", "resume=true"), run_dir)
    assert "step_000006 is unreadable" in capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["resumed_at"] == [4]
    assert_same_run(expected, run_dir)


def test_finished_run_is_left_alone(tmp_path, cache, uninterrupted, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted("offline_soft"), run_dir)
    before = {name: (run_dir / f"{name}.jsonl").read_bytes() for name in LOGS}
    assert run(_config(cache, "offline_soft", "resume=true"), run_dir) == run_dir
    assert "finished already" in capsys.readouterr().err
    assert before == {name: (run_dir / f"{name}.jsonl").read_bytes() for name in LOGS}


# --- what a resume refuses ------------------------------------------------------------------------------------


def test_resume_with_another_config_names_the_key(tmp_path, cache, uninterrupted):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted("offline_soft"), run_dir)
    mark_failed(run_dir)
    with pytest.raises(CheckpointError, match=r"config key `loss.beta` is 0.2 but the run was started with 0.1"):
        run(_config(cache, "offline_soft", "resume=true", "loss.beta=0.2"), run_dir)


def test_run_log_shorter_than_its_checkpoint_is_refused(tmp_path, cache, uninterrupted):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted("offline_soft"), run_dir)
    mark_failed(run_dir)
    (run_dir / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text()[:10])
    with pytest.raises(RunDirError, match=r"metrics.jsonl holds 10 bytes but held \d+ at the checkpoint"):
        run(_config(cache, "offline_soft", "resume=true"), run_dir)


def test_run_directory_misuse_fails_at_once(tmp_path, cache, uninterrupted):
    existing = uninterrupted("offline_soft")
    with pytest.raises(RunDirError, match="already holds a run; pass resume=true"):
        run(_config(cache, "offline_soft"), existing)
    with pytest.raises(FileNotFoundError, match="holds no run to resume"):
        run(_config(cache, "offline_soft", f"resume={tmp_path / 'nothing'}"), tmp_path / "ignored")
    # resume=true where no run started yet (a relaunched study) starts one: here it fails on its missing data
    with pytest.raises(FileNotFoundError, match="preference file not found"):
        run(_config(cache, "offline_soft", "resume=true", f"task.preferences_path={tmp_path / 'none.jsonl'}"), tmp_path / "new")
    with hold_run_dir(tmp_path / "busy"):
        with pytest.raises(RunDirError, match=r"in use by another process \(pid \d+\)"):
            run(_config(cache, "offline_soft"), tmp_path / "busy")


# --- guards ---------------------------------------------------------------------------------------------------


def test_injected_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, cache, monkeypatch):
    real, calls = objectives.compute_preference_loss, []

    def nan_at_step_3(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # one call per step (grad_accum=1): this is step 3
            out = out._replace(losses=out.losses * float("nan"))
        return out

    monkeypatch.setattr(objectives, "compute_preference_loss", nan_at_step_3)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"^step 3: loss is nan; training stopped \(last good checkpoint kept: .*step_000002\)"):
        run(_config(cache, "offline_soft", NO_EVAL), run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and meta["last_checkpoint"].endswith("step_000002")
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    assert read_checkpoint(run_dir / "checkpoints" / "step_000002")["log"]["counters"]["pairs_seen"] == 8
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "non_finite" and events[-1]["step"] == 3


def test_non_finite_weights_are_never_checkpointed(tmp_path, cache, monkeypatch):
    real = trainer._train_step

    def poison_after_step_3(parts, optimization, log, step):
        real(parts, optimization, log, step)
        if step == 3:  # the next loss would be NaN, but first comes the checkpoint of step 4
            with torch.no_grad():
                next(parts.policy.parameters()).view(-1)[0] = float("inf")

    monkeypatch.setattr(trainer, "_train_step", poison_after_step_3)
    with pytest.raises(NonFiniteError, match=r"^step 4: parameter \S+ holds non-finite values.*step_000002"):
        run(_config(cache, "offline_soft", NO_EVAL), tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]


def test_exploding_run_exits_with_status_2_naming_step_and_metric(tmp_path, cache, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info, user_errors():  # what scripts/train.py wraps around run()
        run(_config(cache, "offline_soft", "optim.lr=1e30", "checkpoint.every=1", NO_EVAL), run_dir)
    assert exit_info.value.code == 2
    assert "[shiftlab] error: step 1: loss is nan; training stopped (last good checkpoint kept:" in capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert read_latest(run_dir)["step"] == 1
