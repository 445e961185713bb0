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
from shiftlab.config import CorpusKind, OracleConfig, ShiftlabConfig, TaskConfig
from shiftlab.data import PreferencePair, ensure_pad_token, load_preference_jsonl, save_preference_jsonl
from shiftlab.datasets import load_preference_split, load_preferences_file, load_text_split
from shiftlab.models import build_model, load_pretrained, prepare_for_training, resolve_dtype, train_tokenizer
from shiftlab.oracles import build_oracle
from shiftlab.pairs import Oracle, label_round, pair_round
from shiftlab.sampling import sample_completions
from shiftlab.sft import train_sft
from shiftlab.world import ReviewGrammar, load_sentence_polarity, make_prompts, split_texts


@dataclass
class World:
    corpus: list[str]  # SFT text
    train_prompts: list[str]
    eval_prompts: list[str]
    oracle: Oracle | None  # set by build_world once the data has loaded
    grammar: ReviewGrammar | None  # exact text log-probs when the corpus comes from shiftlab's own grammar
    user_pairs: list[PreferencePair] | None = None  # human pairs (a preference dataset or file), validated up front
    user_pairs_info: dict | None = None


def build_world(cfg: TaskConfig, oracle: OracleConfig | None = None) -> World:
    """The task's texts, prompts and pairs, and the oracle (`oracle`, VADER when None)."""
    rng = np.random.default_rng(cfg.seed)
    world = WORLDS[cfg.corpus](cfg, rng)
    if cfg.preferences_path:
        world.user_pairs, report = load_preferences_file(cfg.preferences_path, cfg.on_invalid)
        world.user_pairs_info = {"path": cfg.preferences_path, "loaded": report.n_loaded, "skipped": report.skipped}
    world.oracle = build_oracle(oracle or OracleConfig())  # last: bad data fails before a classifier is loaded
    return world


def _prefix_world(cfg: TaskConfig, rng, texts: list[str], eval_texts: list[str] | None,
                  grammar: ReviewGrammar | None = None) -> World:
    """SFT on texts; prompts are their first 2–8 words (the DPO paper's IMDb recipe); eval prompts come from
    held-out texts, or from `eval_texts` (another split) when given."""
    if eval_texts is None:
        eval_fraction = min(0.5, 4 * cfg.n_eval_prompts / max(len(texts), 1))
        train_texts, held_out = split_texts(texts, rng, eval_fraction)
    else:
        train_texts, held_out = texts, [eval_texts[i] for i in rng.permutation(len(eval_texts))]
    if len(held_out) < cfg.n_eval_prompts:
        raise ValueError(
            f"task.n_eval_prompts={cfg.n_eval_prompts} but the corpus holds only {len(held_out)} held-out texts"
        )
    eval_prompts = make_prompts(held_out[: cfg.n_eval_prompts], rng, cfg.prompt_min_words, cfg.prompt_max_words)
    train_prompts = make_prompts(train_texts, rng, cfg.prompt_min_words, cfg.prompt_max_words)
    return World(train_texts, train_prompts, eval_prompts, None, grammar)


def _grammar_world(cfg: TaskConfig, rng) -> World:
    grammar = ReviewGrammar()
    return _prefix_world(cfg, rng, grammar.sample(cfg.n_texts, rng), None, grammar)


def _directory_world(cfg: TaskConfig, rng) -> World:
    return _prefix_world(cfg, rng, load_sentence_polarity(cfg.corpus_dir), None)


def _text_world(cfg: TaskConfig, rng) -> World:
    texts = load_text_split(cfg, cfg.dataset.split)[0]
    eval_texts = load_text_split(cfg, cfg.dataset.eval_split)[0] if cfg.dataset.eval_split else None
    return _prefix_world(cfg, rng, texts, eval_texts)


