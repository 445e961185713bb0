"""The on-policy RL reference point (mode=rl): same loop, a rollout source and a policy-gradient objective."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import compose_config
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.config import LossConfig, LossKind, OptimConfig, SourceConfig
from shiftlab.experiment.lifecycle import run
from shiftlab.functional.losses import sequence_logps
from shiftlab.labels.pairing import Labeller
from shiftlab.models.sampler import SamplerSettings
from shiftlab.training.loop import build_optimizer, optimizer_step
from shiftlab.training.objectives import PolicyGradientObjective
from shiftlab.training.rollouts import OnPolicyRollouts
from shiftlab.training.sources import Prompts
from shiftlab.validation import ConfigError

EOS = PAD = 0
GOOD_TOKEN = 5


def tiny_model(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=8, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    return GPT2LMHeadModel(cfg).eval()


def count_good(texts):
    """Reward: share of GOOD_TOKEN among the response's tokens (decode below writes ids as words)."""
    out = []
    for text in texts:
        words = text.split("|")[1].split()
        out.append(sum(w == str(GOOD_TOKEN) for w in words) / max(len(words), 1))
    return np.array(out, dtype=float)


def rollouts(sft, beta_rl=0.1, k=4, seed=0):
    return OnPolicyRollouts(
        Prompts([[1, 2], [3], [4, 6]], ["a|", "b|", "c|"]),
        SourceConfig(k=k, prompts_per_round=3, sample_every=1, batch_size=1, max_resample=0),
        SamplerSettings(max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD),
        Labeller(lambda ids: " " + " ".join(map(str, ids)), count_good),
        seed=seed, probe_size=4, template=sft, sft_model=sft, beta_rl=beta_rl,
    )


def test_kl_penalty_is_to_pi_sft_and_advantages_are_leave_one_out():
    sft, policy = tiny_model(0), tiny_model(1)
    source = rollouts(sft, beta_rl=0.5)
    data = source.next_batch(policy, 0)
    batch = data.batch
    with torch.no_grad():
        sft_logps = sequence_logps(sft(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                   batch.input_ids, batch.loss_mask)
        pol_logps = sequence_logps(policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                   batch.input_ids, batch.loss_mask)
    torch.testing.assert_close(batch.behaviour_logps, pol_logps, atol=1e-4, rtol=1e-4)  # sampled by the policy
    torch.testing.assert_close(batch.kl_penalty, pol_logps - sft_logps, atol=1e-4, rtol=1e-4)  # against π_sft
    penalised = (batch.rewards - 0.5 * batch.kl_penalty).reshape(3, 4)
    for p in range(3):
        for i in range(4):
            others = torch.cat([penalised[p, :i], penalised[p, i + 1 :]]).mean()
            assert float(batch.advantages[p * 4 + i]) == pytest.approx(float(penalised[p, i] - others), abs=1e-5)
    assert data.counts == {"policy_samples": 12, "oracle_calls": 12}


def test_reward_rises_on_a_tiny_task():
    sft, policy = tiny_model(0), tiny_model(0)
    policy.requires_grad_(True)
    source = rollouts(sft, beta_rl=0.0, k=8)
    optim_cfg = OptimConfig(lr=3e-2, warmup_steps=0)
    optimizer, scheduler = build_optimizer(policy, optim_cfg)
    objective = PolicyGradientObjective(LossConfig(kind=LossKind.rloo))
    rewards = []
    for step in range(60):
        batch = source.next_batch(policy, step).batch
        rewards.append(float(batch.rewards.mean()))
        optimizer_step(policy, sft, batch, objective, optim_cfg, optimizer, scheduler)
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.2, rewards


@pytest.mark.parametrize("override", ["reference=hard", "loss=dpo", "source.sample_every=2"])
def test_rl_mode_rejects_inconsistent_settings(override):
    with pytest.raises(ConfigError):
        compose_config(["mode=rl", override])


def test_dpo_with_rollouts_is_rejected():
    with pytest.raises(ConfigError, match="loss.kind"):
        compose_config(["mode=offline", "source=rollouts"])


def test_rl_mode_runs_in_the_same_loop_and_logs_the_same_metrics(tmp_path):
    cfg = compose_config([f"cache_dir={tmp_path / 'cache'}", "mode=rl", "source.prompts_per_round=3", "source.sample_every=1"])
    run_dir = run(cfg, tmp_path / "rl")
    df = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    train = df.dropna(subset=["loss"])
    assert {"rl/reward", "rl/kl_penalty", "rl/advantage_abs", "grad_norm"} <= set(train.columns)
    assert train["oracle_calls"].iloc[-1] == 4 * 3 * 4  # a round per step: 3 prompts × k=4
    evals = df.dropna(subset=["eval/reward"])
    assert (evals["eval/kl_ref"] - evals["eval/kl_sft"]).abs().max() < 1e-6  # π_ref is π_sft
    for column in ("eval/state_kl", "eval/ess", "eval/kl_shift_ratio"):
        assert evals[column].notna().any(), column
    assert json.loads((run_dir / "run.json").read_text())["cell"] == "rl"
