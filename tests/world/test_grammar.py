"""The embedded world: review grammar (sampling + exact scoring), VADER oracle, corpora."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from shiftlab.labels.oracles import VaderOracle
from shiftlab.world import ReviewGrammar, load_sentence_polarity, make_prompts, split_texts
from shiftlab.world import grammar as grammar_module

SENTENCE_POLARITY = Path(__file__).resolve().parents[3] / "shared/data/sentence-polarity"
N_SAMPLES = 20_000


@pytest.fixture(scope="module")
def grammar() -> ReviewGrammar:
    return ReviewGrammar()


@pytest.fixture(scope="module")
def reviews(grammar) -> list[str]:
    return grammar.sample(N_SAMPLES, np.random.default_rng(0))


@pytest.fixture(scope="module")
def oracle() -> VaderOracle:
    return VaderOracle()


# --- grammar: sampling -------------------------------------------------------------------------

def test_samples_have_valid_length_and_known_words(grammar, reviews):
    lengths = np.array([len(text.split()) for text in reviews])
    assert lengths.min() >= grammar.min_words and lengths.max() <= grammar.max_words
    assert {w for text in reviews for w in text.split()} <= set(grammar.vocabulary)
    assert len(grammar.vocabulary) <= 300  # small enough for a small LM to learn
    assert text_is_lower_case_and_tokenised(reviews[0])


def text_is_lower_case_and_tokenised(text: str) -> bool:
    return text == text.lower() and text.split(" ")[-1] in {".", "!"} and "  " not in text


def test_samples_have_finite_logprob(grammar, reviews):
    scores = np.array([grammar.logprob(text) for text in reviews[:300]])
    assert np.isfinite(scores).all() and (scores < 0).all()


def test_same_seed_same_corpus_and_varied_openers(grammar, reviews):
    assert grammar.sample(500, np.random.default_rng(0)) == reviews[:500]
    assert grammar.sample(500, np.random.default_rng(1)) != reviews[:500]
    assert len({" ".join(text.split()[:2]) for text in reviews}) > 50


# --- grammar: exact probabilities ---------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3])
def test_prefix_frequencies_match_exact_probabilities(grammar, reviews, depth):
    """Each frequent prefix's count lies within a 4-sigma binomial band of N * exp(prefix_logprob)."""
    counts = Counter(" ".join(text.split()[:depth]) for text in reviews)
    for prefix, count in counts.most_common(30):
        p = np.exp(grammar.prefix_logprob(prefix))
        sigma = np.sqrt(N_SAMPLES * p * (1 - p))
        assert abs(count - N_SAMPLES * p) <= 4 * sigma + 1, (prefix, count, N_SAMPLES * p)


def test_first_words_cover_all_probability(grammar):
    total = sum(np.exp(grammar.prefix_logprob(w)) for w in grammar.vocabulary)
    assert grammar.prefix_logprob("") == 0.0
    assert total == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("n_words", [0, 3, 8, None])
def test_prefix_mass_splits_into_next_words_and_stopping(grammar, reviews, n_words):
    """P(prefix p) = sum_w P(prefix p + w) + P(text == p), exactly."""
    review = next(text for text in reviews if len(text.split()) < grammar.max_words)
    prefix = " ".join(review.split()[:n_words])
    continued = sum(np.exp(grammar.prefix_logprob(f"{prefix} {w}")) for w in grammar.vocabulary)
    stopped = np.exp(grammar.logprob(prefix))
    assert (stopped > 0) == (n_words is None)
    assert np.exp(grammar.prefix_logprob(prefix)) == pytest.approx(continued + stopped, rel=1e-9)


def test_prefix_logprobs_match_prefix_logprob_and_decrease(grammar, reviews):
    words = reviews[1].split()
    scores = grammar.prefix_logprobs(reviews[1])
    assert scores.shape == (len(words),)
    assert np.all(np.diff(scores) <= 1e-12)
    for k in (1, 4, len(words)):
        assert scores[k - 1] == pytest.approx(grammar.prefix_logprob(" ".join(words[:k])), abs=1e-12)
    assert grammar.logprob(reviews[1]) <= scores[-1]


# --- grammar: impossible texts ------------------------------------------------------------------

def test_impossible_texts_score_minus_infinity(grammar, reviews):
    review = next(text for text in reviews if len(text.split()) >= 12)
    words = review.split()
    assert grammar.logprob(" ".join(words[:2] + ["zebra"] + words[3:])) == -np.inf
    assert grammar.logprob(" ".join(reversed(words))) == -np.inf  # no review starts with "."
    assert grammar.logprob(" ".join(words[:9])) == -np.inf  # too short, even if a valid prefix
    assert grammar.logprob(" ".join(words + ["."])) == -np.inf
    assert grammar.logprob("") == -np.inf
    too_long = " ".join(words * 4)
    assert grammar.logprob(too_long) == -np.inf and grammar.prefix_logprob(too_long) == -np.inf


