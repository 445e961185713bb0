"""The factory: a typed config in, a finished run directory out.

The pair source and the π_ref schedule — the only things that differ between the cells of the study — are
chosen here, once, from `cfg.source.kind` and `cfg.reference.kind`. Here too a run is resumed: every stateful
piece is rebuilt from the config exactly as at the start, then overwritten from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from shiftlab.checkpoint import Checkpointer, GlobalRng, print_warning, read_latest
from shiftlab.config import LoraConfig, ShiftlabConfig, SourceKind
from shiftlab.data import PreferenceCollator
from shiftlab.distributed import SINGLE, Processes, connect
from shiftlab.evaluation import EvalPrompts, Evaluator
from shiftlab.lora import add_adapters
from shiftlab.models import count_parameters, save_model
from shiftlab.objectives import build_objective
from shiftlab.precompute import precompute_reference_logps
from shiftlab.reference import ReferenceSchedule, build_reference_schedule
from shiftlab.rollouts import OnPolicyRollouts
from shiftlab.runlog import NullRunLog, RunDirError, RunLog, hold_run_dir
from shiftlab.sources import OfflinePairs, OnPolicyPairs, PairSource
from shiftlab.stages import World, build_preference_set, build_sft, build_world, encode_prompts
from shiftlab.trainer import LoopConfig, build_optimizer, train
from shiftlab.validation import ConfigError


def quiet_libraries() -> None:
    """Keep the terminal for shiftlab's own phases: no per-save progress bars or config notices from transformers."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def _progress_factory(enabled: bool):
    def make(total: int, desc: str):
        if not enabled:
            return contextlib.nullcontext(_Silent())
        return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, file=sys.stderr)

    return make


class _Silent:
    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...


@dataclass
class SourceInputs:
    """What a pair source is built from: the run's config and the pieces built before it."""

    cfg: ShiftlabConfig
    world: World
    sft: torch.nn.Module
    policy: torch.nn.Module  # π_θ: a restored on-policy snapshot needs its architecture (adapters included)
    tokenizer: Any
    cache_dir: Path
    progress: Callable
    log: RunLog
    processes: Processes


