"""Sampler, π_ref schedules and pair sources on a tiny in-process model."""

from __future__ import annotations

import numpy as np
import torch
from tiny_models import EOS, PAD, PROMPTS, VOCAB, onpolicy_pairs, tiny_model

from shiftlab.config import Pairing
from shiftlab.data.batches import completions_to_batch
from shiftlab.functional.losses import sequence_logps
from shiftlab.labels.pairing import form_pairs
from shiftlab.models.sampler import sample_completions
from shiftlab.training.reference import HardRefresh, SoftRefresh


def _sample(model, seed=0, k=3, max_new_tokens=8):
    return sample_completions(model, PROMPTS, k=k, max_new_tokens=max_new_tokens, eos_token_id=EOS, pad_token_id=PAD,
                              generator=torch.Generator().manual_seed(seed))


def test_sampler_logps_match_a_full_forward_pass():
    # KV cache + left padding must give the same distribution as scoring the finished sequence in one pass
    model = tiny_model()
    completions = _sample(model)
    batch = completions_to_batch(completions, EOS, PAD)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(sequence_logps(logits, batch.input_ids, batch.loss_mask), completions.logps, atol=1e-4, rtol=1e-4)


def test_sampler_is_seeded_and_respects_the_length_limit():
    model = tiny_model()
    a, b = _sample(model, seed=1), _sample(model, seed=1)
    assert a.response_ids == b.response_ids and a.ended == b.ended
    assert all(len(r) + int(e) <= 8 for r, e in zip(a.response_ids, a.ended))
    assert all(EOS not in r for r in a.response_ids)
    assert a.prompt_ids == [p for p in PROMPTS for _ in range(3)]


def test_sampler_draws_from_the_policy_distribution():
    # one step, one prompt: empirical next-token frequencies match softmax(logits) within 5 sigma
    model = tiny_model(3)
    n = 4000
    c = sample_completions(model, [[5, 6]] * n, k=1, max_new_tokens=1, eos_token_id=EOS, pad_token_id=PAD,
                           generator=torch.Generator().manual_seed(0))
    first = np.array([r[0] if r else EOS for r in c.response_ids])
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.tensor([[5, 6]])).logits[0, -1], -1).numpy()
    freq = np.bincount(first, minlength=VOCAB) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-3)


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


def test_form_pairs_best_vs_worst_and_all_pairs_with_ties():
    rewards = np.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.2], [0.9, 0.1, 0.9]])
    usable = np.ones_like(rewards, dtype=bool)
    pairs, ties = form_pairs(rewards, usable, Pairing.best_vs_worst)
    assert pairs == [(0, 1, 0), (2, 0, 1)] and ties == 1
    pairs, ties = form_pairs(rewards, usable, Pairing.all_pairs)
    assert (0, 1, 0) in pairs and (0, 2, 0) in pairs and (0, 1, 2) in pairs
    assert ties == 3 + 1  # prompt 1: all three pairs tie; prompt 2: (0, 2) ties
    usable[0, 1] = False  # an empty completion never enters a pair
    pairs, _ = form_pairs(rewards, usable, Pairing.best_vs_worst)
    assert pairs[0] == (0, 2, 0)




def _length_oracle(texts):
    return np.array([len(t) + 0.001 * i for i, t in enumerate(texts)], dtype=float)


def test_onpolicy_pairs_come_from_the_current_policy():
    a = onpolicy_pairs(_length_oracle).next_batch(tiny_model(0), 0)
    b = onpolicy_pairs(_length_oracle).next_batch(tiny_model(0), 0)
    c = onpolicy_pairs(_length_oracle).next_batch(tiny_model(5), 0)
    assert torch.equal(a.batch.input_ids, b.batch.input_ids)  # same policy, same seed
    assert not torch.equal(a.batch.input_ids, c.batch.input_ids)  # another policy, other samples
    assert a.counts == {"policy_samples": 9, "oracle_calls": 9}


def test_onpolicy_round_serves_sample_every_steps_and_snapshots_the_behaviour_policy():
    source, policy = onpolicy_pairs(_length_oracle), tiny_model(0)
    first = source.next_batch(policy, 0)
    second = source.next_batch(policy, 1)  # same round: no new samples
    assert second.counts == {} and second.stats["data/staleness"] == 1.0
    third = source.next_batch(policy, 2)
    assert third.counts["oracle_calls"] == 9 and third.stats["data/staleness"] == 0.0
    probe = source.probe()
    assert probe.behaviour is not policy
    assert all(torch.equal(a, b) for a, b in zip(probe.behaviour.parameters(), policy.parameters()))
    assert first.batch.n_pairs == 2


def test_onpolicy_all_ties_are_resampled_then_skipped_without_crashing():
    source, policy = onpolicy_pairs(lambda texts: np.zeros(len(texts))), tiny_model(0)
    data = source.next_batch(policy, 0)
    assert data.batch is None
    names = [e["event"] for e in data.events]
    assert names.count("all_pairs_tied") == 3  # first try + max_resample=2
    assert "step_skipped" in names
    assert data.counts["oracle_calls"] == 3 * 9  # every resample is paid for
    assert source.probe() is None


def test_offline_pairs_attach_their_rows_of_a_precomputed_reference_table(tiny_tokenizer):
    import pytest

    from shiftlab.config import LossConfig
    from shiftlab.data.batches import PreferenceCollator
    from shiftlab.data.pairs import PreferencePair
    from shiftlab.training.objectives import PreferenceObjective
    from shiftlab.training.sources import OfflinePairs

    words = ["great", "good", "fine", "bad", "awful", "boring", "long"]
    pairs = [PreferencePair(f"the movie was {w}", " i loved it .", " i hated it .") for w in words]
    collator = PreferenceCollator(tiny_tokenizer, max_length=24, max_prompt_length=8)
    table = torch.arange(2.0 * len(pairs)).view(len(pairs), 2)  # row i: (2i, 2i + 1)
    source = OfflinePairs(pairs, collator, batch_size=3, seed=0, behaviour=None, probe_size=2, ref_logps=table)
    plain = OfflinePairs(pairs, collator, batch_size=3, seed=0, behaviour=None, probe_size=2)
    for step in range(5):  # crosses an epoch boundary
        batch, same = source.next_batch(None, step).batch, plain.next_batch(None, step).batch
        rows = (batch.ref_logps[:3] / 2).long().tolist()
        assert torch.equal(batch.ref_logps[3:], batch.ref_logps[:3] + 1)  # rejected values follow the chosen ones
        assert torch.equal(batch.input_ids, same.input_ids) and same.ref_logps is None  # the same draws
        assert torch.equal(collator([pairs[i] for i in rows]).input_ids, batch.input_ids)  # the values of its own pairs
        halves = PreferenceObjective(LossConfig()).micro_batches(batch, 2)
        assert torch.cat([m.ref_logps[: m.n_pairs] for m in halves]).tolist() == batch.ref_logps[:3].tolist()
    with pytest.raises(ValueError, match="one row per pair"):
        OfflinePairs(pairs, collator, 3, 0, None, 2, ref_logps=table[:-1])
