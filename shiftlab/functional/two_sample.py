"""Behaviour-agnostic two-sample divergences (a classifier two-sample test, MMD² with a permutation test, n-gram
JS), each with its null: the value the statistic takes when both samples come from one distribution.
Pure tensor functions; METRICS.md ("Behaviour-agnostic two-sample divergences") is the spec.

Paired samples (x_i and y_i drawn on one prompt, e.g. two policies' completions of the same eval prompts) are
not two i.i.d. samples: the shared prompt makes x_i and y_i alike. With ``paired=True`` the classifier keeps a
pair on one side of its train/test split and the permutation nulls swap labels within pairs only, which is the
exact null when a pair's two members are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from scipy import stats
from torch import Tensor

__all__ = ["classifier_two_sample_test", "median_bandwidth", "mmd2_unbiased", "mmd_permutation_test",
           "ngram_js_divergence", "ngram_js_permutation_test", "permutation_assignments"]


def permutation_assignments(n: int, m: int, n_permutations: int, generator: torch.Generator, paired: bool = False) -> Tensor:
    """Relabellings of a pooled sample [x; y] for a permutation null: (P, N+M) bool, True where a point joins x.

    Unpaired: uniform relabellings keeping the sizes N, M (for two i.i.d. samples of one distribution the observed
    labelling is uniform among them, so a statistic's mean over them is its null mean at these sizes, size bias
    included). Paired (N = M, x_i and y_i share a prompt): each pair's labels swap with probability ½.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if paired:
        if n != m:
            raise ValueError(f"paired samples need equal sizes, got {n} and {m}")
        swap = torch.rand(n_permutations, n, generator=generator) < 0.5
        return torch.cat([~swap, swap], dim=1)
    perms = torch.stack([torch.randperm(n + m, generator=generator) for _ in range(n_permutations)])  # (P, N+M)
    return perms < n  # the first n of each permuted order form the x group


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
    x: Tensor, y: Tensor, seed: int, l2: float = 1e-2, max_iter: int = 200, confidence: float = 0.95,
    paired: bool = False,
) -> dict[str, float]:
    """Classifier two-sample test (C2ST, Lopez-Paz & Oquab 2017) with logistic regression.

    Balances the classes by subsampling the larger sample, splits each class 50/50 at random into
    train/test, standardises features with train statistics, fits L2-regularised logistic regression
    (L-BFGS, deterministic given ``seed``) and scores accuracy a on the held-out half; the interval is
    Clopper–Pearson (exact binomial) at ``confidence``, two-sided.

    Null: a classifier fit without the held-out half has expected accuracy exactly ½ on a balanced held-out
    half when the two distributions agree, so the null is ½ with no refits.
    TV bound: any classifier's balanced accuracy is at most (1 + TV)/2, and ``ci_low`` is a one-sided
    lower confidence limit at level (1 + confidence)/2 (97.5% for 0.95), so TV ≥ max(0, 2·ci_low − 1) holds
    with that probability. (2a − 1 from the point estimate is not a bound: it is positive in about half of the
    repeats when the distributions agree.)

    Args:
        x: (N, D) features of one sample; y: (M, D) of the other. Need min(N, M) ≥ 4.
        seed: seeds the subsampling and the split.
        l2: ridge penalty on the weights (features are standardised).
        paired: x_i and y_i share a prompt (N = M): one split for both, so a prompt seen in training never
            reappears in the held-out half (that would pull the accuracy below ½).

    Returns:
        dict with ``accuracy``, ``ci_low``, ``ci_high``, ``null`` = ½, ``tv_lower_bound``, ``n_test``.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features; got {tuple(x.shape)}, {tuple(y.shape)}")
    n = min(x.shape[0], y.shape[0])
    if n < 4:
        raise ValueError(f"need at least 4 points per sample, got {n}")
    gen = torch.Generator().manual_seed(seed)
    if paired:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"paired samples need equal sizes, got {x.shape[0]} and {y.shape[0]}")
        order = torch.randperm(n, generator=gen)
        x, y = x.detach().double()[order], y.detach().double()[order]
    else:
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
        "null": 0.5,
        "tv_lower_bound": max(0.0, 2.0 * float(ci.low) - 1.0),
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
    x: Tensor, y: Tensor, n_permutations: int = 500, seed: int = 0, bandwidth: float | None = None,
    paired: bool = False,
) -> dict[str, float]:
    """MMD² with a permutation p-value (1 + #{perm ≥ observed}) / (1 + n_permutations) and null mean.

    The kernel matrix of the pooled sample is computed once; all permutations are scored as one
    matrix product. Bandwidth defaults to ``median_bandwidth(x, y)`` (unchanged by relabelling).
    Unpaired, the null mean of the unbiased MMD² is 0; paired (``permutation_assignments``), it is
    negative by what the shared prompts add to the cross term.

    Args:
        x: (N, D), y: (M, D); n_permutations: P; seed: seeds the permutations; paired: x_i, y_i share a prompt.

    Returns:
        dict with ``mmd2``, ``null`` (mean over the permutations), ``p_value``, ``bandwidth``.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd_permutation_test needs at least 2 points per sample")
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    z = torch.cat([x.detach(), y.detach()])
    k0 = _rbf(_sq_dists(z, z), sigma).fill_diagonal_(0.0)
    observed = _mmd2_from_kernel(k0, torch.cat([torch.ones(n), torch.zeros(m)])[None], n, m).item()
    assign = permutation_assignments(n, m, n_permutations, torch.Generator().manual_seed(seed), paired)
    null = _mmd2_from_kernel(k0, assign, n, m)
    p_value = (1 + int((null >= observed).sum().item())) / (1 + n_permutations)
    return {"mmd2": observed, "null": null.mean().item(), "p_value": p_value, "bandwidth": sigma}


def _ngram_matrix(seqs: Sequence[Sequence[int]], n: int) -> Tensor:
    """(G, S) sparse float64: how often each n-gram of the pooled corpus occurs in each sequence."""
    index: dict[tuple[int, ...], int] = {}
    rows, cols = [], []
    for s, seq in enumerate(seqs):
        toks = [int(t) for t in seq]
        for i in range(len(toks) - n + 1):
            rows.append(index.setdefault(tuple(toks[i : i + n]), len(index)))
            cols.append(s)
    where = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    return torch.sparse_coo_tensor(where, torch.ones(len(rows), dtype=torch.float64), (len(index), len(seqs)),
                                   check_invariants=True).coalesce()


def _js_rows(count_a: Tensor, count_b: Tensor, alpha: float) -> Tensor:
    """JS (bits) between the smoothed rows of (P, G) n-gram counts → (P,); NaN where a corpus has none.
    As H(M) − ½H(P) − ½H(Q): three x·log x passes over (P, G) instead of two ratios and two KL sums."""
    p, q = count_a + alpha, count_b + alpha
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)

    def neg_entropy(a: Tensor) -> Tensor:
        return torch.special.xlogy(a, a).sum(-1)

    js = ((0.5 * (neg_entropy(p) + neg_entropy(q)) - neg_entropy(0.5 * (p + q))) / math.log(2)).clamp(0.0, 1.0)
    return js.masked_fill((count_a.sum(-1) == 0) | (count_b.sum(-1) == 0), math.nan)


