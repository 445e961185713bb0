"""The one training loop. It knows nothing of modes: batches come from a `PairSource`, π_ref moves in a
`ReferenceSchedule`, the loss is an `Objective`, and all three were chosen once, in `shiftlab.experiment`
(handed over together as `LoopParts`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from shiftlab.config import OptimConfig, OptimKind
from shiftlab.rundir.runlog import RunLog
from shiftlab.training.objectives import Objective
from shiftlab.training.ranks import SINGLE, Processes
from shiftlab.training.reference import ReferenceSchedule
from shiftlab.training.sources import PairSource


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf; training stops rather than write garbage."""


def build_optimizer(policy: torch.nn.Module, cfg: OptimConfig):
    params = [p for p in policy.parameters() if p.requires_grad]
    if cfg.kind is OptimKind.adamw:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(cfg.warmup_steps, 1)
    # Linear warmup then constant: DPO's reference recipe (Rafailov et al. 2023, App. B).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return optimizer, scheduler


def optimizer_step(
    policy, ref, batch, objective: Objective, optim_cfg: OptimConfig, optimizer, scheduler, processes: Processes = SINGLE,
    mixed_precision: bool = False,
) -> dict[str, float]:
    """One optimizer step on a batch (with gradient accumulation): the mean of the objective's per-unit losses.

    `batch` is the global batch; each data-parallel rank computes its share, and the summed gradients and
    statistics are those of one process computing the whole batch (see `shiftlab.training.ranks`).
    `mixed_precision`: the forward passes run under bfloat16 autocast (train.mixed_precision=bf16)."""
    policy.train()
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    n = objective.n_units(batch)
    mine = objective.select(batch, *processes.shard(n)) if processes.distributed else batch
    for micro in objective.micro_batches(mine, optim_cfg.grad_accum):
        with torch.autocast(processes.device.type, dtype=torch.bfloat16, enabled=mixed_precision):
            losses, stats = objective.losses(policy, ref, micro.to(processes.device))
        (losses.sum() / n).backward()
        for key, values in stats.items():
            sums[key] = sums.get(key, 0.0) + float(values.sum())
    trainable = [p for p in policy.parameters() if p.requires_grad]
    processes.sum_gradients(trainable)
    stats = {key: value / n for key, value in processes.sum_floats(sums).items()}
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, optim_cfg.grad_clip))
    # checked before the optimizer moves: the weights stay those of the last finite step
    if not math.isfinite(stats["loss"]):
        raise NonFiniteError(f"loss is {stats['loss']}")
    if not math.isfinite(grad_norm):
        raise NonFiniteError(f"grad_norm is {grad_norm} (loss {stats['loss']:.4g})")
    stats |= {"grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]}
    optimizer.step()
    scheduler.step()
    return stats


def check_finite_parameters(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise NonFiniteError(f"parameter {name} holds non-finite values")


@dataclass
class Optimization:
    """How the loop's optimizer steps run: the optimizer and its learning-rate schedule, the data-parallel ranks,
    and whether the forwards run under bfloat16 autocast (train.mixed_precision=bf16)."""

    cfg: OptimConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    processes: Processes = SINGLE
    mixed_precision: bool = False

    @classmethod
    def build(cls, policy: torch.nn.Module, cfg: OptimConfig, processes: Processes = SINGLE,
              mixed_precision: bool = False) -> Optimization:
        return cls(cfg, *build_optimizer(policy, cfg), processes, mixed_precision)

    def step(self, policy, ref, batch, objective: Objective) -> dict[str, float]:
        return optimizer_step(policy, ref, batch, objective, self.cfg, self.optimizer, self.scheduler,
                              self.processes, self.mixed_precision)


@dataclass
class LoopConfig:
    steps: int
    eval_every: int
    start: int = 0  # the first step to run: a resumed run starts at its checkpoint's step


class Checkpoints(Protocol):
    last: Path | None  # the newest checkpoint written or resumed from

    def due(self, step: int, last_step: int) -> bool: ...

    def save(self, step: int) -> Path: ...


Evaluator = Callable[[torch.nn.Module, torch.nn.Module, int], dict[str, float]]


@dataclass
class LoopParts:
    """π_θ, the three things chosen once from the config (source, schedule, objective), and the evaluator."""

    policy: torch.nn.Module  # π_θ
    schedule: ReferenceSchedule  # π_ref and how it moves
    source: PairSource
    evaluator: Evaluator
    objective: Objective


def train(
    parts: LoopParts,
    optimization: Optimization,
    loop: LoopConfig,
    log: RunLog,
    *,
    progress=None,
    checkpoints: Checkpoints | None = None,
) -> int:
    """Train for `loop.steps` optimizer steps, evaluating at step 0, every `eval_every` steps and at the end.

    A checkpoint at step s holds the state after s optimizer steps and every row they wrote, before step s's
    evaluation: exactly where a loop with `loop.start = s` begins, so a resumed run repeats nothing and skips
    nothing. (The optimizer is built by the caller, since a checkpoint must restore it first.)
    """
    policy, schedule = parts.policy, parts.schedule
    for step in range(loop.start, loop.steps + 1):
        try:
            if checkpoints is not None and step > loop.start and checkpoints.due(step, loop.steps):
                check_finite_parameters(policy)  # a checkpoint is where a failed run goes back to: never a broken one
                checkpoints.save(step)
            if step % loop.eval_every == 0 or step == loop.steps:
                log.metrics(step, parts.evaluator(policy, schedule.ref, step))
            if step == loop.steps:
                break
            _train_step(parts, optimization, log, step)
        except NonFiniteError as err:
            log.event(step, "non_finite", message=str(err))
            kept = checkpoints.last if checkpoints is not None else None
            where = f"last good checkpoint kept: {kept}" if kept else "no checkpoint had been written yet"
            raise NonFiniteError(f"step {step}: {err}; training stopped ({where})") from err
        if progress is not None:
            progress.update(1)
    return loop.steps


def _train_step(parts: LoopParts, optimization: Optimization, log: RunLog, step: int) -> None:
    data = parts.source.next_batch(parts.policy, step)
    log.count(**data.counts)
    for event in data.events:
        log.event(step, **event)
    if data.batch is not None:
        start = time.perf_counter()
        stats = optimization.step(parts.policy, parts.schedule.ref, data.batch, parts.objective)
        log.count(pairs_seen=parts.objective.n_units(data.batch))
        log.metrics(step, {**stats, **data.stats, "time/train": time.perf_counter() - start})
    moved = parts.schedule.after_step(parts.policy, step + 1)
    if moved:
        log.event(step + 1, **moved)
