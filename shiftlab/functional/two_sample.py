"""Behaviour-agnostic two-sample divergences, for when the behaviour policy's probabilities are unknown
(human preference data): a classifier two-sample test, MMD² with a permutation test, and n-gram JS.
Pure tensor functions; METRICS.md ("Behaviour-agnostic two-sample divergences") is the spec.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from scipy import stats
from torch import Tensor

__all__ = ["classifier_two_sample_test", "median_bandwidth", "mmd2_unbiased", "mmd_permutation_test", "ngram_js_divergence"]



def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mu, sd = train.mean(0), train.std(0, unbiased=False).clamp_min(1e-8)
    return (train - mu) / sd, (test - mu) / sd


def _fit_logistic(x: Tensor, y: Tensor, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """L2-regularised logistic regression by full-batch L-BFGS (deterministic): returns (w (D,), b ())."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def classifier_two_sample_test(
    x: Tensor, y: Tensor, seed: int, l2: float = 1e-2, max_iter: int = 200, confidence: float = 0.95
) -> dict[str, float]:
    """Classifier two-sample test (C2ST, Lopez-Paz & Oquab 2017) with logistic regression.

    Balances the classes by subsampling the larger sample, splits each class 50/50 at random into
    train/test, standardises features with train statistics, fits L2-regularised logistic regression
    (L-BFGS, deterministic given ``seed``) and scores accuracy a on the held-out half. With balanced
    classes, TV(P_x, P_y) ≥ 2a − 1. The interval is Clopper-Pearson (exact binomial).

    Args:
        x: (N, D) features of one sample; y: (M, D) of the other. Need min(N, M) ≥ 4.
        seed: seeds the subsampling and the split.
        l2: ridge penalty on the weights (features are standardised).

    Returns:
        dict with ``accuracy``, ``ci_low``, ``ci_high``, ``tv_lower_bound`` = max(0, 2a − 1), ``n_test``.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features; got {tuple(x.shape)}, {tuple(y.shape)}")
    n = min(x.shape[0], y.shape[0])
    if n < 4:
        raise ValueError(f"need at least 4 points per sample, got {n}")
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().double()[torch.randperm(x.shape[0], generator=gen)[:n]]
    y = y.detach().double()[torch.randperm(y.shape[0], generator=gen)[:n]]
    half = n // 2  # per-class split keeps the held-out half balanced, as the TV bound needs
    feats_train = torch.cat([x[:half], y[:half]])
    feats_test = torch.cat([x[half:], y[half:]])
    labels_train = torch.cat([torch.zeros(half), torch.ones(half)]).double()
    labels_test = torch.cat([torch.zeros(n - half), torch.ones(n - half)]).double()
    feats_train, feats_test = _standardise(feats_train, feats_test)
    w, b = _fit_logistic(feats_train, labels_train, l2, max_iter)
    correct = int(((feats_test @ w + b > 0).double() == labels_test).sum().item())
    n_test = labels_test.numel()
    acc = correct / n_test
    ci = stats.binomtest(correct, n_test).proportion_ci(confidence_level=confidence, method="exact")
    return {
        "accuracy": acc,
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "tv_lower_bound": max(0.0, 2.0 * acc - 1.0),
        "n_test": float(n_test),
    }


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances (N, M), float64, clamped at 0."""
    a, b = a.double(), b.double()
    return (a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """Median heuristic σ: the median pairwise Euclidean distance among the pooled points (i < j).

    Falls back to 1.0 when the median is 0 (more than half the pairs coincide).
    """
    z = torch.cat([x.detach(), y.detach()]).double()
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    d = _sq_dists(z, z)[iu[0], iu[1]].sqrt()
    med = d.median().item() if d.numel() else 0.0
    return med if med > 0 else 1.0


def _rbf(sq_dists: Tensor, bandwidth: float) -> Tensor:
    return torch.exp(-sq_dists / (2.0 * bandwidth**2))


def _mmd2_from_kernel(k0: Tensor, assign: Tensor, n: int, m: int) -> Tensor:
    """Unbiased MMD² for each row of ``assign`` (P, N+M) 0/1 indicators of the x group; ``k0`` has a
    zeroed diagonal, so aᵀK0a sums the off-diagonal x–x block."""
    a = assign.double()
    b = 1.0 - a
    ka = a @ k0  # (P, N+M)
    s_xx = (ka * a).sum(-1)
    s_xy = (ka * b).sum(-1)
    s_yy = ((b @ k0) * b).sum(-1)
    return s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) with the RBF kernel k(a, b) = exp(−‖a − b‖² / (2σ²)).

    Args:
        x: (N, D), y: (M, D) with N, M ≥ 2; bandwidth: σ > 0.

    Returns:
        MMD²_u (can be slightly negative when the distributions agree).
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd2_unbiased needs at least 2 points per sample")
    z = torch.cat([x.detach(), y.detach()])
    k0 = _rbf(_sq_dists(z, z), bandwidth).fill_diagonal_(0.0)
    assign = torch.cat([torch.ones(n), torch.zeros(m)])[None]
    return _mmd2_from_kernel(k0, assign, n, m).item()


