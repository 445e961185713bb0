"""RLOO advantages, the KL penalty and the policy-gradient surrogates against hand computations."""

import math

import pytest
import torch

from shiftlab.functional.policy_gradient import kl_penalised_rewards, policy_gradient_loss, rloo_advantages


def test_rloo_advantage_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, k = 3
    got = rloo_advantages(r, k=3)
    want = [1 - (2 + 6) / 2, 2 - (1 + 6) / 2, 6 - (1 + 2) / 2, 0 - 1.5, 0 - 1.5, 3 - 0.0]
    torch.testing.assert_close(got, torch.tensor(want))
    # a constant shift per prompt cancels: the baseline is unbiased and reward-offset free
    torch.testing.assert_close(rloo_advantages(r + torch.tensor([5.0] * 3 + [-2.0] * 3), k=3), got)


def test_rloo_rejects_bad_groups():
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.zeros(4), k=1)
    with pytest.raises(ValueError, match="groups of k=3"):
        rloo_advantages(torch.zeros(4), k=3)


def test_kl_penalty_by_hand():
    r = torch.tensor([0.5, -0.2])
    policy, sft = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    got = kl_penalised_rewards(r, policy, sft, beta_rl=0.1)
    torch.testing.assert_close(got, torch.tensor([0.5 - 0.1 * 2.0, -0.2 - 0.1 * (-1.0)]))


def test_reinforce_gradient_is_minus_advantage():
    logps = torch.tensor([-3.0, -5.0], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    losses, clipped = policy_gradient_loss(logps, logps.detach(), adv)
    losses.sum().backward()
    torch.testing.assert_close(logps.grad, -adv)
    assert float(clipped) == 0.0


def test_ppo_clip_by_hand():
    behaviour = torch.tensor([-2.0, -2.0, -2.0])
    logps = torch.tensor([-2.0 + math.log(1.5), -2.0 + math.log(0.5), -2.0 + math.log(1.1)])
    adv = torch.tensor([1.0, -1.0, 1.0])
    losses, clipped = policy_gradient_loss(logps, behaviour, adv, clip=0.2)
    # ρ=1.5, A>0: min(1.5, 1.2) = 1.2; ρ=0.5, A<0: min(-0.5, -0.8) = -0.8; ρ=1.1: inside the clip range
    torch.testing.assert_close(losses, torch.tensor([-1.2, 0.8, -1.1]))
    assert float(clipped) == pytest.approx(2 / 3)
