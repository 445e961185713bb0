"""Typed configuration: the only place config types live.

Every group of `conf/` fills one of these dataclasses; the schema is registered with Hydra's ConfigStore, so a
misspelt key, a wrong type or an unknown enum value fails at start-up with Hydra's message. `validate` adds the
range checks a type cannot express (β > 0, 0 < α ≤ 1, ...) and names the key that is wrong.

Why this module is long: it is every config group's schema, kept in one file so that one read shows every key a
run accepts (each dataclass is short), plus the registration of the resolvers the YAML calls (`cell`,
`threads_per_run`, `prompts_for_reuse`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from shiftlab.cell import derive_cell
from shiftlab.launch import threads_per_run


class TaskKind(Enum):  # task.kind: where the task's texts and prompts come from
    grammar = "grammar"  # the embedded world: shiftlab's own review grammar, exact log-probs
    directory = "directory"  # real review text, sentence-polarity layout (rt-polarity.pos / .neg)
    text = "text"  # a text dataset (task.dataset): the SFT corpus, and review-prefix prompts (the DPO paper's IMDb task)
    preferences = "preferences"  # a preference dataset (task.dataset): its pairs, its prompts, SFT on prompt + chosen


class PreferenceFormat(Enum):
    columns = "columns"  # one column each for prompt, chosen and rejected (renamed by task.dataset.columns)
    hh = "hh"  # Anthropic HH-RLHF: chosen / rejected are whole dialogues sharing all but the last assistant turn


class SourceKind(Enum):
    offline = "offline"  # a fixed preference set sampled once from π_sft
    onpolicy = "onpolicy"  # pairs sampled from the current π_θ and labelled by the oracle
    rollouts = "rollouts"  # k scored samples per prompt from the current π_θ, for policy-gradient RL (loss=rloo)


class ReferenceKind(Enum):
    fixed = "fixed"  # π_ref = π_sft throughout
    hard = "hard"  # every refresh_every steps π_ref ← π_θ
    soft = "soft"  # every refresh_every steps π_ref ← α·π_θ + (1−α)·π_ref (TR-DPO)


class Pairing(Enum):
    best_vs_worst = "best_vs_worst"
    all_pairs = "all_pairs"


class PairLabels(Enum):  # pairs.labels: how a candidate pair's order (chosen, rejected) follows from its rewards
    deterministic = "deterministic"  # the higher reward is chosen; exact ties dropped
    bradley_terry = "bradley_terry"  # order sampled, P(a ≻ b) = σ((r(a) − r(b))/τ): DPO then has a finite optimum


class LossKind(Enum):
    dpo = "dpo"
    ipo = "ipo"
    hinge = "hinge"
    rloo = "rloo"  # on-policy RL: REINFORCE leave-one-out with a KL penalty to π_sft (β is β_rl); needs source=rollouts


class OptimKind(Enum):
    adamw = "adamw"
    rmsprop = "rmsprop"


class OnInvalid(Enum):
    error = "error"
    skip = "skip"


@dataclass
class ColumnsConfig:
    """Which dataset column holds each field a task reads; null: the column of the field's own name."""

    prompt: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    text: str | None = None


@dataclass
class DatasetConfig:
    """Where a task's rows come from: a hub dataset, or a local file or folder (read without a network)."""

    path: str | None = None  # hub id, a local .jsonl / .jsonl.gz / .parquet / .txt file, or a folder of data files
    name: str | None = None  # hub dataset configuration
    data_dir: str | None = None  # hub subfolder (Anthropic/hh-rlhf: harmless-base, helpful-base, ...)
    split: str = "train"  # hub ids and folders; a local file is one split
    eval_split: str | None = None  # evaluation prompts from this split; None: held out from `split`
    max_rows: int | None = None  # read only the first rows of each split (quick runs)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)  # e.g. columns.prompt=question


