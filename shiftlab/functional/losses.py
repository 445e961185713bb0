"""Sequence log-probabilities and preference losses: pure tensor functions.

Conventions (shared by the whole project):
    labels     (B, T)     token ids; the same tensor as the model's ``input_ids``.
    loss_mask  (B, T)     1 at *label positions* of the response (response tokens including the
                          end-of-text token); 0 on the prompt and on padding.
    logits     (B, T, V)  model output on ``input_ids``; ``logits[:, t]`` predicts ``labels[:, t + 1]``.
Every function that takes logits together with labels/mask shifts internally
(``logits[:, :-1]``, ``labels[:, 1:]``, ``loss_mask[:, 1:]``); callers never pre-shift.

All preference losses share one signature::

    loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
         beta, **options) -> LossOutput

with (B,) summed sequence log-probabilities in, and per-pair losses plus detached implicit rewards
β·(log π_θ(y|x) − log π_ref(y|x)) out. ``LOSSES`` is the only place a loss name is looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSSES",
    "LossOutput",
    "compute_preference_loss",
    "dpo_loss",
    "hinge_loss",
    "ipo_loss",
    "sequence_logps",
    "token_logps",
]


class LossOutput(NamedTuple):
    """Per-pair outputs of a preference loss; every field has shape (B,)."""

    losses: Tensor
    chosen_rewards: Tensor  # β·(log π_θ(y_w|x) − log π_ref(y_w|x)), detached
    rejected_rewards: Tensor  # β·(log π_θ(y_l|x) − log π_ref(y_l|x)), detached


def token_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of every next label under the model.

    Args:
        logits: (B, T, V) model output on ``labels``; any float dtype.
        labels: (B, T) token ids (= input_ids).

    Returns:
        (B, T-1) float32, ``out[:, t] = log softmax(logits[:, t])[labels[:, t + 1]]``.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        shapes = f"{tuple(logits.shape)}, {tuple(labels.shape)}"
        raise ValueError(f"expected logits (B, T, V) and labels (B, T); got {shapes}")
    # Float32 log-softmax: bf16/fp16 log-probs lose whole nats on long sequences.
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    return logp.gather(-1, labels[:, 1:].long().unsqueeze(-1)).squeeze(-1)  # (B, T-1)


def sequence_logps(logits: Tensor, labels: Tensor, loss_mask: Tensor) -> Tensor:
    """Summed log-probability of the response: log π(y|x) = Σ_t log π(y_t | x, y_<t).

    The factorisation used by the DPO paper (Rafailov et al. 2023, §4 / eq. 7 operate on it).

    Args:
        logits: (B, T, V) model output on ``labels``.
        labels: (B, T) token ids.
        loss_mask: (B, T) bool/0-1, 1 at response label positions (incl. end-of-text).

    Returns:
        (B,) float32 sums over response positions (not averaged per token).
    """
    if loss_mask.shape != labels.shape:
        raise ValueError(f"loss_mask {tuple(loss_mask.shape)} must match labels {tuple(labels.shape)}")
    logps = token_logps(logits, labels)  # (B, T-1)
    mask = loss_mask[:, 1:].bool()
    # where() rather than multiply: a -inf log-prob at a masked position must not become NaN.
    return torch.where(mask, logps, torch.zeros_like(logps)).sum(-1)


def _log_ratio_margin(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    """h = (log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l)), shape (B,)."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def _rewards(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    chosen = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return chosen, rejected


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """DPO loss, Rafailov et al. 2023 eq. 7: −log σ(β h).

    With label smoothing ε (conservative DPO: each label is flipped with probability ε) the loss is
    −(1 − ε) log σ(β h) − ε log σ(−β h).

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: (B,)
            summed sequence log-probabilities (see ``sequence_logps``).
        beta: inverse temperature β > 0 of the KL penalty.
        label_smoothing: ε in [0, 0.5].

    Returns:
        LossOutput with (B,) losses and detached implicit rewards.
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    logits = beta * _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    # logsigmoid is stable for |β h| in the thousands, unlike log(sigmoid(.)).
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    chosen, rejected = _rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return LossOutput(losses, chosen, rejected)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> LossOutput:
    """IPO loss, Azar et al. 2023 (empirical IPO objective, "A General Theoretical Paradigm..."): (h − 1/(2β))².

    Here β plays the role of the paper's τ. h is computed from *summed* sequence log-probabilities, as
    in the paper; TRL's ``loss_type="ipo"`` averages log-probs per token instead, which changes the
    scale of h (and hence the meaning of β) by the response length.

    Args/Returns: as ``dpo_loss`` (no options).
    """
    _check_beta(beta)
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    chosen, rejected = _rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return LossOutput(losses, chosen, rejected)


def hinge_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> LossOutput:
    """Hinge loss relu(1 − β h): SLiC-HF's rank-calibration hinge (Zhao et al. 2023) on the
    reference-normalised margin h.

    Args/Returns: as ``dpo_loss`` (no options).
    """
    _check_beta(beta)
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    losses = torch.relu(1.0 - beta * h)
    chosen, rejected = _rewards(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return LossOutput(losses, chosen, rejected)


LOSSES: Mapping[str, Callable[..., LossOutput]] = MappingProxyType(
    {"dpo": dpo_loss, "ipo": ipo_loss, "hinge": hinge_loss}
)


def compute_preference_loss(
    name: str,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    **options: float,
) -> LossOutput:
    """Look up the loss ``name`` in ``LOSSES`` and apply it; options go to that loss (e.g. label_smoothing).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    try:
        loss_fn = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown preference loss {name!r}; valid names: {sorted(LOSSES)}") from None
    return loss_fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, **options)
