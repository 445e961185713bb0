"""The factory: the config in, everything the loop touches out.

The pair source, the π_ref schedule and the objective — the only things that differ between the cells of the
study — are chosen here, once, from `cfg.source.kind`, `cfg.reference.kind` and `cfg.loss.kind`; π_θ and π_ref
are built together (`build_policy_and_reference`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from shiftlab.config import LossKind, ReferenceKind, ShiftlabConfig, SourceKind
from shiftlab.data.batches import PreferenceCollator, encode_prompts
from shiftlab.experiment.setup import seed_everything
from shiftlab.labels.gold import build_gold
from shiftlab.labels.pairing import Labeller
from shiftlab.models.build import count_parameters
from shiftlab.models.packing import can_pack
from shiftlab.models.sampler import SamplerSettings
from shiftlab.rundir.runlog import RunLog
from shiftlab.stages.optimum import build_optimum
from shiftlab.stages.preference_set import build_preference_set
from shiftlab.stages.sft import build_sft
from shiftlab.stages.task import Task, build_task
from shiftlab.training.evaluation import Evaluator
from shiftlab.training.heldout import HeldoutPairs
from shiftlab.training.loop import LoopParts
from shiftlab.training.objectives import build_objective
from shiftlab.training.precompute import precompute_reference_logps
from shiftlab.training.ranks import SINGLE, Processes
from shiftlab.training.reference import build_policy_and_reference
from shiftlab.training.rollouts import OnPolicyRollouts
from shiftlab.training.sources import OfflinePairs, OnPolicyPairs, PairSource, Prompts
from shiftlab.validation import ConfigError


@dataclass(frozen=True)
class SpeedPath:
    """How the step's numbers are computed, once `auto` (null) options are resolved; logged in run.json."""

    packing: bool  # preference forwards on packed rows (where the model can pack: see models.packing.can_pack)
    precompute_logps: bool  # log π_ref of the fixed set computed once


def resolve_speed_path(cfg: ShiftlabConfig) -> SpeedPath:
    """The fastest path the run allows, unless the config says otherwise: packing for preference objectives (rollouts
    are scored padded), a precomputed π_ref table where π_ref and the pairs are both fixed."""
    packing = cfg.train.packing if cfg.train.packing is not None else cfg.loss.kind is not LossKind.rloo
    fixed = cfg.reference.kind is ReferenceKind.fixed and cfg.source.kind is SourceKind.offline
    precompute = cfg.reference.precompute_logps if cfg.reference.precompute_logps is not None else fixed
    return SpeedPath(packing, precompute)


@dataclass
class SourceInputs:
    """What a pair source is built from: the run's config and the pieces built before it."""

    cfg: ShiftlabConfig
    task: Task
    sft: torch.nn.Module
    policy: torch.nn.Module  # π_θ: a restored on-policy snapshot needs its architecture (adapters included)
    tokenizer: Any
    sampler: SamplerSettings  # shared with the evaluator
    labeller: Labeller
    cache_dir: Path
    progress: Callable
    log: RunLog
    processes: Processes
    speed: SpeedPath


