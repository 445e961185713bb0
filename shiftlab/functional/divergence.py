"""Divergences between a policy and a reference/behaviour policy: pure tensor functions.

The definitions and pitfalls are in METRICS.md ("Divergence metrics"); this module implements them.
Shape conventions follow ``shiftlab.functional.losses``: ``logits`` (B, T, V) on ``input_ids`` (B, T), ``loss_mask``
(B, T) marking response label positions; functions taking logits and a mask shift internally, so the KL
at prediction position t (``logits[:, t]``) counts when ``loss_mask[:, t + 1]`` is set.

Sequence KL (chain rule, the DPO paper's "sum of per-timestep KL"):
    KL(π_θ‖μ)(x) = E_{y~π_θ(·|x)} Σ_t KL(π_θ(·|s_t) ‖ μ(·|s_t)),   s_t = (x, y_<t).
Every estimator here assumes the sequences were sampled from the *first* argument (p) at temperature 1.

Behaviour-agnostic two-sample divergences (classifier test, MMD, n-gram JS) live in ``shiftlab.functional.two_sample``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "best_of_n_kl_bound",
    "depth_kl_curve",
    "depth_kl_curve_stderr",
    "effective_sample_size",
    "exact_token_kl",
    "k1",
    "k3",
    "mean_and_stderr",
    "response_step_kl",
    "response_token_kl",
    "sequence_exact_kl",
    "steps_from_token_kl",
]


# --------------------------------------------------------------------------- sequence KL and estimators


def exact_token_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Exact next-token KL(p‖q) = Σ_v p_v (log p_v − log q_v) at every position, in log space.

    Args:
        logits_p, logits_q: (B, T, V) (any leading shape works) unnormalised logits; any float dtype.

    Returns:
        (B, T) float32. Terms with p_v = 0 contribute 0 (so −inf logits in p are fine).
    """
    logp = torch.log_softmax(logits_p.float(), dim=-1)
    logq = torch.log_softmax(logits_q.float(), dim=-1)
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(-1)


def response_token_kl(logits_p: Tensor, logits_q: Tensor, loss_mask: Tensor) -> Tensor:
    """Exact per-token KL at the prediction positions of response tokens, 0 elsewhere.

    Args:
        logits_p, logits_q: (B, T, V) on the same input_ids.
        loss_mask: (B, T), 1 at response label positions (incl. end-of-text).

    Returns:
        (B, T-1) float32; entry t is KL(p(·|s)‖q(·|s)) at ``logits[:, t]`` when ``loss_mask[:, t+1]`` is set.
        Its masked mean over positions is the per-token KL averaged over the visited states.
    """
    kl = exact_token_kl(logits_p[:, :-1], logits_q[:, :-1])  # (B, T-1)
    mask = loss_mask[:, 1:].bool()
    return torch.where(mask, kl, torch.zeros_like(kl))


def sequence_exact_kl(logits_p: Tensor, logits_q: Tensor, loss_mask: Tensor) -> Tensor:
    """Exact per-token estimator of the sequence KL: Σ_t KL(p(·|s_t) ‖ q(·|s_t)) along each response.

    Unbiased for KL(p‖q) of whole responses when the responses were sampled from p; its variance is
    far lower than k1's because the inner expectation over the next token is done exactly.

    Args:
        logits_p, logits_q: (B, T, V) on the same input_ids.
        loss_mask: (B, T) response label positions.

    Returns:
        (B,) float32.
    """
    return response_token_kl(logits_p, logits_q, loss_mask).sum(-1)


