"""The one pairing rule (shiftlab.labels.pairing): k scored completions per prompt into chosen/rejected pairs."""

from __future__ import annotations

import numpy as np
import pytest

from shiftlab.config import Pairing, PairLabels
from shiftlab.labels.pairing import form_pairs, label_generator, preference_probability, sample_preferences

BT = PairLabels.bradley_terry


def test_form_pairs_best_vs_worst_and_all_pairs_with_ties():
    rewards = np.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.2], [0.9, 0.1, 0.9]])
    usable = np.ones_like(rewards, dtype=bool)
    pairs, counts = form_pairs(rewards, usable, Pairing.best_vs_worst)
    assert pairs == [(0, 1, 0), (2, 0, 1)] and counts == {"ties": 1, "flipped": 0}
    pairs, counts = form_pairs(rewards, usable, Pairing.all_pairs)
    assert (0, 1, 0) in pairs and (0, 2, 0) in pairs and (0, 1, 2) in pairs
    assert counts["ties"] == 3 + 1  # prompt 1: all three pairs tie; prompt 2: (0, 2) ties
    usable[0, 1] = False  # an empty completion never enters a pair
    pairs, _ = form_pairs(rewards, usable, Pairing.best_vs_worst)
    assert pairs[0] == (0, 2, 0)


def test_preference_probability_is_the_logistic_of_the_reward_gap_over_tau():
    a, b = np.array([1.0, 0.0, 0.3, 5000.0]), np.array([0.0, 1.0, 0.3, 0.0])
    for tau in (0.25, 1.0, 4.0):
        p = preference_probability(a, b, tau)
        expected = 1.0 / (1.0 + np.exp(-np.clip((a - b) / tau, -700, 700)))
        np.testing.assert_allclose(p, expected, rtol=1e-12)
        np.testing.assert_allclose(p + preference_probability(b, a, tau), 1.0)  # one of the two orders
    assert preference_probability(a, b, 1.0)[2] == 0.5  # a tie is a fair coin


@pytest.mark.parametrize("gap,tau", [(0.0, 1.0), (0.5, 1.0), (1.0, 0.5), (-0.3, 0.2), (2.0, 4.0)])
def test_sampled_preferences_follow_bradley_terry_within_binomial_noise(gap, tau):
    n = 20_000
    wins = sample_preferences(np.full(n, gap), np.zeros(n), tau, np.random.default_rng(7)).mean()
    p = 1.0 / (1.0 + np.exp(-gap / tau))
    assert abs(wins - p) < 4.0 * np.sqrt(p * (1.0 - p) / n)  # 4 s.e.: fails by chance about once in 16,000 runs


def test_bradley_terry_all_pairs_orders_each_pair_by_its_own_probability():
    n = 4000
    rewards = np.tile([0.0, 0.4, 1.0], (n, 1))  # (P, 3), the same three completions for every prompt
    pairs, counts = form_pairs(rewards, np.ones_like(rewards, dtype=bool), Pairing.all_pairs, BT, 0.5, label_generator(0, "offline"))
    assert len(pairs) == 3 * n and counts["ties"] == 0
    for hi, lo in [(1, 0), (2, 0), (2, 1)]:
        won = sum((c, r) == (hi, lo) for _, c, r in pairs)
        lost = sum((c, r) == (lo, hi) for _, c, r in pairs)
        p = 1.0 / (1.0 + np.exp(-(rewards[0, hi] - rewards[0, lo]) / 0.5))
        assert won + lost == n and abs(won / n - p) < 4.0 * np.sqrt(p * (1.0 - p) / n)
    assert counts["flipped"] == sum(rewards[p, c] < rewards[p, r] for p, c, r in pairs)


def test_bradley_terry_best_vs_worst_keeps_the_two_completions_and_samples_their_order():
    rng = np.random.default_rng(3)
    rewards = rng.normal(size=(500, 4))
    usable = rng.random((500, 4)) > 0.1
    fixed, _ = form_pairs(rewards, usable, Pairing.best_vs_worst)
    sampled, counts = form_pairs(rewards, usable, Pairing.best_vs_worst, BT, 1.0, label_generator(0, "offline"))
    assert [(p, {c, r}) for p, c, r in sampled] == [(p, {c, r}) for p, c, r in fixed]  # no ties among normals
    flipped = [(p, c, r) for (p, c, r), same in zip(sampled, fixed, strict=True) if (p, c, r) != same]
    assert counts["flipped"] == len(flipped) > 0


def test_bradley_terry_ties_are_a_fair_coin_not_a_drop():
    n = 4000
    rewards = np.full((n, 3), 0.2)  # every completion of every prompt ties
    usable = np.ones_like(rewards, dtype=bool)
    assert form_pairs(rewards, usable, Pairing.best_vs_worst)[0] == []  # deterministic: all dropped
    pairs, counts = form_pairs(rewards, usable, Pairing.best_vs_worst, BT, 1.0, label_generator(1, "onpolicy", 0, 0))
    assert len(pairs) == n and counts == {"ties": 0, "flipped": 0}  # a tie has no reward order to disagree with
    assert all(c != r for _, c, r in pairs)  # two distinct completions even when all tie
    first_chosen = np.mean([c < r for _, c, r in pairs])
    assert abs(first_chosen - 0.5) < 4.0 * np.sqrt(0.25 / n)


def test_sampled_labels_are_determined_by_the_seed_and_round():
    rewards = np.random.default_rng(0).normal(size=(200, 4))
    usable = np.ones_like(rewards, dtype=bool)

    def draw(*key):
        return form_pairs(rewards, usable, Pairing.all_pairs, BT, 1.0, label_generator(*key))[0]

    assert draw(0, "onpolicy", 4, 0) == draw(0, "onpolicy", 4, 0)
    assert draw(0, "onpolicy", 4, 0) != draw(1, "onpolicy", 4, 0)  # another seed
    assert draw(0, "onpolicy", 4, 0) != draw(0, "onpolicy", 8, 0)  # another round
    assert draw(0, "onpolicy", 0, 0) != draw(0, "onpolicy", 0, 1)  # a resampled round
    assert draw(0, "offline") != draw(0, "onpolicy")  # the offline set has a stream of its own
    # the label stream is not the run's default stream, which the deterministic parts of a run draw from
    assert label_generator(0, "offline").random() != np.random.default_rng(0).random()


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_a_temperature_that_is_not_positive_and_finite_fails_naming_the_key(tau):
    with pytest.raises(ValueError, match="`pairs.temperature`"):
        preference_probability(np.zeros(2), np.ones(2), tau)
    with pytest.raises(ValueError, match="`pairs.temperature`"):
        form_pairs(np.zeros((1, 2)), np.ones((1, 2), dtype=bool), Pairing.all_pairs, BT, tau, np.random.default_rng(0))


def test_bradley_terry_labels_need_a_generator():
    with pytest.raises(ValueError, match="rng"):
        form_pairs(np.zeros((1, 2)), np.ones((1, 2), dtype=bool), Pairing.all_pairs, BT, 1.0)
