"""Losses against hand-computed values; sequence log-probs against brute force and a tiny causal model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab.functional.losses import (
    LOSSES,
    LossOutput,
    compute_preference_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    sequence_logps,
    token_logps,
)


def pairs(*rows: tuple[float, float, float, float]) -> tuple[torch.Tensor, ...]:
    """(policy_chosen, policy_rejected, ref_chosen, ref_rejected) rows -> four (B,) float64 tensors."""
    return tuple(torch.tensor(col, dtype=torch.float64) for col in zip(*rows))


# h = (logπ_c − logπref_c) − (logπ_r − logπref_r)
PAIR_A = (-1.0, -2.0, -1.5, -1.5)  # h = 0.5 − (−0.5) = 1
PAIR_B = (-3.0, -1.0, -2.0, -2.0)  # h = −1 − 1 = −2
PAIR_C = (-0.5, -4.0, -1.0, -0.5)  # h = 0.5 − (−3.5) = 4


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))  # −log σ(−z)


# --------------------------------------------------------------------------- losses by hand


def test_dpo_loss_by_hand():
    out = dpo_loss(*pairs(PAIR_A, PAIR_B), beta=0.5)
    assert isinstance(out, LossOutput)
    # −log σ(βh): βh = 0.5 and −1.
    assert out.losses.tolist() == pytest.approx([math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(1.0))])
    assert out.chosen_rewards.tolist() == pytest.approx([0.5 * 0.5, 0.5 * -1.0])
    assert out.rejected_rewards.tolist() == pytest.approx([0.5 * -0.5, 0.5 * 1.0])
    out = dpo_loss(*pairs(PAIR_A), beta=0.1)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-0.1)))
    assert out.chosen_rewards.item() == pytest.approx(0.05) and out.rejected_rewards.item() == pytest.approx(-0.05)


def test_dpo_label_smoothing_by_hand():
    eps = 0.2
    plain = dpo_loss(*pairs(PAIR_A), beta=0.1).losses.item()
    smooth = dpo_loss(*pairs(PAIR_A), beta=0.1, label_smoothing=eps).losses.item()
    assert plain == pytest.approx(math.log(1 + math.exp(-0.1)))
    # −(1−ε) log σ(βh) − ε log σ(−βh) with βh = 0.1
    assert smooth == pytest.approx((1 - eps) * math.log(1 + math.exp(-0.1)) + eps * math.log(1 + math.exp(0.1)))
    assert dpo_loss(*pairs(PAIR_A), beta=0.1, label_smoothing=0.0).losses.item() == plain
    # ε = 0.5 makes the loss symmetric in the label: it no longer prefers either response.
    half = dpo_loss(*pairs(PAIR_A, PAIR_B), beta=1.0, label_smoothing=0.5).losses
    expected = [0.5 * softplus(-1) + 0.5 * softplus(1), 0.5 * softplus(2) + 0.5 * softplus(-2)]
    assert half.tolist() == pytest.approx(expected)


def test_dpo_gradient_by_hand():
    pc, pr, rc, rr = (t.clone().requires_grad_(i < 2) for i, t in enumerate(pairs(PAIR_A)))
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    out.losses.sum().backward()
    # d/d logπ_c of −log σ(βh) = −β σ(−βh); the rejected gradient is its negative.
    expected = -0.5 / (1 + math.exp(0.5))
    assert pc.grad.item() == pytest.approx(expected)
    assert pr.grad.item() == pytest.approx(-expected)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_ipo_loss_by_hand():
    out = ipo_loss(*pairs(PAIR_A, PAIR_B, PAIR_C), beta=0.5)  # 1/(2β) = 1
    assert out.losses.tolist() == pytest.approx([(1 - 1) ** 2, (-2 - 1) ** 2, (4 - 1) ** 2])
    assert ipo_loss(*pairs(PAIR_A), beta=0.1).losses.item() == pytest.approx((1 - 5) ** 2)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, -0.5, 0.25])


def test_hinge_loss_by_hand():
    out = hinge_loss(*pairs(PAIR_A, PAIR_B, PAIR_C), beta=0.5)  # relu(1 − βh), βh = 0.5, −1, 2
    assert out.losses.tolist() == pytest.approx([0.5, 2.0, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.5, -1.75])


def test_losses_are_stable_for_extreme_margins():
    far = pairs((0.0, -1e4, 0.0, 0.0), (-1e4, 0.0, 0.0, 0.0))
    out = dpo_loss(*far, beta=1.0, label_smoothing=0.1)
    assert torch.isfinite(out.losses).all()
    assert out.losses.tolist() == pytest.approx([0.1 * 1e4, 0.9 * 1e4], rel=1e-6)
    pc = far[0].clone().requires_grad_(True)
    dpo_loss(pc, *far[1:], beta=1.0).losses.sum().backward()
    assert torch.isfinite(pc.grad).all()


@settings(max_examples=50, deadline=None, database=None)  # no .hypothesis/ dir in the repo
@given(
    st.lists(st.floats(-50, 50), min_size=4, max_size=4),
    st.floats(0.01, 5.0),
    st.floats(0.0, 0.5),
)
def test_dpo_smoothing_is_a_mixture_of_both_labels(logps, beta, eps):
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in logps)
    forward = dpo_loss(pc, pr, rc, rr, beta).losses
    backward = dpo_loss(pr, pc, rr, rc, beta).losses  # labels swapped: −log σ(−βh)
    mixed = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps).losses
    assert torch.allclose(mixed, (1 - eps) * forward + eps * backward)
    for fn in LOSSES.values():
        assert (fn(pc, pr, rc, rr, beta).losses >= 0).all()


# --------------------------------------------------------------------------- one place for loss names


def test_loss_registry_and_dispatch():
    assert set(LOSSES) == {"dpo", "ipo", "hinge"}
    batch = pairs(PAIR_A, PAIR_B, PAIR_C)
    for name, fn in LOSSES.items():
        via_name = compute_preference_loss(name, *batch, beta=0.3)
        direct = fn(*batch, 0.3)
        for a, b in zip(via_name, direct):
            assert torch.equal(a, b)
    smoothed = compute_preference_loss("dpo", *batch, beta=0.3, label_smoothing=0.1)
    assert torch.equal(smoothed.losses, dpo_loss(*batch, 0.3, label_smoothing=0.1).losses)
    with pytest.raises(ValueError, match=r"'dpo'.*'hinge'.*'ipo'"):
        compute_preference_loss("kto", *batch, beta=0.3)
    with pytest.raises(TypeError):
        compute_preference_loss("ipo", *batch, beta=0.3, label_smoothing=0.1)  # ipo has no such option
    with pytest.raises(TypeError):
        LOSSES["new"] = dpo_loss  # read-only: the registry is edited in the source, not at run time


def test_invalid_options_raise():
    batch = pairs(PAIR_A)
    with pytest.raises(ValueError):
        dpo_loss(*batch, beta=0.0)
    with pytest.raises(ValueError):
        dpo_loss(*batch, beta=0.1, label_smoothing=0.7)
    with pytest.raises(ValueError):
        ipo_loss(*batch, beta=-1.0)


# --------------------------------------------------------------------------- token and sequence log-probs


def brute_force_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> list[float]:
    out = []
    for b in range(labels.shape[0]):
        total = 0.0
        for t in range(1, labels.shape[1]):  # label t is predicted by the logits at t − 1
            if mask[b, t]:
                row = logits[b, t - 1].double().tolist()
                lse = math.log(sum(math.exp(v) for v in row))
                total += row[int(labels[b, t])] - lse
        out.append(total)
    return out


def random_batch(seed: int = 0, b: int = 3, t: int = 7, v: int = 11):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, t, v, generator=gen)
    labels = torch.randint(v, (b, t), generator=gen)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 0]])[:b, :t]
    return logits, labels, mask


def test_token_logps_brute_force_and_dtype():
    logits, labels, _ = random_batch()
    out = token_logps(logits, labels)
    assert out.shape == (3, 6) and out.dtype == torch.float32
    for b in range(3):
        for t in range(6):
            row = logits[b, t].double().tolist()
            ref = row[int(labels[b, t + 1])] - math.log(sum(math.exp(v) for v in row))
            assert out[b, t].item() == pytest.approx(ref, abs=1e-5)
    low = token_logps(logits.bfloat16(), labels)
    assert low.dtype == torch.float32  # log-softmax in float32 even for bf16 logits
    assert torch.allclose(low, token_logps(logits.bfloat16().float(), labels))
    with pytest.raises(ValueError):
        token_logps(logits, labels[:, :-1])


def test_sequence_logps_brute_force():
    logits, labels, mask = random_batch(seed=1)
    out = sequence_logps(logits, labels, mask)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert out.tolist() == pytest.approx(brute_force_sequence_logps(logits, labels, mask), abs=1e-4)
    assert sequence_logps(logits, labels, mask.bool()).tolist() == out.tolist()  # bool and 0/1 masks agree


def test_sequence_logps_ignores_prompt_and_padding_labels_given_fixed_logits():
    logits, labels, mask = random_batch(seed=2)
    base = sequence_logps(logits, labels, mask)
    changed = labels.clone()
    changed[0, 1] = (changed[0, 1] + 1) % 11  # a prompt token (mask 0)
    changed[0, 6] = (changed[0, 6] + 1) % 11  # a padding token (mask 0)
    assert torch.equal(sequence_logps(logits, changed, mask), base)
    changed[0, 3] = (changed[0, 3] + 1) % 11  # a response token
    assert sequence_logps(logits, changed, mask)[0] != base[0]
    blocked = logits.clone()
    blocked[0, 5, :] = -math.inf  # garbage at a position whose label is masked: no NaN leaks in
    blocked[0, 5, 0] = 0.0
    blocked[0, 5, 1] = -math.inf
    changed = labels.clone()
    changed[0, 6] = 1
    assert torch.equal(sequence_logps(blocked, changed, mask), base)


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=20, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def lm_sequence_logps(model, prompt: list[int], response: list[int], pad: list[int]) -> float:
    ids = torch.tensor([prompt + response + pad])
    mask = torch.tensor([[0] * len(prompt) + [1] * len(response) + [0] * len(pad)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return sequence_logps(logits, ids, mask).item()


def test_sequence_logps_with_a_tiny_causal_model(tiny_lm):
    prompt, response = [5, 6, 7], [8, 9, 0]  # 0 = end-of-text, part of the response
    base = lm_sequence_logps(tiny_lm, prompt, response, pad=[])
    # Padding after the response changes nothing, whatever its content or length.
    for pad in ([0], [0, 0, 0, 0], [3, 17, 11]):
        assert lm_sequence_logps(tiny_lm, prompt, response, pad) == pytest.approx(base, abs=1e-5)
    # A changed response token changes the result; so does the conditioning prompt (it is input, not scored).
    assert abs(lm_sequence_logps(tiny_lm, prompt, [8, 10, 0], pad=[0]) - base) > 1e-4
    assert abs(lm_sequence_logps(tiny_lm, [5, 4, 7], response, pad=[0]) - base) > 1e-4
    # Batched rows of different lengths agree with the one-row computation (right padding).
    ids = torch.tensor([prompt + response + [0, 0], [5, 6] + [8, 9, 1, 0] + [0, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        batched = sequence_logps(tiny_lm(input_ids=ids).logits, ids, mask)
    assert batched[0].item() == pytest.approx(base, abs=1e-5)
    assert batched[1].item() == pytest.approx(lm_sequence_logps(tiny_lm, [5, 6], [8, 9, 1, 0], pad=[]), abs=1e-5)
    logits = tiny_lm(input_ids=ids).logits.detach()
    assert batched.tolist() == pytest.approx(brute_force_sequence_logps(logits, ids, mask), abs=1e-4)
