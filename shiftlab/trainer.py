"""The one training loop. It knows nothing of modes: pairs come from a `PairSource`, π_ref moves in a
`ReferenceSchedule`, and both were chosen once, in `shiftlab.experiment.build_run`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from shiftlab.config import LossConfig, OptimConfig, OptimizerName
from shiftlab.data import PreferenceBatch
from shiftlab.losses import compute_preference_loss, sequence_logps
from shiftlab.reference import ReferenceSchedule
from shiftlab.runlog import RunLog
from shiftlab.sources import PairSource


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf; training stops rather than write garbage."""


def build_optimizer(policy: torch.nn.Module, cfg: OptimConfig, total_steps: int):
    params = [p for p in policy.parameters() if p.requires_grad]
    if cfg.name is OptimizerName.adamw:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(cfg.warmup_steps, 1)
    # Linear warmup then constant: DPO's reference recipe (Rafailov et al. 2023, App. B).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return optimizer, scheduler


def loss_options(cfg: LossConfig) -> dict[str, float]:
    return {"label_smoothing": cfg.label_smoothing} if cfg.label_smoothing else {}


def policy_and_reference_logps(policy, ref, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs (2B,) of chosen+rejected rows in one concatenated forward pass each."""
    logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    policy_logps = sequence_logps(logits, batch.input_ids, batch.loss_mask)
    with torch.no_grad():
        ref_logits = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        ref_logps = sequence_logps(ref_logits, batch.input_ids, batch.loss_mask)
    return policy_logps, ref_logps


def _split(batch: PreferenceBatch, parts: int) -> list[PreferenceBatch]:
    """Micro-batches for gradient accumulation, each keeping its chosen/rejected halves aligned."""
    b = batch.n_pairs
    bounds = [round(i * b / parts) for i in range(parts + 1)]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        rows = torch.cat([torch.arange(lo, hi), torch.arange(b + lo, b + hi)])
        out.append(
            PreferenceBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.loss_mask[rows], hi - lo, 0)
        )
    return out


def preference_step(policy, ref, batch: PreferenceBatch, loss_cfg: LossConfig, optim_cfg: OptimConfig, optimizer, scheduler) -> dict[str, float]:
    """One optimizer step on a batch of pairs (with gradient accumulation); returns TRL-named statistics."""
    policy.train()
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    n = batch.n_pairs
    for micro in _split(batch, optim_cfg.grad_accum):
        policy_logps, ref_logps = policy_and_reference_logps(policy, ref, micro)
        m = micro.n_pairs
        out = compute_preference_loss(
            loss_cfg.name.value, policy_logps[:m], policy_logps[m:], ref_logps[:m], ref_logps[m:], loss_cfg.beta,
            **loss_options(loss_cfg),
        )
        (out.losses.sum() / n).backward()
        margins = out.chosen_rewards - out.rejected_rewards
        for key, values in {
            "loss": out.losses.detach(),
            "rewards/chosen": out.chosen_rewards,
            "rewards/rejected": out.rejected_rewards,
            "rewards/margins": margins,
            "rewards/accuracies": (margins > 0).float(),
            "logps/chosen": policy_logps[:m].detach(),
            "logps/rejected": policy_logps[m:].detach(),
        }.items():
            sums[key] = sums.get(key, 0.0) + float(values.sum())
    stats = {key: value / n for key, value in sums.items()}
    grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), optim_cfg.grad_clip))
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
class LoopConfig:
    steps: int
    eval_every: int
    start: int = 0  # the first step to run: a resumed run starts at its checkpoint's step


class Checkpoints(Protocol):
    last: Path | None  # the newest checkpoint written or resumed from

    def due(self, step: int, last_step: int) -> bool: ...

    def save(self, step: int) -> Path: ...


Evaluator = Callable[[torch.nn.Module, torch.nn.Module, int], dict[str, float]]


def train(
    policy: torch.nn.Module,
    schedule: ReferenceSchedule,
    source: PairSource,
    evaluate: Evaluator,
    loss_cfg: LossConfig,
    optim_cfg: OptimConfig,
    loop: LoopConfig,
    log: RunLog,
    progress=None,
    *,
    optimizer=None,
    scheduler=None,
    checkpoints: Checkpoints | None = None,
) -> int:
    """Train for `loop.steps` optimizer steps, evaluating at step 0, every `eval_every` steps and at the end.

    A checkpoint at step s holds the state after s optimizer steps and every row they wrote, before step s's
    evaluation: exactly where a loop with `loop.start = s` begins, so a resumed run repeats nothing and skips
    nothing. (`optimizer`/`scheduler` are passed in when a checkpoint must restore them first.)
    """
    if optimizer is None:
        optimizer, scheduler = build_optimizer(policy, optim_cfg, loop.steps)
    for step in range(loop.start, loop.steps + 1):
        try:
            if checkpoints is not None and step > loop.start and checkpoints.due(step, loop.steps):
                check_finite_parameters(policy)  # a checkpoint is where a failed run goes back to: never a broken one
                checkpoints.save(step)
            if step % loop.eval_every == 0 or step == loop.steps:
                log.metrics(step, evaluate(policy, schedule.ref, step))
            if step == loop.steps:
                break
            _train_step(policy, schedule, source, loss_cfg, optim_cfg, optimizer, scheduler, log, step)
        except NonFiniteError as err:
            log.event(step, "non_finite", message=str(err))
            kept = checkpoints.last if checkpoints is not None else None
            where = f"last good checkpoint kept: {kept}" if kept else "no checkpoint had been written yet"
            raise NonFiniteError(f"step {step}: {err}; training stopped ({where})") from err
        if progress is not None:
            progress.update(1)
    return loop.steps


def _train_step(policy, schedule: ReferenceSchedule, source: PairSource, loss_cfg, optim_cfg, optimizer, scheduler, log: RunLog, step: int) -> None:
    data = source.next_batch(policy, step)
    log.count(**data.counts)
    for event in data.events:
        log.event(step, **event)
    if data.batch is not None:
        start = time.perf_counter()
        stats = preference_step(policy, schedule.ref, data.batch, loss_cfg, optim_cfg, optimizer, scheduler)
        log.count(pairs_seen=data.batch.n_pairs)
        log.metrics(step, {**stats, **data.stats, "time/train": time.perf_counter() - start})
    moved = schedule.after_step(policy, step + 1)
    if moved:
        log.event(step + 1, **moved)
