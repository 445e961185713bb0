"""Oracle rewards: a fixed scorer of whole texts (prompt + response) that plays the role of a human preference.

Every oracle is ``Callable[[Sequence[str]], numpy.ndarray]`` returning float64 scores of shape (N,). `build_oracle`
is the one place `oracle.kind` is looked up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shiftlab.config import OracleConfig, OracleKind
from shiftlab.data.batches import ensure_pad_token


class VaderOracle:
    """Reward = VADER compound sentiment of the full text, in [-1, 1] (Hutto and Gilbert, 2014).

    VADER is rule-based (lexicon, negation, boosters, "but"), so it is deterministic, cheap, and
    needs no model download: it can be called on every on-policy sample.
    """

    name = "vader"

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as error:  # optional at import time of shiftlab, required here
            raise ImportError(
                "VaderOracle needs the vaderSentiment package: pip install vaderSentiment"
            ) from error
        self._analyzer = SentimentIntensityAnalyzer()  # loads its lexicon once per instance

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Compound scores, float64 of shape (N,)."""
        if isinstance(texts, str):
            raise TypeError("VaderOracle expects a sequence of texts, not a single string")
        scores = [self._analyzer.polarity_scores(text)["compound"] for text in texts]
        return np.asarray(scores, dtype=np.float64).reshape(len(scores))


def vader_scores(texts: Sequence[str]) -> np.ndarray:
    """VADER as a plain function: the example that conf/oracle/function.yaml names (it reloads the lexicon per call)."""
    return VaderOracle()(texts)


class ClassifierOracle:
    """Reward = a sequence classifier's probability of one label (the DPO paper's IMDb reward: a sentiment
    classifier's p(positive)), or, for a one-output reward model, its raw score. Texts are scored in batches of
    `batch_size`, each cut to `max_length` tokens on `truncation_side`; the model runs without gradients."""

    name = "hf_classifier"

    def __init__(self, cfg: OracleConfig):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
        except OSError as err:
            raise FileNotFoundError(
                f"oracle.model={cfg.model!r}: could not load a sequence classifier and its tokenizer "
                f"(expected a local directory written by save_pretrained, or a reachable hub id): {err}"
            ) from err
        self.tokenizer.truncation_side = cfg.truncation_side.value
        # GPT-style classifiers: pad with eos, the model reads its last real token
        ensure_pad_token(self.tokenizer, f"oracle.model={cfg.model!r}")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.label_index = resolve_label(self.model.config.id2label, self.model.config.num_labels, cfg.label, cfg.model)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval().requires_grad_(False)
        # texts longer than the model can read are cut, whatever oracle.max_length asks for
        limits = [cfg.max_length, self.tokenizer.model_max_length]
        limits += [getattr(self.model.config, k) for k in ("max_position_embeddings", "n_positions") if getattr(self.model.config, k, None)]
        self.batch_size, self.max_length = cfg.batch_size, int(min(limits))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("ClassifierOracle expects a sequence of texts, not a single string")
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits.float()  # (b, num_labels)
            if self.label_index is None:
                scores.append(logits[:, 0])
            else:
                scores.append(torch.softmax(logits, dim=-1)[:, self.label_index])
        if not scores:
            return np.zeros(0, dtype=np.float64)
        return torch.cat(scores).double().cpu().numpy()


def resolve_label(id2label: dict, num_labels: int, label: str | None, model: str | None) -> int | None:
    """The output index whose probability is the reward; None for a one-output reward model (its logit)."""
    names = {int(i): str(name) for i, name in (id2label or {}).items()}
    listed = ", ".join(f"{i}={n}" for i, n in sorted(names.items()))
    if num_labels == 1:
        if label is not None:
            raise ValueError(
                f"oracle.label={label!r}, but oracle.model={model!r} has one output (a reward model, scored by its "
                "logit): leave oracle.label unset"
            )
        return None
    if label is None:
        raise ValueError(f"oracle.model={model!r} has {num_labels} labels ({listed}): set oracle.label to one of them")
    matches = [i for i, name in names.items() if name == label]
    if not matches and label.isdigit() and int(label) < num_labels:
        matches = [int(label)]  # an index, for models whose labels are only LABEL_0, LABEL_1, ...
    if not matches:
        raise ValueError(f"oracle.label={label!r} is not a label of oracle.model={model!r}; its labels are {listed}")
    return matches[0]


class FunctionOracle:
    """A user's callable, named "package.module:attr" and called as attr(texts, **kwargs); its output is checked."""

    def __init__(self, target: str, kwargs: dict[str, Any]):
        self.fn = import_callable(target)
        self.name, self.kwargs = target, dict(kwargs)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        raw = self.fn(list(texts), **self.kwargs)
        try:
            scores = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"oracle.function={self.name!r} returned {type(raw).__name__}, not numbers: {err}") from err
        if scores.shape != (len(texts),):
            raise ValueError(f"oracle.function={self.name!r} returned shape {scores.shape} for {len(texts)} texts; expected ({len(texts)},)")
        if not np.isfinite(scores).all():
            raise ValueError(f"oracle.function={self.name!r} returned a NaN or infinite score")
        return scores


def import_callable(target: str) -> Callable:
    """"package.module:attr" (attr may be dotted, e.g. "pkg.mod:Class.method") -> the callable it names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f'oracle.function={target!r} must look like "package.module:attr"')
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"oracle.function={target!r}: cannot import module {module_name!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"oracle.function={target!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"oracle.function={target!r} names a {type(obj).__name__}, not a callable")
    return obj


def build_oracle(cfg: OracleConfig) -> Callable[[Sequence[str]], np.ndarray] | None:
    """The oracle `oracle.kind` names; None for `oracle.kind=none` (human pairs, nothing to score samples with)."""
    if cfg.kind is OracleKind.none:
        return None
    builders = {
        OracleKind.vader: lambda: VaderOracle(),
        OracleKind.hf_classifier: lambda: ClassifierOracle(cfg),
        OracleKind.function: lambda: FunctionOracle(cfg.function, cfg.kwargs),
    }
    return builders[cfg.kind]()
