"""Data parallelism: shards, merged on-policy rounds, summed gradients, and a real 2-process (gloo) launch that must
reproduce a 1-process run with the same global batch."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from run_compare import assert_same_run, mark_failed
from tiny import TINY_OVERRIDES
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.config import LossConfig, OptimConfig, Pairing
from shiftlab.data.batches import Completions, PreferenceBatch
from shiftlab.labels.pairing import LabelledRound, merge_rounds, pair_round
from shiftlab.training.loop import build_optimizer, optimizer_step
from shiftlab.training.objectives import PreferenceObjective
from shiftlab.training.ranks import Processes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 32])
def test_shards_cover_every_unit_once(n, world):
    bounds = [Processes(rank=r, world_size=world).shard(n) for r in range(world)]
    covered = [i for lo, hi in bounds for i in range(lo, hi)]
    assert covered == list(range(n))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("flag,name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_sharded_optimizer_configs_are_refused_with_a_message(monkeypatch, capsys, flag, name):
    from shiftlab.cli import user_errors
    from shiftlab.training.ranks import connect

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(flag, "true")
    with pytest.raises(SystemExit) as exit_info, user_errors():  # what scripts/train.py wraps around run()
        connect()
    assert exit_info.value.code == 2
    assert f"asks for {name}" in capsys.readouterr().err


def _round(rewards: list[list[float]], empty: set[tuple[int, int]] = frozenset()) -> LabelledRound:
    k = len(rewards[0])
    rows = [(p, j) for p in range(len(rewards)) for j in range(k)]
    completions = Completions(
        prompt_ids=[[p] for p, _ in rows],
        response_ids=[[] if (p, j) in empty else [p, j, 1] for p, j in rows],
        ended=[True] * len(rows),
        logps=torch.tensor([-float(p + j) for p, j in rows]),
    )
    return LabelledRound(completions, [f"prompt {p}" for p in range(len(rewards))],
                         [f"{p}/{j}" for p, j in rows], np.asarray(rewards, dtype=float).reshape(-1), k)


def _split(whole: LabelledRound, at: int) -> list[LabelledRound]:
    k, c = whole.k, whole.completions
    parts = []
    for lo, hi in ((0, at), (at, len(whole.prompt_texts))):
        rows = slice(lo * k, hi * k)
        parts.append(LabelledRound(
            Completions(c.prompt_ids[rows], c.response_ids[rows], c.ended[rows], c.logps[rows]),
            whole.prompt_texts[lo:hi], whole.response_texts[rows], whole.rewards[rows], k,
        ))
    return parts


@pytest.mark.parametrize("at", [0, 1, 2, 3])
@pytest.mark.parametrize("pairing", list(Pairing))
def test_merged_rank_rounds_pair_exactly_like_the_whole_round(at, pairing):
    whole = _round([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3], [0.2, 0.7, 0.4]], empty={(2, 0)})
    merged = merge_rounds(_split(whole, at))
    assert merged.completions.response_ids == whole.completions.response_ids
    assert torch.equal(merged.completions.logps, whole.completions.logps)
    np.testing.assert_array_equal(merged.rewards, whole.rewards)
    assert pair_round(merged, pairing) == pair_round(whole, pairing)


# --- summed gradients: two gloo processes in this machine ------------------------------------------------------


def _tiny_lm() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=12, n_positions=8, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config)


def _pairs_batch(n_pairs: int) -> PreferenceBatch:
    g = torch.Generator().manual_seed(n_pairs)
    ids = torch.randint(2, 12, (2 * n_pairs, 6), generator=g)
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 3:] = True
    return PreferenceBatch(ids, torch.ones_like(ids), loss_mask, n_pairs, 0)


def _perturbed_lm() -> GPT2LMHeadModel:
    """A policy away from π_ref, so the rewards are not all zero."""
    policy = _tiny_lm()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return policy


def _step(n_pairs: int, processes: Processes) -> tuple[dict[str, float], list[torch.Tensor]]:
    policy, ref = _perturbed_lm(), _tiny_lm().eval()
    optim_cfg = OptimConfig(lr=1e-3, warmup_steps=1, grad_accum=2)
    optimizer, scheduler = build_optimizer(policy, optim_cfg)
    stats = optimizer_step(policy, ref, _pairs_batch(n_pairs), PreferenceObjective(LossConfig()), optim_cfg,
                           optimizer, scheduler, processes)
    return stats, [p.detach().clone() for p in policy.parameters()]


def _rank_main(rank: int, world: int, store: str, n_pairs: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        stats, params = _step(n_pairs, Processes(rank=rank, world_size=world))
        torch.save({"stats": stats, "params": params}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("n_pairs", [1, 3])  # 1 pair over 2 ranks: rank 0's share is empty
def test_two_ranks_take_the_one_process_step(tmp_path, n_pairs):
    expected_stats, expected_params = _step(n_pairs, Processes())
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), n_pairs, str(tmp_path / "out")), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}")
        assert got["stats"].keys() == expected_stats.keys()
        # grad_norm is taken after the all-reduce: a mean instead of a sum over ranks would halve it
        for key, value in expected_stats.items():
            assert math.isclose(got["stats"][key], value, rel_tol=1e-5, abs_tol=1e-7), key
        # AdamW divides by √v, which turns float-rounding differences of near-zero gradients into ~1% of a step
        for a, b in zip(got["params"], expected_params):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)
    # the step must have moved the weights, or the comparison above would prove nothing
    before = [p.detach() for p in _perturbed_lm().parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(expected_params, before)) > 1e-4


# --- a real launch: accelerate launch --multi_gpu --num_processes 2, gloo on the CPU ---------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp_path: Path, run_dir: str, *overrides: str, processes: int = 1) -> list[dict]:
    args = [str(REPO / "scripts" / "train.py"), *TINY_OVERRIDES, "threads=1", f"cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / run_dir}", *overrides]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(_free_port())]
        cmd = [*launcher, *args]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / run_dir / "metrics.jsonl").read_text().splitlines()]


def _numbers(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not k.startswith("time")}


@pytest.mark.slow
def test_two_process_launch_reproduces_the_one_process_run(tmp_path):
    overrides = ("mode=offline", "optim.lr=1e-2", "train.steps=4", "train.eval_every=2")
    one = _train(tmp_path, "one", *overrides)
    two = _train(tmp_path, "two", *overrides, processes=2)
    assert [r["step"] for r in two] == [r["step"] for r in one]  # rank 0 alone wrote the log: no row twice
    train_rows = [r for r in one if "loss" in r]
    assert train_rows and abs(train_rows[-1]["rewards/margins"]) > 1e-3  # the policy moved: a real comparison
    for a, b in zip(one, two):
        a, b = _numbers(a), _numbers(b)
        assert a.keys() == b.keys()
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (key, a[key], b[key])
    meta = json.loads((tmp_path / "two" / "run.json").read_text())
    assert meta["processes"] == 2 and meta["status"] == "finished"
    assert (tmp_path / "two" / "policy").is_dir()


@pytest.mark.slow
def test_two_process_online_run_keeps_the_budget_and_resumes_exactly(tmp_path):
    overrides = ("mode=online", "train.steps=6", "train.eval_every=3", "checkpoint.every=2", "checkpoint.keep_last=2")
    one = _train(tmp_path, "one", *overrides)
    two = _train(tmp_path, "two", *overrides, processes=2)
    for key in ("oracle_calls", "policy_samples"):
        assert two[-1][key] == one[-1][key] > 0
    events = [json.loads(line) for line in (tmp_path / "two" / "events.jsonl").read_text().splitlines()]
    rounds = [e for e in events if e["event"] == "sampling_round"]
    assert len(rounds) == 3 and all(e["pairs"] > 0 for e in rounds)
    assert all(math.isfinite(v) for r in two for v in _numbers(r).values())

    # a 2-process run that died after its step-4 checkpoint, resumed by 2 processes, ends as the uninterrupted one
    shutil.copytree(tmp_path / "two", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_000006")
    mark_failed(tmp_path / "resumed")
    _train(tmp_path, "resumed", *overrides, "resume=true", processes=2)
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["resumed_at"] == [4]
    assert_same_run(tmp_path / "two", tmp_path / "resumed")
