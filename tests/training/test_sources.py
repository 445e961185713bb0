"""Pair sources (shiftlab.training.sources): on-policy rounds from the current π_θ, the offline set's epochs."""

from __future__ import annotations

import numpy as np
import torch
from tiny_models import onpolicy_pairs, tiny_model


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


def test_onpolicy_bradley_terry_labels_pair_ties_by_a_coin_seeded_by_the_round():
    from shiftlab.config import PairLabels, PairsConfig

    rule = PairsConfig(labels=PairLabels.bradley_terry, temperature=0.5)
    tied = onpolicy_pairs(lambda texts: np.zeros(len(texts)), rule).next_batch(tiny_model(0), 0)
    assert tied.batch is not None and tied.batch.n_pairs == 2  # deterministic labels skip this step (above)
    assert tied.stats["data/ties"] == 0 and tied.stats["data/flipped"] == 0  # a tie has no order to flip
    runs = [onpolicy_pairs(_length_oracle, rule) for _ in range(2)]
    a, b = (source.next_batch(tiny_model(0), 0) for source in runs)
    assert torch.equal(a.batch.input_ids, b.batch.input_ids) and a.stats["data/flipped"] == b.stats["data/flipped"]


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
