"""Text-quality columns against hand counts: distinct-n pooled over responses, the within-response repeat rate."""

import math

import pytest

from shiftlab.functional.text_quality import distinct_n, mean_length_words, ngrams, repeat_rate, text_quality

A = "i loved it , i loved it".split()  # 7 words
B = "the plot is good".split()  # 4 words


def test_ngrams_in_order_and_none_for_short_responses():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
    with pytest.raises(ValueError, match="order must be >= 1"):
        ngrams(["a"], 0)


def test_distinct_n_by_hand():
    # unigrams: A has {i, loved, it, ","} (4 distinct of 7), B adds 4 more of 4 -> 8 / 11
    assert distinct_n([A, B], 1) == pytest.approx(8 / 11)
    # bigrams: A has (i loved)(loved it)(it ,)(, i)(i loved)(loved it) -> 4 distinct of 6; B 3 of 3 -> 7 / 9
    assert distinct_n([A, B], 2) == pytest.approx(7 / 9)
    # an n-gram shared by two responses counts once
    assert distinct_n([B, B], 1) == pytest.approx(4 / 8)
    assert math.isnan(distinct_n([["a"], []], 2))


def test_repeat_rate_by_hand():
    # A's trigrams: (i loved it)(loved it ,)(it , i)(, i loved)(i loved it): 1 repeat of 5; B: 0 of 2
    assert repeat_rate([A, B], 3) == pytest.approx((1 / 5 + 0 / 2) / 2)
    degenerate = ["loved"] * 6  # 4 trigrams, all the same: 3 repeat the first
    assert repeat_rate([degenerate], 3) == pytest.approx(3 / 4)
    assert repeat_rate([degenerate, ["too", "short"]], 3) == pytest.approx(3 / 4)  # short responses are left out
    assert math.isnan(repeat_rate([["a", "b"]], 3))


def test_text_quality_columns_and_length():
    assert mean_length_words([A, B, []]) == pytest.approx(11 / 3)
    out = text_quality([A, B])
    assert out == pytest.approx({"distinct_1": 8 / 11, "distinct_2": 7 / 9, "repeat_rate": 0.1, "length_words": 5.5})
    assert text_quality([["loved"] * 6])["distinct_1"] < text_quality([B])["distinct_1"]
