"""The benchmark's workload: preference pairs, tokenizer and models shared by every comparison.

Pairs come from shiftlab's own review grammar (no SFT, no download): a review's prefix is the prompt, its rest
the chosen response and another review's rest the rejected one. Their lengths match the default task's (10–40
words, prompts of 2–8 words), which is what decides the cost of a step; the words themselves do not matter.
Pairs that either framework would truncate are dropped, so both see exactly the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shiftlab.config import ModelConfig
from shiftlab.data.batches import PreferenceCollator
from shiftlab.data.pairs import PreferencePair
from shiftlab.models.build import build_model, train_tokenizer
from shiftlab.world import ReviewGrammar

# The two model sizes the issue names: conf/model/tiny.yaml (~0.9M) and conf/model/small.yaml (~4M).
MODEL_SIZES = {
    "tiny": ModelConfig(vocab_size=1024, n_layer=4, n_head=4, n_embd=128, n_positions=64),
    "small": ModelConfig(vocab_size=1024, n_layer=6, n_head=8, n_embd=256, n_positions=64),
}


@dataclass
class Workload:
    pairs: list[PreferencePair]
    tokenizer: object  # PreTrainedTokenizerFast
    collator: PreferenceCollator
    max_length: int
    max_prompt_length: int


def build_pairs(texts: list[str], seed: int, min_prompt_words: int = 2, max_prompt_words: int = 8) -> list[PreferencePair]:
    """Reviews split into prompt / response, two by two: the rejected response is the other review's tail."""
    rng = np.random.default_rng(seed)
    pairs = []
    for first, second in zip(texts[0::2], texts[1::2]):
        words, other = first.split(), second.split()
        k = int(rng.integers(min_prompt_words, max_prompt_words + 1))
        chosen, rejected = " " + " ".join(words[k:]), " " + " ".join(other[k:])
        if chosen.strip() and rejected.strip() and chosen != rejected:
            pairs.append(PreferencePair(" ".join(words[:k]), chosen, rejected))
    return pairs


def build_workload(n_pairs: int = 512, seed: int = 0, max_length: int = 64, max_prompt_length: int = 16,
                   vocab_size: int = 1024) -> Workload:
    """`n_pairs` untruncated pairs, and a byte-level BPE trained on their reviews as the default task's is on its
    corpus (as there, every word of the grammar ends up a token of its own)."""
    texts = ReviewGrammar().sample(4 * n_pairs, np.random.default_rng(seed))
    candidates = build_pairs(texts, seed)
    tokenizer = train_tokenizer(texts, vocab_size)
    collator = PreferenceCollator(tokenizer, max_length, max_prompt_length)
    prompt_lens = [len(ids) for ids in tokenizer([p.prompt for p in candidates], add_special_tokens=False)["input_ids"]]
    resp = tokenizer([p.chosen for p in candidates] + [p.rejected for p in candidates], add_special_tokens=False)
    n = len(candidates)
    kept = [
        pair for i, pair in enumerate(candidates)
        # +1: the end-of-text token both frameworks append
        if prompt_lens[i] <= max_prompt_length
        and prompt_lens[i] + max(len(resp["input_ids"][i]), len(resp["input_ids"][n + i])) + 1 <= max_length
    ]
    if len(kept) < n_pairs:
        raise ValueError(f"only {len(kept)} of {n} candidate pairs fit max_length={max_length}; need {n_pairs}")
    return Workload(kept[:n_pairs], tokenizer, collator, max_length, max_prompt_length)


def build_bench_model(size: str, tokenizer, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised GPT-2 of a named size, with the tokenizer's vocabulary as a run builds it (the
    grammar's ~880 distinct tokens fill less than the configured 1024); speed does not depend on the weights."""
    torch.manual_seed(seed)
    return build_model(MODEL_SIZES[size], len(tokenizer), tokenizer.eos_token_id)
