"""Text quality of a set of responses, on words: distinct-n (Li et al., 2016, "A Diversity-Promoting Objective
Function for Neural Conversation Models"; divided here by the n-gram count, not the word count, so that it lies in
(0, 1] for every n), the within-response repeat rate, and length.

Every function takes `responses`: a list of N responses, each a list of words (whitespace tokens). A degenerate
policy ("i loved loved loved …") shows as distinct-n falling and the repeat rate rising, whatever the oracle says.
"""

from __future__ import annotations

from collections.abc import Sequence

REPEAT_N = 3  # word trigrams: a repeated trigram is a copied phrase, not a common word such as "the"


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The len(words) - n + 1 word n-grams of one response, in order (none if it is shorter than n)."""
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(responses: Sequence[Sequence[str]], n: int) -> float:
    """distinct-n = |distinct n-grams over all responses| / |n-grams over all responses| ∈ (0, 1].

    Pooled over the N responses (a phrase shared by two responses counts once in the numerator); NaN when no
    response has n words.
    """
    grams = [g for words in responses for g in ngrams(words, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repeat_rate(responses: Sequence[Sequence[str]], n: int = REPEAT_N) -> float:
    """Mean over responses of (n-grams that repeat an earlier n-gram of the same response) / (its n-grams) ∈ [0, 1).

    Responses shorter than n words have no n-grams and are left out of the mean; NaN when every response is.
    """
    rates = []
    for words in responses:
        grams = ngrams(words, n)
        if grams:
            rates.append((len(grams) - len(set(grams))) / len(grams))  # all but the first use of each n-gram
    return sum(rates) / len(rates) if rates else float("nan")


def mean_length_words(responses: Sequence[Sequence[str]]) -> float:
    """Mean number of words per response (0 for an empty response); NaN for no responses."""
    return sum(len(words) for words in responses) / len(responses) if responses else float("nan")


def text_quality(responses: Sequence[Sequence[str]]) -> dict[str, float]:
    """The four columns the evaluator logs under `eval/`: distinct_1, distinct_2, repeat_rate (n = REPEAT_N), length_words."""
    return {
        "distinct_1": distinct_n(responses, 1),
        "distinct_2": distinct_n(responses, 2),
        "repeat_rate": repeat_rate(responses, REPEAT_N),
        "length_words": mean_length_words(responses),
    }
