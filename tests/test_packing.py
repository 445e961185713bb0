"""Sequence packing: the plan, the packed layout, and packed log-probs equal to the padded forward's for every
model type that `can_pack` admits (built in-process from tiny configs)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from shiftlab.losses import sequence_logps
from shiftlab.packing import (
    PACKABLE_MODEL_TYPES,
    can_pack,
    forward_sequence_logps,
    pack_rows,
    packed_sequence_logps,
    plan_packing,
)


def test_plan_is_first_fit_decreasing():
    #            lengths 3, 5, 2, 4 in rows of 6: 5 → row 0; 4 → row 1; 3 → row 2; 2 → row 1 after the 4
    assert plan_packing([3, 5, 2, 4], 6) == [(2, 0), (0, 0), (1, 4), (1, 0)]
    assert plan_packing([6, 6], 6) == [(0, 0), (1, 0)]
    with pytest.raises(ValueError):
        plan_packing([7], 6)


def right_padded(rows: list[list[int]], response_from: list[int], pad: int = 0):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros_like(ids)
    loss = torch.zeros_like(ids, dtype=torch.bool)
    for i, (row, start) in enumerate(zip(rows, response_from)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        loss[i, start : len(row)] = True
    return ids, mask, loss


def test_pack_rows_layout():
    ids, mask, loss = right_padded([[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]], [1, 2, 1])
    packed = pack_rows(ids, mask, loss, filler_id=99)
    # width 5: [4 5 6 7 8] in row 0; [1 2 3] then [9 10] in row 1
    assert packed.input_ids.tolist() == [[4, 5, 6, 7, 8], [1, 2, 3, 9, 10]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert packed.source_row.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 2, 2]]
    assert packed.label_mask.tolist() == [[False, False, True, True, True], [False, True, True, False, True]]
    ids, mask, loss = right_padded([[1, 2], [3, 4, 5, 6]], [1, 1])
    packed = pack_rows(ids, mask, loss, filler_id=99)
    assert packed.input_ids.tolist() == [[3, 4, 5, 6], [1, 2, 99, 99]]  # an unused tail is its own segment
    assert packed.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    assert packed.source_row.tolist() == [[1, 1, 1, 1], [0, 0, -1, -1]]


def tiny_causal_lm(model_type: str, attn: str = "sdpa") -> torch.nn.Module:
    torch.manual_seed(0)
    sizes = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "head_dim": 8}
    if model_type == "gpt2":
        sizes = {"vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}
    config = AutoConfig.for_model(model_type, **sizes, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = attn
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


CASES = [(t, "sdpa") for t in sorted(PACKABLE_MODEL_TYPES)] + [("gpt2", "eager")]


@pytest.mark.parametrize("model_type,attn", CASES)
def test_packed_logps_equal_the_padded_forward(model_type, attn):
    model = tiny_causal_lm(model_type, attn)
    assert can_pack(model)
    g = torch.Generator().manual_seed(1)
    lengths, starts = [5, 17, 9, 3, 12, 8, 17, 2], [2, 4, 1, 1, 5, 3, 6, 1]
    rows = [torch.randint(1, 50, (n,), generator=g).tolist() for n in lengths]
    ids, mask, loss = right_padded(rows, starts)
    with torch.no_grad():
        padded = sequence_logps(model(input_ids=ids, attention_mask=mask).logits, ids, loss)
        packed = packed_sequence_logps(model, ids, mask, loss)
    assert pack_rows(ids, mask, loss, 0).input_ids.shape[0] < len(rows)  # it did pack
    torch.testing.assert_close(packed, padded, atol=1e-4, rtol=1e-5)


def test_packed_gradients_equal_the_padded_forward():
    model = tiny_causal_lm("gpt2")  # eval mode: GPT-2's default dropout would make the two passes differ
    ids, mask, loss = right_padded([[1, 2, 3, 4], [5, 6], [7, 8, 9]], [1, 1, 2])
    grads = []
    for fn in (lambda: sequence_logps(model(input_ids=ids, attention_mask=mask).logits, ids, loss),
               lambda: packed_sequence_logps(model, ids, mask, loss)):
        model.zero_grad()
        (fn() * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_unknown_models_take_the_padded_forward():
    class Plain(torch.nn.Module):
        def forward(self, input_ids, attention_mask, use_cache):
            assert attention_mask is not None  # never packed
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7)})()

    ids, mask, loss = right_padded([[1, 2, 3], [4, 5]], [1, 1])
    assert not can_pack(Plain())
    uniform = -torch.log(torch.tensor(7.0)).item()  # zero logits over 7 tokens
    assert forward_sequence_logps(Plain(), ids, mask, loss).tolist() == pytest.approx([2 * uniform, uniform])
