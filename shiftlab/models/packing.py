"""Sequence packing for the DPO forward: the rows of a right-padded batch laid end to end in fewer rows.

A preference batch pads every row to its longest (on the default task about half of all positions are padding),
and every linear layer, attention block and the LM head compute on padding too. Packing puts several sequences
in one row (first-fit decreasing into rows of the batch's width), restarts the position ids at each sequence, and
lets the model build a block-diagonal causal mask from those position ids (transformers ≥ 5 does this when the
2-D attention mask is None), so a token attends to exactly the tokens it attends to in the padded layout. Each
sequence's log-probability is therefore the same number, up to float rounding (the kernels see other shapes).

Only model types whose masking is known to honour packed position ids are packed (`PACKABLE_MODEL_TYPES`, each
checked against the padded forward in tests/test_packing.py); any other model takes the padded forward.
(transformers warns once that no attention mask was passed: by design, the position ids carry the layout.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from shiftlab.functional.losses import sequence_logps

PACKABLE_MODEL_TYPES = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})


@dataclass
class PackedRows:
    """Sequences of a (N, T) right-padded batch placed in (R, W) rows; W = T, R ≤ N."""

    input_ids: torch.Tensor  # (R, W) long; unused slots hold `filler_id`
    position_ids: torch.Tensor  # (R, W) long, 0 at the start of every sequence (and of a row's unused tail)
    label_mask: torch.Tensor  # (R, W) bool: the source batch's loss_mask, moved with its tokens
    source_row: torch.Tensor  # (R, W) long: the batch row each token came from, -1 for unused slots
    n_sequences: int  # N


def plan_packing(lengths: Sequence[int], width: int) -> list[tuple[int, int]]:
    """(row, offset) of each sequence: first-fit decreasing into rows of `width` slots (ties keep batch order)."""
    if any(n > width or n < 1 for n in lengths):
        raise ValueError(f"every length must be in [1, {width}], got {list(lengths)}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    free: list[int] = []
    place = [(0, 0)] * len(lengths)
    for i in order:
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), len(free))
        if row == len(free):
            free.append(width)
        place[i] = (row, width - free[row])
        free[row] -= lengths[i]
    return place


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, filler_id: int) -> PackedRows:
    """Pack a right-padded batch (all (N, T); attention_mask 1 on each row's real prefix)."""
    n, width = input_ids.shape
    lengths = attention_mask.sum(-1).tolist()
    place = plan_packing(lengths, width)
    n_rows = 1 + max(row for row, _ in place)
    device = input_ids.device
    lengths_t = torch.tensor(lengths, device=device)
    starts = torch.tensor([row * width + offset for row, offset in place], device=device)  # flat slot of each start
    token = torch.arange(width, device=device).expand(n, width)
    real = token < lengths_t[:, None]  # (N, T): the real tokens of each row
    src = torch.arange(n * width, device=device).view(n, width)[real]  # flat source index of each real token
    dst = (starts[:, None] + token)[real]  # its flat slot in the packed rows
    packed_ids = torch.full((n_rows * width,), filler_id, dtype=input_ids.dtype, device=device)
    packed_ids[dst] = input_ids.reshape(-1)[src]
    label_mask = torch.zeros(n_rows * width, dtype=torch.bool, device=device)
    label_mask[dst] = loss_mask.reshape(-1)[src].bool()
    source_row = torch.full((n_rows * width,), -1, dtype=torch.long, device=device)
    source_row[dst] = src // width
    # positions count from each segment's start: a sequence, or a row's unused tail (its own segment, never scored)
    is_start = torch.zeros(n_rows * width, dtype=torch.bool, device=device)
    is_start[starts] = True
    is_start = is_start.view(n_rows, width)
    used = (source_row >= 0).view(n_rows, width)
    is_start[:, 1:] |= used[:, :-1] & ~used[:, 1:]
    is_start[:, 0] = True
    slot = torch.arange(width, device=device).expand(n_rows, width)
    segment_start = torch.where(is_start, slot, torch.zeros_like(slot)).cummax(-1).values
    return PackedRows(packed_ids.view(n_rows, width), slot - segment_start, label_mask.view(n_rows, width),
                      source_row.view(n_rows, width), n)


def packed_sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          loss_mask: torch.Tensor) -> torch.Tensor:
    """(N,) float32 log π(response | prompt) of each row of a right-padded batch, from one packed forward pass.

    The same quantity as `shiftlab.functional.losses.sequence_logps(model(input_ids, attention_mask).logits, ...)`.
    The LM head and the log-softmax run only at label positions, which are all this needs: every model type in
    `PACKABLE_MODEL_TYPES` computes its logits as `lm_head(last hidden state)`, nothing after it.
    """
    packed = pack_rows(input_ids, attention_mask, loss_mask, filler_id=int(input_ids[0, 0]))
    hidden = model.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                              use_cache=False).last_hidden_state  # (R, W, C), final norm included
    # the state at slot t predicts the token at slot t + 1: label slots are t + 1 with label_mask set
    labels = packed.label_mask[:, 1:]  # (R, W-1)
    scores = model.get_output_embeddings()(hidden[:, :-1][labels]).float()  # (L, V): only the rows that are scored
    targets = packed.input_ids[:, 1:][labels]  # (L,)
    token = torch.log_softmax(scores, dim=-1).gather(-1, targets[:, None]).squeeze(-1)  # (L,)
    # back to each token's place in the padded batch (a sequence's position id is its column there), then one sum
    # per row: unlike index_add (atomic adds on CUDA), every row is summed in one fixed order on every device
    rows, cols = packed.source_row[:, 1:][labels], packed.position_ids[:, 1:][labels]
    grid = torch.zeros(input_ids.shape, dtype=torch.float32, device=token.device)  # (N, T)
    return grid.index_put((rows, cols), token).sum(-1)


def can_pack(model: torch.nn.Module) -> bool:
    """True for an in-library transformers model of a checked type on transformers ≥ 5 (packed-mask support)."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401  (≥ 5 only)
    except ImportError:
        return False
    config = getattr(model, "config", None)
    return (
        config is not None
        and getattr(config, "model_type", None) in PACKABLE_MODEL_TYPES
        and type(model).__module__.startswith("transformers.models.")
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
    )


def forward_sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           loss_mask: torch.Tensor, packing: bool = True) -> torch.Tensor:
    """(N,) log π(response | prompt) of each row: one packed forward where `packing` and `can_pack(model)`, else
    one padded forward.

    Both layouts are deterministic (the same inputs on the same number of threads give the same bits, in any
    process), but they differ from each other in the last float digits, so which one a run uses is part of its
    config (`train.packing`). The padded forward is exactly the call the training step has always made: a run
    without packing keeps its bits. (Not even `use_cache=False`: with attention dropout on, SDPA's math kernel then
    reads a strided key instead of the cache's contiguous copy, and gradients change in the last bit.)
    """
    if packing and can_pack(model):
        return packed_sequence_logps(model, input_ids, attention_mask, loss_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return sequence_logps(logits, input_ids, loss_mask)
