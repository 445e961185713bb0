"""A tiny enumerable language with tabular policies, so divergences can be checked exactly.

Vocabulary: content tokens 0, 1, 2 and the end-of-text token EOS = 3 (also used as padding).
A response is a token tuple that ends at EOS (inclusive) or is cut at ``horizon`` tokens. A tabular policy
holds a next-token log-distribution for every (prompt, response prefix) context, so it can
  (a) sample responses (from the exactly enumerated sequence law: same distribution as ancestral sampling),
  (b) produce logits (B, T, V) for padded batches in the project's conventions, so the project's own
      functions run on them (positions that predict no response token get large random junk, so a
      masking mistake shows up), and
  (c) give exact sequence probabilities by enumeration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

EOS = 3
VOCAB = 4
CONTENT = (0, 1, 2)

Prompt = tuple[int, ...]
Response = tuple[int, ...]


def all_responses(horizon: int) -> list[Response]:
    """Every response of length ≤ horizon: ended by EOS, or cut at the horizon."""
    out: list[Response] = []
    for length in range(horizon):  # EOS after `length` content tokens
        out += [c + (EOS,) for c in itertools.product(CONTENT, repeat=length)]
    out += list(itertools.product(CONTENT, repeat=horizon))
    return out


def all_contexts(horizon: int) -> list[Response]:
    """Every response prefix at which the policy still has to choose a token."""
    return [c for length in range(horizon) for c in itertools.product(CONTENT, repeat=length)]


@dataclass
class Batch:
    input_ids: Tensor  # (B, T) prompt + response + EOS padding
    loss_mask: Tensor  # (B, T) 1 at response label positions
    prompts: list[Prompt]
    responses: list[Response]


def make_batch(prompts: Sequence[Prompt], responses: Sequence[Response], extra_pad: int = 1) -> Batch:
    """Right-padded batch in the project's conventions (labels = input_ids, mask on response labels)."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses)) + extra_pad
    ids = torch.full((len(prompts), width), EOS, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        mask[i, len(p) : len(p) + len(r)] = True
    return Batch(ids, mask, list(prompts), list(responses))


@dataclass
class TabularPolicy:
    horizon: int
    table: dict[tuple[Prompt, Response], Tensor]  # context -> (V,) float64 log-probs
    junk_seed: int = 0
    _enum: dict[Prompt, tuple[list[Response], Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def random(
        cls, prompts: Iterable[Prompt], horizon: int, seed: int, scale: float = 1.0,
        base: TabularPolicy | None = None, junk_seed: int | None = None,
    ) -> TabularPolicy:
        """Random logits scale·N(0, 1) per context; with ``base``, base log-probs plus that noise."""
        gen = torch.Generator().manual_seed(seed)
        table = {}
        for prompt in prompts:
            for ctx in all_contexts(horizon):
                noise = scale * torch.randn(VOCAB, generator=gen, dtype=torch.float64)
                logits = noise if base is None else base.table[(prompt, ctx)] + noise
                table[(prompt, ctx)] = torch.log_softmax(logits, -1)
        return cls(horizon, table, seed if junk_seed is None else junk_seed)

    @classmethod
    def from_sequence_probs(
        cls, horizon: int, dists: dict[Prompt, dict[Response, float]], junk_seed: int = 0
    ) -> TabularPolicy:
        """The autoregressive policy whose sequence law is ``dists`` (next-token = ratio of prefix masses)."""
        table = {}
        for prompt, dist in dists.items():
            for ctx in all_contexts(horizon):
                mass = torch.zeros(VOCAB, dtype=torch.float64)
                for resp, prob in dist.items():
                    if len(resp) > len(ctx) and resp[: len(ctx)] == ctx:
                        mass[resp[len(ctx)]] += prob
                total = mass.sum()
                probs = mass / total if total > 0 else torch.full((VOCAB,), 1.0 / VOCAB, dtype=torch.float64)
                table[(prompt, ctx)] = probs.log()
        return cls(horizon, table, junk_seed)

    # ---------------------------------------------------------------- exact law

    def sequence_logprob(self, prompt: Prompt, response: Response) -> float:
        return sum(self.table[(prompt, response[:i])][tok].item() for i, tok in enumerate(response))

    def enumerate(self, prompt: Prompt) -> tuple[list[Response], Tensor]:
        """All responses and their exact probabilities (float64, sums to 1)."""
        if prompt not in self._enum:
            responses = all_responses(self.horizon)
            logps = torch.tensor([self.sequence_logprob(prompt, r) for r in responses], dtype=torch.float64)
            self._enum[prompt] = (responses, logps.exp())
        return self._enum[prompt]

    def prefix_distribution(self, prompt: Prompt, depth: int) -> dict[Response, float]:
        """Law of the first ``depth`` response tokens; an ended response stays whole (absorbing state)."""
        out: dict[Response, float] = {}
        for resp, prob in zip(*self.enumerate(prompt)):
            key = resp[:depth]
            out[key] = out.get(key, 0.0) + prob.item()
        return out

    # ---------------------------------------------------------------- sampling and logits

    def sample(self, prompt: Prompt, n: int, gen: torch.Generator) -> list[Response]:
        responses, probs = self.enumerate(prompt)
        idx = torch.multinomial(probs, n, replacement=True, generator=gen)
        return [responses[i] for i in idx.tolist()]

    def logits(self, batch: Batch) -> Tensor:
        """(B, T, V) float32: logits[:, t] is the policy's next-token log-distribution at every position
        that predicts a response token, and random junk (scale 5) everywhere else."""
        gen = torch.Generator().manual_seed(self.junk_seed)
        out = 5.0 * torch.randn(*batch.input_ids.shape, VOCAB, generator=gen)
        for i, (prompt, resp) in enumerate(zip(batch.prompts, batch.responses)):
            start = len(prompt) - 1  # logits at the last prompt token predict the first response token
            rows = torch.stack([self.table[(prompt, resp[:j])] for j in range(len(resp))])
            out[i, start : start + len(resp)] = rows.float()
        return out


def exact_kl(p: Sequence[float] | Tensor, q: Sequence[float] | Tensor) -> float:
    """KL(p‖q) of two discrete laws on the same index set (0·log 0 = 0)."""
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    nz = p > 0
    return float((p[nz] * (p[nz].log() - q[nz].log())).sum())


def dict_kl(p: dict, q: dict) -> float:
    """KL between two laws given as {outcome: prob} dicts."""
    return sum(pv * (math.log(pv) - math.log(q[k])) for k, pv in p.items() if pv > 0)


def best_of_n_probs(probs: Tensor, rewards: Tensor, n: int) -> Tensor:
    """Exact best-of-n law under a tie-free reward: P(y) = F(y)^n − F⁻(y)^n, F = base CDF in reward order."""
    if rewards.unique().numel() != rewards.numel():
        raise ValueError("rewards must be tie-free")
    order = torch.argsort(rewards)
    cdf = probs[order].cumsum(0)
    below = torch.cat([cdf.new_zeros(1), cdf[:-1]])
    out = torch.empty_like(probs)
    out[order] = cdf.pow(n) - below.pow(n)
    return out


def sample_best_of_n(probs: Tensor, rewards: Tensor, n: int, size: int, gen: torch.Generator) -> Tensor:
    """The actual procedure: draw n iid indices from the base, keep the highest-reward one. (size,) indices."""
    draws = torch.multinomial(probs, size * n, replacement=True, generator=gen).view(size, n)
    best = rewards[draws].argmax(-1)
    return draws.gather(1, best[:, None]).squeeze(1)
