"""Bradley–Terry labels give DPO a finite optimum; deterministic labels do not (shiftlab.labels.pairing).

An enumerable bandit: one prompt, six responses with fixed rewards, π_θ = softmax(θ) over them. Pairs are drawn as
the offline set draws them (k samples of μ = π_ref per prompt, paired by the shared rule), and DPO's own loss
(shiftlab.functional.losses.dpo_loss) is minimised on all of them at once. Under BT labels the minimiser is
π* = π_ref·exp(r/(τβ))/Z (up to the sampling noise of the labels); under deterministic labels the loss has no
minimiser (the loss falls all along the tilt past π*) and π_θ runs to the point mass on the best response.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftlab.config import Pairing, PairLabels
from shiftlab.functional.losses import dpo_loss
from shiftlab.labels.pairing import form_pairs, label_generator

REWARDS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
REF_LOGPS = torch.log_softmax(torch.tensor([0.6, 0.9, 0.3, 0.0, -0.2, -0.8], dtype=torch.float64), 0)  # (6,)
BETA, TAU = 0.5, 0.5
N_PROMPTS, K = 20_000, 4
TV_TOLERANCE = 0.04  # label noise of 20,000 prompts' pairs: measured 0.023 (best_vs_worst), 0.010 (all_pairs)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    return float((logp.exp() * (logp - logq)).sum())


def _tv(logp: torch.Tensor, logq: torch.Tensor) -> float:
    return 0.5 * float((logp.exp() - logq.exp()).abs().sum())


def _pair_counts(labels: PairLabels, pairing: Pairing, seed: int = 0) -> torch.Tensor:
    """(6, 6) counts n[w, l] of pairs with response w chosen over l, from K samples of π_ref for each prompt."""
    draws = np.random.default_rng(seed).choice(len(REWARDS), size=(N_PROMPTS, K), p=REF_LOGPS.exp().numpy())  # (P, K)
    usable = np.ones_like(draws, dtype=bool)
    triples, _ = form_pairs(REWARDS[draws], usable, pairing, labels, TAU, label_generator(seed, "offline"))
    counts = np.zeros((len(REWARDS), len(REWARDS)))
    np.add.at(counts, ([draws[p, c] for p, c, _ in triples], [draws[p, r] for p, _, r in triples]), 1)
    return torch.tensor(counts)


def _loss(logp: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The mean DPO loss over every pair; identical pairs enter once, weighted by their count (the same mean)."""
    chosen, rejected = torch.nonzero(counts, as_tuple=True)
    weight = counts[chosen, rejected] / counts.sum()
    out = dpo_loss(logp[chosen], logp[rejected], REF_LOGPS[chosen], REF_LOGPS[rejected], BETA)
    return (out.losses * weight).sum()


def _tilted(t: float) -> torch.Tensor:
    """log π_ref + t·r/(τβ), normalised: t = 1 is π*; t > 1 runs past it toward the point mass on the best response."""
    return torch.log_softmax(REF_LOGPS + t * torch.tensor(REWARDS) / (TAU * BETA), 0)


def _fit(counts: torch.Tensor, rounds: int = 4) -> list[torch.Tensor]:
    """Full-batch DPO from θ = log π_ref, L-BFGS in rounds of 25 iterations; log π_θ after each round."""
    theta = REF_LOGPS.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], max_iter=25, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(torch.log_softmax(theta, 0), counts)
        loss.backward()
        return loss

    path = []
    for _ in range(rounds):
        opt.step(closure)
        path.append(torch.log_softmax(theta.detach(), 0))
    return path


OPTIMUM = _tilted(1.0)  # log π* = log π_ref + r/(τβ) − log Z
STEPS_PAST = (0.5, 1.0, 2.0, 4.0, 8.0)  # t along the tilt: short of π*, π*, and past it


@pytest.mark.parametrize("pairing", list(Pairing))
def test_dpo_on_bradley_terry_labels_converges_to_the_tilted_reference(pairing):
    counts = _pair_counts(PairLabels.bradley_terry, pairing)
    path = _fit(counts)
    assert _tv(path[-1], OPTIMUM) < TV_TOLERANCE
    assert abs(_kl(path[-1], REF_LOGPS) - _kl(OPTIMUM, REF_LOGPS)) < 0.05  # KL(π*‖π_ref) = 0.75 nats here
    assert abs(_kl(path[-1], REF_LOGPS) - _kl(path[-2], REF_LOGPS)) < 1e-6  # a minimiser: it stopped
    along = [float(_loss(_tilted(t), counts)) for t in STEPS_PAST]
    assert min(range(len(along)), key=along.__getitem__) == STEPS_PAST.index(1.0)  # going past π* costs loss


@pytest.mark.parametrize("pairing", list(Pairing))
def test_dpo_on_deterministic_labels_runs_past_the_optimum(pairing):
    counts = _pair_counts(PairLabels.deterministic, pairing)
    along = [float(_loss(_tilted(t), counts)) for t in STEPS_PAST]
    assert all(later < earlier for earlier, later in zip(along, along[1:], strict=False))  # no finite minimiser
    path = _fit(counts)
    kl = _kl(path[-1], REF_LOGPS)
    assert kl > _kl(OPTIMUM, REF_LOGPS) + 1.0
    # it ends at the point mass on the best response: KL = −log π_ref(best) = 2.87 nats, β bounds nothing
    assert float(path[-1][-1].exp()) > 0.99 and kl == pytest.approx(-float(REF_LOGPS[-1]), abs=0.05)
    assert _tv(path[-1], OPTIMUM) > 10 * TV_TOLERANCE
    log_ratio = path[-1] - REF_LOGPS  # its spread outgrows the optimum's (r_max − r_min)/(τβ) = 4 nats tenfold
    assert float(log_ratio[-1] - log_ratio[0]) > 10 * (REWARDS[-1] - REWARDS[0]) / (TAU * BETA)