@dataclass
class TaskConfig:
    name: str = "reviews"  # the task's label: an identity a study's runs must share, not a variant, so not `kind`
    seed: int = 0  # the world (corpus, prompts) and π_sft depend on this seed only, so a study's runs share them
    kind: TaskKind = TaskKind.grammar
    corpus_dir: str | None = None  # required when kind=directory
    dataset: DatasetConfig = field(default_factory=DatasetConfig)  # required when kind=text or preferences
    format: PreferenceFormat = PreferenceFormat.columns  # kind=preferences only: a row's layout, its own axis
    assistant_marker: str = "\n\nAssistant:"  # format=hh: a prompt ends with the last one
    prompt_template: str = "{prompt}"  # kind=preferences: wraps each prompt (the pair's and the SFT text's)
    text_replace: dict[str, str] = field(default_factory=dict)  # kind=text: substring -> replacement (IMDb "<br />")
    n_texts: int = 30000  # grammar corpus size (directory corpora use every line)
    n_eval_prompts: int = 128  # fixed held-out prompts for evaluation
    prompt_min_words: int = 2
    prompt_max_words: int = 8
    preferences_path: str | None = None  # a local .jsonl / .jsonl.gz / .parquet of prompt/chosen/rejected instead of the built set
    on_invalid: OnInvalid = OnInvalid.error
    corpus: str | None = None  # renamed `kind`: kept only so the old key fails naming the new one (RENAMED_KEYS)


@dataclass
class LoraConfig:
    """LoRA adapters on π_θ through `peft` (Hu et al. 2021): only the adapters train, and π_ref under a refresh is
    the same weights with the adapters switched off (shiftlab/lora.py), so no copy of π_ref is held."""

    r: int = 0  # adapter rank; 0: off, every weight of π_θ trains
    alpha: float = 16.0  # ΔW = (alpha / r)·B·A
    dropout: float = 0.0  # on the adapters' input; the base model's dropout stays off (see models.build_model)
    # module names to adapt (suffix match), or ["all-linear"]: every linear / GPT-2 Conv1D layer except the output
    # head — which covers GPT-2 (c_attn, c_proj, c_fc), Pythia (query_key_value, dense, dense_h_to_4h, dense_4h_to_h)
    # and Qwen2 (q/k/v/o_proj, gate/up/down_proj) alike
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass
class ModelConfig:
    name_or_path: str | None = None  # None: a GPT-2 built from the fields below, trained from scratch
    vocab_size: int = 1024  # byte-level BPE trained on the corpus
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 64
    trust_remote_code: bool = False
    dtype: str = "float32"  # float32, bfloat16, float16, or auto: bfloat16 on a GPU that has it, else float32
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% more time
    lora: LoraConfig = field(default_factory=LoraConfig)  # model.lora.r=16: train adapters only


class OracleKind(Enum):
    vader = "vader"  # VADER compound sentiment, rule-based, no model
    hf_classifier = "hf_classifier"  # a sequence-classification model's p(label) (the DPO paper's sentiment reward)
    function = "function"  # a user callable named "package.module:attr"
    none = "none"  # no oracle: human pairs only (offline); eval reports the held-out pairs, no reward columns


class TruncationSide(Enum):
    left = "left"  # drop the start of a long text, keep its end
    right = "right"  # keep the start


@dataclass
class OracleConfig:
    """The reward that labels pairs and scores evaluation samples: texts (prompt + response) -> (N,) floats."""

    kind: OracleKind = OracleKind.vader
    model: str | None = None  # hf_classifier: hub id or local directory of a sequence-classification model
    label: str | None = None  # hf_classifier: reward = p(label); unset only for a one-output reward model (its logit)
    batch_size: int = 32  # hf_classifier: texts per forward pass
    max_length: int = 512  # hf_classifier: tokens per text; longer texts are cut on truncation_side
    truncation_side: TruncationSide = TruncationSide.right
    trust_remote_code: bool = False
    function: str | None = None  # function: "package.module:attr", called as attr(texts, **kwargs)
    kwargs: dict[str, Any] = field(default_factory=dict)


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
    pairing: str | None = None  # moved to `pairs.pairing`: kept only so the old key fails naming the new one (RENAMED_KEYS)


@dataclass
class PairsConfig:
    """The one pairing rule (shiftlab.labels.pairing), shared by the offline set and on-policy rounds."""

    pairing: Pairing = Pairing.best_vs_worst  # which completions of a prompt's k form candidate pairs
    labels: PairLabels = PairLabels.deterministic
    temperature: float = 1.0  # bradley_terry: τ > 0, in reward units; DPO's optimum is π_ref·exp(r/(τβ))/Z


