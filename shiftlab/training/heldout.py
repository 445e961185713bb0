"""Held-out human pairs scored by the implicit reward: what evaluation can measure where the pairs are human.

With human pairs there is often no oracle to score π_θ's samples (oracle.kind=none), but there are pairs no step ever
trained on: the eval split's, or those of the prompts held out for evaluation (`Task.eval_pairs`). On them DPO's
implicit reward r_θ(x, y) = β·(log π_θ(y|x) − log π_ref(y|x)) (Rafailov et al. 2023, §5) either ranks the human
choice first or not: TRL's eval `rewards/accuracies`, `rewards/margins` and `loss`, logged as `eval/heldout/...`.
The per-pair numbers are the training step's own (`preference_statistics`), so train and held-out rows mean the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from shiftlab.config import LossConfig, LossKind
from shiftlab.data.batches import PreferenceBatch, PreferenceCollator
from shiftlab.data.pairs import PreferencePair
from shiftlab.functional.divergence import mean_and_stderr
from shiftlab.training.objectives import policy_and_reference_logps, preference_statistics

PREFIX = "eval/heldout/"
REPORTED = ("rewards/accuracies", "rewards/margins", "loss")  # each with its `_se`


def heldout_metrics(kind: str, policy_logps: Tensor, ref_logps: Tensor, beta: float, **options: float) -> dict[str, float]:
    """Means and standard errors over pairs of the held-out statistics, from (2B,) sequence log-probs of B pairs
    (chosen rows, then rejected) under π_θ and π_ref: {"eval/heldout/rewards/accuracies": ..., "..._se": ...}."""
    _, stats = preference_statistics(kind, policy_logps.detach(), ref_logps.detach(), beta, **options)
    out: dict[str, float] = {}
    for name in REPORTED:
        out[PREFIX + name], out[f"{PREFIX}{name}_se"] = mean_and_stderr(stats[name])
    return out


def pick_pairs(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """`n` of the pairs (all when fewer), a seeded draw kept in their original order: a data set sorted by source
    (HH's test split) is not scored on its first source only, and every evaluation scores the same pairs."""
    rows = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:n])
    return [pairs[i] for i in rows]


class HeldoutPairs:
    """The held-out evaluation: `__call__(policy, ref)` → the `eval/heldout/...` columns.

    The pairs are collated once, `batch_size` pairs a batch, by the run's collator (its truncation rule). Their
    loss is the run's preference loss; under loss=rloo, whose β_rl weights the same KL to π_ref = π_sft, it is
    DPO's (the Bradley–Terry log-likelihood of the human choices under the implicit reward)."""

    def __init__(self, pairs: Sequence[PreferencePair], collator: PreferenceCollator, loss: LossConfig, *,
                 n_pairs: int, batch_size: int, seed: int, packing: bool = False):
        if not pairs or n_pairs < 1:
            raise ValueError(f"held-out evaluation needs pairs and eval.heldout_pairs ≥ 1; got {len(pairs)} pairs, {n_pairs}")
        picked = pick_pairs(pairs, n_pairs, seed)
        self.n_pairs = len(picked)
        self.batches: list[PreferenceBatch] = [collator(picked[i : i + batch_size]) for i in range(0, len(picked), batch_size)]
        self.kind = LossKind.dpo.value if loss.kind is LossKind.rloo else loss.kind.value
        self.beta, self.packing = loss.beta, packing
        self.options = {"label_smoothing": loss.label_smoothing} if loss.label_smoothing else {}

    @torch.no_grad()
    def __call__(self, policy: torch.nn.Module, ref: torch.nn.Module) -> dict[str, float]:
        device = next(policy.parameters()).device
        policy.eval()  # no dropout: the numbers depend on the weights only
        ref.eval()
        parts = [policy_and_reference_logps(policy, ref, batch.to(device), self.packing) for batch in self.batches]
        policy_logps = _chosen_then_rejected([logps for logps, _ in parts], self.batches)
        ref_logps = _chosen_then_rejected([logps for _, logps in parts], self.batches)
        return heldout_metrics(self.kind, policy_logps, ref_logps, self.beta, **self.options)


def _chosen_then_rejected(per_batch: list[Tensor], batches: list[PreferenceBatch]) -> Tensor:
    """Batches' (2m,) rows, each chosen then rejected, as one (2N,) float32 CPU tensor: all chosen, then all rejected."""
    chosen = [rows[: b.n_pairs] for rows, b in zip(per_batch, batches)]
    rejected = [rows[b.n_pairs :] for rows, b in zip(per_batch, batches)]
    return torch.cat(chosen + rejected).float().cpu()
