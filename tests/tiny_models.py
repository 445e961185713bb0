"""Tiny in-process models and pair sources for unit tests: a one-layer GPT-2 over a 12-token vocabulary."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.config import PairsConfig, SourceConfig
from shiftlab.labels.pairing import Labeller
from shiftlab.models.sampler import SamplerSettings
from shiftlab.training.sources import OnPolicyPairs, Prompts

EOS, PAD, VOCAB = 0, 0, 12


def tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    return GPT2LMHeadModel(cfg).eval()


PROMPTS = [[3, 4, 5], [6], [7, 8]]


def onpolicy_pairs(oracle, rule: PairsConfig | None = None) -> OnPolicyPairs:
    """An on-policy source over PROMPTS: rounds of k=3 completions (at most 6 tokens) for all three prompts;
    `rule`: the pairing rule (default best-vs-worst, deterministic labels)."""
    cfg = SourceConfig(k=3, prompts_per_round=3, sample_every=2, batch_size=2, max_resample=2)
    return OnPolicyPairs(Prompts(PROMPTS, ["a", "b", "c"]), cfg, SamplerSettings(6, EOS, PAD),
                         Labeller(lambda ids: " ".join(map(str, ids)), oracle), seed=0, probe_size=4, rule=rule)


