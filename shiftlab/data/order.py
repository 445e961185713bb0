"""The one epoch order: rows drawn without replacement, reshuffled each epoch (SFT batches, offline pairs, the pairs of
an on-policy round)."""

from __future__ import annotations

import numpy as np


class EpochOrder:
    """Row indices 0..n-1 in a fresh random order each epoch. A batch that would run past the end of an epoch takes
    the rest of it and the start of the next: every row is seen once per epoch, and a batch of size ≤ n is never
    short (a larger one gets what is pending plus one epoch).

    `rng` is used by reference, not copied: a caller drawing from the same generator for other things (an on-policy
    source choosing prompts) keeps its draws in one sequence. `pending` and `rng`'s state are all a checkpoint needs.
    """

    def __init__(self, rng: np.random.Generator, n: int = 0):
        self.rng, self.n = rng, n
        self.pending: list[int] = []

    def restart(self, n: int) -> None:
        """A new set of n rows (a new on-policy round): what was left of the old order is dropped."""
        self.n, self.pending = n, []

    def take(self, size: int) -> list[int]:
        if len(self.pending) < size:
            self.pending += self.rng.permutation(self.n).tolist()
        rows, self.pending = self.pending[:size], self.pending[size:]
        return rows
