"""The metric vocabulary: every column shiftlab writes to a run log, documented once.

TRL's names are used where TRL has one (`loss`, `rewards/*`, `logps/*`); shiftlab's own names follow.
The split is a prefix: training rows carry unprefixed names, evaluation rows carry `eval/...`.
Every row of `metrics.jsonl` also carries the x-axes `step`, `pairs_seen`, `oracle_calls`,
`policy_samples` and `time` so runs of different modes can be aligned on any of them.

`docs/METRICS.md` is generated from this table (`python -m shiftlab.metrics > docs/METRICS.md`), and the
report reads `direction` from it; nothing else describes a metric.
"""

from __future__ import annotations

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
    Metric("data/ties", "sampled pairs dropped because both rewards were exactly equal (cumulative)", "count", "neutral"),
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
    Metric("eval/reward", "oracle reward of π_θ's samples on the fixed eval prompts (temperature 1)", "mean over samples; `_se` = standard error", "higher"),
    Metric("eval/length", "response length in tokens, end-of-text included", "mean over samples", "neutral"),
    Metric("eval/empty_responses", "fraction of samples that ended immediately (no text)", "mean over samples", "lower"),
    Metric("eval/kl_ref", "KL(π_θ‖π_ref) of the sequence: exact per-token KL over the vocabulary, summed along π_θ's samples", "mean; `_se`; `_per_token` divides by length", "neutral"),
    Metric("eval/kl_sft", "KL(π_θ‖π_sft): as eval/kl_ref against the SFT model; comparable across modes", "mean; `_se`; `_per_token`", "neutral"),
    Metric("eval/kl_ref_k1", "Monte-Carlo k1 = log π_θ(y|x) − log π_ref(y|x) on the same samples", "mean; `_se`", "neutral"),
    Metric("eval/kl_ref_k3", "Monte-Carlo k3 = (r−1) − log r, r = π_ref(y|x)/π_θ(y|x)", "mean; `_se`", "neutral"),
    Metric("eval/kl_sft_k1", "k1 against π_sft", "mean; `_se`", "neutral"),
    Metric("eval/kl_sft_k3", "k3 against π_sft", "mean; `_se`", "neutral"),
    Metric("eval/kl_ref_on_data", "exact per-token KL(π_θ‖π_ref) averaged over the states of the current training pairs (d_D): where DPO looks", "mean over response states", "neutral"),
    Metric("eval/kl_ref_on_policy", "exact per-token KL(π_θ‖π_ref) averaged over the states of π_θ's samples (d_θ): where the policy goes", "mean over response states", "neutral"),
    Metric("eval/kl_shift_ratio", "eval/kl_ref_on_policy / eval/kl_ref_on_data; 1 = DPO sees the states the policy visits", "ratio", "lower"),
    Metric("eval/state_kl", "KL(d_θ,T ‖ d_μ,T): state-distribution divergence at full depth against the behaviour policy μ (curve by depth in curves.jsonl)", "mean over π_θ samples of Σ_t exact KL(π_θ‖μ); `_se`", "lower"),
    Metric("eval/ess", "effective sample size / N of the training responses under π_θ relative to the behaviour policy μ", "(Σw)²/(N·Σw²), w = π_θ/μ in log space", "higher"),
    Metric("eval/c2st_acc", "held-out accuracy of a classifier telling training-pair states from π_θ states (frozen π_sft features)", "logistic regression, 50/50 split; `_low`/`_high` = 95% CI", "lower"),
    Metric("eval/c2st_tv_lb", "lower bound on total variation between the two state distributions", "max(0, 2·acc − 1)", "lower"),
    Metric("eval/mmd2", "unbiased MMD² between training-pair states and π_θ states, RBF kernel on frozen π_sft features", "median-heuristic bandwidth", "lower"),
    Metric("eval/mmd_pvalue", "permutation p-value of eval/mmd2 (small = distributions differ)", "permutations, +1 corrected", "higher"),
    Metric("eval/js_ngram", "Jensen–Shannon divergence (bits) of smoothed 1–3-gram distributions, data vs π_θ samples", "mean over n = 1..3", "lower"),
    Metric("eval/off_support", "fraction of π_θ's samples the world's grammar cannot produce (embedded world only)", "mean over samples", "lower"),
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
        "| name | meaning | estimator | better |",
        "| --- | --- | --- | --- |",
    ]
    for m in METRICS.values():
        lines.append(f"| `{m.name}` | {m.meaning} | {m.estimator} | {m.direction} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