def _left_align(values: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    """Move each row's masked entries to the front, in order, zero-padded: (B, T) -> (B, L)."""
    mask = mask.bool()
    n = mask.sum(-1)  # (B,)
    length = int(n.max().item()) if max_len is None else max_len
    out = values.new_zeros(values.shape[0], length + 1)  # one spare column catches overflow
    step = (mask.long().cumsum(-1) - 1).clamp(max=length)  # response step index of each position
    step = torch.where(mask, step, torch.full_like(step, length))
    out.scatter_add_(1, step, torch.where(mask, values, torch.zeros_like(values)))
    return out[:, :length]


def response_step_kl(logits_p: Tensor, logits_q: Tensor, loss_mask: Tensor, max_len: int | None = None) -> Tensor:
    """Exact per-token KL indexed by response step (0 = first response token), for ``depth_kl_curve``.

    Prompts of different lengths are aligned at the start of the response. After a response has
    ended the entry is 0: the absorbing "ended" state has identical next-state laws under both policies.

    Args:
        logits_p, logits_q: (B, T, V) on the same input_ids.
        loss_mask: (B, T) response label positions.
        max_len: L, number of steps returned; default the longest response in the batch. Pass the
            generation limit to get equal widths across batches; steps past L are dropped.

    Returns:
        (B, L) float32.
    """
    return steps_from_token_kl(response_token_kl(logits_p, logits_q, loss_mask), loss_mask, max_len)


def steps_from_token_kl(token_kl: Tensor, loss_mask: Tensor, max_len: int | None = None) -> Tensor:
    """``response_step_kl`` from an already computed ``response_token_kl`` (B, T-1) of the same batch: (B, L)."""
    return _left_align(token_kl, loss_mask[:, 1:], max_len)


def k1(logp_p_seq: Tensor, logp_q_seq: Tensor) -> Tensor:
    """k1 = log p(y) − log q(y) per sequence (y ~ p). Unbiased for KL(p‖q); can be negative per sample.

    Args:
        logp_p_seq, logp_q_seq: (B,) summed sequence log-probabilities.

    Returns:
        (B,) in the promoted dtype of the inputs (at least float32).
    """
    dtype = torch.promote_types(torch.promote_types(logp_p_seq.dtype, logp_q_seq.dtype), torch.float32)
    return logp_p_seq.to(dtype) - logp_q_seq.to(dtype)


def k3(logp_p_seq: Tensor, logp_q_seq: Tensor) -> Tensor:
    """k3 = (r − 1) − log r with r = q(y)/p(y) per sequence (y ~ p). Unbiased for KL(p‖q), always ≥ 0.

    Computed from log r without forming differences of large numbers: expm1(log r) − log r, with a
    Taylor series for |log r| < 1e-2 where that difference would cancel. Infinite when r overflows.

    Args/Returns: as ``k1``.
    """
    log_r = -k1(logp_p_seq, logp_q_seq)
    series = log_r**2 * (0.5 + log_r / 6.0 + log_r**2 / 24.0)
    direct = torch.expm1(log_r) - log_r
    return torch.where(log_r.abs() < 1e-2, series, direct).clamp_min(0.0)


def mean_and_stderr(x: Tensor) -> tuple[float, float]:
    """Mean and standard error std(ddof=1)/√n of all entries of ``x`` (se = 0 when n < 2).

    Raises:
        ValueError: ``x`` is empty.
    """
    x = x.detach().reshape(-1).double()
    n = x.numel()
    if n == 0:
        raise ValueError("mean_and_stderr of an empty tensor")
    mean = x.mean().item()
    se = (x.std(unbiased=True) / math.sqrt(n)).item() if n >= 2 else 0.0
    return mean, se


def _weights(step_kl: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return torch.full((step_kl.shape[0],), 1.0 / step_kl.shape[0], dtype=torch.float64)
    w = weights.detach().double().reshape(-1)
    if w.shape[0] != step_kl.shape[0] or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be (B,), non-negative, with a positive sum")
    return w / w.sum()


def depth_kl_curve(step_kl: Tensor, weights: Tensor | None = None) -> Tensor:
    """KL between the prefix distributions of p and q at every depth, by the chain rule.

    With d_t the law of the first t response tokens (a response that has ended stays in an absorbing
    "ended" state), KL(d_p,t ‖ d_q,t) = E_{y~p} Σ_{t' < t} KL(p(·|s_t') ‖ q(·|s_t')) with 0-based
    steps t'. Hence ``curve[t-1] = mean_i Σ_{j ≤ t-1} step_kl[i, j]`` for t = 1..L; the last entry is the
    sequence KL (when L covers the longest response) and the curve is non-decreasing.

    Args:
        step_kl: (B, L) exact per-step KL along samples of p, 0 after the end (``response_step_kl``).
        weights: optional (B,) non-negative weights (e.g. exact probabilities when the rows enumerate
            every sequence); normalised internally. Default: the uniform sample mean.

    Returns:
        (L,) float64.
    """
    w = _weights(step_kl, weights)
    return w @ step_kl.detach().double().cumsum(-1)


def depth_kl_curve_stderr(step_kl: Tensor) -> Tensor:
    """Standard error of ``depth_kl_curve(step_kl)`` at every depth (unweighted samples), shape (L,)."""
    n = step_kl.shape[0]
    if n < 2:
        return torch.zeros(step_kl.shape[1], dtype=torch.float64)
    return step_kl.detach().double().cumsum(-1).std(0, unbiased=True) / math.sqrt(n)


def effective_sample_size(log_w: Tensor) -> float:
    """Normalised effective sample size ESS/N = (Σw)² / (N Σw²) in (0, 1], computed in log space.

    ESS/N = exp(2·LSE(log w) − LSE(2·log w)) / N; its population value is 1/E_μ[w²] = exp(−D_2(π_θ‖μ)).

    Args:
        log_w: (N,) log importance weights log π_θ(y_i|x_i) − log μ(y_i|x_i), y_i ~ μ (the behaviour policy).
    """
    log_w = log_w.detach().double().reshape(-1)
    n = log_w.numel()
    if n == 0:
        raise ValueError("effective_sample_size of no weights")
    return math.exp(2 * torch.logsumexp(log_w, 0).item() - torch.logsumexp(2 * log_w, 0).item()) / n


def best_of_n_kl_bound(n: int) -> float:
    """Upper bound log n − (n−1)/n on KL(best-of-n ‖ base) for a tie-free reward (tight only as every
    base sequence probability → 0)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n
