"""The sampler (shiftlab.models.sampler): π's own samples, seeded, with log-probs equal to a full forward pass."""

from __future__ import annotations

import numpy as np
import torch
from tiny_models import EOS, PAD, PROMPTS, VOCAB, tiny_model

from shiftlab.data.batches import completions_to_batch
from shiftlab.functional.losses import sequence_logps
from shiftlab.models.sampler import SamplerSettings, sample_completions


def _sample(model, seed=0, k=3, max_new_tokens=8):
    return sample_completions(model, PROMPTS, SamplerSettings(max_new_tokens, EOS, PAD), k=k,
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
    c = sample_completions(model, [[5, 6]] * n, SamplerSettings(1, EOS, PAD), k=1,
                           generator=torch.Generator().manual_seed(0))
    first = np.array([r[0] if r else EOS for r in c.response_ids])
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.tensor([[5, 6]])).logits[0, -1], -1).numpy()
    freq = np.bincount(first, minlength=VOCAB) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-3)
