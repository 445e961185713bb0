"""From sampled completions to labelled preference pairs — one rule, shared by the offline set and on-policy rounds.

Rule (the DPO paper's IMDb recipe): k completions per prompt, each scored by the oracle on prompt + completion;
`best_vs_worst` pairs the highest- against the lowest-scored completion, `all_pairs` every two completions
(`pairs.pairing`). The pair's order (`pairs.labels`): `deterministic` makes the higher score chosen and drops exact
ties (counted); `bradley_terry` samples it, P(a ≻ b) = σ((r(a) − r(b))/τ) (`pairs.temperature` = τ), so an exact tie
is a fair coin, not a drop, and DPO's loss has a finite minimiser (`preference_probability`). Which two completions
form a candidate pair depends on the rewards only, never on the sampled label, so the optimum holds for either
pairing. An empty completion (immediate end-of-text) never enters a pair — a preference over "nothing" is not text
a user file could hold — and is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from shiftlab.config import Pairing, PairLabels
from shiftlab.data.batches import Completions

Oracle = Callable[[Sequence[str]], np.ndarray]


@dataclass
class LabelledRound:
    """k completions for each of P prompts with their oracle rewards, flattened prompt-major (row = p·k + j)."""

    completions: Completions
    prompt_texts: list[str]  # (P,)
    response_texts: list[str]  # (P·k,)
    rewards: np.ndarray | None  # (P·k,); None without an oracle (oracle.kind=none): decoded, never scored
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
    oracle: Oracle | None  # None (oracle.kind=none): responses are decoded and left unscored

    def __call__(self, completions: Completions, prompt_texts: Sequence[str], k: int) -> LabelledRound:
        """Decode the responses (k per prompt, prompt-major) and score them all in one batched oracle call."""
        responses = [self.decode(ids) for ids in completions.response_ids]
        full_texts = [prompt_texts[row // k] + response for row, response in enumerate(responses)]
        rewards = None if self.oracle is None else np.asarray(self.oracle(full_texts), dtype=np.float64)
        return LabelledRound(completions, list(prompt_texts), responses, rewards, k)


# Bradley–Terry label streams: tags of their own in the seed, so that the streams every deterministic run draws
# (prompts, sampling, epoch order) are the same draws they were before labels could be sampled.
_LABEL_STREAM = {"offline": 0xB7_0001, "onpolicy": 0xB7_0002}


def label_generator(seed: int, stream: str, *round_key: int) -> np.random.Generator:
    """The Bradley–Terry label stream of `stream` ("offline": the set's build; "onpolicy": one per round, keyed by
    (step, attempt)), derived from the run seed alone, so a resumed run redraws a round's labels without saving them."""
    return np.random.default_rng(np.random.SeedSequence([seed, _LABEL_STREAM[stream], *round_key]))


def _check_temperature(temperature: float) -> None:
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"config key `pairs.temperature` must be finite and > 0 (the Bradley–Terry τ), got {temperature!r}")


def preference_probability(reward_a: np.ndarray, reward_b: np.ndarray, temperature: float) -> np.ndarray:
    """Bradley–Terry (Bradley & Terry 1952; the DPO paper's eq. 1 with reward r/τ): P(a ≻ b) = σ((r(a) − r(b))/τ).

    Labels drawn from it make DPO's loss (Rafailov et al. 2023, eq. 7) a logistic regression of the label on
    β·(h(a) − h(b)), h = log π_θ − log π_ref, minimised where β·(h(a) − h(b)) = (r(a) − r(b))/τ on every pair that
    occurs: the population optimum is the finite π*(y|x) = π_ref(y|x)·exp(r(x,y)/(τβ))/Z(x) (eq. 4 with r/τ), where
    deterministic labels (P = 1) have none and drive h(a) − h(b) to infinity.

    reward_a, reward_b: (N,) rewards; temperature: τ > 0 in reward units. Returns (N,) probabilities in (0, 1).
    """
    _check_temperature(temperature)
    z = (np.asarray(reward_a, dtype=np.float64) - np.asarray(reward_b, dtype=np.float64)) / temperature  # (N,)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # σ(z) without overflow in exp for |z| in the thousands