def build_offline_source(x: SourceInputs) -> PairSource:
    cfg = x.cfg
    with x.processes.main_first():  # rank 0 builds and caches the set; every rank then holds the whole set
        prefs = build_preference_set(cfg, x.task, x.sft, x.tokenizer, x.cache_dir, x.progress)
    x.log.event(0, "preference_set", **prefs.info)
    x.log.count(oracle_calls=prefs.oracle_calls, policy_samples=prefs.policy_samples)
    collator = PreferenceCollator(x.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    behaviour = x.sft if prefs.behaviour_is_sft else None
    ref_logps = None
    if x.speed.precompute_logps:  # resolved or validated: π_ref is π_sft throughout, and the pairs are fixed
        start = time.perf_counter()
        ref_logps = precompute_reference_logps(x.sft, collator, prefs.pairs, packing=x.speed.packing)
        x.log.event(0, "reference_precomputed", pairs=len(prefs.pairs), packing=x.speed.packing,
                    **{"time/precompute": round(time.perf_counter() - start, 3)})
    return OfflinePairs(prefs.pairs, collator, cfg.source.batch_size, cfg.seed, behaviour, cfg.eval.probe_pairs, ref_logps)


def build_onpolicy_source(x: SourceInputs, kind=OnPolicyPairs, **extra) -> PairSource:
    cfg = x.cfg
    prompts = Prompts(encode_prompts(x.tokenizer, x.task.train_prompts, cfg.train.max_prompt_length), x.task.train_prompts)
    return kind(prompts, cfg.source, x.sampler, x.labeller, seed=cfg.seed, probe_size=cfg.eval.probe_pairs,
                template=x.policy, processes=x.processes, rule=cfg.pairs, **extra)


def build_rollout_source(x: SourceInputs) -> PairSource:
    return build_onpolicy_source(x, kind=OnPolicyRollouts, sft_model=x.sft, beta_rl=x.cfg.loss.beta)


def _too_many(key: str, value: int, n_prompts: int) -> ConfigError:
    return ConfigError(f"config key `{key}` must be ≤ the task's {n_prompts} training prompts, got {value}")


def check_offline_sizes(cfg: ShiftlabConfig, task: Task) -> None:
    if task.user_pairs is None and cfg.preferences.n_prompts > len(task.train_prompts):
        raise _too_many("preferences.n_prompts", cfg.preferences.n_prompts, len(task.train_prompts))


def check_onpolicy_sizes(cfg: ShiftlabConfig, task: Task) -> None:
    if cfg.source.prompts_per_round > len(task.train_prompts):
        raise _too_many("source.prompts_per_round", cfg.source.prompts_per_round, len(task.train_prompts))


class SourceRecipe(NamedTuple):
    check: Callable[[ShiftlabConfig, Task], None]  # sizes against the task, before π_sft costs any time
    build: Callable[..., PairSource]


SOURCES = {
    SourceKind.offline: SourceRecipe(check_offline_sizes, build_offline_source),
    SourceKind.onpolicy: SourceRecipe(check_onpolicy_sizes, build_onpolicy_source),
    SourceKind.rollouts: SourceRecipe(check_onpolicy_sizes, build_rollout_source),
}


@dataclass
class Training(LoopParts):
    """Everything the loop touches, built from the config alone: a resume rebuilds it, then loads a checkpoint.
    The tokenizer goes with the saved policy."""

    tokenizer: Any


def build_training(cfg: ShiftlabConfig, log: RunLog, progress, processes: Processes = SINGLE) -> Training:
    cache_dir = Path(cfg.cache_dir).expanduser()
    task = build_task(cfg.task, cfg.oracle)  # a bad user preference file fails here, before π_sft costs any time
    recipe = SOURCES[cfg.source.kind]
    recipe.check(cfg, task)
    with processes.main_first():  # rank 0 trains and caches π_sft; the other ranks load it from the cache
        sft, tokenizer, sft_curve, reused = build_sft(cfg, task, cache_dir, progress, processes.device)
    log.sft_rows(sft_curve)
    log.event(0, "sft_cached" if reused else "sft_trained", parameters=count_parameters(sft), final_loss=sft_curve[-1]["sft/loss"] if sft_curve else None)
    if reused:
        print(f"[shiftlab] reusing cached π_sft ({count_parameters(sft):,} parameters) from {cache_dir}", file=sys.stderr)
    sft.requires_grad_(False)
    gold = build_gold(task.grammar) if processes.is_main else None  # rank 0 evaluates for everyone
    if processes.is_main:
        write_optimum(cfg, task, sft, tokenizer, cache_dir, progress, log, gold)
    seed_everything(cfg.seed, cfg.threads)  # training draws do not depend on whether π_sft came from the cache
    policy, schedule = build_policy_and_reference(sft, cfg.model.lora, cfg.reference, cfg.seed)  # no global draw
    sampler = SamplerSettings.from_tokenizer(tokenizer, cfg.train.max_new_tokens)
    labeller = Labeller(tokenizer.decode, task.oracle)
    speed = resolve_speed_path(cfg)
    log.note(speed={"packing": speed.packing, "packed_forward": speed.packing and can_pack(policy),
                    "precompute_logps": speed.precompute_logps})
    inputs = SourceInputs(cfg, task, sft, policy, tokenizer, sampler, labeller, cache_dir, progress, log, processes, speed)
    source = recipe.build(inputs)
    objective = build_objective(cfg.loss, speed.packing)
    if not processes.is_main:  # rank 0 evaluates for everyone: the replicas are identical
        return Training(policy, schedule, source, _no_evaluation, objective, tokenizer)
    eval_prompts = Prompts(encode_prompts(tokenizer, task.eval_prompts, cfg.train.max_prompt_length), task.eval_prompts)
    evaluator = Evaluator(cfg.eval, eval_prompts, sampler, labeller, sft=sft, source=source, grammar=task.grammar,
                          gold=gold, heldout=build_heldout(cfg, task, tokenizer, speed, log),
                          seed=cfg.seed + 10_000, log=log)
    return Training(policy, schedule, source, evaluator, objective, tokenizer)


def write_optimum(cfg: ShiftlabConfig, task: Task, sft, tokenizer, cache_dir: Path, progress, log: RunLog, gold) -> None:
    """optimum.jsonl: the KL-regularised optimum's frontier on the eval prompts (stages.optimum), once π_sft exists;
    skipped with eval.optimum_samples=0 or no oracle. Its draws use a generator of their own: no metric moves."""
    optimum = build_optimum(cfg, task, sft, tokenizer, cache_dir, progress, gold)
    if optimum is not None:
        log.table("optimum", optimum.rows)
        log.event(0, "optimum", **optimum.info)


def build_heldout(cfg: ShiftlabConfig, task: Task, tokenizer, speed: SpeedPath, log: RunLog) -> HeldoutPairs | None:
    """The held-out human pairs' evaluation, where the task has such pairs and eval.heldout_pairs > 0. The pairs
    scored are drawn with task.seed, so every run of a study (any seed, any cell) scores the same ones."""
    if not task.eval_pairs or cfg.eval.heldout_pairs == 0:
        return None
    collator = PreferenceCollator(tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    heldout = HeldoutPairs(task.eval_pairs, collator, cfg.loss, n_pairs=cfg.eval.heldout_pairs,
                           batch_size=cfg.source.batch_size, seed=cfg.task.seed, packing=speed.packing)
    log.event(0, "heldout_pairs", pairs=heldout.n_pairs, available=len(task.eval_pairs),
              truncated=sum(b.n_truncated for b in heldout.batches))
    return heldout


def _no_evaluation(policy, ref, step: int) -> dict[str, float]:
    return {}
