"""Sequence packing: the plan, the packed layout, and packed log-probs equal to the padded forward's for every
model type that `can_pack` admits (built in-process from tiny configs)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from shiftlab.functional.losses import sequence_logps
from shiftlab.models.packing import (
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
        def forward(self, input_ids, attention_mask, use_cache=None):
            assert attention_mask is not None  # never packed
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 7)})()

    ids, mask, loss = right_padded([[1, 2, 3], [4, 5]], [1, 1])
    assert not can_pack(Plain())
    uniform = -torch.log(torch.tensor(7.0)).item()  # zero logits over 7 tokens
    assert forward_sequence_logps(Plain(), ids, mask, loss).tolist() == pytest.approx([2 * uniform, uniform])


def test_padded_path_is_bit_identical_to_the_plain_forward():
    # forward_sequence_logps(packing=False) is the default training forward: it must give exactly the bits of the
    # forward it replaced, gradients included, so seeded runs stay unchanged
    model = tiny_causal_lm("gpt2").train()  # dropout on: the same seed must give the same draws on both paths
    g = torch.Generator().manual_seed(2)
    rows = [torch.randint(1, 50, (n,), generator=g).tolist() for n in (7, 3, 12, 5)]
    ids, mask, loss = right_padded(rows, [2, 1, 4, 1])
    out = []
    for fn in (lambda: sequence_logps(model(input_ids=ids, attention_mask=mask).logits, ids, loss),
               lambda: forward_sequence_logps(model, ids, mask, loss, packing=False)):
        model.zero_grad()
        torch.manual_seed(0)
        logps = fn()
        (logps * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
        out.append((logps.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(out[0][0], out[1][0])
    assert all(torch.equal(a, b) for a, b in zip(out[0][1], out[1][1]))


# A few optimizer steps of the preference objective: padded with a live π_ref (the default), against packed, and
# against reference log-probs precomputed by `shiftlab.training.precompute` (packed or not), as `train.packing` and
# `reference.precompute_logps` wire them. Measured here: packed differs by ≤ 2e-6 in log-probs (≤ 1e-7 relative),
# ≤ 2e-7 in rewards and loss; the padded precomputed table gave the live values bit for bit (not asserted: its
# batches have other widths, and kernels may round other shapes differently).
_STATS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm")


def _preference_steps(base, collator, pairs, packing: bool, precompute: bool):
    from shiftlab.config import LossConfig, OptimConfig
    from shiftlab.models.build import frozen_copy
    from shiftlab.training.loop import build_optimizer, optimizer_step
    from shiftlab.training.objectives import PreferenceObjective
    from shiftlab.training.precompute import attach_reference_logps, precompute_reference_logps

    policy, ref = copy.deepcopy(base).train(), frozen_copy(base)
    optim_cfg = OptimConfig(lr=1e-2, warmup_steps=1)
    optimizer, scheduler = build_optimizer(policy, optim_cfg)
    table = precompute_reference_logps(ref, collator, pairs, batch_size=3, packing=packing) if precompute else None
    objective, stats = PreferenceObjective(LossConfig(), packing), []
    for rows in ([0, 1, 2, 3], [2, 3, 1, 0], [3, 0, 1, 2]):
        batch = collator([pairs[i] for i in rows])
        batch = attach_reference_logps(batch, table, rows) if precompute else batch
        # with a table π_ref must not run at all: None would fail loudly
        stats.append(optimizer_step(policy, None if precompute else ref, batch, objective, optim_cfg, optimizer, scheduler))
    return stats, policy


@pytest.mark.parametrize("packing,precompute", [(True, False), (False, True), (True, True)])
def test_packed_and_precomputed_steps_match_the_padded_live_steps(tiny_tokenizer, packing, precompute):
    from shiftlab.config import ModelConfig
    from shiftlab.data.batches import PreferenceCollator
    from shiftlab.data.pairs import PreferencePair
    from shiftlab.models.build import build_model

    pairs = [PreferencePair("the movie was", " great .", " awful !"),
             PreferencePair("the film", " was good and the acting was fine .", " is bad , boring and too long ."),
             PreferencePair("i", " loved it .", " hated it . it was ok"),
             PreferencePair("this film is", " good .", " bad , boring and too long .")]
    collator = PreferenceCollator(tiny_tokenizer, max_length=24, max_prompt_length=8)
    torch.manual_seed(0)
    base = build_model(ModelConfig(n_layer=2, n_head=2, n_embd=16, n_positions=32), len(tiny_tokenizer), 0)  # no dropout
    expected, expected_policy = _preference_steps(base, collator, pairs, packing=False, precompute=False)
    actual, policy = _preference_steps(base, collator, pairs, packing, precompute)
    for a, b in zip(expected, actual):
        for key in _STATS:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    for p, q in zip(expected_policy.parameters(), policy.parameters()):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4)


_FINGERPRINT = """
import hashlib, torch
from transformers import GPT2Config, GPT2LMHeadModel
from shiftlab.models.packing import forward_sequence_logps

def fingerprint() -> str:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64)).train()
    g = torch.Generator().manual_seed(3)
    lengths = [5, 17, 9, 3, 12, 8, 17, 2, 11, 6]
    ids = torch.zeros(len(lengths), 17, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 50, (n,), generator=g)
        mask[i, :n] = 1
    loss = mask.bool() & (torch.arange(17) >= 2)
    logps = forward_sequence_logps(model, ids, mask, loss, packing=True)
    (logps * torch.linspace(-1, 1, len(lengths))).sum().backward()
    blob = logps.detach().numpy().tobytes() + b"".join(p.grad.numpy().tobytes() for p in model.parameters())
    return hashlib.sha256(blob).hexdigest()
"""


def test_packed_forward_and_backward_are_bit_identical_in_a_fresh_process():
    # an exact resume runs the packed step in another process: nothing in it (mask construction, the packing plan,
    # SDPA's kernels, the memory layout) may depend on the process's history
    scope: dict = {}
    exec(_FINGERPRINT, scope)
    here = scope["fingerprint"]()
    junk = [torch.empty(n) for n in (3, 1001, 77_777)]  # a different heap: other addresses for every tensor
    assert scope["fingerprint"]() == here
    del junk
    child = subprocess.run([sys.executable, "-c", _FINGERPRINT + "\nprint(fingerprint())"], capture_output=True,
                           text=True, timeout=120, env=os.environ | {"PYTHONHASHSEED": "12345"})
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split()[-1] == here
