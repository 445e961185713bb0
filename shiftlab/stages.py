"""The stages before preference training: the world, π_sft, and the offline preference set.

π_sft and the preference set are cached under `cache_dir`, keyed by a hash of everything that determines them,
so a second run (or every run of a study) reuses them and says so. Cache entries are written to a temporary
directory and renamed, so an interrupted build never leaves a half-written entry behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shiftlab import __version__
from shiftlab.config import CorpusKind, OnInvalid, ShiftlabConfig, TaskConfig
from shiftlab.data import PreferencePair, ensure_pad_token, load_preference_jsonl, save_preference_jsonl
from shiftlab.models import build_model, load_pretrained, train_tokenizer
from shiftlab.pairs import Oracle, label_round, pair_round
from shiftlab.sampling import sample_completions
from shiftlab.sft import train_sft
from shiftlab.world import ReviewGrammar, VaderOracle, load_sentence_polarity, make_prompts, split_texts


@dataclass
class World:
    corpus: list[str]  # SFT text
    train_prompts: list[str]
    eval_prompts: list[str]
    oracle: Oracle
    grammar: ReviewGrammar | None  # exact text log-probs when the corpus comes from shiftlab's own grammar
    user_pairs: list[PreferencePair] | None = None  # task.preferences_path, validated before any training
    user_pairs_info: dict | None = None


def build_world(cfg: TaskConfig) -> World:
    rng = np.random.default_rng(cfg.seed)
    grammar = None
    if cfg.corpus is CorpusKind.grammar:
        grammar = ReviewGrammar()
        texts = grammar.sample(cfg.n_texts, rng)
    else:
        texts = load_sentence_polarity(cfg.corpus_dir)
    eval_fraction = min(0.5, 4 * cfg.n_eval_prompts / max(len(texts), 1))
    train_texts, held_out = split_texts(texts, rng, eval_fraction)
    if len(held_out) < cfg.n_eval_prompts:
        raise ValueError(
            f"task.n_eval_prompts={cfg.n_eval_prompts} but the corpus holds only {len(held_out)} held-out texts"
        )
    eval_prompts = make_prompts(held_out[: cfg.n_eval_prompts], rng, cfg.prompt_min_words, cfg.prompt_max_words)
    train_prompts = make_prompts(train_texts, rng, cfg.prompt_min_words, cfg.prompt_max_words)
    if cfg.oracle != "vader":
        raise ValueError(f"task.oracle={cfg.oracle!r}: only 'vader' is available")
    world = World(train_texts, train_prompts, eval_prompts, VaderOracle(), grammar)
    if cfg.preferences_path:
        on_invalid = "raise" if cfg.on_invalid is OnInvalid.error else "skip"
        world.user_pairs, report = load_preference_jsonl(cfg.preferences_path, on_invalid=on_invalid)
        world.user_pairs_info = {"path": cfg.preferences_path, "loaded": report.n_loaded, "skipped": report.skipped}
    return world


def fingerprint(*parts: Any) -> str:
    """A short stable hash of config sections (dataclasses, enums, plain values)."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Enum):
            return obj.value
        return obj

    blob = json.dumps([__version__, *map(plain, parts)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():  # another run won the race; both built the same thing
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(final)


def sft_fingerprint(cfg: ShiftlabConfig) -> str:
    return fingerprint(cfg.task, cfg.model, cfg.sft, cfg.train.max_length)


def build_sft(cfg: ShiftlabConfig, world: World, cache_dir: Path, progress_factory) -> tuple[Any, Any, list[dict], bool]:
    """π_sft and its tokenizer: loaded from the cache when present, else trained and cached.

    Returns (model, tokenizer, loss curve rows, reused?).
    """
    final = cache_dir / "sft" / sft_fingerprint(cfg)
    if (final / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(final)
        tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(final))
        curve = [json.loads(line) for line in (final / "sft.jsonl").read_text().splitlines() if line]
        return model.eval(), tokenizer, curve, True
    torch.manual_seed(cfg.task.seed)
    if cfg.model.name_or_path is None:
        tokenizer = train_tokenizer(world.corpus, cfg.model.vocab_size)
        model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id)
    else:
        model, tokenizer = load_pretrained(cfg.model.name_or_path, cfg.model)
    with progress_factory(total=cfg.sft.steps, desc="SFT π_sft") as bar:
        curve = train_sft(model, tokenizer, world.corpus, cfg.sft, cfg.train.max_length, cfg.task.seed, bar)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "sft.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    _publish(tmp, final)
    return model.eval(), tokenizer, curve, False


def encode_prompts(tokenizer, prompts: list[str], max_prompt_length: int) -> list[list[int]]:
    """Prompt ids, keeping the last max_prompt_length tokens (the collator's truncation rule)."""
    return [ids[-max_prompt_length:] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


@dataclass
class PreferenceSet:
    pairs: list[PreferencePair]
    behaviour_is_sft: bool  # True for the built set; False for a user file (β unknown)
    oracle_calls: int
    policy_samples: int
    info: dict


def build_preference_set(cfg: ShiftlabConfig, world: World, sft, tokenizer, cache_dir: Path, progress_factory) -> PreferenceSet:
    """The offline set (DPO paper's IMDb recipe) from π_sft, or a user JSONL when task.preferences_path is set."""
    if world.user_pairs is not None:
        return PreferenceSet(world.user_pairs, False, 0, 0, world.user_pairs_info)
    p = cfg.preferences
    key = fingerprint(sft_fingerprint(cfg), p, cfg.seed, cfg.train.max_new_tokens, cfg.train.max_prompt_length)
    final = cache_dir / "preferences" / key
    calls = p.n_prompts * p.k
    if (final / "pairs.jsonl").exists():
        pairs, _ = load_preference_jsonl(final / "pairs.jsonl")
        info = json.loads((final / "info.json").read_text()) | {"cached": True}
        return PreferenceSet(pairs, True, calls, calls, info)
    rng = np.random.default_rng(cfg.seed)
    chosen_prompts = [world.train_prompts[i] for i in rng.choice(len(world.train_prompts), p.n_prompts, replace=False)]
    prompt_ids = encode_prompts(tokenizer, chosen_prompts, cfg.train.max_prompt_length)
    generator = torch.Generator().manual_seed(cfg.seed)
    pairs, dropped = [], {"ties": 0, "empty_responses": 0}
    chunk = 64
    with progress_factory(total=p.n_prompts, desc="offline pairs from π_sft") as bar:
        for start in range(0, p.n_prompts, chunk):
            ids, texts = prompt_ids[start : start + chunk], chosen_prompts[start : start + chunk]
            completions = sample_completions(
                sft, ids, k=p.k, max_new_tokens=cfg.train.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, generator=generator,
            )
            labelled = label_round(completions, texts, p.k, tokenizer.decode, world.oracle)
            indices, counts = pair_round(labelled, p.pairing)
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
    info = {"pairs": len(pairs), "prompts": p.n_prompts, "k": p.k, "pairing": p.pairing.value, **dropped}
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_preference_jsonl(pairs, tmp / "pairs.jsonl")
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    _publish(tmp, final)
    return PreferenceSet(pairs, True, calls, calls, info | {"cached": False})
