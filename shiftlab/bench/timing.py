"""Repeated timing: median with min and max, after warmup calls that are not counted.

On a shared CPU the median is the figure to quote; min and max show how noisy the machine was.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """A figure measured `n` times."""

    median: float
    min: float
    max: float
    n: int

    def scaled(self, factor: float) -> Stat:
        """The same figure in other units (seconds -> ms); a negative factor would swap min and max, so refuse it."""
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        return Stat(self.median * factor, self.min * factor, self.max * factor, self.n)

    def inverted(self, numerator: float = 1.0) -> Stat:
        """numerator / value (seconds per step -> steps per second): the slowest repeat becomes the min."""
        return Stat(numerator / self.median, numerator / self.max, numerator / self.min, self.n)


def summarize(samples: Sequence[float]) -> Stat:
    if not samples:
        raise ValueError("no samples to summarize")
    values = [float(v) for v in samples]
    return Stat(statistics.median(values), min(values), max(values), len(values))


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls (allocator, caches, lazy init)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Stat:
    return summarize(time_calls(fn, repeats, warmup))


def interleave(runners: dict[str, Callable[[int], list[float]]], steps: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each runner, one figure per repeat (the block's mean), in mirrored order (AB…BA)."""
    names = list(runners)
    for name in names:
        if warmup:
            runners[name](warmup)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            times = runners[name](steps)
            out[name].append(sum(times) / len(times))
    return out
