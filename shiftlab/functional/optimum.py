"""The optimum of the KL-regularised objective, estimated from π_sft's own samples: pure tensor functions.

The objective DPO and RL share (Rafailov et al. 2023, eq. 3), per prompt x and for β > 0:
    max_π E_{y~π}[r(x, y)] − β·KL(π ‖ π_sft),
is maximised by the tilted policy (their eq. 4)
    π*_β(y|x) = π_sft(y|x)·exp(r(x, y)/β) / Z_β(x),   Z_β(x) = E_{y~π_sft}[exp(r(x, y)/β)].
Gibbs' variational identity, log Z_β = max_π E_π[r/β] − KL(π‖π_sft), attained at π*_β, gives its KL in closed form:
    KL(π*_β ‖ π_sft)(x) = E_{π*_β}[r]/β − log Z_β(x).
Averaged over prompts, the points (E_x KL, E_x E_{π*_β}[r]) for β from ∞ down to 0 trace the highest expected reward
any policy can have at each average KL(π‖π_sft): maximising E_x E_π[r] subject to E_x KL ≤ K is solved by one
Lagrange multiplier β shared by all prompts (Korbak et al. 2022 view this tilt as Bayesian inference).

Estimator: with N samples y_1..y_N ~ π_sft(·|x) and their rewards r_i, self-normalised importance sampling gives
    w_i = softmax(r/β)_i,   E_{π*_β}[r] ≈ Σ_i w_i r_i,
    KL ≈ Σ_i w_i r_i/β − log((1/N) Σ_i exp(r_i/β)) = Σ_i w_i log(N·w_i),
all in log space (logsumexp), so no β underflows. The KL estimate is KL(w ‖ uniform over the N samples), hence
never above log N: the estimator saturates there whatever the true KL is. Its ESS/N = 1/(N·Σ_i w_i²) says how many
samples carry the weight. For a fixed sample set, reward and KL estimates both grow as β falls (d/dλ of each is
λ-weighted Var_w(r) ≥ 0, λ = 1/β), so the estimated frontier is monotone by construction.

Shapes: P prompts × N samples per prompt; B values of β.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "MAX_KL_FRACTION",
    "MIN_ESS",
    "OptimumCurve",
    "default_beta_grid",
    "estimate_optimum",
    "exact_optimum",
    "optimum_frontier",
    "reliable_kl",
]

# The estimate is trusted where both hold (checked against exact enumeration in tests/functional/test_optimum.py):
MIN_ESS = 0.1  # ESS/N at least this: ≥ 6 of 64 samples still carry the weight
MAX_KL_FRACTION = 0.5  # KL at most this fraction of log N: the SNIS KL is ≤ log N and bends well before it


class OptimumCurve(NamedTuple):
    """Per β (B,): the optimum's expected reward, its KL(π*_β‖π_sft) in nats, the weights' ESS/N (mean over prompts),
    and the expectation of a second score (e.g. a gold judge's) under the same π*_β (None without one)."""

    beta: Tensor
    reward: Tensor
    kl: Tensor
    ess: Tensor
    other: Tensor | None = None


def _check(rewards: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    rewards, betas = torch.as_tensor(rewards, dtype=torch.float64), torch.as_tensor(betas, dtype=torch.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 1:
        raise ValueError(f"rewards must be (P, N) with N ≥ 1 samples per prompt, got shape {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite")
    if betas.ndim != 1 or not (betas > 0).all():
        raise ValueError(f"betas must be a (B,) grid of positive values, got {betas.tolist()}")
    return rewards, betas


def estimate_optimum(rewards: Tensor, betas: Tensor, other: Tensor | None = None) -> OptimumCurve:
    """The SNIS estimate of π*_β on N π_sft samples per prompt, averaged over prompts.

    Args:
        rewards: (P, N) r(x_p, y_pi), y_pi ~ π_sft(·|x_p).
        betas: (B,) positive KL coefficients.
        other: (P, N) a second score of the same samples (a gold judge); its mean under π*_β is returned, with the
            weights still set by `rewards` (the optimum of the proxy objective, scored by another judge).
    Returns:
        OptimumCurve of (B,) float64 tensors.
    """
    rewards, betas = _check(rewards, betas)
    n = rewards.shape[1]
    scaled = rewards[None] / betas[:, None, None]  # (B, P, N): r/β
    log_w = torch.log_softmax(scaled, dim=-1)  # (B, P, N): self-normalised log weights
    w = log_w.exp()
    reward = (w * rewards[None]).sum(-1)  # (B, P)
    # Σ w log(N w) = E_w[r]/β − log mean exp(r/β); the left form cannot go negative by rounding where w is uniform
    kl = (w * (log_w + math.log(n))).sum(-1).clamp(min=0.0)  # (B, P)
    ess = torch.exp(-torch.logsumexp(2 * log_w, dim=-1)) / n  # (B, P): (Σw)²/(N Σw²) with Σw = 1
    extra = None
    if other is not None:
        other = torch.as_tensor(other, dtype=torch.float64)
        if other.shape != rewards.shape:
            raise ValueError(f"other must have the rewards' shape {tuple(rewards.shape)}, got {tuple(other.shape)}")
        extra = (w * other[None]).sum(-1).mean(-1)
    return OptimumCurve(betas, reward.mean(-1), kl.mean(-1), ess.mean(-1), extra)


def exact_optimum(logp: Tensor, rewards: Tensor, betas: Tensor) -> OptimumCurve:
    """π*_β by enumeration of a finite response set: the truth `estimate_optimum` is checked against.

    Args:
        logp: (P, M) log π_sft(y_m|x_p) of every response (each row sums to 1 in probability).
        rewards: (P, M) r(x_p, y_m).
        betas: (B,).
    Returns:
        OptimumCurve with exact reward and KL (means over prompts) and ess = exp(−D_2(π*_β‖π_sft)), the population
        value ESS/N tends to.
    """
    rewards, betas = _check(rewards, betas)
    logp = torch.as_tensor(logp, dtype=torch.float64)
    if logp.shape != rewards.shape:
        raise ValueError(f"logp must have the rewards' shape {tuple(rewards.shape)}, got {tuple(logp.shape)}")
    log_star = torch.log_softmax(logp[None] + rewards[None] / betas[:, None, None], dim=-1)  # (B, P, M)
    star = log_star.exp()
    reward = (star * rewards[None]).sum(-1)
    kl = (star * (log_star - logp[None])).sum(-1).clamp(min=0.0)
    # D_2(p‖q) = log Σ p²/q
    d2 = torch.logsumexp(2 * log_star - logp[None], dim=-1)
    return OptimumCurve(betas, reward.mean(-1), kl.mean(-1), torch.exp(-d2).mean(-1))


def default_beta_grid(rewards: Tensor, per_decade: int = 8, low: float = -3.0, high: float = 2.0) -> Tensor:
    """(B,) β from 100·s down to 0.001·s, s = the rewards' standard deviation (only r/β matters, so the grid follows
    the reward's scale): from KL ≈ 0 to the saturation at log N. Descending, so KL rises along it."""
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    scale = float(rewards.std()) if rewards.numel() > 1 else 0.0
    scale = scale if scale > 0 else 1.0
    steps = int(round((high - low) * per_decade)) + 1
    return scale * torch.logspace(high, low, steps, dtype=torch.float64)


def reliable_kl(kl: Tensor, ess: Tensor, n: int, min_ess: float = MIN_ESS,
                max_kl_fraction: float = MAX_KL_FRACTION) -> Tensor:
    """(B,) bool: where the estimate is trusted — ESS/N ≥ `min_ess` and KL ≤ `max_kl_fraction`·log N."""
    if n < 1:
        raise ValueError(f"n must be >= 1 samples per prompt, got {n}")
    kl, ess = torch.as_tensor(kl, dtype=torch.float64), torch.as_tensor(ess, dtype=torch.float64)
    return (ess >= min_ess) & (kl <= max_kl_fraction * math.log(n))


def optimum_frontier(curve: OptimumCurve, n: int, min_ess: float = MIN_ESS,
                     max_kl_fraction: float = MAX_KL_FRACTION) -> tuple[Tensor, Tensor, Tensor, float]:
    """The estimated optimum as a reward-vs-KL frontier.

    Returns (kl (B,), reward (B,), reliable (B,) bool, reliable-up-to KL): sorted by KL, reward made non-decreasing
    (it is already, up to float rounding: see the module docstring), `reliable` from `reliable_kl`, and the largest
    KL of the leading run of reliable points (0.0 if the first is not reliable). Beyond it the estimate
    under-states both the KL and the reward of the true optimum.
    """
    order = torch.argsort(curve.kl)
    kl, reward = curve.kl[order], torch.cummax(curve.reward[order], 0).values
    ok = reliable_kl(kl, curve.ess[order], n, min_ess, max_kl_fraction)
    leading = torch.cumprod(ok.long(), 0).bool()  # trusted only up to the first untrusted point
    upto = float(kl[leading].max()) if leading.any() else 0.0
    return kl, reward, leading, upto
