"""The optimum stage (shiftlab.stages.optimum): π_sft's samples on the eval prompts, scored, cached once per draw,
turned into optimum.jsonl; and, end to end, a tiny run writes it without moving any other number."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import build_tiny_tokenizer
from tiny import compose_config
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.data.batches import ensure_pad_token
from shiftlab.experiment.lifecycle import run
from shiftlab.experiment.setup import progress_factory
from shiftlab.stages.optimum import build_optimum
from shiftlab.stages.task import Task
from shiftlab.validation import ConfigError

PROMPTS = ["the movie was", "this film is", "i loved it .", "the acting was"]


class CountingOracle:
    """+1 per good word, −1 per bad word, a little per character (so few rewards tie); counts the texts it scores."""

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += len(texts)
        good, bad = {"great", "good", "fine", "loved", "ok"}, {"awful", "bad", "boring", "hated"}
        return np.array([sum((w in good) - (w in bad) for w in t.split()) + 0.01 * len(t) for t in texts])


class FakeGold:
    name = "fake"

    def __init__(self):
        self.calls = 0

    def score(self, texts, n_prompt_words):
        self.calls += len(texts)
        return np.array([len(t.split()) - n for t, n in zip(texts, n_prompt_words)], dtype=np.float64)


@pytest.fixture(scope="module")
def sft_and_tokenizer():
    tokenizer = ensure_pad_token(build_tiny_tokenizer())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config).eval(), tokenizer


def _build(tmp_path, sft_and_tokenizer, oracle, overrides=(), gold=None):
    cfg = compose_config(["eval.optimum_samples=32", "eval.n_prompts=4", "train.max_new_tokens=8", *overrides])
    task = Task([], [], PROMPTS, oracle, None)
    sft, tokenizer = sft_and_tokenizer
    return build_optimum(cfg, task, sft, tokenizer, tmp_path / "cache", progress_factory(False), gold)


def test_rows_trace_a_monotone_frontier_below_log_n(tmp_path, sft_and_tokenizer):
    optimum = _build(tmp_path, sft_and_tokenizer, CountingOracle())
    rows = optimum.rows
    kl, reward = np.array([r["kl"] for r in rows]), np.array([r["reward"] for r in rows])
    assert (np.diff([r["beta"] for r in rows]) < 0).all() and (np.diff(kl) >= -1e-12).all() and (np.diff(reward) >= -1e-12).all()
    assert kl.max() <= math.log(32) and kl[0] < 1e-3 and kl[-1] > 0.5 * math.log(32)
    assert reward[-1] > reward[0]  # tilting towards the reward raises it
    reliable = [r["reliable"] for r in rows]
    assert reliable[0] and not reliable[-1] and reliable == sorted(reliable, reverse=True)  # a leading run
    upto = optimum.info["reliable_kl"]
    assert 0 < upto <= 0.5 * math.log(32) + 1e-9 and max(k for k, ok in zip(kl, reliable) if ok) == pytest.approx(upto, abs=1e-4)
    assert {"beta", "kl", "reward", "ess", "reliable", "samples", "key", "sft"} <= set(rows[0]) and "gold_reward" not in rows[0]
    assert rows[0]["samples"] == 32 and rows[0]["prompts"] == 4


def test_the_draw_is_cached_and_seeded_and_leaves_global_rng_alone(tmp_path, sft_and_tokenizer):
    oracle = CountingOracle()
    state = torch.random.get_rng_state()
    first = _build(tmp_path, sft_and_tokenizer, oracle)
    assert torch.equal(state, torch.random.get_rng_state())  # a generator of its own
    assert oracle.calls == 4 * 32 and not first.info["cached"]
    again = _build(tmp_path, sft_and_tokenizer, oracle)
    assert oracle.calls == 4 * 32 and again.info["cached"] and again.rows == first.rows  # read, not sampled again
    fresh = _build(tmp_path / "elsewhere", sft_and_tokenizer, CountingOracle())
    assert fresh.rows == first.rows  # same config and seed: the same draw from an empty cache
    other_seed = _build(tmp_path, sft_and_tokenizer, CountingOracle(), ["seed=1"])
    assert other_seed.rows[0]["key"] != first.rows[0]["key"] and other_seed.rows[-1]["reward"] != first.rows[-1]["reward"]


def test_gold_is_weighted_by_the_proxy_and_scored_once(tmp_path, sft_and_tokenizer):
    gold = FakeGold()
    first = _build(tmp_path, sft_and_tokenizer, CountingOracle(), gold=gold)
    assert gold.calls == 4 * 32 and first.info["gold"]
    gold_reward = [r["gold_reward"] for r in first.rows]
    assert all(g >= 0 for g in gold_reward) and gold_reward[0] != gold_reward[-1]  # response words, prompt excluded
    again = _build(tmp_path, sft_and_tokenizer, CountingOracle(), gold=gold)
    assert gold.calls == 4 * 32 and [r["gold_reward"] for r in again.rows] == gold_reward


def test_off_without_samples_or_oracle(tmp_path, sft_and_tokenizer):
    assert _build(tmp_path, sft_and_tokenizer, CountingOracle(), ["eval.optimum_samples=0"]) is None
    assert _build(tmp_path, sft_and_tokenizer, None) is None


def test_one_sample_per_prompt_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="eval.optimum_samples"):
        compose_config(["eval.optimum_samples=1"])


def test_a_run_writes_optimum_jsonl_and_no_other_number_moves(tmp_path):
    cache = tmp_path / "cache"
    on = run(compose_config([f"cache_dir={cache}"]), tmp_path / "on")
    off = run(compose_config([f"cache_dir={cache}", "eval.optimum_samples=0"]), tmp_path / "off")
    rows = [json.loads(line) for line in (on / "optimum.jsonl").read_text().splitlines()]
    assert len(rows) > 10 and all(r["kl"] <= r["log_n"] + 1e-12 for r in rows)
    events = [json.loads(line) for line in (on / "events.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "optimum"][0]["samples"] == rows[0]["samples"]
    assert not (off / "optimum.jsonl").exists()

    def numbers(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time" and not k.startswith("time/")} for r in rows]

    assert numbers(on) == numbers(off)
