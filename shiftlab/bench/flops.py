"""FLOPs of a GPT-2 forward and of a DPO step, counted from the model's shapes, and the FLOP/s of a large matmul.

Only matrix products are counted (2·m·n·k each); layer norms, GELU, softmax, embedding lookups and the optimizer
are left out, as is usual (Kaplan et al. 2020, Table 1) — they are the time the step spends *below* the machine's
matmul rate. Per row of length T, per layer, with width d and feed-forward width f:

    q, k, v projections   2·T·d·3d
    attention scores      2·T·T·d      (all T×T: a padded batch gives SDPA an explicit mask, so nothing is skipped)
    attention · values    2·T·T·d
    output projection     2·T·d·d
    feed-forward          2·T·d·f + 2·T·f·d
and the LM head 2·P·d·V over the P positions whose logits are computed. Backward ≈ 2× forward (gradients with
respect to inputs and to weights). A DPO step is policy forward + backward on chosen and rejected together, plus
the reference forward unless its log-probs were precomputed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from shiftlab.models.packing import plan_packing


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    d_model: int
    d_ff: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> GPTShape:
        """From a transformers GPT2Config (n_inner None means 4·n_embd)."""
        return cls(config.n_layer, config.n_embd, config.n_inner or 4 * config.n_embd, config.vocab_size)


def attention_flops(shape: GPTShape, seq_len: int) -> int:
    """Scores and weighted values of one block on one row: the part that grows as T²."""
    return 2 * 2 * seq_len * seq_len * shape.d_model


def layer_forward_flops(shape: GPTShape, seq_len: int) -> int:
    """One transformer block on one row of `seq_len` tokens."""
    t, d, f = seq_len, shape.d_model, shape.d_ff
    projections = 2 * t * d * 3 * d + 2 * t * d * d
    feed_forward = 2 * 2 * t * d * f
    return projections + attention_flops(shape, t) + feed_forward


def forward_flops(shape: GPTShape, seq_lens: Sequence[int], lm_head_positions: int | None = None) -> int:
    """A forward pass over rows of the given lengths; the LM head on `lm_head_positions` positions (default: all)."""
    body = sum(shape.n_layer * layer_forward_flops(shape, t) for t in seq_lens)
    positions = sum(seq_lens) if lm_head_positions is None else lm_head_positions
    return body + 2 * positions * shape.d_model * shape.vocab


def dpo_step_flops(shape: GPTShape, seq_lens: Sequence[int], live_reference: bool = True,
                   lm_head_positions: int | None = None) -> int:
    """Policy forward (F) + backward (2F) on all 2B rows, plus the reference forward (F) when it is live."""
    f = forward_flops(shape, seq_lens, lm_head_positions)
    return (4 if live_reference else 3) * f


def batch_flops(shape: GPTShape, attention_mask: torch.Tensor, live_reference: bool = True,
                packed: bool = False) -> tuple[int, int]:
    """(executed, useful) FLOPs of a DPO step on a right-padded (2B, T) batch. Useful counts each row's real
    tokens only; executed counts what the kernels run: every padded position, or with `packed` the rows of
    `shiftlab.models.packing` (sequences end to end, so little padding is left)."""
    lengths = [int(n) for n in attention_mask.sum(-1).tolist()]
    width = attention_mask.shape[1]
    rows = 1 + max(r for r, _ in plan_packing(lengths, width)) if packed else len(lengths)
    executed = dpo_step_flops(shape, [width] * rows, live_reference)
    useful = dpo_step_flops(shape, lengths, live_reference)
    return executed, useful


def matmul_flops_per_second(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> list[float]:
    """FLOP/s of an n×n by n×n `torch.matmul` in `dtype` (float32 by default) on the current threads, one figure
    per repeat (after one warmup): the practical ceiling that the step's FLOP/s is compared with."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.matmul(a, b, out=out)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        rates.append(2 * n**3 / (time.perf_counter() - start))
    return rates
