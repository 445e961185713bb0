"""The task: its SFT corpus, training and evaluation prompts, human pairs if any, and its oracle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftlab.config import OracleConfig, TaskConfig, TaskKind
from shiftlab.data.datasets import load_preference_split, load_preferences_file, load_text_split
from shiftlab.data.pairs import PreferencePair
from shiftlab.labels.oracles import build_oracle
from shiftlab.labels.pairing import Oracle
from shiftlab.world import ReviewGrammar, load_sentence_polarity, make_prompts, split_texts


@dataclass
class Task:
    corpus: list[str]  # SFT text
    train_prompts: list[str]
    eval_prompts: list[str]
    oracle: Oracle | None  # set by build_task once the data has loaded
    grammar: ReviewGrammar | None  # exact text log-probs when the corpus comes from shiftlab's own grammar
    user_pairs: list[PreferencePair] | None = None  # human pairs (a preference dataset or file), validated up front
    user_pairs_info: dict | None = None
    # human pairs never trained on, scored by the implicit reward at each evaluation: the eval split's pairs, or the
    # pairs of the prompts held out for evaluation; None when the task has no human pairs to hold out
    eval_pairs: list[PreferencePair] | None = None


def build_task(cfg: TaskConfig, oracle: OracleConfig | None = None) -> Task:
    """The task's texts, prompts and pairs, and the oracle (`oracle`, VADER when None)."""
    rng = np.random.default_rng(cfg.seed)
    task = TASK_BUILDERS[cfg.kind](cfg, rng)
    if cfg.preferences_path:
        task.user_pairs, report = load_preferences_file(cfg.preferences_path, cfg.on_invalid)
        task.user_pairs_info = {"path": cfg.preferences_path, "loaded": report.n_loaded, "skipped": report.skipped}
    task.oracle = build_oracle(oracle or OracleConfig())  # last: bad data fails before a classifier is loaded
    return task


def _prefix_task(cfg: TaskConfig, rng, texts: list[str], eval_texts: list[str] | None,
                  grammar: ReviewGrammar | None = None) -> Task:
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
    return Task(train_texts, train_prompts, eval_prompts, None, grammar)


def _grammar_task(cfg: TaskConfig, rng) -> Task:
    grammar = ReviewGrammar()
    return _prefix_task(cfg, rng, grammar.sample(cfg.n_texts, rng), None, grammar)


def _directory_task(cfg: TaskConfig, rng) -> Task:
    return _prefix_task(cfg, rng, load_sentence_polarity(cfg.corpus_dir), None)


def _text_task(cfg: TaskConfig, rng) -> Task:
    texts = load_text_split(cfg, cfg.dataset.split)[0]
    eval_texts = load_text_split(cfg, cfg.dataset.eval_split)[0] if cfg.dataset.eval_split else None
    return _prefix_task(cfg, rng, texts, eval_texts)


def _preference_task(cfg: TaskConfig, rng) -> Task:
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
        eval_pairs = [p for p in pairs if p.prompt in held_out]
        pairs = [p for p in pairs if p.prompt not in held_out]
        info["held_out_pairs"] = len(eval_pairs)
    if len(candidates) < n_eval or not pairs:
        where = f"{source} and split {cfg.dataset.eval_split!r}" if cfg.dataset.eval_split else source
        raise ValueError(
            f"task.n_eval_prompts={n_eval} but {where} holds {len(candidates)} distinct eval prompts and "
            f"{len(pairs)} training pairs; lower task.n_eval_prompts or set task.dataset.eval_split"
        )
    eval_prompts = [candidates[i] for i in rng.permutation(len(candidates))[:n_eval]]
    info["pairs"] = len(pairs)
    corpus = [p.prompt + p.chosen for p in pairs]
    return Task(corpus, prompts, eval_prompts, None, None, pairs, info, eval_pairs)


def _split_off(items: list[str], rng, n: int) -> tuple[list[str], list[str]]:
    """(n random items, the rest in their original order)."""
    picked = set(rng.permutation(len(items))[:n].tolist())
    return [x for i, x in enumerate(items) if i in picked], [x for i, x in enumerate(items) if i not in picked]


TASK_BUILDERS = {
    TaskKind.grammar: _grammar_task,
    TaskKind.directory: _directory_task,
    TaskKind.text: _text_task,
    TaskKind.preferences: _preference_task,
}