def sample_preferences(reward_a: np.ndarray, reward_b: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool, True where a is drawn as chosen over b: one uniform per pair, in order, against P(a ≻ b)."""
    p = preference_probability(reward_a, reward_b, temperature)  # (N,)
    return rng.random(p.shape) < p


def _candidates(rewards: np.ndarray, usable: np.ndarray, pairing: Pairing) -> list[tuple[int, int, int]]:
    """Candidate pairs (prompt, i, j) for sampled labels: the two most apart for best_vs_worst (distinct even when
    every reward ties), every two usable completions for all_pairs."""
    out = []
    for p in range(rewards.shape[0]):
        cols = np.flatnonzero(usable[p])
        if len(cols) < 2:
            continue
        if pairing is Pairing.best_vs_worst:
            best = cols[np.argmax(rewards[p, cols])]
            rest = cols[cols != best]
            out.append((p, int(best), int(rest[np.argmin(rewards[p, rest])])))
        else:
            out += [(p, int(i), int(j)) for i, j in combinations(cols, 2)]
    return out


def form_pairs(
    rewards: np.ndarray,
    usable: np.ndarray,
    pairing: Pairing,
    labels: PairLabels = PairLabels.deterministic,
    temperature: float = 1.0,
    rng: np.random.Generator | None = None,
) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
    """Pairs (prompt, chosen j, rejected j) from a (P, k) reward table; `usable` (P, k) masks empty completions.

    Returns the pairs and counts: `ties`, candidate pairs dropped because their rewards tied exactly (deterministic
    labels only), and `flipped`, pairs whose sampled order disagrees with the reward order (bradley_terry only; a
    tie has no reward order and is never flipped). bradley_terry draws one uniform from `rng` per candidate pair.
    """
    if labels is PairLabels.bradley_terry:
        if rng is None:
            raise ValueError("pairs.labels=bradley_terry samples each pair's order: form_pairs needs an `rng`")
        cands = _candidates(rewards, usable, pairing)
        r_a = np.array([rewards[p, i] for p, i, _ in cands], dtype=np.float64)  # (N,)
        r_b = np.array([rewards[p, j] for p, _, j in cands], dtype=np.float64)  # (N,)
        a_first = sample_preferences(r_a, r_b, temperature, rng)  # (N,)
        pairs = [(p, i, j) if first else (p, j, i) for (p, i, j), first in zip(cands, a_first, strict=True)]
        flipped = int(np.sum(np.where(a_first, r_a < r_b, r_b < r_a)))
        return pairs, {"ties": 0, "flipped": flipped}
    _check_temperature(temperature)  # unused here, but a bad value is a bad config either way
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
    return pairs, {"ties": ties, "flipped": 0}


def pair_round(
    labelled: LabelledRound,
    pairing: Pairing,
    labels: PairLabels = PairLabels.deterministic,
    temperature: float = 1.0,
    rng: np.random.Generator | None = None,
) -> tuple[list[PairIndex], dict[str, int]]:
    """Apply the pairing rule (`pairs.*`) to a labelled round; returns pairs as flattened rows and the counts
    (ties dropped, pairs flipped, empty responses). `rng`: the round's label stream (`label_generator`)."""
    if labelled.rewards is None:
        raise ValueError("pairing needs oracle rewards, but oracle.kind=none: only human pairs (source=offline) run without one")
    k = labelled.k
    n_prompts = len(labelled.prompt_texts)
    lengths = np.array([len(r) for r in labelled.completions.response_ids]).reshape(n_prompts, k)
    usable = lengths > 0
    triples, counts = form_pairs(labelled.rewards.reshape(n_prompts, k), usable, pairing, labels, temperature, rng)
    pairs = [PairIndex(p, p * k + i, p * k + j) for p, i, j in triples]
    return pairs, counts | {"empty_responses": int((~usable).sum())}


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
