"""The one pairing rule (shiftlab.labels.pairing): k scored completions per prompt into chosen/rejected pairs."""

from __future__ import annotations

import numpy as np

from shiftlab.config import Pairing
from shiftlab.labels.pairing import form_pairs


def test_form_pairs_best_vs_worst_and_all_pairs_with_ties():
    rewards = np.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.2], [0.9, 0.1, 0.9]])
    usable = np.ones_like(rewards, dtype=bool)
    pairs, ties = form_pairs(rewards, usable, Pairing.best_vs_worst)
    assert pairs == [(0, 1, 0), (2, 0, 1)] and ties == 1
    pairs, ties = form_pairs(rewards, usable, Pairing.all_pairs)
    assert (0, 1, 0) in pairs and (0, 2, 0) in pairs and (0, 1, 2) in pairs
    assert ties == 3 + 1  # prompt 1: all three pairs tie; prompt 2: (0, 2) ties
    usable[0, 1] = False  # an empty completion never enters a pair
    pairs, _ = form_pairs(rewards, usable, Pairing.best_vs_worst)
    assert pairs[0] == (0, 2, 0)
