"""From sampled completions to labelled preference pairs — one rule, shared by the offline set and on-policy rounds.

Rule (the DPO paper's IMDb recipe): k completions per prompt, each scored by the oracle on prompt + completion;
`best_vs_worst` pairs the highest- against the lowest-scored completion, `all_pairs` every two completions with
different scores (higher = chosen). Exact ties are dropped and counted. An empty completion (immediate
end-of-text) never enters a pair — a preference over "nothing" is not text a user file could hold — and is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from shiftlab.config import Pairing
from shiftlab.data.batches import Completions

Oracle = Callable[[Sequence[str]], np.ndarray]


@dataclass
class LabelledRound:
    """k completions for each of P prompts with their oracle rewards, flattened prompt-major (row = p·k + j)."""

    completions: Completions
    prompt_texts: list[str]  # (P,)
    response_texts: list[str]  # (P·k,)
    rewards: np.ndarray  # (P·k,)
    k: int


@dataclass
class PairIndex:
    prompt: int
    chosen: int  # row in the flattened completions
    rejected: int


@dataclass(frozen=True)
class Labeller:
    """How sampled token ids become rewards: the tokenizer's `decode`, then the oracle on prompt + response."""

    decode: Callable[[list[int]], str]
    oracle: Oracle

    def __call__(self, completions: Completions, prompt_texts: Sequence[str], k: int) -> LabelledRound:
        """Decode the responses (k per prompt, prompt-major) and score them all in one batched oracle call."""
        responses = [self.decode(ids) for ids in completions.response_ids]
        full_texts = [prompt_texts[row // k] + response for row, response in enumerate(responses)]
        rewards = np.asarray(self.oracle(full_texts), dtype=np.float64)
        return LabelledRound(completions, list(prompt_texts), responses, rewards, k)


def form_pairs(rewards: np.ndarray, usable: np.ndarray, pairing: Pairing) -> tuple[list[tuple[int, int, int]], int]:
    """Pairs (prompt, chosen j, rejected j) from a (P, k) reward table; `usable` (P, k) masks empty completions.

    Returns the pairs and the number of candidate pairs dropped because their rewards tied exactly.
    """
    pairs, ties = [], 0
    for p in range(rewards.shape[0]):
        cols = np.flatnonzero(usable[p])
        if len(cols) < 2:
            continue
        if pairing is Pairing.best_vs_worst:
            best = cols[np.argmax(rewards[p, cols])]
            worst = cols[np.argmin(rewards[p, cols])]
            if rewards[p, best] == rewards[p, worst]:
                ties += 1
            else:
                pairs.append((p, int(best), int(worst)))
            continue
        for i, j in combinations(cols, 2):
            if rewards[p, i] == rewards[p, j]:
                ties += 1
            elif rewards[p, i] > rewards[p, j]:
                pairs.append((p, int(i), int(j)))
            else:
                pairs.append((p, int(j), int(i)))
    return pairs, ties


def pair_round(labelled: LabelledRound, pairing: Pairing) -> tuple[list[PairIndex], dict[str, int]]:
    """Apply the pairing rule to a labelled round; returns pairs as flattened rows and the drop counts."""
    k = labelled.k
    n_prompts = len(labelled.prompt_texts)
    lengths = np.array([len(r) for r in labelled.completions.response_ids]).reshape(n_prompts, k)
    usable = lengths > 0
    triples, ties = form_pairs(labelled.rewards.reshape(n_prompts, k), usable, pairing)
    pairs = [PairIndex(p, p * k + i, p * k + j) for p, i, j in triples]
    return pairs, {"ties": ties, "empty_responses": int((~usable).sum())}


def merge_rounds(parts: Sequence[LabelledRound]) -> LabelledRound:
    """Rounds labelled on disjoint, consecutive slices of the prompts (data-parallel ranks, in rank order) as one
    round: prompt-major order is kept, so pairing the merged round equals pairing the whole round at once."""
    if len({part.k for part in parts}) != 1:
        raise ValueError(f"rounds with different k cannot be merged: {[part.k for part in parts]}")
    completions = Completions(
        prompt_ids=[ids for part in parts for ids in part.completions.prompt_ids],
        response_ids=[ids for part in parts for ids in part.completions.response_ids],
        ended=[flag for part in parts for flag in part.completions.ended],
        logps=torch.cat([part.completions.logps.reshape(-1).float() for part in parts]),
    )
    return LabelledRound(
        completions,
        [text for part in parts for text in part.prompt_texts],
        [text for part in parts for text in part.response_texts],
        np.concatenate([np.asarray(part.rewards, dtype=np.float64).reshape(-1) for part in parts]),
        parts[0].k,
    )
