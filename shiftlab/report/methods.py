"""The report's methods and configuration: how each number is estimated (a line each, from the metric vocabulary)
and the settings of the study's runs, so a reader can judge and repeat what was measured."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shiftlab.metrics import METRICS
from shiftlab.report.load import Study
from shiftlab.report.render import Section

METRICS_DOC = "../../docs/METRICS.md"  # from reports/<name>/ in the repository
GLOSSARY_TEXT = (f"Every column is defined once, in shiftlab/metrics.py (rendered as docs/METRICS.md, {METRICS_DOC} from "
                 "this folder): meaning, estimator and which direction is better.")
CONFIG_TEXT = ("What every run of the study shares, and what varies (a comma-separated list). The full resolved config "
               "of each run is its config.yaml; runs.csv lists each run's cell, seed and β.")

# the metrics a reader needs to read the figures, in reading order
METHOD_METRICS = ("eval/reward", "eval/gold_reward", "eval/kl_sft", "eval/kl_ref", "eval/state_kl", "eval/ess",
                  "eval/c2st_acc", "eval/mmd2", "eval/js_ngram", "eval/off_support")

ORACLE_RANGE = {
    "vader": "VADER's compound sentiment score of the response, in [−1, 1] (−1 most negative, +1 most positive)",
    "hf_classifier": "a Hugging Face sequence classifier's score of the response (its logit, or the named label's "
                     "probability in [0, 1])",
    "function": "a Python function's score of the response (its own range)",
    "none": "no oracle: the pairs are human, and evaluation scores held-out human pairs (eval/heldout/…)",
}

# (what, config key): the settings a methods table of a DPO paper reports
SETTINGS = (
    ("task", "task.name"), ("model (pretrained checkpoint)", "model.name_or_path"), ("layers", "model.n_layer"),
    ("width", "model.n_embd"), ("vocabulary", "model.vocab_size"), ("SFT steps", "sft.steps"),
    ("β (KL coefficient)", "loss.beta"), ("objective", "loss.kind"), ("optimizer", "optim.kind"),
    ("learning rate", "optim.lr"), ("warm-up steps", "optim.warmup_steps"), ("gradient clip", "optim.grad_clip"),
    ("steps", "train.steps"), ("pairs per step", "source.batch_size"), ("evaluation every (steps)", "train.eval_every"),
    ("offline set: prompts × samples per prompt", ("preferences.n_prompts", "preferences.k")),
    ("pairing", "pairs.pairing"), ("labels", "pairs.labels"),
    ("on-policy round every (steps)", "source.sample_every"), ("on-policy prompts per round", "source.prompts_per_round"),
    ("on-policy samples per prompt", "source.k"), ("π_ref refresh every (steps)", "reference.refresh_every"),
    ("eval prompts (one sample each, temperature 1)", "eval.n_prompts"), ("max new tokens", "train.max_new_tokens"),
    ("optimum: π_sft samples per eval prompt", "eval.optimum_samples"), ("oracle", "oracle.kind"),
    ("precision", "train.mixed_precision"), ("seeds", "seed"),
)
ON_POLICY_ONLY = {"source.sample_every", "source.prompts_per_round", "source.k"}
REFRESH_ONLY = {"reference.refresh_every"}


def methods_section(gap_method: str) -> Section:
    """How each number of the report is estimated, a line each, and how the gap is computed."""
    lines = [f"{name} — {METRICS[name].meaning}; estimator: {METRICS[name].estimator}."
             for name in METHOD_METRICS if name in METRICS]
    return Section("Methods", paragraphs=[gap_method, GLOSSARY_TEXT], bullets=lines)


def build_config_table(study: Study) -> pd.DataFrame:
    """setting, key, value(s) over the study's runs (only the runs a setting applies to), what the oracle is."""
    rows = []
    for what, key in SETTINGS:
        keys = key if isinstance(key, tuple) else (key,)
        values = [_values(study, k) for k in keys]
        if all(v == "—" for v in values):
            continue
        rows.append({"setting": what, "key": " × ".join(keys), "value": " × ".join(values)})
    kinds = _distinct(study, "oracle.kind", study.runs["run"])
    for kind in kinds:
        rows.append({"setting": f"oracle {kind}: what it scores", "key": "oracle.kind",
                     "value": ORACLE_RANGE.get(str(kind), "see its config")})
    return pd.DataFrame(rows)


def optimum_text(best: pd.DataFrame) -> str:
    reliable = best[best["reliable"].astype(bool)] if "reliable" in best else best
    top = float(reliable["kl"].max()) if len(reliable) else float("nan")
    draws = int(best["draws"].max()) if "draws" in best and len(best) else 0
    return ("The KL-regularised objective's own optimum, π*_β ∝ π_sft·exp(r/β), traces the highest eval reward any "
            "policy can reach at each KL(π‖π_sft). It is estimated by self-normalised importance weights on π_sft's "
            f"samples of the eval prompts (shiftlab/stages/optimum.py; {draws} draw(s), one per seed), which is "
            f"reliable only up to about ½·log N nats: here to {top:.2g} nats, so the shortfall is read only there. "
            "A shortfall near 0 means a cell reaches what the objective allows at that KL; it is an estimate, and "
            "can come out slightly negative by noise.")


def _values(study: Study, key: str) -> str:
    runs = study.runs
    if key in ON_POLICY_ONLY:
        runs = runs[runs["source"] == "onpolicy"]
    if key in REFRESH_ONLY:
        runs = runs[runs["reference"].isin(("hard", "soft"))]
    values = _distinct(study, key, runs["run"])
    return ", ".join(_show(v) for v in values) if values else "—"


def _distinct(study: Study, key: str, runs) -> list:
    seen = [study.configs.get(r, {}).get(key) for r in runs]
    seen = [v for v in seen if v is not None and not (isinstance(v, float) and np.isnan(v))]
    try:
        return sorted(set(seen))
    except TypeError:  # mixed types: keep first-seen order
        return list(dict.fromkeys(seen))


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
