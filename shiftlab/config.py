"""Typed configuration: the only place config types live.

Every group of `conf/` fills one of these dataclasses; the schema is registered with Hydra's ConfigStore, so a
misspelt key, a wrong type or an unknown enum value fails at start-up with Hydra's message. `validate` adds the
range checks a type cannot express (β > 0, 0 < α ≤ 1, ...) and names the key that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore


class CorpusKind(Enum):
    grammar = "grammar"  # the embedded world: shiftlab's own review grammar, exact log-probs
    directory = "directory"  # real review text, sentence-polarity layout (rt-polarity.pos / .neg)


class SourceKind(Enum):
    offline = "offline"  # a fixed preference set sampled once from π_sft
    onpolicy = "onpolicy"  # pairs sampled from the current π_θ and labelled by the oracle


class ReferenceKind(Enum):
    fixed = "fixed"  # π_ref = π_sft throughout
    hard = "hard"  # every refresh_every steps π_ref ← π_θ
    soft = "soft"  # every refresh_every steps π_ref ← α·π_θ + (1−α)·π_ref (TR-DPO)


class Pairing(Enum):
    best_vs_worst = "best_vs_worst"
    all_pairs = "all_pairs"


class LossName(Enum):
    dpo = "dpo"
    ipo = "ipo"
    hinge = "hinge"


class OptimizerName(Enum):
    adamw = "adamw"
    rmsprop = "rmsprop"


class OnInvalid(Enum):
    error = "error"
    skip = "skip"


@dataclass
class TaskConfig:
    name: str = "reviews"
    seed: int = 0  # the world (corpus, prompts) and π_sft depend on this seed only, so a study's runs share them
    corpus: CorpusKind = CorpusKind.grammar
    corpus_dir: str | None = None  # required when corpus=directory
    n_texts: int = 30000  # grammar corpus size (directory corpora use every line)
    n_eval_prompts: int = 128  # fixed held-out prompts for evaluation
    prompt_min_words: int = 2
    prompt_max_words: int = 8
    oracle: str = "vader"
    preferences_path: str | None = None  # a user JSONL (prompt/chosen/rejected) instead of the built set
    on_invalid: OnInvalid = OnInvalid.error


@dataclass
class ModelConfig:
    name_or_path: str | None = None  # None: a GPT-2 built from the fields below, trained from scratch
    vocab_size: int = 1024  # byte-level BPE trained on the corpus
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 64
    trust_remote_code: bool = False
    dtype: str = "float32"


@dataclass
class SFTConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.0


@dataclass
class PreferenceSetConfig:
    n_prompts: int = 1600  # training prompts; with best_vs_worst one pair each, minus exact ties
    k: int = 4  # completions sampled per prompt from the behaviour policy
    pairing: Pairing = Pairing.best_vs_worst


@dataclass
class SourceConfig:
    kind: SourceKind = SourceKind.offline
    batch_size: int = 32  # pairs per optimizer step
    # on-policy only: a sampling round every `sample_every` steps draws `prompts_per_round` prompts, k
    # completions each; the round's pairs serve the steps until the next round (staleness < sample_every).
    sample_every: int = 4
    prompts_per_round: int = 32
    k: int = 4
    pairing: Pairing = Pairing.best_vs_worst
    max_resample: int = 3  # a round whose pairs all tie is resampled this often, then the step is skipped


@dataclass
class ReferenceConfig:
    kind: ReferenceKind = ReferenceKind.fixed
    refresh_every: int = 50
    alpha: float = 0.5  # soft refresh weight on π_θ


@dataclass
class LossConfig:
    name: LossName = LossName.dpo
    beta: float = 0.1
    label_smoothing: float = 0.0  # conservative DPO ε (dpo only)


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass
class TrainConfig:
    steps: int = 200
    eval_every: int = 50
    max_length: int = 64  # prompt + response + end-of-text, in tokens
    max_prompt_length: int = 16
    max_new_tokens: int = 48


@dataclass
class EvalConfig:
    n_prompts: int = 128  # of the task's eval prompts, sampled once each per eval
    n_samples_logged: int = 4
    divergences: bool = True  # state-distribution metrics (c2st, MMD, JS, depth curves, ESS)
    probe_pairs: int = 64  # training pairs on which "where DPO looks" is measured
    mmd_permutations: int = 200


@dataclass
class CheckpointConfig:
    every: int = 50  # optimizer steps between checkpoints (a checkpoint is also written at the end); 0 = end only
    keep_last: int = 2


@dataclass
class ShiftlabConfig:
    mode: str = "offline"  # the cell name, written to run.json; set by conf/mode/*.yaml
    seed: int = 0
    threads: int = 2  # torch intra-op threads; fixed so metrics are reproducible
    cache_dir: str = ".shiftlab_cache"  # SFT models and built preference sets, keyed by a hash of their inputs
    progress: bool = True
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    preferences: PreferenceSetConfig = field(default_factory=PreferenceSetConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: str | None = None  # "true": the run directory given by hydra.run.dir; or a run directory path


def register_configs() -> None:
    """Register the schema; `conf/train.yaml` names it first in its defaults list."""
    ConfigStore.instance().store(name="shiftlab_schema", node=ShiftlabConfig)


class ConfigError(ValueError):
    """A config value outside its valid range; the message names the key."""


def _check(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"config key `{key}` must be {expected}, got {value!r}")


def validate(cfg: ShiftlabConfig) -> ShiftlabConfig:
    """Range checks a type cannot express. Returns cfg so it can wrap a conversion."""
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
        "eval.mmd_permutations": cfg.eval.mmd_permutations,
        "checkpoint.every": cfg.checkpoint.every,
        "optim.weight_decay": cfg.optim.weight_decay,
        "sft.weight_decay": cfg.sft.weight_decay,
    }
    for key, value in non_negative.items():
        _check(value >= 0, key, "≥ 0", value)
    _check(cfg.loss.beta > 0, "loss.beta", "> 0", cfg.loss.beta)
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
    _check(cfg.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", "float32, bfloat16 or float16", cfg.model.dtype)
    if cfg.task.corpus is CorpusKind.directory:
        _check(bool(cfg.task.corpus_dir), "task.corpus_dir", "a directory path when task.corpus=directory", cfg.task.corpus_dir)
    return cfg
