"""Text corpora and prompts: the real sentence-polarity reviews, review prefixes, train/eval splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SENTENCE_POLARITY_FILES = ("rt-polarity.pos", "rt-polarity.neg")


def load_sentence_polarity(directory: str | Path) -> list[str]:
    """Reviews of the sentence polarity dataset v1.0 (Pang and Lee, 2005): .pos lines, then .neg lines.

    The files are lower-cased and tokenised already. Some releases are not valid UTF-8, so
    undecodable bytes become U+FFFD instead of failing. Blank lines are dropped, ends stripped.
    """
    directory = Path(directory)
    expected = f"expected {' and '.join(SENTENCE_POLARITY_FILES)} (Cornell movie-review data, v1.0)"
    if not directory.is_dir():
        raise FileNotFoundError(f"sentence-polarity directory not found: {directory}; {expected}")
    texts: list[str] = []
    for name in SENTENCE_POLARITY_FILES:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"sentence-polarity file not found: {path}; {expected}")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        texts.extend(line.strip() for line in lines if line.strip())
    return texts


def make_prompts(texts: Sequence[str], rng: np.random.Generator, min_words: int = 2,
                 max_words: int = 8) -> list[str]:
    """One prompt per text: its first k words, k uniform in [min_words, max_words].

    k is capped at len(words) - 1 so that at least one word is left to complete; texts shorter than
    min_words + 1 words are skipped, so the result may be shorter than `texts`.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    prompts = []
    for text in texts:
        words = text.split()
        longest = min(max_words, len(words) - 1)
        if longest < min_words:
            continue
        prompts.append(" ".join(words[: rng.integers(min_words, longest + 1)]))
    return prompts


def split_texts(texts: Sequence[str], rng: np.random.Generator,
                eval_fraction: float) -> tuple[list[str], list[str]]:
    """Shuffle with `rng` and split into (train, eval); eval gets round(eval_fraction * N) texts."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    order = rng.permutation(len(texts))
    n_eval = int(round(eval_fraction * len(texts)))
    return [texts[i] for i in order[n_eval:]], [texts[i] for i in order[:n_eval]]
