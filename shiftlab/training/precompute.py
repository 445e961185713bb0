"""Reference log-probs computed once for a fixed preference set.

With π_ref fixed and the pairs fixed (`mode=offline`), log π_ref(y|x) of every response never changes, so the
reference forward of every training step can be replaced by a table lookup: one forward per pair for the whole
run instead of one per pair per epoch (a quarter of a live step's FLOPs). The values are those of the live
forward up to float rounding (a row's log-prob does not depend on what else is in its batch or how wide the
padding is, but the kernels' summation order may).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from shiftlab.data.batches import PreferenceBatch, PreferenceCollator
from shiftlab.data.pairs import PreferencePair
from shiftlab.models.packing import forward_sequence_logps


@torch.no_grad()
def reference_logps(ref: torch.nn.Module, batch: PreferenceBatch, packing: bool = False) -> torch.Tensor:
    """(2B,) float32 log π_ref of each row of the batch, chosen rows then rejected rows; `packing`: the packed
    forward (as the training step runs it with train.packing), else the padded one."""
    was_training = ref.training
    ref.eval()
    logps = forward_sequence_logps(ref, batch.input_ids, batch.attention_mask, batch.loss_mask, packing)
    ref.train(was_training)
    return logps


def precompute_reference_logps(
    ref: torch.nn.Module, collator: PreferenceCollator, pairs: Sequence[PreferencePair], batch_size: int = 64,
    packing: bool = False,
) -> torch.Tensor:
    """(N, 2) float32 table: column 0 = log π_ref(chosen | prompt), column 1 = log π_ref(rejected | prompt).

    Pairs are batched in order of length so that little of the forward is spent on padding; the table is in the
    order of `pairs`. It depends only on π_ref, the pairs and the arguments (no random draw, no state), so a
    resumed run rebuilds exactly the table it started with.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not pairs:
        return torch.empty(0, 2)
    lengths = [len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs]  # characters: a cheap proxy
    order = sorted(range(len(pairs)), key=lengths.__getitem__)
    table = torch.empty(len(pairs), 2)
    device = next(ref.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        values = reference_logps(ref, collator([pairs[i] for i in rows]).to(device), packing)  # (2b,)
        table[rows] = values.view(2, len(rows)).T.float().cpu()
    return table


def attach_reference_logps(batch: PreferenceBatch, table: torch.Tensor, rows: Sequence[int]) -> PreferenceBatch:
    """The batch collated from pairs[rows], carrying their precomputed (2B,) reference log-probs."""
    if len(rows) != batch.n_pairs:
        raise ValueError(f"{len(rows)} table rows for a batch of {batch.n_pairs} pairs")
    index = torch.as_tensor(list(rows), dtype=torch.long)
    values = torch.cat([table[index, 0], table[index, 1]]).to(batch.input_ids.device)
    return replace(batch, ref_logps=values)
