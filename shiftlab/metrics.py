"""The metric vocabulary: every column shiftlab writes to a run log, documented once.

TRL's names are used where TRL has one (`loss`, `rewards/*`, `logps/*`); shiftlab's own names follow.
The split is a prefix: training rows carry unprefixed names, evaluation rows carry `eval/...`.
Every row of `metrics.jsonl` also carries the x-axes `step`, `pairs_seen`, `oracle_calls`,
`policy_samples` and `time` so runs of different modes can be aligned on any of them.

`docs/METRICS.md` is generated from this table (`python -m shiftlab.metrics > docs/METRICS.md`), and the
report reads `direction` from it; nothing else describes a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower", "neutral"]


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str
    estimator: str
    direction: Direction


_AXES = [
    Metric("step", "optimizer steps taken so far", "counter", "neutral"),
    Metric("pairs_seen", "training units consumed by gradient steps, with repeats: pairs (rollouts for mode=rl)", "counter", "neutral"),
    Metric("oracle_calls", "texts scored by the oracle reward (labelling budget)", "counter", "neutral"),
    Metric("policy_samples", "completions sampled for training pairs (from π_sft for the offline set, π_θ on-policy)", "counter", "neutral"),
    Metric("time", "wall-clock seconds since the run started", "counter", "neutral"),
]

_TRAIN = [
    Metric("loss", "preference loss of the batch (dpo / ipo / hinge)", "batch mean", "lower"),
    Metric("rewards/chosen", "implicit reward β·(log π_θ − log π_ref) of chosen responses", "batch mean", "neutral"),
    Metric("rewards/rejected", "implicit reward of rejected responses", "batch mean", "neutral"),
    Metric("rewards/margins", "rewards/chosen − rewards/rejected", "batch mean", "higher"),
    Metric("rewards/accuracies", "fraction of pairs whose chosen implicit reward exceeds the rejected one", "batch mean", "higher"),
    Metric("logps/chosen", "log π_θ(y_w|x), summed over response tokens incl. end-of-text", "batch mean", "neutral"),
    Metric("logps/rejected", "log π_θ(y_l|x), summed over response tokens incl. end-of-text", "batch mean", "neutral"),
    Metric("grad_norm", "global L2 norm of the gradient before clipping", "per step", "neutral"),
    Metric("lr", "learning rate used for the step", "per step", "neutral"),
    Metric("data/truncated", "pairs of the batch cut to fit the context (prompt left-cut, response right-cut)", "count", "lower"),
    Metric("data/ties", "sampled pairs dropped because both rewards were exactly equal (cumulative; 0 under pairs.labels=bradley_terry, where a tie is a fair coin)", "count", "neutral"),
    Metric("data/flipped", "training pairs whose chosen response has the lower oracle reward (cumulative): pairs.labels=bradley_terry's sampled orders, about Σ σ(−|Δr|/τ); 0 for deterministic labels. Offline: the whole set's count, from step 0", "count", "neutral"),
    Metric("data/staleness", "mean age in steps of the pairs in the batch (0 = sampled this step)", "batch mean", "lower"),
    Metric("time/sample", "seconds spent sampling from π_θ this step", "per step", "lower"),
    Metric("time/label", "seconds spent in the oracle this step", "per step", "lower"),
    Metric("time/train", "seconds spent in the forward/backward/optimizer step", "per step", "lower"),
]

_RL = [
    Metric("rl/reward", "oracle reward r(x, y) of the round's rollouts (mode=rl)", "batch mean", "higher"),
    Metric("rl/kl_penalty", "log μ(y|x) − log π_sft(y|x) of the rollouts (μ: the snapshot of π_θ that sampled them): the k1 term β_rl weights", "batch mean", "neutral"),
    Metric("rl/advantage_abs", "|RLOO advantage| of the KL-penalised reward", "batch mean", "neutral"),
    Metric("rl/clipped", "fraction of rollouts whose PPO ratio left [1−ε, 1+ε] (0 without loss.clip)", "batch mean", "neutral"),
    Metric("logps/sampled", "log π_θ(y|x) of the rollouts at the update", "batch mean", "neutral"),
]

_SFT = [
    Metric("sft/loss", "token cross-entropy of π_sft on its corpus batch (sft.jsonl, x-axis sft_step)", "batch mean", "lower"),
]

_EVAL = [
    Metric("eval/reward", "oracle reward of π_θ's samples on the fixed eval prompts (temperature 1); absent with oracle.kind=none", "mean over samples; `_se` = standard error", "higher"),
    Metric("eval/heldout/rewards/accuracies", "fraction of held-out human pairs (never trained on: the eval split's, or those of the held-out eval prompts) whose chosen response has the higher implicit reward β·(log π_θ − log π_ref); a tie counts as wrong (TRL's strict >), so it is 0 at step 0, where π_θ = π_ref. Only where the task has human pairs", "mean over up to eval.heldout_pairs pairs (the same pairs every eval); `_se`", "higher"),
    Metric("eval/heldout/rewards/margins", "implicit reward of the chosen minus the rejected response on the held-out human pairs, in units of β·nats", "mean over pairs; `_se`", "higher"),
    Metric("eval/heldout/loss", "the run's preference loss on the held-out human pairs (loss=rloo: DPO's at β_rl); log 2 at step 0 for dpo", "mean over pairs; `_se`", "lower"),
    Metric("eval/length", "response length in tokens, end-of-text included", "mean over samples", "neutral"),
    Metric("eval/empty_responses", "fraction of samples that ended immediately (no text)", "mean over samples", "lower"),
    Metric("eval/gold_reward", "gold reward in [-1, 1], distinct from the oracle (the proxy): the grammar's exact posterior mean mood (−1 … 1) of the longest grammatical prefix, times the share of response words inside it, so degenerate text scores ≈ 0 (shiftlab/labels/gold.py). Spearman with VADER: 0.94 on grammar samples, 0.72 on the default π_sft's samples (34% off-grammar); proxy rising while gold falls is over-optimisation. Embedded world only: absent without a grammar", "mean over samples; `_se` = standard error", "higher"),
    Metric("eval/distinct_1", "distinct words ÷ words, pooled over all responses (diversity; falls when text degenerates)", "ratio over the eval samples", "higher"),
    Metric("eval/distinct_2", "distinct word bigrams ÷ word bigrams, pooled over all responses", "ratio over the eval samples", "higher"),
    Metric("eval/repeat_rate", "share of a response's word trigrams that repeat an earlier trigram of the same response", "mean over responses with ≥ 3 words", "lower"),
    Metric("eval/length_words", "response length in words (whitespace-separated; eval/length counts tokens)", "mean over samples", "neutral"),
    Metric("eval/kl_ref", "KL(π_θ‖π_ref) of the sequence: exact per-token KL over the vocabulary, summed along π_θ's samples", "mean; `_se`; `_per_token` divides by length", "neutral"),
    Metric("eval/kl_sft", "KL(π_θ‖π_sft): as eval/kl_ref against the SFT model; comparable across modes", "mean; `_se`; `_per_token`", "neutral"),
    Metric("eval/kl_ref_k1", "Monte-Carlo k1 = log π_θ(y|x) − log π_ref(y|x) on the same samples", "mean; `_se`", "neutral"),
    Metric("eval/kl_ref_k3", "Monte-Carlo k3 = (r−1) − log r, r = π_ref(y|x)/π_θ(y|x), nats. Diagnostic only (TRL's estimator, for comparison): on an enumerable testbed its mean ± 1.96 s.e. covered the true sequence KL 82% of the time (heavy tails) against 94% for the exact eval/kl_ref; make claims with eval/kl_ref", "mean; `_se`", "neutral"),
    Metric("eval/kl_sft_k1", "k1 against π_sft", "mean; `_se`", "neutral"),
    Metric("eval/kl_sft_k3", "k3 against π_sft, nats; diagnostic only (see eval/kl_ref_k3's coverage caveat)", "mean; `_se`", "neutral"),
    Metric("eval/kl_ref_on_data", "exact per-token KL(π_θ‖π_ref) averaged over the states of the current training pairs (d_D): where DPO looks", "mean over response states", "neutral"),
    Metric("eval/kl_ref_on_policy", "exact per-token KL(π_θ‖π_ref) averaged over the states of π_θ's samples (d_θ): where the policy goes", "mean over response states", "neutral"),
    Metric("eval/kl_shift_ratio", "eval/kl_ref_on_policy / eval/kl_ref_on_data: 1 = π_θ has moved from π_ref as much on the states it visits as on the states DPO trains on; far from 1 (either way) = the training states do not represent the policy's own. Neither direction is better", "ratio", "neutral"),
    Metric("eval/state_kl", "the off-policy gap's own measure, nats: KL(d_θ,T ‖ d_μ,T), how far the states π_θ visits have moved from the states of the responses it trains on, i.e. from the behaviour policy μ that generated them (offline: μ = π_sft; on-policy: μ = the snapshot that sampled the round) — 0 when training is on-policy, growing with staleness; comparable across cells. At full depth T; the curve by depth t (tokens) is `state_kl_depth` in curves.jsonl", "mean over π_θ samples of Σ_t exact KL(π_θ‖μ); `_se`", "lower"),
    Metric("eval/ess", "effective sample size / N of the training responses under π_θ relative to the behaviour policy μ", "(Σw)²/(N·Σw²), w = π_θ/μ in log space", "higher"),
    Metric("eval/c2st_acc", "held-out accuracy of a classifier telling training-pair states (one row per prompt: its chosen or rejected, at random) from π_θ's states on the eval prompts (frozen π_sft features); mixes selection (the rows are the best and worst of k samples of μ) with shift", "logistic regression, balanced 50/50 split; `_low`/`_high` = 95% Clopper–Pearson interval", "lower"),
    Metric("eval/c2st_acc_null", "eval/c2st_acc's null: its expected value when both state distributions are one (0.5 exactly: a classifier scored on a balanced held-out half it was not fit on)", "analytic, no refits", "neutral"),
    Metric("eval/c2st_acc_excess", "eval/c2st_acc − eval/c2st_acc_null; 0 = indistinguishable (its excess averages 0 under the null and grows with a planted shift: tests/functional/test_two_sample.py)", "difference", "lower"),
    Metric("eval/c2st_tv_lb", "lower bound on total variation between the training-pair and π_θ state distributions, holding with probability ≥ 97.5%; 0 in ≥ 95% of repeats without a shift (tested)", "max(0, 2·`eval/c2st_acc_low` − 1): the lower limit of the two-sided 95% Clopper–Pearson interval is a one-sided 97.5% bound", "lower"),
    Metric("eval/mmd2", "unbiased MMD² between training-pair states (one row per prompt: its chosen or rejected, at random) and π_θ's states, RBF kernel on frozen π_sft features", "median-heuristic bandwidth", "lower"),
    Metric("eval/mmd2_null", "eval/mmd2's permutation null: the same statistic averaged over relabellings of the pooled states that keep both sizes (≈ 0: MMD²_u is unbiased)", "the `eval.mmd_permutations` relabellings behind eval/mmd_pvalue", "neutral"),
    Metric("eval/mmd2_excess", "eval/mmd2 − eval/mmd2_null", "difference", "lower"),
    Metric("eval/mmd_pvalue", "permutation p-value of eval/mmd2 (small = distributions differ)", "permutations, +1 corrected", "higher"),
    Metric("eval/js_ngram", "Jensen–Shannon divergence (bits, in [0, 1]) of smoothed 1–3-gram distributions of the responses, training-pair states (one row per prompt: its chosen or rejected, at random) vs π_θ's samples; the plug-in value is biased up by small corpora: read eval/js_ngram_excess", "α = 0.01 smoothing, mean over n = 1..3", "lower"),
    Metric("eval/js_ngram_null", "eval/js_ngram's permutation null: the same statistic averaged over relabellings of the pooled responses that keep both corpus sizes, so it carries the size bias (≈ 0.5 bits between two 128-sample draws of one Zipf law)", "min(`eval.mmd_permutations`, 50) relabellings", "neutral"),
    Metric("eval/js_ngram_excess", "eval/js_ngram − eval/js_ngram_null (bits)", "difference", "lower"),
    Metric("eval/c2st_acc_mu", "as eval/c2st_acc, for μ's own unselected samples of the eval prompts (a generator of their own) against π_θ's: the shift without selection, only where μ is known; at step 0 of an offline run π_θ = μ and its excess is ≈ 0. What a measure exceeds its `_mu` version by is what selection adds", "paired by prompt: one train/test split for both samples; `_low`/`_high` = 95% Clopper–Pearson interval", "lower"),
    Metric("eval/c2st_acc_mu_null", "eval/c2st_acc_mu's null: 0.5, as eval/c2st_acc_null", "analytic, no refits", "neutral"),
    Metric("eval/c2st_acc_mu_excess", "eval/c2st_acc_mu − eval/c2st_acc_mu_null", "difference", "lower"),
    Metric("eval/c2st_tv_lb_mu", "as eval/c2st_tv_lb, between μ's unselected states and π_θ's (probability ≥ 97.5%)", "max(0, 2·`eval/c2st_acc_mu_low` − 1)", "lower"),
    Metric("eval/mmd2_mu", "as eval/mmd2, μ's unselected samples of the eval prompts against π_θ's", "median-heuristic bandwidth", "lower"),
    Metric("eval/mmd2_mu_null", "eval/mmd2_mu's permutation null: averaged over swaps of the two samples within each prompt (below 0: a prompt's two samples are alike, which the cross term counts)", "`eval.mmd_permutations` within-prompt swaps", "neutral"),
    Metric("eval/mmd2_mu_excess", "eval/mmd2_mu − eval/mmd2_mu_null", "difference", "lower"),
    Metric("eval/mmd_pvalue_mu", "permutation p-value of eval/mmd2_mu (within-prompt swaps)", "permutations, +1 corrected", "higher"),
    Metric("eval/js_ngram_mu", "as eval/js_ngram (bits), μ's unselected samples of the eval prompts against π_θ's", "α = 0.01 smoothing, mean over n = 1..3", "lower"),
    Metric("eval/js_ngram_mu_null", "eval/js_ngram_mu's permutation null: averaged over swaps of the two samples within each prompt (bits)", "min(`eval.mmd_permutations`, 50) within-prompt swaps", "neutral"),
    Metric("eval/js_ngram_mu_excess", "eval/js_ngram_mu − eval/js_ngram_mu_null (bits)", "difference", "lower"),
    Metric("eval/off_support", "fraction of π_θ's samples the world's grammar cannot produce (embedded world only). Baseline: its step-0 value is π_sft's own rate (π_θ = π_sft at step 0; about a third on the default config), so read it against that row. The curve by depth t counts response *words* (`off_support_depth` in curves.jsonl)", "mean over samples", "lower"),
    Metric("eval/world_logprob", "log-probability of π_θ's samples under the world's grammar, over samples it can produce", "mean over supported samples", "neutral"),
    Metric("time/eval", "seconds spent in this evaluation", "per eval", "lower"),
]

METRICS: dict[str, Metric] = {m.name: m for m in _AXES + _TRAIN + _RL + _SFT + _EVAL}
X_AXES = tuple(m.name for m in _AXES)


def direction(name: str) -> Direction:
    """Whether a larger value of `name` is better; `_se`/`_low`/`_high` suffixes map to their base metric."""
    for suffix in ("_se", "_low", "_high", "_per_token"):
        if name.endswith(suffix) and name[: -len(suffix)] in METRICS:
            return "neutral" if suffix == "_se" else METRICS[name[: -len(suffix)]].direction
    return METRICS[name].direction if name in METRICS else "neutral"


@dataclass(frozen=True)
class Scale:
    """A metric's unit ("" for a score without one) and the range its values can take: the report labels axes with
    the unit and cuts intervals (a t band around a KL near 0) to the range, so no band claims a negative KL."""

    unit: str
    low: float = -math.inf
    high: float = math.inf


_NONNEG, _SECONDS, _NATS, _NATS_KL = Scale("", 0.0), Scale("s", 0.0), Scale("nats"), Scale("nats", 0.0)
_FRACTION, _BETA_NATS, _SCORE = Scale("fraction", 0.0, 1.0), Scale("β·nats"), Scale("")
_ACCURACY, _BITS = Scale("accuracy", 0.0, 1.0), Scale("bits", 0.0, 1.0)
_SCALES: dict[str, Scale] = {
    "step": Scale("optimizer steps", 0.0), "pairs_seen": Scale("pairs", 0.0),
    "oracle_calls": Scale("oracle calls (labels)", 0.0), "policy_samples": Scale("samples", 0.0), "time": _SECONDS,
    "loss": _SCORE,  # dpo/ipo/hinge are ≥ 0, rloo's surrogate is not, and only dpo's is in nats
    "rewards/chosen": _BETA_NATS, "rewards/rejected": _BETA_NATS, "rewards/margins": _BETA_NATS,
    "rewards/accuracies": _FRACTION, "logps/chosen": Scale("nats", high=0.0), "logps/rejected": Scale("nats", high=0.0),
    "grad_norm": _NONNEG, "lr": _NONNEG, "data/truncated": Scale("pairs", 0.0), "data/ties": Scale("pairs", 0.0),
    "data/flipped": Scale("pairs", 0.0), "data/staleness": Scale("optimizer steps", 0.0),
    "time/sample": _SECONDS, "time/label": _SECONDS, "time/train": _SECONDS,
    "rl/reward": _SCORE, "rl/kl_penalty": _NATS, "rl/advantage_abs": _NONNEG, "rl/clipped": _FRACTION,
    "logps/sampled": Scale("nats", high=0.0), "sft/loss": Scale("nats/token", 0.0),
    "eval/reward": _SCORE, "eval/heldout/rewards/accuracies": _FRACTION, "eval/heldout/rewards/margins": _BETA_NATS,
    "eval/heldout/loss": _SCORE, "eval/length": Scale("tokens", 0.0), "eval/empty_responses": _FRACTION,
    "eval/gold_reward": Scale("", -1.0, 1.0), "eval/distinct_1": _FRACTION, "eval/distinct_2": _FRACTION,
    "eval/repeat_rate": _FRACTION, "eval/length_words": Scale("words", 0.0),
    "eval/kl_ref": _NATS_KL, "eval/kl_sft": _NATS_KL, "eval/kl_ref_k1": _NATS, "eval/kl_ref_k3": _NATS_KL,
    "eval/kl_sft_k1": _NATS, "eval/kl_sft_k3": _NATS_KL,  # k1 is an unbiased estimate of either sign; k3 ≥ 0
    "eval/kl_ref_on_data": Scale("nats/token", 0.0), "eval/kl_ref_on_policy": Scale("nats/token", 0.0),
    "eval/kl_shift_ratio": Scale("ratio", 0.0), "eval/state_kl": _NATS_KL, "eval/ess": Scale("fraction of N", 0.0, 1.0),
    "eval/c2st_acc": _ACCURACY, "eval/c2st_acc_null": _ACCURACY, "eval/c2st_acc_excess": Scale("accuracy", -0.5, 0.5),
    "eval/c2st_tv_lb": Scale("total variation", 0.0, 1.0),
    "eval/mmd2": _SCORE, "eval/mmd2_null": _SCORE, "eval/mmd2_excess": _SCORE,  # unbiased MMD² may be < 0
    "eval/mmd_pvalue": Scale("p-value", 0.0, 1.0),
    "eval/js_ngram": _BITS, "eval/js_ngram_null": _BITS, "eval/js_ngram_excess": Scale("bits", -1.0, 1.0),
    "eval/off_support": _FRACTION, "eval/world_logprob": Scale("nats", high=0.0), "time/eval": _SECONDS,
}
# the `_mu` measures are their base measures on μ's unselected samples: the same scale
_SCALES |= {name: _SCALES[name.replace("_mu", "", 1)] for name in METRICS if "_mu" in name and name not in _SCALES}


def scale(name: str) -> Scale:
    """The unit and range of `name`; suffixes as in `direction` (`_se` ≥ 0, `_per_token` per response token)."""
    if name in _SCALES:
        return _SCALES[name]
    for suffix in ("_se", "_low", "_high", "_per_token"):
        base = _SCALES.get(name[: -len(suffix)]) if name.endswith(suffix) else None
        if base is not None:
            if suffix == "_se":
                return Scale(base.unit, 0.0)
            return base if suffix != "_per_token" else Scale(f"{base.unit}/token" if base.unit else "", base.low, base.high)
    return Scale("")


def unit(name: str) -> str:
    """The unit `name` is measured in, "" for a score or count without one (or an unknown name)."""
    return scale(name).unit


def value_range(name: str) -> tuple[float, float]:
    """(low, high): the values `name` can take (±inf where unbounded)."""
    s = scale(name)
    return s.low, s.high


def _bound(v: float) -> str:
    return "∞" if v == math.inf else ("−∞" if v == -math.inf else f"{v:g}".replace("-", "−"))


def _show_scale(name: str) -> str:
    s = scale(name)
    span = "" if (s.low, s.high) == (-math.inf, math.inf) else f"[{_bound(s.low)}, {_bound(s.high)}]"
    return " ".join(p for p in (s.unit, span) if p) or "—"


def render_markdown() -> str:
    lines = [
        "# Metric vocabulary",
        "",
        "Generated from `shiftlab/metrics.py`. Rows of `metrics.jsonl`: training rows carry unprefixed names,",
        "evaluation rows carry `eval/...`. Suffixes: `_se` standard error, `_per_token` divided by response length,",
        "`_low`/`_high` 95% interval.",
        "",
        "Symbols, one meaning each: β is the KL coefficient (DPO's `loss.beta`; RL's β_rl weights the same",
        "KL(π_θ‖π_sft) term); μ is the behaviour policy that generated the current training responses (π_sft for",
        "the built offline set, the π_θ snapshot that sampled the round on-policy, unknown for human data);",
        "d_θ and d_μ are the distributions of states (prompt + partial response) under π_θ and under μ.",
        "",
        "| name | meaning | unit and range | estimator | better |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in METRICS.values():
        lines.append(f"| `{m.name}` | {m.meaning} | {_show_scale(m.name)} | {m.estimator} | {m.direction} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