def mmd_permutation_test(
    x: Tensor, y: Tensor, n_permutations: int = 500, seed: int = 0, bandwidth: float | None = None
) -> dict[str, float]:
    """MMD² with a permutation p-value (1 + #{perm ≥ observed}) / (1 + n_permutations).

    The kernel matrix of the pooled sample is computed once; all permutations are scored as one
    matrix product. Bandwidth defaults to ``median_bandwidth(x, y)``.

    Args:
        x: (N, D), y: (M, D); n_permutations: P; seed: seeds the permutations.

    Returns:
        dict with ``mmd2``, ``p_value``, ``bandwidth``.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd_permutation_test needs at least 2 points per sample")
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    z = torch.cat([x.detach(), y.detach()])
    k0 = _rbf(_sq_dists(z, z), sigma).fill_diagonal_(0.0)
    observed = _mmd2_from_kernel(k0, torch.cat([torch.ones(n), torch.zeros(m)])[None], n, m).item()
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n + m, generator=gen) for _ in range(n_permutations)])  # (P, N+M)
    assign = (perms < n).double()  # the first n of each permuted order form the x group
    null = _mmd2_from_kernel(k0, assign, n, m)
    p_value = (1 + int((null >= observed).sum().item())) / (1 + n_permutations)
    return {"mmd2": observed, "p_value": p_value, "bandwidth": sigma}


def _ngram_counts(seqs: Sequence[Sequence[int]], n: int) -> Counter:
    counts: Counter = Counter()
    for seq in seqs:
        toks = [int(t) for t in seq]
        counts.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return counts


def _js_base2(p: Tensor, q: Tensor) -> float:
    mix = 0.5 * (p + q)

    def kl(a: Tensor) -> Tensor:
        return torch.where(a > 0, a * (a / mix).log2(), torch.zeros_like(a)).sum()

    return float((0.5 * kl(p) + 0.5 * kl(q)).clamp(0.0, 1.0))


def ngram_js_divergence(
    seqs_a: Sequence[Sequence[int]], seqs_b: Sequence[Sequence[int]], n_max: int = 3, alpha: float = 0.0
) -> dict[str, float]:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between the n-gram distributions of two corpora.

    For each n = 1..n_max the n-grams within each sequence are counted, ``alpha`` is added to the count
    of every n-gram in the union of both supports, and JS(P_a, P_b) = ½KL(P_a‖M) + ½KL(P_b‖M) with
    M = ½(P_a + P_b). alpha = 0 gives the plain empirical JS (1 exactly for disjoint supports).

    Args:
        seqs_a, seqs_b: token-id sequences (pass responses only, without padding).
        n_max: largest n-gram order.
        alpha: additive smoothing ≥ 0.

    Returns:
        dict with ``js/1`` … ``js/{n_max}`` and ``js/mean`` (mean over the orders that are defined; an
        order is NaN when either corpus has no n-gram of that length).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    out: dict[str, float] = {}
    for n in range(1, n_max + 1):
        ca, cb = _ngram_counts(seqs_a, n), _ngram_counts(seqs_b, n)
        if not ca or not cb:
            out[f"js/{n}"] = math.nan
            continue
        support = sorted(set(ca) | set(cb))
        pa = torch.tensor([ca[g] for g in support], dtype=torch.float64) + alpha
        pb = torch.tensor([cb[g] for g in support], dtype=torch.float64) + alpha
        out[f"js/{n}"] = _js_base2(pa / pa.sum(), pb / pb.sum())
    defined = [v for v in out.values() if not math.isnan(v)]
    out["js/mean"] = sum(defined) / len(defined) if defined else math.nan
    return out
