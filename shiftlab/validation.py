"""Range checks a config type cannot express (β > 0, 0 < α ≤ 1, sizes that must fit each other, ...).

Each failure raises `ConfigError` naming the key, at start-up, before anything is trained.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import torch

from shiftlab.config import (
    LOCAL_FILE_SUFFIXES,
    MIXED_PRECISION,
    MODEL_DTYPES,
    RENAMED_KEYS,
    ColumnsConfig,
    LoraConfig,
    LossKind,
    OracleConfig,
    OracleKind,
    ReferenceKind,
    ShiftlabConfig,
    SourceKind,
    TaskConfig,
    TaskKind,
    dataset_fields,
)


class ConfigError(ValueError):
    """A config value outside its valid range; the message names the key."""


def _check(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"config key `{key}` must be {expected}, got {value!r}")


def validate(cfg: ShiftlabConfig) -> ShiftlabConfig:
    """Range checks a type cannot express. Returns cfg so it can wrap a conversion."""
    _reject_renamed_keys(cfg)
    positive = {
        "task.n_eval_prompts": cfg.task.n_eval_prompts,
        "model.vocab_size": cfg.model.vocab_size,
        "model.n_layer": cfg.model.n_layer,
        "model.n_head": cfg.model.n_head,
        "model.n_embd": cfg.model.n_embd,
        "model.n_positions": cfg.model.n_positions,
        "sft.batch_size": cfg.sft.batch_size,
        "preferences.n_prompts": cfg.preferences.n_prompts,
        "source.batch_size": cfg.source.batch_size,
        "source.sample_every": cfg.source.sample_every,
        "source.prompts_per_round": cfg.source.prompts_per_round,
        "reference.refresh_every": cfg.reference.refresh_every,
        "optim.grad_accum": cfg.optim.grad_accum,
        "train.eval_every": cfg.train.eval_every,
        "train.max_length": cfg.train.max_length,
        "train.max_prompt_length": cfg.train.max_prompt_length,
        "train.max_new_tokens": cfg.train.max_new_tokens,
        "eval.n_prompts": cfg.eval.n_prompts,
        "eval.probe_pairs": cfg.eval.probe_pairs,
        "checkpoint.keep_last": cfg.checkpoint.keep_last,
    }
    for key, value in positive.items():
        _check(value >= 1, key, "≥ 1", value)
    non_negative = {
        "seed": cfg.seed,
        "task.seed": cfg.task.seed,
        "threads": cfg.threads,
        "sft.steps": cfg.sft.steps,
        "sft.warmup_steps": cfg.sft.warmup_steps,
        "train.steps": cfg.train.steps,
        "optim.warmup_steps": cfg.optim.warmup_steps,
        "source.max_resample": cfg.source.max_resample,
        "eval.n_samples_logged": cfg.eval.n_samples_logged,
        "eval.heldout_pairs": cfg.eval.heldout_pairs,
        "eval.mmd_permutations": cfg.eval.mmd_permutations,
        "checkpoint.every": cfg.checkpoint.every,
        "optim.weight_decay": cfg.optim.weight_decay,
        "sft.weight_decay": cfg.sft.weight_decay,
    }
    for key, value in non_negative.items():
        _check(value >= 0, key, "≥ 0", value)
    floats = {
        "loss.beta": cfg.loss.beta,
        "loss.label_smoothing": cfg.loss.label_smoothing,
        "reference.alpha": cfg.reference.alpha,
        "optim.lr": cfg.optim.lr,
        "optim.weight_decay": cfg.optim.weight_decay,
        "optim.grad_clip": cfg.optim.grad_clip,
        "sft.lr": cfg.sft.lr,
        "sft.weight_decay": cfg.sft.weight_decay,
    }
    for key, value in floats.items():  # inf passes every `> 0` check, and one inf turns a run into NaNs
        _check(math.isfinite(value), key, "a finite number", value)
    _check(cfg.loss.beta > 0, "loss.beta", "> 0", cfg.loss.beta)
    _check(cfg.eval.optimum_samples == 0 or cfg.eval.optimum_samples >= 2, "eval.optimum_samples",
           "0 (off) or ≥ 2 π_sft samples per eval prompt", cfg.eval.optimum_samples)
    _check(math.isfinite(cfg.pairs.temperature) and cfg.pairs.temperature > 0, "pairs.temperature",
           "finite and > 0 (the Bradley–Terry τ, in reward units)", cfg.pairs.temperature)
    _check(
        cfg.eval.n_prompts <= cfg.task.n_eval_prompts,
        "eval.n_prompts",
        f"≤ task.n_eval_prompts={cfg.task.n_eval_prompts} (the held-out prompts there are)",
        cfg.eval.n_prompts,
    )
    _check(0 <= cfg.loss.label_smoothing < 0.5, "loss.label_smoothing", "in [0, 0.5)", cfg.loss.label_smoothing)
    _check(0 < cfg.reference.alpha <= 1, "reference.alpha", "in (0, 1]", cfg.reference.alpha)
    _check(cfg.optim.lr > 0, "optim.lr", "> 0", cfg.optim.lr)
    _check(cfg.sft.lr > 0, "sft.lr", "> 0", cfg.sft.lr)
    _check(cfg.optim.grad_clip > 0, "optim.grad_clip", "> 0", cfg.optim.grad_clip)
    _check(cfg.preferences.k >= 2, "preferences.k", "≥ 2 (a pair needs two completions)", cfg.preferences.k)
    _check(cfg.source.k >= 2, "source.k", "≥ 2 (a pair needs two completions)", cfg.source.k)
    _check(
        1 <= cfg.task.prompt_min_words <= cfg.task.prompt_max_words,
        "task.prompt_min_words",
        f"between 1 and task.prompt_max_words={cfg.task.prompt_max_words}",
        cfg.task.prompt_min_words,
    )
    _check(
        cfg.train.max_prompt_length < cfg.train.max_length,
        "train.max_prompt_length",
        f"< train.max_length={cfg.train.max_length} (a response needs room)",
        cfg.train.max_prompt_length,
    )
    _check(
        cfg.train.max_prompt_length + cfg.train.max_new_tokens <= cfg.train.max_length,
        "train.max_new_tokens",
        f"≤ train.max_length − train.max_prompt_length = {cfg.train.max_length - cfg.train.max_prompt_length}"
        " (sampled sequences must fit the context)",
        cfg.train.max_new_tokens,
    )
    if cfg.model.name_or_path is None:
        _check(
            cfg.train.max_length <= cfg.model.n_positions,
            "train.max_length",
            f"≤ model.n_positions={cfg.model.n_positions}",
            cfg.train.max_length,
        )
        _check(cfg.model.n_embd % cfg.model.n_head == 0, "model.n_embd", "divisible by model.n_head", cfg.model.n_embd)
    _check(cfg.model.dtype in MODEL_DTYPES, "model.dtype", ", ".join(MODEL_DTYPES), cfg.model.dtype)
    _check(_is_device(cfg.train.device), "train.device", "auto, cpu, cuda, cuda:N or mps", cfg.train.device)
    _check(cfg.train.mixed_precision in MIXED_PRECISION, "train.mixed_precision", " or ".join(MIXED_PRECISION),
           cfg.train.mixed_precision)
    if cfg.task.kind is TaskKind.directory:
        _check(bool(cfg.task.corpus_dir), "task.corpus_dir", "a directory path when task.kind=directory", cfg.task.corpus_dir)
    _validate_objective(cfg)
    _validate_speedups(cfg)
    _validate_lora(cfg.model.lora)
    _validate_task_data(cfg.task)
    _validate_oracle(cfg.oracle)
    _validate_labels_needed(cfg)
    return cfg


def _reject_renamed_keys(cfg: ShiftlabConfig) -> None:
    for old, new in RENAMED_KEYS.items():
        group, key = old.split(".")
        value = getattr(getattr(cfg, group), key)
        if value is not None:
            new_group, new_key = new.split(".")
            # a key moved to another section is written under that section, which may have no conf/ folder
            where = f"a conf/{group}/ file" if new_group == group else f"a `{new_group}:` section (conf/train.yaml, an experiment file)"
            raise ConfigError(
                f"config key `{old}` was renamed `{new}`: write {new}={value} on the command line, or "
                f"`{new_key}: {value}` in {where}"
            )


def _validate_task_data(task: TaskConfig) -> None:
    uses_dataset = task.kind in (TaskKind.text, TaskKind.preferences)
    kind = task.kind.value
    if uses_dataset:
        _check(bool(task.dataset.path), "task.dataset.path", f"a hub id, file or folder when task.kind={kind}", task.dataset.path)
    _check(task.dataset.max_rows is None or task.dataset.max_rows >= 1, "task.dataset.max_rows", "≥ 1 or null", task.dataset.max_rows)
    fields = dataset_fields(task)
    columns = {f.name: getattr(task.dataset.columns, f.name) for f in dataclasses.fields(ColumnsConfig)}
    for key, column in columns.items():
        if column is None:
            continue
        read = f"null: task.kind={kind}" + (f", task.format={task.format.value}" if kind == "preferences" else "")
        _check(not uses_dataset or key in fields, f"task.dataset.columns.{key}", f"{read} reads only {', '.join(fields)}", column)
        _check(bool(column), f"task.dataset.columns.{key}", "a column name or null", column)
    renamed = [columns[f] or f for f in fields]
    _check(len(set(renamed)) == len(renamed), "task.dataset.columns", "distinct columns for distinct fields", renamed)
    local_file = (task.dataset.path or "").endswith(LOCAL_FILE_SUFFIXES)
    _check(
        not (local_file and task.dataset.eval_split), "task.dataset.eval_split",
        "null for a local file (a file is one split; give a folder of split files instead)", task.dataset.eval_split,
    )
    _check(task.prompt_template.count("{prompt}") == 1, "task.prompt_template", 'a text holding "{prompt}" once', task.prompt_template)
    _check(bool(task.assistant_marker.strip()), "task.assistant_marker", "a non-blank marker", task.assistant_marker)
    _check(
        not (task.preferences_path and task.kind is TaskKind.preferences), "task.preferences_path",
        "null when task.kind=preferences (the pairs come from task.dataset)", task.preferences_path,
    )


def _validate_oracle(oracle: OracleConfig) -> None:
    _check(oracle.batch_size >= 1, "oracle.batch_size", "≥ 1", oracle.batch_size)
    _check(oracle.max_length >= 2, "oracle.max_length", "≥ 2", oracle.max_length)
    if oracle.kind is OracleKind.hf_classifier:
        _check(bool(oracle.model), "oracle.model", "a hub id or local directory when oracle.kind=hf_classifier", oracle.model)
    if oracle.kind is OracleKind.function:
        module, _, attr = (oracle.function or "").partition(":")
        _check(bool(module and attr), "oracle.function", '"package.module:attr" when oracle.kind=function', oracle.function)


def _validate_labels_needed(cfg: ShiftlabConfig) -> None:
    """Without an oracle nothing can label a sampled pair: only a given set of (human) pairs can be trained on."""
    if cfg.oracle.kind is not OracleKind.none:
        return
    labelled = "vader, hf_classifier or function (an oracle labels the pairs sampled from π_θ)"
    _check(cfg.source.kind is SourceKind.offline, "oracle.kind", f"{labelled} with source={cfg.source.kind.value}", "none")
    given = cfg.task.kind is TaskKind.preferences or bool(cfg.task.preferences_path)
    _check(given, "oracle.kind", "vader, hf_classifier or function unless the pairs are given (task=hh, task=preferences "
           "or task.preferences_path): the built offline set labels π_sft's samples with the oracle", "none")


def _validate_lora(lora: LoraConfig) -> None:
    _check(lora.r >= 0, "model.lora.r", "≥ 0 (0: no adapters)", lora.r)
    _check(math.isfinite(lora.alpha) and lora.alpha > 0, "model.lora.alpha", "a finite number > 0", lora.alpha)
    _check(0 <= lora.dropout < 1, "model.lora.dropout", "in [0, 1)", lora.dropout)
    if lora.r == 0:
        return
    _check(
        bool(lora.target_modules) and all(isinstance(m, str) and m.strip() for m in lora.target_modules),
        "model.lora.target_modules", 'a non-empty list of module names, or ["all-linear"]', lora.target_modules,
    )
    # checked here, not where the adapters are added: that is after π_sft has been trained
    _check(
        importlib.util.find_spec("peft") is not None, "model.lora.r",
        "0 unless peft is installed (pip install 'peft>=0.13', or the project's [lora] extra)", lora.r,
    )


def _validate_speedups(cfg: ShiftlabConfig) -> None:
    """Options that only change how a quantity is computed must not be set where they would silently do nothing."""
    if cfg.reference.precompute_logps:  # null (auto) is resolved by the factory where valid
        # a table of log π_ref is only valid while both π_ref and the pairs stay fixed
        _check(
            cfg.reference.kind is ReferenceKind.fixed and cfg.source.kind is SourceKind.offline,
            "reference.precompute_logps", "false unless reference=fixed and source=offline (mode=offline)",
            f"true with reference={cfg.reference.kind.value}, source={cfg.source.kind.value}",
        )
    if cfg.train.packing:
        _check(cfg.loss.kind is not LossKind.rloo, "train.packing", "false with loss=rloo (rollouts are scored padded)", True)


def _validate_objective(cfg: ShiftlabConfig) -> None:
    """Pairs feed preference losses and rollouts feed policy gradients: the two must be chosen together."""
    rl = cfg.loss.kind is LossKind.rloo
    _check(
        rl == (cfg.source.kind is SourceKind.rollouts), "loss.kind",
        "rloo exactly when source=rollouts (use mode=rl)" if not rl else "rloo only with source=rollouts", cfg.loss.kind.value,
    )
    if not rl:
        _check(cfg.loss.clip is None, "loss.clip", "null unless loss=rloo", cfg.loss.clip)
        return
    # the RL objective's KL term is to π_sft; a moving π_ref would change what eval/kl_ref means, not the objective
    _check(cfg.reference.kind is ReferenceKind.fixed, "reference.kind", "fixed with loss=rloo", cfg.reference.kind.value)
    _check(cfg.loss.label_smoothing == 0, "loss.label_smoothing", "0 with loss=rloo", cfg.loss.label_smoothing)
    if cfg.loss.clip is not None:
        _check(math.isfinite(cfg.loss.clip) and cfg.loss.clip > 0, "loss.clip", "> 0 or null", cfg.loss.clip)
    _check(
        cfg.source.sample_every == 1 or cfg.loss.clip is not None, "source.sample_every",
        "1 unless loss.clip is set (reusing samples without the PPO clip is an unbounded off-policy update)",
        cfg.source.sample_every,
    )


def _is_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        return torch.device(name).type in ("cpu", "cuda", "mps")
    except (RuntimeError, ValueError):
        return False