def _preference_world(cfg: TaskConfig, rng) -> World:
    """The dataset's pairs are the offline set, its prompts the prompts, prompt + chosen the SFT text (the DPO
    paper's HH recipe). Eval prompts come from dataset.eval_split, or are held out by prompt (with their pairs)."""
    pairs, report, source = load_preference_split(cfg, cfg.dataset.split)
    info = {"path": source, "loaded": report.n_loaded, "skipped": report.skipped}
    prompts = list(dict.fromkeys(p.prompt for p in pairs))
    n_eval = cfg.n_eval_prompts
    if cfg.dataset.eval_split:
        eval_pairs, eval_report, _ = load_preference_split(cfg, cfg.dataset.eval_split)
        info["eval_skipped"] = eval_report.skipped
        candidates = list(dict.fromkeys(p.prompt for p in eval_pairs))
    else:
        candidates, prompts = _split_off(prompts, rng, n_eval)
        held_out = set(candidates)
        pairs = [p for p in pairs if p.prompt not in held_out]
        info["held_out_pairs"] = report.n_loaded - len(pairs)
    if len(candidates) < n_eval or not pairs:
        where = f"{source} and split {cfg.dataset.eval_split!r}" if cfg.dataset.eval_split else source
        raise ValueError(
            f"task.n_eval_prompts={n_eval} but {where} holds {len(candidates)} distinct eval prompts and "
            f"{len(pairs)} training pairs; lower task.n_eval_prompts or set task.dataset.eval_split"
        )
    eval_prompts = [candidates[i] for i in rng.permutation(len(candidates))[:n_eval]]
    info["pairs"] = len(pairs)
    corpus = [p.prompt + p.chosen for p in pairs]
    return World(corpus, prompts, eval_prompts, None, None, pairs, info)


def _split_off(items: list[str], rng, n: int) -> tuple[list[str], list[str]]:
    """(n random items, the rest in their original order)."""
    picked = set(rng.permutation(len(items))[:n].tolist())
    return [x for i, x in enumerate(items) if i in picked], [x for i, x in enumerate(items) if i not in picked]


WORLDS = {
    CorpusKind.grammar: _grammar_world,
    CorpusKind.directory: _directory_world,
    CorpusKind.text: _text_world,
    CorpusKind.preferences: _preference_world,
}


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


def local_stamp(path: str | None) -> list | None:
    """Sizes and modification times of a local file or folder, so that editing local data or a local checkpoint
    invalidates the cache (a hub id or a missing path stamps as None)."""
    if not path or not Path(path).expanduser().exists():
        return None
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())[:1000]
    return [[str(f.relative_to(root)) if f != root else "", f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def sft_fingerprint(cfg: ShiftlabConfig) -> str:
    stamps = [local_stamp(p) for p in (cfg.task.corpus_dir, cfg.task.dataset.path, cfg.task.preferences_path, cfg.model.name_or_path)]
    # model.lora shapes π_θ, not π_sft: a LoRA run shares the cached π_sft (and the cache keys from before it existed)
    model = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(cfg.model) if f.name != "lora"}
    return fingerprint(cfg.task, model, cfg.sft, cfg.train.max_length, stamps)


def build_sft(cfg: ShiftlabConfig, world: World, cache_dir: Path, progress_factory, device: torch.device | str = "cpu") -> tuple[Any, Any, list[dict], bool]:
    """π_sft and its tokenizer, on `device`: loaded from the cache when present, else trained there and cached.

    Returns (model, tokenizer, loss curve rows, reused?).
    """
    final = cache_dir / "sft" / sft_fingerprint(cfg)
    dtype = resolve_dtype(cfg.model.dtype)
    if (final / "config.json").exists():
        remote = cfg.model.trust_remote_code
        model = AutoModelForCausalLM.from_pretrained(final, dtype=dtype, trust_remote_code=remote)
        tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(final, trust_remote_code=remote))
        curve = [json.loads(line) for line in (final / "sft.jsonl").read_text().splitlines() if line]
        return prepare_for_training(model, cfg.model).to(device).eval(), tokenizer, curve, True
    torch.manual_seed(cfg.task.seed)
    if cfg.model.name_or_path is None:
        tokenizer = train_tokenizer(world.corpus, cfg.model.vocab_size)
        model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id).to(dtype)
        prepare_for_training(model, cfg.model)
    else:
        model, tokenizer = load_pretrained(cfg.model.name_or_path, cfg.model)
    model.to(device)
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
    key = fingerprint(sft_fingerprint(cfg), p, cfg.oracle, cfg.seed, cfg.train.max_new_tokens, cfg.train.max_prompt_length)
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
