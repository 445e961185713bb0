"""Trackers (shiftlab/rundir/trackers.py): a tiny run with tracker=tensorboard or tracker=wandb mirrors every metric
row of its run log with its step and value, the config and the samples; a tracker changes no number the run
computes; a resumed run keeps mirroring; a missing package is an error naming tracker=... and the pip extra.

The event files and the W&B offline run are read back from disk, not from the tracker's own state."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from run_compare import assert_same_run, mark_failed
from tiny import compose_config

from shiftlab.config import TrackerConfig, TrackerKind
from shiftlab.experiment.lifecycle import run
from shiftlab.rundir.checkpoint import list_checkpoints
from shiftlab.rundir.trackers import build_tracker, samples_markdown, scalars_of
from shiftlab.validation import ConfigError

# checkpoints at steps 2 and 4: dropping the last one makes a resume start mid-run, at step 2
RUN = ["train.steps=4", "checkpoint.every=2", "eval.divergences=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run per tracker, sharing a cache; made lazily, once per module."""
    root, done = tmp_path_factory.mktemp("trackers"), {}

    def get(kind: str) -> Path:
        if kind not in done:
            cfg = compose_config([f"cache_dir={root / 'cache'}", *RUN, f"tracker={kind}"])
            done[kind] = run(cfg, root / kind)
        return done[kind]

    return get


def _rows(run_dir: Path, name: str = "metrics") -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"{name}.jsonl").read_text().splitlines()]


def _expected_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every numeric column of metrics.jsonl, in the order written, as TensorBoard stores it
    (a legacy scalar summary holds a float32)."""
    series = defaultdict(list)
    for row in _rows(run_dir):
        for name, value in scalars_of(row).items():
            series[name].append((row["step"], float(np.float32(value))))
    return dict(series)


def _event_accumulator(run_dir: Path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed: pip install 'shiftlab[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _tensorboard_series(acc) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _text(acc, tag: str) -> dict[int, str]:
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(f"{tag}/text_summary")}


def test_tensorboard_mirrors_every_metric_row_with_its_step_and_value(runs):
    run_dir = runs("tensorboard")
    expected = _expected_series(run_dir)
    assert {"loss", "eval/reward", "eval/kl_sft", "pairs_seen"} <= set(expected)
    assert _tensorboard_series(_event_accumulator(run_dir)) == expected


def test_tensorboard_holds_the_config_and_the_samples(runs):
    run_dir = runs("tensorboard")
    acc = _event_accumulator(run_dir)
    config = json.loads(_text(acc, "config")[0].replace("\n    ", "\n"))
    assert config["tracker"]["kind"] == "tensorboard" and config["train"]["steps"] == 4
    hparams = acc.PluginTagToContent("hparams")
    assert b"loss.beta" in hparams["_hparams_/session_start_info"]
    samples, texts = _rows(run_dir, "samples"), _text(acc, "samples")
    assert set(texts) == {row["step"] for row in samples} == {0, 2, 4}
    for row in samples:  # each sample's prompt and response, in a row of its step's table
        assert samples_markdown([row]).splitlines()[-1] in texts[row["step"]].splitlines()


def test_a_tracker_changes_no_number_and_none_writes_nothing_extra(runs):
    plain, mirrored = runs("none"), runs("tensorboard")
    assert_same_run(plain, mirrored)
    assert not (plain / "tensorboard").exists() and not (plain / "wandb").exists()
    assert "tracker_run_id" not in json.loads((plain / "run.json").read_text())


def _resume_mid_run(run_dir: Path, kind: str) -> Path:
    """A copy of the finished run, cut back to its checkpoint at step 2 and resumed from it."""
    resumed = run_dir.parent / f"{kind}_resumed"
    shutil.copytree(run_dir, resumed)
    shutil.rmtree(list_checkpoints(resumed)[-1][1])
    mark_failed(resumed)
    cfg = compose_config([f"cache_dir={run_dir.parent / 'cache'}", *RUN, f"tracker={kind}", f"resume={resumed}"])
    return run(cfg, resumed)


def test_a_resumed_run_keeps_mirroring_and_hides_the_rows_it_dropped(runs):
    resumed = _resume_mid_run(runs("tensorboard"), "tensorboard")
    assert json.loads((resumed / "run.json").read_text())["resumed_at"] == [2]
    assert len(list((resumed / "tensorboard").glob("events.out.tfevents.*"))) == 2  # appended, not replaced
    # the rows after step 2 are in both event files; purge_step hides the first file's, as the run log dropped them
    assert _tensorboard_series(_event_accumulator(resumed)) == _expected_series(resumed)


@pytest.mark.parametrize("kind,module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_package_names_the_tracker_and_the_extra(tmp_path, monkeypatch, kind, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ConfigError, match=rf"tracker={kind} needs the `{kind}` package.*pip install 'shiftlab\[{kind}\]'"):
        build_tracker(TrackerConfig(kind=TrackerKind(kind)), tmp_path, run_id="x", name="x", resumed_at=None)


def _wandb_records(path: Path):
    """The records of a W&B run file (.wandb): LevelDB's log format (32 KiB blocks; records of a 7-byte header
    crc32 · length · type, split across blocks as FIRST / MIDDLE / LAST) after W&B's 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, part = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    while pos + 7 <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero padding
            pos += room
            continue
        part, pos = part + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def _wandb_history(run_file: Path) -> dict[int, dict]:
    history = {}
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = row
    return history


def _expected_wandb_history(run_dir: Path) -> dict[int, dict]:
    """W&B merges the rows of one step (an evaluation, then the step's training row): the later value wins."""
    merged = defaultdict(dict)
    for row in _rows(run_dir):
        merged[row["step"]].update(scalars_of(row))
    return dict(merged)


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """W&B offline, its caches and logs in a temporary directory instead of the home directory."""
    pytest.importorskip("wandb", reason="wandb is not installed: pip install 'shiftlab[wandb]' to test tracker=wandb")
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_wandb_offline_mirrors_every_row_the_config_and_samples_and_resumes(runs, wandb_home):
    run_dir = runs("wandb")
    run_id = json.loads((run_dir / "run.json").read_text())["tracker_run_id"]
    (first,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history = _wandb_history(first)
    expected = _expected_wandb_history(run_dir)
    assert sorted(history) == sorted(expected) == [0, 1, 2, 3, 4]
    for step, row in expected.items():
        assert {k: history[step][k] for k in row} == row, f"step {step}"
    assert {step for step, row in history.items() if "samples/_type" in row} == {0, 2, 4}
    config = {item.key: json.loads(item.value_json) for r in _wandb_records(first)
              if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert config["loss"]["beta"] == 0.1 and config["tracker"]["kind"] == "wandb"
    assert_same_run(runs("none"), run_dir)

    resumed = _resume_mid_run(run_dir, "wandb")
    assert json.loads((resumed / "run.json").read_text())["tracker_run_id"] == run_id  # the same W&B run continues
    runs_written = sorted((resumed / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(runs_written) == 2
    again = _wandb_history(runs_written[-1])
    assert sorted(again) == [2, 3, 4] and again[4]["eval/reward"] == _expected_wandb_history(resumed)[4]["eval/reward"]