@pytest.mark.parametrize("make_bad", [lambda words: "zebra", lambda words: words[3]])
def test_prefix_logprobs_are_minus_infinity_from_the_first_bad_word(grammar, reviews, make_bad):
    """An unknown word, or a known one out of place (no word can repeat itself), kills the prefix."""
    words = reviews[2].split()
    words.insert(4, make_bad(words))
    scores = grammar.prefix_logprobs(" ".join(words))
    assert np.isfinite(scores[:4]).all()
    assert np.all(scores[4:] == -np.inf)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_prefix_logprobs_never_increase_on_arbitrary_word_sequences(grammar, data):
    words = data.draw(st.lists(st.sampled_from(grammar.vocabulary), max_size=12))
    scores = grammar.prefix_logprobs(" ".join(words))
    assert np.all(scores <= 1e-12) and np.all(scores[1:] <= scores[:-1] + 1e-12)
    assert grammar.logprob(" ".join(words)) <= grammar.prefix_logprob(" ".join(words))


# --- oracle -------------------------------------------------------------------------------------

def test_oracle_orders_and_negates(oracle):
    scores = oracle(["the movie is great", "the movie is not great", "the movie is awful"])
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert scores[0] > 0 > scores[1] and scores[0] > scores[2]
    assert np.all(np.abs(scores) <= 1.0)
    assert oracle([]).shape == (0,) and oracle.name == "vader"


def test_grammar_sentiment_is_spread_over_both_signs(oracle, reviews):
    scores = oracle(reviews[:3000])
    assert scores.std() > 0.3
    assert (scores > 0.2).mean() > 0.25 and (scores < -0.2).mean() > 0.25
    assert (np.abs(scores) < 0.5).mean() > 0.1  # not only two spikes at +-1


def test_neutral_grammar_parts_carry_no_sentiment(oracle):
    """Openers and fillers are neutral, so prompts made of them leave the sentiment to the policy."""
    g = grammar_module
    neutral = (g.SINGULAR_NOUNS + g.PLURAL_NOUNS + g.FILM_NOUNS + g.NEUTRAL_FRAMES + g.CHARACTERS
               + g.PLACES)
    fillers = [" ".join(p if isinstance(p, str) else p[0] for p in parts) for parts in g.FILLERS]
    assert np.all(oracle(list(neutral) + fillers) == 0.0)


# --- corpora ------------------------------------------------------------------------------------

def test_make_prompts_are_strict_prefixes(reviews):
    prompts = make_prompts(reviews[:500], np.random.default_rng(0))
    assert len(prompts) == 500
    for prompt, review in zip(prompts, reviews):
        n = len(prompt.split())
        assert 2 <= n <= 8 and n < len(review.split()) and review.startswith(prompt + " ")
    assert len({len(p.split()) for p in prompts}) == 7
    # a 2-word text cannot leave a word to complete after a 2-word prompt, so it is skipped
    assert make_prompts(["too short", "just three words"], np.random.default_rng(0)) == ["just three"]


def test_split_texts_is_a_deterministic_partition(reviews):
    texts = reviews[:101]
    train, evaluation = split_texts(texts, np.random.default_rng(3), eval_fraction=0.2)
    assert len(evaluation) == 20 and sorted(train + evaluation) == sorted(texts)
    assert split_texts(texts, np.random.default_rng(3), 0.2) == (train, evaluation)
    with pytest.raises(ValueError):
        split_texts(texts, np.random.default_rng(3), 1.5)


def test_missing_sentence_polarity_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_sentence_polarity(tmp_path / "nowhere")
    (tmp_path / "rt-polarity.pos").write_text("a fine film .\n\n")
    with pytest.raises(FileNotFoundError, match=r"rt-polarity\.neg"):
        load_sentence_polarity(tmp_path)


def test_sentence_polarity_decodes_bad_bytes_and_drops_blank_lines(tmp_path):
    (tmp_path / "rt-polarity.pos").write_bytes(b"a caf\xe9 film .\n\n  \n")
    (tmp_path / "rt-polarity.neg").write_bytes(b"dull .\n")
    assert load_sentence_polarity(tmp_path) == ["a caf\ufffd film .", "dull ."]


def test_vader_ranks_real_positive_reviews_above_negative(oracle):
    if not SENTENCE_POLARITY.is_dir():
        pytest.skip(f"sentence-polarity data not found at {SENTENCE_POLARITY} (not part of the repo)")
    texts = load_sentence_polarity(SENTENCE_POLARITY)
    assert len(texts) == 5331 + 5331
    scores = oracle(texts)
    positive, negative = scores[:5331], scores[5331:]
    auc = mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative))
    assert auc > 0.6  # measured 0.695 (ties count half)
