"""On-policy RL with a KL penalty to π_sft — the RL end of the spectrum DPO is derived from. Pure tensor functions.

The objective is the KL-regularised one DPO starts from (Rafailov et al. 2023, eq. 3):
    max_π E_{x, y~π}[ r(x, y) ] − β_rl · KL(π ‖ π_sft),
optimised with the per-sample penalised reward R = r(x, y) − β_rl · (log π_θ(y|x) − log π_sft(y|x)) (the k1 estimate
of the KL term, as in PPO-style RLHF, Ouyang et al. 2022, eq. 2) and the REINFORCE leave-one-out baseline over the k
samples of each prompt (RLOO; Kool et al. 2019, Ahmadian et al. 2024, eq. 5). β_rl weights the same KL term as DPO's β.

Shapes: P prompts × k samples, flattened prompt-major to N = P·k where a function says (N,).
"""

from __future__ import annotations

import torch
from torch import Tensor


def kl_penalised_rewards(rewards: Tensor, policy_logps: Tensor, sft_logps: Tensor, beta_rl: float) -> Tensor:
    """R = r − β_rl·(log π_θ(y|x) − log π_sft(y|x)); all (N,), logps summed over the response. No gradient flows."""
    if beta_rl < 0:
        raise ValueError(f"beta_rl must be >= 0, got {beta_rl}")
    return (rewards - beta_rl * (policy_logps - sft_logps)).detach()


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """A_i = R_i − mean_{j≠i} R_j within each prompt's group of k samples.

    rewards (N,) prompt-major with N = P·k, k ≥ 2 → (N,). Equivalently k/(k−1)·(R_i − mean_j R_j).
    """
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt, got {k}")
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of k={k}")
    grouped = rewards.reshape(-1, k)  # (P, k)
    others_mean = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others_mean).reshape(-1)


def policy_gradient_loss(
    policy_logps: Tensor, behaviour_logps: Tensor, advantages: Tensor, clip: float | None = None
) -> tuple[Tensor, Tensor]:
    """Per-sample surrogate losses (N,) and the fraction of samples whose ratio was clipped.

    With clip=None: REINFORCE, −A·log π_θ(y|x) (on-policy: the samples were drawn from π_θ itself).
    With clip=ε: the PPO clipped surrogate at sequence level (Schulman et al. 2017, eq. 7), for reusing a round's
    samples over several inner epochs: −min(ρA, clip(ρ, 1−ε, 1+ε)A), ρ = π_θ(y|x)/π_behaviour(y|x).
    """
    advantages = advantages.detach()
    if clip is None:
        return -advantages * policy_logps, torch.zeros((), dtype=policy_logps.dtype)
    ratio = torch.exp(policy_logps - behaviour_logps.detach())
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    clipped_fraction = ((ratio - 1).abs() > clip).float().mean()
    return -torch.minimum(unclipped, clipped), clipped_fraction
