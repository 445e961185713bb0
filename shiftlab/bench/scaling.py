"""How a DPO step's cost grows with sequence length and batch size.

Synthetic batches of exactly T tokens per row (no padding, so T is the length that is computed): the first
quarter is prompt, the rest response. Live reference, the default step. The slope of log time against log T (or
B) says how the cost grows: 1 is linear; attention alone would approach 2 in T.
"""

from __future__ import annotations

import math

import torch

from shiftlab.bench.report import Figure, Section
from shiftlab.bench.step import build_step_setup
from shiftlab.bench.timing import measure
from shiftlab.bench.workload import build_bench_model
from shiftlab.data.batches import PreferenceBatch


def synthetic_batch(n_pairs: int, seq_len: int, vocab: int, seed: int = 0) -> PreferenceBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (2 * n_pairs, seq_len), generator=g)
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, max(1, seq_len // 4):] = True
    return PreferenceBatch(ids, torch.ones_like(ids), loss_mask, n_pairs=n_pairs, n_truncated=0)


def _slope(points: list[tuple[int, float]]) -> float:
    (x0, y0), (x1, y1) = points[0], points[-1]
    return math.log(y1 / y0) / math.log(x1 / x0)


def run_scaling(tokenizer, size: str, lengths: list[int], batch_sizes: list[int], base_batch: int, base_len: int,
                repeats: int) -> Section:
    setup = build_step_setup(build_bench_model(size, tokenizer))
    vocab = setup.policy.config.vocab_size
    section = Section("scaling", "6. Scaling")
    measured: dict[tuple[int, int], float] = {}
    rows = ["| pairs B | tokens per row T | tokens per step | step (ms), median [min–max] | µs per token |",
            "| --- | --- | --- | --- | --- |"]

    def point(n_pairs: int, seq_len: int) -> float:
        if (n_pairs, seq_len) not in measured:
            batch = synthetic_batch(n_pairs, seq_len, vocab)
            stat = measure(lambda: setup.step(batch), repeats=repeats, warmup=1).scaled(1e3)
            tokens = 2 * n_pairs * seq_len
            section.figures.append(Figure(f"{size} · B={n_pairs} pairs, T={seq_len}", "step time", stat, "ms"))
            rows.append(f"| {n_pairs} | {seq_len} | {tokens} | {stat.median:.1f} [{stat.min:.1f}–{stat.max:.1f}] | "
                        f"{1e3 * stat.median / tokens:.1f} |")
            measured[(n_pairs, seq_len)] = stat.median
        return measured[(n_pairs, seq_len)]

    by_length = [(t, point(base_batch, t)) for t in lengths]
    by_batch = [(b, point(b, base_len)) for b in batch_sizes]
    section.notes.append("\n".join(rows))
    section.notes.append(
        f"Growth (log-log slope of the median step time, first to last point): sequence length "
        f"{lengths[0]}→{lengths[-1]} at B={base_batch}: {_slope(by_length):.2f}; batch size "
        f"{batch_sizes[0]}→{batch_sizes[-1]} at T={base_len}: {_slope(by_batch):.2f}. "
        "1 is linear; below 1, fixed per-step costs (optimizer, Python, kernel launches) are still being amortised."
    )
    return section
