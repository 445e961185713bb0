"""shiftlab's DPO step as the benchmarks drive it: the trainer's own `optimizer_step` on the objective a run builds
(`build_objective(cfg.loss, cfg.train.packing)`), padded or packed, with a live reference or with precomputed
reference log-probs (`batch.ref_logps`, which the step reads in place of π_ref's forward, as a run with
`reference.precompute_logps=true` does)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shiftlab.config import LossConfig, OptimConfig
from shiftlab.data.batches import PreferenceBatch
from shiftlab.models.build import frozen_copy
from shiftlab.training.loop import build_optimizer, optimizer_step
from shiftlab.training.objectives import build_objective


def run_step(policy, ref, batch: PreferenceBatch, loss_cfg: LossConfig, optim_cfg: OptimConfig, optimizer, scheduler,
             packing: bool = False, mixed_precision: bool = False) -> dict[str, float]:
    # with precomputed values π_ref must not run at all: None makes a trainer that would run it fail loudly
    ref = None if batch.ref_logps is not None else ref
    return optimizer_step(policy, ref, batch, build_objective(loss_cfg, packing), optim_cfg, optimizer, scheduler,
                          mixed_precision=mixed_precision)


@dataclass
class StepSetup:
    """A policy, its frozen reference and an optimizer, as a run builds them (`shiftlab.training.loop.Optimization`)."""

    policy: torch.nn.Module
    ref: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_cfg: LossConfig
    optim_cfg: OptimConfig
    packing: bool = False  # train.packing
    mixed_precision: bool = False  # train.mixed_precision=bf16: the forwards under bf16 autocast

    def step(self, batch: PreferenceBatch) -> dict[str, float]:
        return run_step(self.policy, self.ref, batch, self.loss_cfg, self.optim_cfg, self.optimizer, self.scheduler,
                        self.packing, self.mixed_precision)


def build_step_setup(model: torch.nn.Module, loss_cfg: LossConfig | None = None, optim_cfg: OptimConfig | None = None,
                     packing: bool = False, mixed_precision: bool = False) -> StepSetup:
    """π_θ = `model` (trained in place), π_ref = a frozen copy of it; the default loss and optimizer configs;
    `packing`: the packed forward (`train.packing=true`); `mixed_precision`: bf16 autocast
    (`train.mixed_precision=bf16`)."""
    loss_cfg, optim_cfg = loss_cfg or LossConfig(), optim_cfg or OptimConfig()
    ref = frozen_copy(model)
    model.requires_grad_(True)
    model.train()
    optimizer, scheduler = build_optimizer(model, optim_cfg)
    return StepSetup(model, ref, optimizer, scheduler, loss_cfg, optim_cfg, packing, mixed_precision)