@dataclass
class SourceConfig:
    kind: SourceKind = SourceKind.offline
    batch_size: int = 32  # pairs per optimizer step
    # on-policy only: a sampling round every `sample_every` steps draws `prompts_per_round` prompts, k
    # completions each; the round's pairs serve the steps until the next round (staleness < sample_every).
    sample_every: int = 4
    prompts_per_round: int = 32
    k: int = 4
    pairing: str | None = None  # moved to `pairs.pairing`: kept only so the old key fails naming the new one (RENAMED_KEYS)
    max_resample: int = 3  # a round whose pairs all tie is resampled this often, then the step is skipped


@dataclass
class ReferenceConfig:
    kind: ReferenceKind = ReferenceKind.fixed
    refresh_every: int = 40
    alpha: float = 0.5  # soft refresh weight on π_θ
    # log π_ref of every pair computed once before training (shiftlab.training.precompute) instead of a π_ref forward
    # every step. null (auto): wherever it is valid, i.e. π_ref and the pairs both fixed (reference=fixed, source=
    # offline); true: required (an error elsewhere); false: off. Equal to the live forward up to float rounding.
    precompute_logps: bool | None = None


@dataclass
class LossConfig:
    kind: LossKind = LossKind.dpo
    beta: float = 0.1
    label_smoothing: float = 0.0  # conservative DPO ε (dpo only)
    clip: float | None = None  # rloo only: PPO ratio clip ε for reusing a round over source.sample_every inner epochs
    name: str | None = None  # renamed `kind`: kept only so the old key fails naming the new one (RENAMED_KEYS)


@dataclass
class OptimConfig:
    kind: OptimKind = OptimKind.adamw
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    grad_accum: int = 1
    name: str | None = None  # renamed `kind`: kept only so the old key fails naming the new one (RENAMED_KEYS)


@dataclass
class TrainConfig:
    steps: int = 200
    eval_every: int = 50
    max_length: int = 64  # prompt + response + end-of-text, in tokens
    max_prompt_length: int = 16
    max_new_tokens: int = 48
    # preference forwards (π_θ, π_ref, the precomputed table) on rows packed end to end, position ids restarting
    # per sequence (shiftlab.models.packing): no compute on padding; log-probs equal the padded ones up to float
    # rounding. null (auto): packed wherever the objective and the model support it (not rollouts, not a model
    # type transformers cannot pack: those run padded); true: required for the objective; false: padded.
    packing: bool | None = None
    # "auto": the first CUDA device when there is one, else the CPU. Under a multi-process launch each rank
    # uses the device accelerate assigns it instead.
    device: str = "auto"
    # "bf16": the training step's forward passes (π_θ, π_ref) run under torch.autocast in bfloat16 while weights,
    # gradients and AdamW state stay in model.dtype (float32 master weights); log-probs are summed in float32.
    # "auto": bf16 only where a short probe of this step on this machine finds it ≥ 1.1× faster than float32 and
    # the step's statistics (loss, rewards, log-probs, grad norm) within |bf16 − fp32| ≤ 0.01·(1 + |fp32|); else
    # "no". Measured once per machine and model shape, then reused from cache_dir (shiftlab.training.precision).
    mixed_precision: str = "auto"


@dataclass
class EvalConfig:
    n_prompts: int = 128  # of the task's eval prompts, sampled once each per eval
    n_samples_logged: int = 4
    divergences: bool = True  # state-distribution metrics (c2st, MMD, JS, depth curves, ESS)
    probe_pairs: int = 64  # training pairs on which "where DPO looks" is measured
    mmd_permutations: int = 200
    # human pairs held out with the eval prompts (or the eval split's): the implicit reward β·(log π_θ − log π_ref)
    # scored on up to this many of them (eval/heldout/...); 0: off
    heldout_pairs: int = 256
    # π_sft samples per eval prompt for the KL-regularised optimum's frontier (optimum.jsonl, shiftlab/stages/optimum.py),
    # computed once per π_sft and seed and cached; trusted up to about ½·log N nats; 0: off
    optimum_samples: int = 64


@dataclass
class CheckpointConfig:
    every: int = 50  # optimizer steps between checkpoints (a checkpoint is also written at the end); 0 = end only
    keep_last: int = 2


