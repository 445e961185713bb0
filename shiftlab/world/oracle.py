"""Oracle rewards: a fixed scorer of whole texts that plays the role of a human preference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
