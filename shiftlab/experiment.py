"""The factory: a typed config in, a finished run directory out.

The pair source and the π_ref schedule — the only things that differ between the cells of the study — are
chosen here, once, from `cfg.source.kind` and `cfg.reference.kind`.
"""

from __future__ import annotations

import contextlib
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from shiftlab.config import ShiftlabConfig, SourceKind
from shiftlab.data import PreferenceCollator
from shiftlab.evaluation import EvalPrompts, Evaluator
from shiftlab.models import count_parameters, save_model
from shiftlab.reference import build_reference_schedule
from shiftlab.runlog import RunLog
from shiftlab.sources import OfflinePairs, OnPolicyPairs, PairSource
from shiftlab.stages import World, build_preference_set, build_sft, build_world, encode_prompts
from shiftlab.trainer import LoopConfig, train


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


def build_offline_source(cfg: ShiftlabConfig, world: World, sft, tokenizer, cache_dir: Path, progress, log: RunLog) -> PairSource:
    prefs = build_preference_set(cfg, world, sft, tokenizer, cache_dir, progress)
    log.event(0, "preference_set", **prefs.info)
    log.count(oracle_calls=prefs.oracle_calls, policy_samples=prefs.policy_samples)
    collator = PreferenceCollator(tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    behaviour = sft if prefs.behaviour_is_sft else None
    return OfflinePairs(prefs.pairs, collator, cfg.source.batch_size, cfg.seed, behaviour, cfg.eval.probe_pairs)


def build_onpolicy_source(cfg: ShiftlabConfig, world: World, sft, tokenizer, cache_dir: Path, progress, log: RunLog) -> PairSource:
    s = cfg.source
    return OnPolicyPairs(
        encode_prompts(tokenizer, world.train_prompts, cfg.train.max_prompt_length),
        world.train_prompts,
        decode=tokenizer.decode,
        oracle=world.oracle,
        k=s.k,
        pairing=s.pairing,
        prompts_per_round=s.prompts_per_round,
        sample_every=s.sample_every,
        batch_size=s.batch_size,
        max_new_tokens=cfg.train.max_new_tokens,
        max_resample=s.max_resample,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=cfg.seed,
        probe_size=cfg.eval.probe_pairs,
    )


SOURCES = {SourceKind.offline: build_offline_source, SourceKind.onpolicy: build_onpolicy_source}


def run_meta(cfg: ShiftlabConfig, overrides: list[str]) -> dict[str, Any]:
    return {
        "cell": cfg.mode,
        "source": cfg.source.kind.value,
        "reference": cfg.reference.kind.value,
        "seed": cfg.seed,
        "steps": cfg.train.steps,
        "overrides": overrides,
    }


def run(cfg: ShiftlabConfig, run_dir: Path | str, overrides: list[str] | None = None) -> Path:
    """Every stage of one run; everything it writes goes into run_dir (and the shared cache)."""
    run_dir = Path(run_dir)
    quiet_libraries()
    seed_everything(cfg.seed, cfg.threads)
    log = RunLog(run_dir, run_meta(cfg, overrides or []))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    progress = _progress_factory(cfg.progress)
    cache_dir = Path(cfg.cache_dir).expanduser()
    steps_done = 0
    try:
        world = build_world(cfg.task)
        sft, tokenizer, sft_curve, reused = build_sft(cfg, world, cache_dir, progress)
        log.sft_rows(sft_curve)
        log.event(0, "sft_cached" if reused else "sft_trained", parameters=count_parameters(sft), final_loss=sft_curve[-1]["sft/loss"] if sft_curve else None)
        if reused:
            print(f"[shiftlab] reusing cached π_sft ({count_parameters(sft):,} parameters) from {cache_dir}", file=sys.stderr)
        sft.requires_grad_(False)
        seed_everything(cfg.seed, cfg.threads)  # training draws do not depend on whether π_sft came from the cache
        source = SOURCES[cfg.source.kind](cfg, world, sft, tokenizer, cache_dir, progress, log)
        policy = _trainable_copy(sft)
        schedule = build_reference_schedule(cfg.reference, sft)
        eval_ids = encode_prompts(tokenizer, world.eval_prompts, cfg.train.max_prompt_length)
        evaluator = Evaluator(
            cfg.eval, EvalPrompts(eval_ids, world.eval_prompts), sft=sft, source=source, decode=tokenizer.decode,
            oracle=world.oracle, world=world.grammar, max_new_tokens=cfg.train.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, seed=cfg.seed + 10_000, log=log,
        )
        with progress(total=cfg.train.steps, desc=f"{cfg.mode} preference training") as bar:
            steps_done = train(
                policy, schedule, source, evaluator, cfg.loss, cfg.optim,
                LoopConfig(cfg.train.steps, cfg.train.eval_every), log, bar,
            )
        save_model(policy, tokenizer, run_dir / "policy")
    except BaseException:
        log.finish("failed", steps_done)
        raise
    log.finish("finished", steps_done)
    return run_dir


def _trainable_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    policy = copy.deepcopy(model)
    policy.requires_grad_(True)
    policy.train()
    return policy
