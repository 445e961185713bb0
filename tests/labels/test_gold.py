"""The gold judge: exact mood posterior of the grammar, agreeing with the VADER proxy on grammar samples and parting
from it on degenerate text, in the proxy's range [-1, 1]."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from shiftlab.labels.gold import GrammarGold, build_gold, gold_metrics
from shiftlab.labels.oracles import VaderOracle
from shiftlab.world.grammar import BOOSTERS, POSITIVE_STRONG, ReviewGrammar

N_SAMPLES = 400
PROMPT_WORDS = 4


@pytest.fixture(scope="module")
def grammar() -> ReviewGrammar:
    return ReviewGrammar()


@pytest.fixture(scope="module")
def gold(grammar) -> GrammarGold:
    return GrammarGold(grammar)


@pytest.fixture(scope="module")
def vader() -> VaderOracle:
    return VaderOracle()


@pytest.fixture(scope="module")
def samples(grammar) -> list[str]:
    """π_sft's target distribution: reviews drawn from the grammar."""
    return grammar.sample(N_SAMPLES, np.random.default_rng(0))


@pytest.fixture(scope="module")
def degenerate(samples, vader) -> dict[str, list[str]]:
    """What an over-optimised policy writes after a positive review's first words: repeated words, stacked
    boosters, off-grammar strings of strong adjectives."""
    positive = [t for t, v in zip(samples, vader(samples)) if v > 0.5][:40]
    rng = np.random.default_rng(1)
    heads = [t.split()[:PROMPT_WORDS] for t in positive]
    return {
        "repeated": [" ".join(h + ["i"] + ["loved"] * 16) for h in heads],
        "boosters": [" ".join(h + ["is"] + list(rng.choice(BOOSTERS, 10)) + ["amazing"] * 6) for h in heads],
        "adjectives": [" ".join(h + list(rng.choice(POSITIVE_STRONG, 16))) for h in heads],
    }


def test_per_mood_grammars_mix_back_into_the_grammar_exactly(grammar, samples):
    """The posterior's weights w_m·Z_m are right: mixing the one-mood grammars with them gives the grammar's log-prob."""
    moods = [ReviewGrammar(tuple(float(i == m) for i in range(5))) for m in range(5)]
    for text in samples[:20]:
        joint = [np.log(w) + g.log_z + g.logprob(text) for w, g in zip(grammar.mood_weights, moods)]
        assert np.logaddexp.reduce(joint) - grammar.log_z == pytest.approx(grammar.logprob(text), abs=1e-9)


def test_agrees_with_the_proxy_on_grammar_samples(gold, vader, samples):
    # measured: Spearman 0.94 on these 400 samples (0.92 on seeds 1 and 2)
    rho = spearmanr(gold(samples), vader(samples)).statistic
    assert rho >= 0.8, f"gold and VADER rank grammar samples differently: Spearman {rho:.3f}"


def test_grammar_samples_are_credited_in_full(gold, samples):
    for text in samples[:20]:
        k, posterior = gold.mood_posterior(text.split())
        assert k == len(text.split())
        assert gold([text])[0] == pytest.approx(float(posterior @ np.linspace(-1, 1, 5)))


@pytest.mark.parametrize("kind", ["repeated", "boosters", "adjectives"])
def test_parts_from_the_proxy_on_degenerate_text(gold, vader, degenerate, kind):
    texts = degenerate[kind]
    proxy, judged = vader(texts), gold.score(texts, [PROMPT_WORDS] * len(texts))
    assert proxy.min() > 0.9, f"{kind}: the proxy was expected to be fooled (min VADER {proxy.min():.3f})"
    assert judged.max() < 0.2, f"{kind}: gold was fooled (max {judged.max():.3f})"


def test_range_is_the_proxys(grammar, gold, samples, degenerate):
    rng = np.random.default_rng(2)
    vocabulary = grammar.vocabulary
    salad = [" ".join(rng.choice(vocabulary, rng.integers(1, 60))) for _ in range(20)]
    texts = samples + [t for kind in degenerate.values() for t in kind] + salad + ["", "great"]
    scores = gold(texts)
    assert scores.dtype == np.float64 and scores.shape == (len(texts),)
    assert np.isfinite(scores).all() and scores.min() >= -1.0 and scores.max() <= 1.0
    on_samples = scores[: len(samples)]
    assert on_samples.min() < -0.9 and on_samples.max() > 0.9  # the whole range is used, as VADER's is


def test_prompt_words_earn_no_credit(gold, samples):
    head = samples[0].split()[:PROMPT_WORDS]
    off_grammar = " ".join(head + ["zzz"] * 4)
    assert gold.score([off_grammar], [PROMPT_WORDS])[0] == 0.0
    assert gold.score([" ".join(head)], [PROMPT_WORDS])[0] == 0.0  # an empty response says nothing
    half = " ".join(samples[0].split() + ["zzz"] * len(samples[0].split()))
    assert gold([half])[0] == pytest.approx(gold([samples[0]])[0] / 2)  # half the words grammatical: half the credit


def test_metrics_mean_and_stderr(gold, samples):
    out = gold_metrics(gold, samples[:10], [0] * 10)
    scores = gold(samples[:10])
    assert out["eval/gold_reward"] == pytest.approx(scores.mean())
    assert out["eval/gold_reward_se"] == pytest.approx(scores.std(ddof=1) / np.sqrt(10))


def test_no_grammar_no_gold_and_bad_input_is_named(grammar):
    assert build_gold(None) is None
    judge = build_gold(grammar)
    assert isinstance(judge, GrammarGold)
    with pytest.raises(TypeError, match="sequence of texts"):
        judge("a single string")
    with pytest.raises(ValueError, match="2 prompt lengths for 1 texts"):
        judge.score(["overall , it is good ."], [1, 2])
