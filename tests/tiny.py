"""A tiny but complete shiftlab configuration, composed through Hydra exactly as `scripts/train.py` does."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shiftlab.config import ShiftlabConfig, register_configs
from shiftlab.validation import validate

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

TINY_OVERRIDES = [
    "task.n_texts=800",
    "task.n_eval_prompts=16",
    "model.vocab_size=300",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.n_positions=32",
    "sft.steps=60",
    "sft.batch_size=16",
    "sft.lr=5e-3",
    "preferences.n_prompts=32",
    "train.steps=4",
    "train.eval_every=2",
    "train.max_length=32",
    "train.max_prompt_length=10",
    "train.max_new_tokens=20",
    "eval.n_prompts=16",
    "eval.probe_pairs=8",
    "eval.mmd_permutations=20",
    "source.batch_size=4",
    "source.prompts_per_round=6",
    "source.sample_every=2",
    "reference.refresh_every=2",
    "optim.lr=1e-3",
    "optim.warmup_steps=1",
    "progress=false",
]


def compose_config(overrides: list[str] = (), tiny: bool = True) -> ShiftlabConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        dict_cfg = compose(config_name="train", overrides=(TINY_OVERRIDES if tiny else []) + list(overrides))
    return validate(OmegaConf.to_object(dict_cfg))
