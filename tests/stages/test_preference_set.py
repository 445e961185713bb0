"""The offline preference set (shiftlab.stages.preference_set) under the shared pairing rule, end to end on a
tiny configuration: sampled (Bradley–Terry) labels, offline and on-policy, run to the end and count their flips."""

from __future__ import annotations

import json

import pandas as pd
from tiny import compose_config

from shiftlab.data.pairs import load_preference_jsonl
from shiftlab.experiment.lifecycle import run
from shiftlab.stages.preference_set import _set_inputs


def _run(tmp_path, cache, name, overrides):
    run_dir = run(compose_config([f"cache_dir={cache}", *overrides]), tmp_path / name, overrides)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return run_dir, pd.read_json(run_dir / "metrics.jsonl", lines=True), events


def test_bradley_terry_labels_run_offline_and_on_policy(tmp_path):
    cache = tmp_path / "cache"
    run_dir, df, events = _run(tmp_path, cache, "offline", ["mode=offline", "pairs.labels=bradley_terry"])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    info = next(e for e in events if e["event"] == "preference_set")
    assert info["labels"] == "bradley_terry" and info["temperature"] == 1.0 and info["ties"] == 0
    (entry,) = (cache / "preferences").glob("*/pairs.jsonl")
    pairs, _ = load_preference_jsonl(entry)
    flipped = sum(p.reward_chosen < p.reward_rejected for p in pairs)
    assert info["flipped"] == flipped > 0  # at τ = 1 some of the 32 pairs are ordered against their rewards
    assert set(df["data/flipped"].dropna()) == {flipped}  # the whole set's count, from step 0

    # on-policy: τ = 100 makes every order nearly a coin, so a run whose rounds were not sampled would show no flip
    run_dir, df, _ = _run(tmp_path, cache, "oaif", ["mode=oaif", "pairs.labels=bradley_terry", "pairs.temperature=100"])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    flips = df["data/flipped"].dropna()
    assert flips.is_monotonic_increasing and flips.iloc[-1] > 0 and (df["data/ties"].dropna() == 0).all()


def test_the_cache_key_of_deterministic_labels_is_the_one_from_before_the_rule_moved():
    cfg = compose_config([])
    assert _set_inputs(cfg) == {"n_prompts": cfg.preferences.n_prompts, "k": cfg.preferences.k, "pairing": "best_vs_worst"}
    sampled = _set_inputs(compose_config(["pairs.labels=bradley_terry", "pairs.temperature=0.5"]))
    assert sampled["labels"] == "bradley_terry" and sampled["temperature"] == 0.5  # another set, another entry