def build_offline_source(x: SourceInputs) -> PairSource:
    cfg = x.cfg
    with x.processes.main_first():  # rank 0 builds and caches the set; every rank then holds the whole set
        prefs = build_preference_set(cfg, x.world, x.sft, x.tokenizer, x.cache_dir, x.progress)
    x.log.event(0, "preference_set", **prefs.info)
    x.log.count(oracle_calls=prefs.oracle_calls, policy_samples=prefs.policy_samples)
    collator = PreferenceCollator(x.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    behaviour = x.sft if prefs.behaviour_is_sft else None
    ref_logps = None
    if cfg.reference.precompute_logps:  # validated: π_ref is π_sft throughout, and the pairs are fixed
        start = time.perf_counter()
        ref_logps = precompute_reference_logps(x.sft, collator, prefs.pairs, packing=cfg.train.packing)
        x.log.event(0, "reference_precomputed", pairs=len(prefs.pairs), packing=cfg.train.packing,
                    **{"time/precompute": round(time.perf_counter() - start, 3)})
    return OfflinePairs(prefs.pairs, collator, cfg.source.batch_size, cfg.seed, behaviour, cfg.eval.probe_pairs, ref_logps)


def build_onpolicy_source(x: SourceInputs, kind=OnPolicyPairs, **extra) -> PairSource:
    cfg, s = x.cfg, x.cfg.source
    return kind(
        encode_prompts(x.tokenizer, x.world.train_prompts, cfg.train.max_prompt_length),
        x.world.train_prompts,
        decode=x.tokenizer.decode,
        oracle=x.world.oracle,
        k=s.k,
        pairing=s.pairing,
        prompts_per_round=s.prompts_per_round,
        sample_every=s.sample_every,
        batch_size=s.batch_size,
        max_new_tokens=cfg.train.max_new_tokens,
        max_resample=s.max_resample,
        eos_token_id=x.tokenizer.eos_token_id,
        pad_token_id=x.tokenizer.pad_token_id,
        seed=cfg.seed,
        probe_size=cfg.eval.probe_pairs,
        template=x.policy,
        processes=x.processes,
        **extra,
    )


def build_rollout_source(x: SourceInputs) -> PairSource:
    return build_onpolicy_source(x, kind=OnPolicyRollouts, sft_model=x.sft, beta_rl=x.cfg.loss.beta)


def _too_many(key: str, value: int, n_prompts: int) -> ConfigError:
    return ConfigError(f"config key `{key}` must be ≤ the task's {n_prompts} training prompts, got {value}")


def check_offline_sizes(cfg: ShiftlabConfig, world: World) -> None:
    if world.user_pairs is None and cfg.preferences.n_prompts > len(world.train_prompts):
        raise _too_many("preferences.n_prompts", cfg.preferences.n_prompts, len(world.train_prompts))


def check_onpolicy_sizes(cfg: ShiftlabConfig, world: World) -> None:
    if cfg.source.prompts_per_round > len(world.train_prompts):
        raise _too_many("source.prompts_per_round", cfg.source.prompts_per_round, len(world.train_prompts))


class SourceRecipe(NamedTuple):
    check: Callable[[ShiftlabConfig, World], None]  # sizes against the task, before π_sft costs any time
    build: Callable[..., PairSource]


SOURCES = {
    SourceKind.offline: SourceRecipe(check_offline_sizes, build_offline_source),
    SourceKind.onpolicy: SourceRecipe(check_onpolicy_sizes, build_onpolicy_source),
    SourceKind.rollouts: SourceRecipe(check_onpolicy_sizes, build_rollout_source),
}


def run_meta(cfg: ShiftlabConfig, overrides: list[str]) -> dict[str, Any]:
    return {
        "cell": cfg.mode,
        "source": cfg.source.kind.value,
        "reference": cfg.reference.kind.value,
        "seed": cfg.seed,
        "steps": cfg.train.steps,
        "overrides": overrides,
    }


# May differ between a run and its resumption: none of them changes a number the run computes.
RESUME_FREE_KEYS = ("resume", "progress", "cache_dir")


def config_identity(cfg: ShiftlabConfig) -> dict[str, Any]:
    """The flattened config a checkpoint must match to be resumed (a changed β would silently mix two runs)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True), "")
    return {k: v for k, v in flat.items() if k.split(".")[0] not in RESUME_FREE_KEYS}


def resume_dir(resume: str | None, run_dir: Path) -> Path | None:
    """The run directory `resume` names: `true` is Hydra's run directory, anything else but `false` a path."""
    if resume is None or resume.strip().lower() in ("", "false", "none", "null"):
        return None
    if resume.strip().lower() == "true":
        return run_dir  # may hold no run yet: relaunching a whole study with resume=true starts the missing ones
    target = Path(resume).expanduser()
    if not (target / "run.json").is_file():
        raise FileNotFoundError(f"resume={resume}: {target} holds no run to resume (no run.json)")
    return target


def run(cfg: ShiftlabConfig, run_dir: Path | str, overrides: list[str] | None = None) -> Path:
    """Every stage of one run; everything it writes goes into run_dir (and the shared cache).

    With `cfg.resume`, the run in that directory continues from its newest readable checkpoint (or starts over
    if it wrote none); a finished run is left untouched.
    """
    resuming = resume_dir(cfg.resume, Path(run_dir))
    quiet_libraries()
    processes = connect(cfg.train.device)
    try:
        finished = _start_or_resume(cfg, resuming or Path(run_dir), resuming is not None, overrides, processes)
    except BaseException:
        processes.close(wait=False)  # the launcher stops the other ranks
        raise
    processes.close(wait=True)
    return finished


def _start_or_resume(cfg: ShiftlabConfig, run_dir: Path, resuming: bool, overrides: list[str] | None, processes: Processes) -> Path:
    # Under a multi-process launch only rank 0 owns the run directory; the others write nothing to it.
    with hold_run_dir(run_dir) if processes.is_main else contextlib.nullcontext():
        if not resuming or not (run_dir / "run.json").is_file():
            if resuming:
                print(f"[shiftlab] resume: {run_dir} holds no run yet; starting one", file=sys.stderr)
            if processes.is_main and (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size:
                raise RunDirError(
                    f"{run_dir} already holds a run; pass resume=true to continue it, or choose another hydra.run.dir"
                )
            return _run(cfg, run_dir, run_meta(cfg, overrides or []), None, processes)
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if meta.get("status") == "finished":
            print(f"[shiftlab] {run_dir} has finished already; nothing to resume", file=sys.stderr)
            return run_dir
        checkpoint = read_latest(run_dir, warn=print_warning)
        start = checkpoint["step"] if checkpoint else 0
        how = "" if checkpoint else " (it wrote no checkpoint, so it starts over)"
        print(f"[shiftlab] resuming {run_dir} at step {start}{how}", file=sys.stderr)
        meta = {k: v for k, v in meta.items() if k not in ("status", "steps_done", "wall_time_s", "last_checkpoint")}
        return _run(cfg, run_dir, meta | {"resumed_at": [*meta.get("resumed_at", []), start]}, checkpoint, processes)


@dataclass
class Training:
    """Everything the loop touches, built from the config alone: a resume rebuilds it, then loads a checkpoint."""

    policy: torch.nn.Module
    schedule: ReferenceSchedule
    source: PairSource
    evaluator: Evaluator
    tokenizer: Any


def build_training(cfg: ShiftlabConfig, log: RunLog, progress, processes: Processes = SINGLE) -> Training:
    cache_dir = Path(cfg.cache_dir).expanduser()
    world = build_world(cfg.task, cfg.oracle)  # a bad user preference file fails here, before π_sft costs any time
    recipe = SOURCES[cfg.source.kind]
    recipe.check(cfg, world)
    with processes.main_first():  # rank 0 trains and caches π_sft; the other ranks load it from the cache
        sft, tokenizer, sft_curve, reused = build_sft(cfg, world, cache_dir, progress, processes.device)
    log.sft_rows(sft_curve)
    log.event(0, "sft_cached" if reused else "sft_trained", parameters=count_parameters(sft), final_loss=sft_curve[-1]["sft/loss"] if sft_curve else None)
    if reused:
        print(f"[shiftlab] reusing cached π_sft ({count_parameters(sft):,} parameters) from {cache_dir}", file=sys.stderr)
    sft.requires_grad_(False)
    seed_everything(cfg.seed, cfg.threads)  # training draws do not depend on whether π_sft came from the cache
    policy = _trainable_copy(sft, cfg.model.lora, cfg.seed)  # draws nothing from the global generators
    source = recipe.build(SourceInputs(cfg, world, sft, policy, tokenizer, cache_dir, progress, log, processes))
    schedule = build_reference_schedule(cfg.reference, sft, policy)
    if not processes.is_main:  # rank 0 evaluates for everyone: the replicas are identical
        return Training(policy, schedule, source, _no_evaluation, tokenizer)
    eval_ids = encode_prompts(tokenizer, world.eval_prompts, cfg.train.max_prompt_length)
    evaluator = Evaluator(
        cfg.eval, EvalPrompts(eval_ids, world.eval_prompts), sft=sft, source=source, decode=tokenizer.decode,
        oracle=world.oracle, world=world.grammar, max_new_tokens=cfg.train.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, seed=cfg.seed + 10_000, log=log,
    )
    return Training(policy, schedule, source, evaluator, tokenizer)


def _no_evaluation(policy, ref, step: int) -> dict[str, float]:
    return {}


def _run(cfg: ShiftlabConfig, run_dir: Path, meta: dict[str, Any], checkpoint: dict[str, Any] | None, processes: Processes = SINGLE) -> Path:
    seed_everything(cfg.seed, cfg.threads)
    if processes.is_main:
        # Without a checkpoint the files start empty; with one, they are cut back to it once it is loaded.
        log = RunLog(run_dir, meta | {"processes": processes.world_size}, truncate=checkpoint is None)
        if checkpoint is None:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    else:
        log = NullRunLog()
    progress = _progress_factory(cfg.progress and processes.is_main)
    steps_done, checkpoints = 0, None
    try:
        t = build_training(cfg, log, progress, processes)
        optimizer, scheduler = build_optimizer(t.policy, cfg.optim, cfg.train.steps)
        parts = {"policy": t.policy, "optimizer": optimizer, "scheduler": scheduler, "reference": t.schedule,
                 "source": t.source, "log": log, "rng": GlobalRng()}
        checkpoints = Checkpointer(run_dir, parts, config_identity(cfg), cfg.checkpoint.every, cfg.checkpoint.keep_last)
        start = checkpoints.restore(checkpoint) if checkpoint is not None else 0
        with progress(total=cfg.train.steps, desc=f"{cfg.mode} training") as bar:
            bar.update(start)
            steps_done = train(
                t.policy, t.schedule, t.source, t.evaluator, build_objective(cfg.loss, cfg.train.packing), cfg.optim,
                LoopConfig(cfg.train.steps, cfg.train.eval_every, start), log, bar,
                optimizer=optimizer, scheduler=scheduler, checkpoints=checkpoints if processes.is_main else None,
                processes=processes, mixed_precision=cfg.train.mixed_precision == "bf16",
            )
        if processes.is_main:
            save_model(t.policy, t.tokenizer, run_dir / "policy")
    except BaseException:
        if checkpoints is not None and checkpoints.last is not None:
            log.note(last_checkpoint=str(checkpoints.last))
        log.finish("failed", steps_done)
        raise
    log.finish("finished", steps_done)
    return run_dir


def _trainable_copy(model: torch.nn.Module, lora: LoraConfig, seed: int) -> torch.nn.Module:
    """π_θ: a copy of π_sft with every weight trainable, or (model.lora.r > 0) frozen, with LoRA adapters that train.

    The one place the config chooses adapters; what follows (π_ref's schedule, the saved policy) asks the model."""
    import copy

    policy = copy.deepcopy(model)
    policy = add_adapters(policy, lora, seed) if lora.r > 0 else policy.requires_grad_(True)
    policy.train()
    return policy