class TrackerKind(Enum):  # tracker.kind: where the run log is mirrored (shiftlab/rundir/trackers.py); the log stays the truth
    none = "none"
    tensorboard = "tensorboard"  # event files in <run dir>/tensorboard/ (pip install 'shiftlab[tensorboard]')
    wandb = "wandb"  # a W&B run in <run dir>/wandb/ (pip install 'shiftlab[wandb]')


class WandbMode(Enum):
    offline = "offline"  # written into the run directory only; `wandb sync <run dir>/wandb/offline-run-*` uploads it
    online = "online"  # also streamed to the W&B server (needs a login)


@dataclass
class TrackerConfig:
    kind: TrackerKind = TrackerKind.none
    project: str = "shiftlab"  # wandb only
    mode: WandbMode = WandbMode.offline  # wandb only


@dataclass
class ShiftlabConfig:
    seed: int = 0
    # torch intra-op threads; fixed so metrics are reproducible. conf/train.yaml sets ${threads_per_run:2}: 2 for a run
    # on its own, cores ÷ runs at once under a parallel launcher (conf/hydra/launcher/)
    threads: int = 2
    cache_dir: str = ".shiftlab_cache"  # SFT models and built preference sets, keyed by a hash of their inputs
    progress: bool = True
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    preferences: PreferenceSetConfig = field(default_factory=PreferenceSetConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # tracker=tensorboard | wandb: mirror the run log
    resume: str | None = None  # true: continue the run in hydra.run.dir from its last checkpoint; or a run directory


def prompts_for_reuse(sample_every: int, batch_size: int, uses: int) -> int:
    """Prompts per on-policy round such that each of its pairs (one per prompt under best_vs_worst, before ties)
    serves `uses` optimizer steps' worth of batches over the round's `sample_every` steps:
    sample_every · batch_size / uses. It holds the labelling budget and the reuse of every pair fixed while
    `source.sample_every` alone changes how stale the pairs are (conf/experiment/staleness.yaml)."""
    sample_every, batch_size, uses = int(sample_every), int(batch_size), int(uses)
    if uses < 1 or (sample_every * batch_size) % uses:
        raise ValueError(f"prompts_for_reuse: source.sample_every × source.batch_size = {sample_every * batch_size} "
                         f"is not a multiple of uses = {uses}")
    return sample_every * batch_size // uses


def register_configs() -> None:
    """Register the schema (`conf/train.yaml` names it first in its defaults list) and three resolvers:
    `${cell:${source.kind},${reference.kind},${loss.kind}}` names Hydra's run directory by what the run does,
    `${threads_per_run:2}` sets `threads` from the launcher, and `${prompts_for_reuse:...}` sizes an on-policy
    round for a fixed reuse of its pairs. Hydra hands registered resolvers to the processes a
    parallel launcher starts (`Singleton.get_state` carries them), so both resolve there too."""
    ConfigStore.instance().store(name="shiftlab_schema", node=ShiftlabConfig)
    if not OmegaConf.has_resolver("cell"):
        OmegaConf.register_new_resolver("cell", derive_cell)
    if not OmegaConf.has_resolver("threads_per_run"):
        OmegaConf.register_new_resolver("threads_per_run", threads_per_run)
    if not OmegaConf.has_resolver("prompts_for_reuse"):
        OmegaConf.register_new_resolver("prompts_for_reuse", prompts_for_reuse)


# "Which variant" is `kind` in every group. The old keys stay in the schema as null placeholders, so `loss.name=ipo` (or
# `name: ipo` in a YAML file) composes and then fails in `validate` naming the new key, not with "key not in struct".
RENAMED_KEYS = {"loss.name": "loss.kind", "optim.name": "optim.kind", "task.corpus": "task.kind",
                "preferences.pairing": "pairs.pairing", "source.pairing": "pairs.pairing"}

MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
MIXED_PRECISION = ("no", "bf16", "auto")
LOCAL_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt", ".txt.gz")


def dataset_fields(task: TaskConfig) -> tuple[str, ...]:
    """The fields a task reads from each row of task.dataset: the keys task.dataset.columns may rename."""
    if task.kind is TaskKind.text:
        return ("text",)
    if task.format is PreferenceFormat.hh:
        return ("chosen", "rejected")  # the prompt is cut from the dialogues, not read
    return ("prompt", "chosen", "rejected")


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping → {"loss.beta": 0.1, ...}: the run's identity for resuming, the report's columns."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten_config(value, f"{prefix}{key}."))
    return flat
