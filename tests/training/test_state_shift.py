"""The state shift's two-sample columns (shiftlab.training.state_shift): one row per prompt, the μ comparison,
its cache, and its excess ≈ 0 when π_θ = μ."""

from __future__ import annotations

import copy

import torch
from tiny_models import EOS, PAD, tiny_model

from shiftlab.data.batches import PreferenceBatch, completions_to_batch, pad_right
from shiftlab.models.sampler import SamplerSettings, sample_completions
from shiftlab.training import state_shift
from shiftlab.training.evaluation import Forwards
from shiftlab.training.sources import Probe
from shiftlab.training.state_shift import StateShift, one_row_per_prompt

SAMPLER = SamplerSettings(6, EOS, PAD)
PROMPTS = [[1 + (3 * i) % 11, 1 + (5 * i + 2) % 11, 1 + i % 11][: 2 + i % 2] for i in range(16)]


def probe_batch(model, seed: int) -> PreferenceBatch:
    """Pairs of μ's completions on the first 12 prompts (no labels needed: rows only)."""
    done = sample_completions(model, PROMPTS[:12], SAMPLER, k=2, generator=torch.Generator().manual_seed(seed))
    responses = [r + [EOS] if e else r for r, e in zip(done.response_ids, done.ended)]
    rows = pad_right(PROMPTS[:12] * 2, responses[0::2] + responses[1::2], PAD)
    return PreferenceBatch(rows.input_ids, rows.attention_mask, rows.loss_mask, n_pairs=12, n_truncated=0)


def policy_batch(model, seed: int = 0):
    done = sample_completions(model, PROMPTS, SAMPLER, k=1, generator=torch.Generator().manual_seed(seed))
    return completions_to_batch(done, EOS, PAD)


def shift_columns(shift: StateShift, sft, probe: Probe, batch) -> dict[str, float]:
    fw = Forwards(sft)
    data = probe.batch
    return shift(fw.sft_hidden, probe, data, batch)


def test_one_row_per_prompt_keeps_one_of_each_pair():
    pairs = probe_batch(tiny_model(0), 0)
    rows = one_row_per_prompt(pairs, torch.Generator().manual_seed(0))
    assert sorted((rows % 12).tolist()) == list(range(12))  # each pair once, as its chosen or its rejected row
    assert 0 < int((rows >= 12).sum()) < 12
    shared = pad_right([[1, 2], [3], [1, 2]], [[4, EOS], [5, EOS], [6, EOS]], PAD)  # rows 0 and 2: one prompt
    picks = {tuple(one_row_per_prompt(shared, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert picks == {(0, 1), (2, 1)}


def test_mu_columns_appear_with_mu_and_are_sampled_once_for_the_frozen_sft(monkeypatch):
    sft = tiny_model(0)
    calls = []
    real = state_shift.sample_completions
    monkeypatch.setattr(state_shift, "sample_completions", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    shift = StateShift(PROMPTS, SAMPLER, sft=sft, seed=0, n_permutations=20)
    batch = policy_batch(sft)
    no_mu = shift_columns(shift, sft, Probe(probe_batch(sft, 1), None), batch)
    assert "eval/c2st_acc" in no_mu and not any(k.endswith("_mu") for k in no_mu) and not calls
    first = shift_columns(shift, sft, Probe(probe_batch(sft, 1), sft), batch)
    again = shift_columns(shift, sft, Probe(probe_batch(sft, 1), sft), batch)
    assert first == again and len(calls) == 1  # μ = the frozen π_sft: drawn once, the same every evaluation
    for name in ("c2st_acc", "mmd2", "js_ngram"):
        for tail in ("", "_null", "_excess"):
            assert f"eval/{name}_mu{tail}" in first and f"eval/{name}{tail}" in first
    assert first["eval/c2st_acc_mu_excess"] == first["eval/c2st_acc_mu"] - 0.5
    assert first["eval/c2st_tv_lb_mu"] == max(0.0, 2 * first["eval/c2st_acc_mu_low"] - 1)
    snapshot = copy.deepcopy(sft)  # an on-policy μ: a snapshot that changes in place, never cached
    shift_columns(shift, sft, Probe(probe_batch(sft, 1), snapshot), batch)
    shift_columns(shift, sft, Probe(probe_batch(sft, 1), snapshot), batch)
    assert calls[1:] == [snapshot, snapshot]


def test_mu_excess_is_zero_when_the_policy_is_mu():
    """Step 0 of an offline run: π_θ = μ = π_sft, so μ's samples and π_θ's are two draws of one law and each
    `_mu` excess averages 0 over seeds (4 standard errors)."""
    sft = tiny_model(0)
    policy = copy.deepcopy(sft)
    runs = []
    for seed in range(12):
        shift = StateShift(PROMPTS, SAMPLER, sft=sft, seed=seed, n_permutations=50)
        runs.append(shift_columns(shift, sft, Probe(probe_batch(sft, seed), sft), policy_batch(policy, seed)))
    for name in ("c2st_acc_mu_excess", "mmd2_mu_excess", "js_ngram_mu_excess"):
        values = torch.tensor([r[f"eval/{name}"] for r in runs], dtype=torch.float64)
        se = float(values.std() / len(values) ** 0.5)
        assert abs(float(values.mean())) <= 4 * se + 1e-12, (name, values.tolist())
    assert sum(r["eval/c2st_tv_lb_mu"] == 0 for r in runs) >= 11