def _js_by_order(seqs_a, seqs_b, assign: Tensor, n_max: int, alpha: float) -> Tensor:
    """(n_max, P) JS of each order for each row of ``assign`` (P, S) 0/1, the a group of the pooled corpus."""
    out = []
    for n in range(1, n_max + 1):
        counts = _ngram_matrix(list(seqs_a) + list(seqs_b), n)  # (G, S), sparse: a sequence holds few n-grams
        in_a = torch.sparse.mm(counts, assign.double().T).T  # (P, G)
        total = torch.sparse.sum(counts, 1).to_dense() if counts.shape[0] else torch.zeros(0, dtype=torch.float64)
        out.append(_js_rows(in_a, total - in_a, alpha))
    return torch.stack(out)


def ngram_js_divergence(
    seqs_a: Sequence[Sequence[int]], seqs_b: Sequence[Sequence[int]], n_max: int = 3, alpha: float = 0.0
) -> dict[str, float]:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between the n-gram distributions of two corpora.

    For each n = 1..n_max the n-grams within each sequence are counted, ``alpha`` is added to the count
    of every n-gram in the union of both supports, and JS(P_a, P_b) = ½KL(P_a‖M) + ½KL(P_b‖M) with
    M = ½(P_a + P_b). alpha = 0 gives the plain empirical JS (1 exactly for disjoint supports).
    The plug-in estimate is biased upwards, the more the smaller the corpora: read it against
    ``ngram_js_permutation_test``'s null.

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
    observed = torch.cat([torch.ones(len(seqs_a)), torch.zeros(len(seqs_b))])[None]
    by_order = _js_by_order(seqs_a, seqs_b, observed, n_max, alpha)[:, 0]
    out = {f"js/{n}": float(v) for n, v in enumerate(by_order, start=1)}
    out["js/mean"] = float(by_order.nanmean())
    return out


def ngram_js_permutation_test(
    seqs_a: Sequence[Sequence[int]], seqs_b: Sequence[Sequence[int]], n_max: int = 3, alpha: float = 0.0,
    n_permutations: int = 200, seed: int = 0, paired: bool = False,
) -> dict[str, float]:
    """``ngram_js_divergence``'s ``js/mean`` with its permutation null and p-value.

    The null is the mean of the same statistic over relabellings of the pooled corpus that keep both
    corpus sizes (``permutation_assignments``), so it carries the plug-in estimator's size bias exactly:
    two corpora of 128 draws of one Zipf law are ~0.5 bits apart, and so is their null.

    Returns:
        dict with ``js``, ``null`` (mean over permutations), ``p_value`` ((1 + #{perm ≥ observed}) / (1 + P)).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    na, nb = len(seqs_a), len(seqs_b)
    observed = torch.cat([torch.ones(na, dtype=torch.bool), torch.zeros(nb, dtype=torch.bool)])[None]
    assign = permutation_assignments(na, nb, n_permutations, torch.Generator().manual_seed(seed), paired)
    js = _js_by_order(seqs_a, seqs_b, torch.cat([observed, assign]), n_max, alpha).nanmean(0)  # (1 + P,)
    stat, null = float(js[0]), js[1:]
    defined = null[~null.isnan()]
    return {
        "js": stat,
        "null": float(defined.mean()) if defined.numel() else math.nan,
        "p_value": (1 + int((defined >= stat).sum())) / (1 + defined.numel()),
    }
