"""π_ref schedules (shiftlab.training.reference): refreshes copy or mix without aliasing; one builder for π_θ and π_ref."""

from __future__ import annotations

import torch
from tiny_models import tiny_model

from shiftlab.config import LoraConfig, ReferenceConfig, ReferenceKind
from shiftlab.training.reference import FixedReference, HardRefresh, SoftRefresh, build_policy_and_reference


def test_hard_refresh_copies_without_aliasing():
    sft, policy = tiny_model(0), tiny_model(1)
    schedule = HardRefresh(sft, refresh_every=2)
    assert schedule.after_step(policy, 1) is None
    assert schedule.after_step(policy, 2)["event"] == "refresh"
    for a, b in zip(schedule.ref.parameters(), policy.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    sft_before = [p.clone() for p in sft.parameters()]
    ref_before = [p.clone() for p in schedule.ref.parameters()]
    with torch.no_grad():  # a further "step" on π_θ
        for p in policy.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(schedule.ref.parameters(), ref_before))
    assert all(torch.equal(a, b) for a, b in zip(sft.parameters(), sft_before))


def test_soft_refresh_is_the_alpha_mix():
    sft, policy = tiny_model(0), tiny_model(1)
    schedule = SoftRefresh(sft, refresh_every=1, alpha=0.3)
    expected = [0.3 * p + 0.7 * q for p, q in zip(policy.parameters(), sft.parameters())]
    schedule.after_step(policy, 1)
    for got, want in zip(schedule.ref.parameters(), expected):
        torch.testing.assert_close(got, want)
    # tied input/output embeddings are mixed once, not twice
    assert schedule.ref.lm_head.weight.data_ptr() == schedule.ref.transformer.wte.weight.data_ptr()


def test_policy_and_reference_are_built_together_from_the_config():
    sft = tiny_model(0).requires_grad_(False)
    for kind, schedule_type in [(ReferenceKind.fixed, FixedReference), (ReferenceKind.hard, HardRefresh),
                                (ReferenceKind.soft, SoftRefresh)]:
        policy, schedule = build_policy_and_reference(sft, LoraConfig(r=0), ReferenceConfig(kind=kind), seed=0)
        assert type(schedule) is schedule_type and policy is not sft and policy.training
        assert all(p.requires_grad for p in policy.parameters())  # no adapters: every weight of π_θ trains
        assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in zip(policy.parameters(), sft.parameters()))
        assert (schedule.ref is sft) == (kind is ReferenceKind.fixed)  # a moving π_ref is a copy of its own
