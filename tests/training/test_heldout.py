"""Held-out human pairs: the implicit-reward statistics against hand computation, the seeded choice of pairs, and
the evaluation on a model (π_θ = π_ref gives the tie values; batching does not change the numbers)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.config import LossConfig, LossKind
from shiftlab.data.batches import PreferenceCollator
from shiftlab.data.pairs import PreferencePair
from shiftlab.training.heldout import HeldoutPairs, heldout_metrics, pick_pairs


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_heldout_metrics_match_hand_computed_values():
    beta = 0.5
    # three pairs: chosen rows then rejected rows; log π_ref is -1.5 / -2 on both rows of a pair
    policy = torch.tensor([-1.0, -2.0, -3.0, -2.0, -1.0, -3.0])
    ref = torch.tensor([-1.5, -1.5, -2.0, -1.5, -1.5, -2.0])
    out = heldout_metrics("dpo", policy, ref, beta)
    # chosen rewards β(π−ref) = (0.25, −0.25, −0.5), rejected (−0.25, 0.25, −0.5): margins (0.5, −0.5, 0)
    assert out["eval/heldout/rewards/margins"] == pytest.approx(0.0, abs=1e-7)
    assert out["eval/heldout/rewards/margins_se"] == pytest.approx(0.5 / math.sqrt(3))
    # the tie (margin exactly 0) counts as wrong, TRL's strict >
    assert out["eval/heldout/rewards/accuracies"] == pytest.approx(1 / 3)
    assert out["eval/heldout/rewards/accuracies_se"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    # DPO: −log σ(β h) = softplus(−margin)
    losses = [_softplus(-0.5), _softplus(0.5), math.log(2)]
    assert out["eval/heldout/loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert set(out) == {f"eval/heldout/{n}{s}" for n in ("rewards/accuracies", "rewards/margins", "loss") for s in ("", "_se")}


def test_heldout_loss_follows_the_run_loss():
    policy, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.5])  # one pair, h = 1
    assert heldout_metrics("ipo", policy, ref, 0.25)["eval/heldout/loss"] == pytest.approx((1 - 1 / (2 * 0.25)) ** 2)
    assert heldout_metrics("hinge", policy, ref, 0.25)["eval/heldout/loss"] == pytest.approx(1 - 0.25)


def _pairs(n: int) -> list[PreferencePair]:
    words = ["great", "good", "fine", "awful", "bad", "boring"]
    return [PreferencePair(f"the movie was {words[i % 6]}", " great .", " awful !") if i % 2 else
            PreferencePair("the film was", f" {words[i % 3]} .", f" {words[3 + i % 3]} !") for i in range(n)]


def test_pick_pairs_is_seeded_keeps_file_order_and_takes_all_when_few():
    pairs = [PreferencePair(f"p{i}", "a", "b") for i in range(50)]
    first, again, other = pick_pairs(pairs, 10, seed=3), pick_pairs(pairs, 10, seed=3), pick_pairs(pairs, 10, seed=4)
    assert first == again and first != other and len(first) == 10
    positions = [pairs.index(p) for p in first]
    assert positions == sorted(positions) and positions != list(range(10))  # a draw, not the file's head
    assert pick_pairs(pairs, 80, seed=0) == pairs


def _model(vocab: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return GPT2LMHeadModel(cfg)


def test_equal_policy_and_reference_tie_every_pair_and_batching_changes_nothing(tiny_tokenizer):
    collator = PreferenceCollator(tiny_tokenizer, max_length=16, max_prompt_length=8)
    policy, other = _model(len(tiny_tokenizer), 0), _model(len(tiny_tokenizer), 1)
    loss = LossConfig(kind=LossKind.dpo, beta=0.1)
    tie = HeldoutPairs(_pairs(7), collator, loss, n_pairs=7, batch_size=3, seed=0)(policy, policy)
    assert tie["eval/heldout/rewards/accuracies"] == 0.0  # every margin is exactly 0: a tie is not a win
    assert tie["eval/heldout/rewards/margins"] == 0.0 and tie["eval/heldout/loss"] == pytest.approx(math.log(2))
    for model in (policy, other):  # GPT-2's dropout (0.1) would make two scorings differ
        model.train()
    heldout = HeldoutPairs(_pairs(7), collator, loss, n_pairs=7, batch_size=3, seed=0)
    by_three, again = heldout(policy, other), heldout(policy, other)
    at_once = HeldoutPairs(_pairs(7), collator, loss, n_pairs=7, batch_size=7, seed=0)(policy, other)
    assert by_three["eval/heldout/rewards/margins"] != 0.0 and by_three == again
    assert by_three == pytest.approx(at_once, abs=1e-5)
