"""The offline preference set: k samples per prompt from π_sft, labelled by the oracle and paired (the DPO
paper's IMDb recipe), cached; or the user's / data set's own pairs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shiftlab.config import PairLabels, ShiftlabConfig
from shiftlab.data.batches import encode_prompts
from shiftlab.data.pairs import PreferencePair, load_preference_jsonl, save_preference_jsonl
from shiftlab.labels.pairing import Labeller, label_generator, pair_round
from shiftlab.models.sampler import SamplerSettings, sample_completions
from shiftlab.stages.cache import cache_entry, fingerprint
from shiftlab.stages.sft import sft_fingerprint
from shiftlab.stages.task import Task


@dataclass
class PreferenceSet:
    pairs: list[PreferencePair]
    behaviour_is_sft: bool  # True for the built set; False for a user file (its behaviour policy μ unknown)
    oracle_calls: int
    policy_samples: int
    info: dict


def build_preference_set(cfg: ShiftlabConfig, task: Task, sft, tokenizer, cache_dir: Path, progress_factory) -> PreferenceSet:
    """The offline set (DPO paper's IMDb recipe) from π_sft, or a user JSONL when task.preferences_path is set."""
    if task.user_pairs is not None:
        return PreferenceSet(task.user_pairs, False, 0, 0, task.user_pairs_info)
    p = cfg.preferences
    key = fingerprint(sft_fingerprint(cfg), _set_inputs(cfg), cfg.oracle, cfg.seed, cfg.train.max_new_tokens, cfg.train.max_prompt_length)
    final = cache_dir / "preferences" / key
    calls = p.n_prompts * p.k
    # concurrent runs (a parallel study): one builds the set, the others wait for it and read it (stages.cache)
    with cache_entry(final, "pairs.jsonl", "the offline preference set") as tmp:
        if tmp is None:
            pairs, _ = load_preference_jsonl(final / "pairs.jsonl")
            info = json.loads((final / "info.json").read_text()) | {"cached": True}
            return PreferenceSet(pairs, True, calls, calls, info)
        pairs, info = _sample_preference_set(cfg, task, sft, tokenizer, progress_factory)
        save_preference_jsonl(pairs, tmp / "pairs.jsonl")
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
    return PreferenceSet(pairs, True, calls, calls, info | {"cached": False})


def _set_inputs(cfg: ShiftlabConfig) -> dict:
    """The set's own inputs for its cache key. Deterministic labels hash exactly what `preferences` hashed before the
    pairing rule moved to `pairs` (so their cached sets stay valid); sampled labels add what they depend on."""
    rule = cfg.pairs
    inputs = {"n_prompts": cfg.preferences.n_prompts, "k": cfg.preferences.k, "pairing": rule.pairing.value}
    if rule.labels is not PairLabels.deterministic:
        inputs |= {"labels": rule.labels.value, "temperature": rule.temperature}
    return inputs


def _sample_preference_set(cfg: ShiftlabConfig, task: Task, sft, tokenizer, progress_factory) -> tuple[list[PreferencePair], dict]:
    """k samples per prompt from π_sft for `preferences.n_prompts` training prompts, labelled and paired."""
    p = cfg.preferences
    rng = np.random.default_rng(cfg.seed)
    chosen_prompts = [task.train_prompts[i] for i in rng.choice(len(task.train_prompts), p.n_prompts, replace=False)]
    prompt_ids = encode_prompts(tokenizer, chosen_prompts, cfg.train.max_prompt_length)
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler, labeller = SamplerSettings.from_tokenizer(tokenizer, cfg.train.max_new_tokens), Labeller(tokenizer.decode, task.oracle)
    rule, label_rng = cfg.pairs, label_generator(cfg.seed, "offline")  # its own stream: the draws above are untouched
    pairs, dropped = [], {"ties": 0, "flipped": 0, "empty_responses": 0}
    chunk = 64
    with progress_factory(total=p.n_prompts, desc="offline pairs from π_sft") as bar:
        for start in range(0, p.n_prompts, chunk):
            ids, texts = prompt_ids[start : start + chunk], chosen_prompts[start : start + chunk]
            completions = sample_completions(sft, ids, sampler, k=p.k, generator=generator)
            labelled = labeller(completions, texts, p.k)
            indices, counts = pair_round(labelled, rule.pairing, rule.labels, rule.temperature, label_rng)
            for key_, value in counts.items():
                dropped[key_] += value
            pairs += [
                PreferencePair(
                    prompt=texts[ix.prompt], chosen=labelled.response_texts[ix.chosen],
                    rejected=labelled.response_texts[ix.rejected],
                    reward_chosen=float(labelled.rewards[ix.chosen]), reward_rejected=float(labelled.rewards[ix.rejected]),
                    behaviour="sft",
                )
                for ix in indices
            ]
            bar.update(len(ids))
    info = {"pairs": len(pairs), "prompts": p.n_prompts, "k": p.k, "pairing": rule.pairing.value, "labels": rule.labels.value, **dropped}
    if rule.labels is PairLabels.bradley_terry:
        info["temperature"] = rule.temperature
    return pairs, info
