"""Checkpoint files and the run log on their own: encoding, atomic writes, keep-last, damage, truncation on resume."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model

import shiftlab.rundir.checkpoint as ckpt
from shiftlab.config import OptimConfig
from shiftlab.report.load import read_jsonl
from shiftlab.rundir.checkpoint import CheckpointError, decode_tree, encode_tree, list_checkpoints, read_latest
from shiftlab.rundir.runlog import RunLog
from shiftlab.training.loop import build_optimizer


def test_resumed_run_log_drops_rows_after_the_checkpoint_and_a_partial_line(tmp_path):
    log = RunLog(tmp_path, {"cell": "offline"})
    log.count(pairs_seen=4)
    log.metrics(0, {"loss": 1.0})
    state = log.state_dict()
    log.metrics(1, {"loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    rows, bad = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and bad == 1  # a reader skips the partial line
    again = RunLog(tmp_path, {"cell": "offline"})
    again.load_state_dict(state)
    again.metrics(1, {"loss": 0.25})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"], r["pairs_seen"]) for r in rows] == [(0, 1.0, 4), (1, 0.25, 4)]


tensors_st = st.integers(0, 3).map(lambda n: torch.arange(n, dtype=torch.float32))
leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | tensors_st
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None, database=None)
@given(tree=trees)
def test_property_any_state_tree_survives_the_json_encoding(tree):
    tensors: dict = {}
    encoded = json.loads(json.dumps(encode_tree({"x": tree}, tensors)))
    assert repr(decode_tree(encoded, tensors)) == repr({"x": tree})  # repr: exact types, and nan == nan


def test_checkpoint_files_round_trip_keep_the_last_k_and_ignore_partial_writes(tmp_path):
    model = tiny_model(0)
    optimizer, scheduler = build_optimizer(model, OptimConfig())
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    scheduler.step()
    rng = ckpt.GlobalRng()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": torch.Generator().manual_seed(3).get_state(), "rng": rng.state_dict()}
    for step in (1, 2, 3):
        ckpt.write_checkpoint(tmp_path, step, state, keep_last=2)
    (tmp_path / "checkpoints" / "step_000009.tmp").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(os.listdir(tmp_path / "checkpoints" / "step_000003")) == ["state.json", "tensors.safetensors"]
    expected = (np.random.rand(), torch.rand(1).item(), random.random())
    back = read_latest(tmp_path)
    other = tiny_model(1)
    other.load_state_dict(back["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    opt2, sched2 = build_optimizer(other, OptimConfig())
    opt2.load_state_dict(back["optimizer"])
    sched2.load_state_dict(back["scheduler"])
    assert repr(opt2.state_dict()) == repr(optimizer.state_dict()) and sched2.get_last_lr() == scheduler.get_last_lr()
    rng.load_state_dict(back["rng"])
    assert (np.random.rand(), torch.rand(1).item(), random.random()) == expected
    generator = torch.Generator()
    generator.set_state(back["generator"])
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=torch.Generator().manual_seed(3)))


def test_unreadable_checkpoints_are_named(tmp_path):
    ckpt.write_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, keep_last=1)
    state_json = tmp_path / "checkpoints" / "step_000001" / "state.json"
    state_json.write_text(state_json.read_text()[:-5])
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*checkpoint .*step_000001 is unreadable"):
        read_latest(tmp_path)
    assert read_latest(tmp_path / "elsewhere") is None
