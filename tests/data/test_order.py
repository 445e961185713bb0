"""The one epoch order: every row once per epoch, batches across an epoch's end, one shared generator."""

from __future__ import annotations

import numpy as np

from shiftlab.data.order import EpochOrder


def test_every_row_once_per_epoch_and_batches_straddle_epochs():
    order = EpochOrder(np.random.default_rng(0), n=5)
    batches = [order.take(2) for _ in range(5)]  # 10 rows: two epochs exactly
    flat = sum(batches, [])
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))
    assert all(len(b) == 2 for b in batches)


def test_draws_are_those_of_the_shared_generator_and_restart_drops_the_rest():
    rng, same = np.random.default_rng(3), np.random.default_rng(3)
    order = EpochOrder(rng, n=4)
    assert order.take(3) == same.permutation(4).tolist()[:3]
    rng.random()  # another user of the generator (an on-policy source choosing prompts) moves it too
    same.random()
    order.restart(6)
    assert order.pending == [] and order.take(6) == same.permutation(6).tolist()
