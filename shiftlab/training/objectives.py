"""What one optimizer step minimises, given a batch from the pair source: the one thing, with the source, that the
RL reference point swaps in. The training loop calls `objective.losses` and knows nothing else about it.

- `PreferenceObjective`: the DPO family (dpo / ipo / hinge) on pairs — chosen rows then rejected rows.
- `PolicyGradientObjective`: RLOO / PPO-clip on scored rollouts, whose advantages (KL penalty to π_sft included)
  were fixed when the rollouts were sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from shiftlab.config import LossConfig, LossKind
from shiftlab.data.batches import PreferenceBatch
from shiftlab.functional.losses import compute_preference_loss, sequence_logps
from shiftlab.functional.policy_gradient import policy_gradient_loss
from shiftlab.models.packing import forward_sequence_logps


class Objective(Protocol):
    def n_units(self, batch) -> int:
        """Training units in the batch (pairs, or rollouts): the loss is their mean."""

    def select(self, batch, lo: int, hi: int):
        """Units lo..hi-1 of the batch: one data-parallel rank's share."""

    def micro_batches(self, batch, parts: int) -> list:
        """Split for gradient accumulation."""

    def losses(self, policy: torch.nn.Module, ref: torch.nn.Module, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-unit losses (n,) with gradient, and per-unit statistics (n,) to average into the training row."""


def policy_and_reference_logps(policy, ref, batch: PreferenceBatch, packing: bool = False) -> tuple[Tensor, Tensor]:
    """Sequence log-probs (2B,) of chosen+rejected rows in one concatenated forward pass each.

    When the batch carries precomputed reference log-probs (a fixed π_ref on a fixed set), π_ref is not run.
    `packing` (train.packing): both forwards run on the rows laid end to end (shiftlab.models.packing), so no layer
    computes on padding; the log-probs are the padded forward's up to float rounding.
    """
    policy_logps = forward_sequence_logps(policy, batch.input_ids, batch.attention_mask, batch.loss_mask, packing)
    if batch.ref_logps is not None:
        return policy_logps, batch.ref_logps
    with torch.no_grad():
        ref_logps = forward_sequence_logps(ref, batch.input_ids, batch.attention_mask, batch.loss_mask, packing)
    return policy_logps, ref_logps


class PreferenceObjective:
    def __init__(self, cfg: LossConfig, packing: bool = False):
        self.cfg, self.packing = cfg, packing
        self.options = {"label_smoothing": cfg.label_smoothing} if cfg.label_smoothing else {}

    def n_units(self, batch: PreferenceBatch) -> int:
        return batch.n_pairs

    def select(self, batch: PreferenceBatch, lo: int, hi: int) -> PreferenceBatch:
        """Pairs lo..hi-1, their chosen and rejected rows kept aligned."""
        b = batch.n_pairs
        rows = torch.cat([torch.arange(lo, hi), torch.arange(b + lo, b + hi)])
        ref_logps = None if batch.ref_logps is None else batch.ref_logps[rows]
        return PreferenceBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.loss_mask[rows],
                               hi - lo, 0, ref_logps=ref_logps)

    def micro_batches(self, batch: PreferenceBatch, parts: int) -> list[PreferenceBatch]:
        b = batch.n_pairs
        bounds = [round(i * b / parts) for i in range(parts + 1)]
        return [self.select(batch, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def losses(self, policy, ref, batch: PreferenceBatch) -> tuple[Tensor, dict[str, Tensor]]:
        policy_logps, ref_logps = policy_and_reference_logps(policy, ref, batch, self.packing)
        return preference_statistics(self.cfg.kind.value, policy_logps, ref_logps, self.cfg.beta, **self.options)


def preference_statistics(
    kind: str, policy_logps: Tensor, ref_logps: Tensor, beta: float, **options: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair losses (B,) with gradient and TRL's per-pair statistics (B,) from (2B,) sequence log-probs, chosen
    rows then rejected: the training step's numbers, and the held-out pairs' (shiftlab.training.heldout).
    An accuracy counts a pair only when its margin is strictly positive (TRL's rule), so a tie counts as wrong."""
    m = policy_logps.shape[0] // 2
    out = compute_preference_loss(kind, policy_logps[:m], policy_logps[m:], ref_logps[:m], ref_logps[m:], beta, **options)
    margins = out.chosen_rewards - out.rejected_rewards
    return out.losses, {
        "loss": out.losses.detach(),
        "rewards/chosen": out.chosen_rewards,
        "rewards/rejected": out.rejected_rewards,
        "rewards/margins": margins,
        "rewards/accuracies": (margins > 0).float(),
        "logps/chosen": policy_logps[:m].detach(),
        "logps/rejected": policy_logps[m:].detach(),
    }


@dataclass
class RolloutBatch:
    """N scored samples from the behaviour policy (π_θ at sampling time), right-padded like a SequenceBatch."""

    input_ids: Tensor  # (N, T) long
    attention_mask: Tensor  # (N, T) long
    loss_mask: Tensor  # (N, T) bool: response label positions, end-of-text included
    advantages: Tensor  # (N,) RLOO advantages of the KL-penalised reward
    behaviour_logps: Tensor  # (N,) log π_behaviour(y|x), summed over the response
    rewards: Tensor  # (N,) oracle reward r(x, y)
    kl_penalty: Tensor  # (N,) log π_behaviour(y|x) − log π_sft(y|x): the k1 term β_rl weights

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: Tensor) -> RolloutBatch:
        return RolloutBatch(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    def to(self, device: torch.device | str) -> RolloutBatch:
        return RolloutBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class PolicyGradientObjective:
    def __init__(self, cfg: LossConfig):
        self.clip = cfg.clip

    def n_units(self, batch: RolloutBatch) -> int:
        return len(batch)

    def select(self, batch: RolloutBatch, lo: int, hi: int) -> RolloutBatch:
        return batch.select(torch.arange(lo, hi))

    def micro_batches(self, batch: RolloutBatch, parts: int) -> list[RolloutBatch]:
        return [batch.select(rows) for rows in torch.arange(len(batch)).tensor_split(parts) if len(rows)]

    def losses(self, policy, ref, batch: RolloutBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logps = sequence_logps(logits, batch.input_ids, batch.loss_mask)
        losses, clipped = policy_gradient_loss(logps, batch.behaviour_logps, batch.advantages, self.clip)
        return losses, {
            "loss": losses.detach(),
            "rl/reward": batch.rewards,
            "rl/kl_penalty": batch.kl_penalty,
            "rl/advantage_abs": batch.advantages.abs(),
            "rl/clipped": clipped.expand(len(batch)),
            "logps/sampled": logps.detach(),
        }


def build_objective(cfg: LossConfig, packing: bool = False) -> Objective:
    """`packing` (train.packing) applies to the preference forwards; rollouts are scored padded."""
    return PolicyGradientObjective(cfg) if cfg.kind is LossKind.rloo else PreferenceObjective(cfg, packing)
