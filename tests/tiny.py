"""A tiny but complete shiftlab configuration, composed through Hydra exactly as `scripts/train.py` does."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shiftlab.config import ShiftlabConfig, register_configs
from shiftlab.validation import validate

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# conf/debug/tiny.yaml: a tiny model, world and budget. The same group serves the bench's quick runs and anyone's
# smoke run (`python scripts/train.py debug=tiny mode=online`); as a command-line list it also fits subprocess runs.
TINY_OVERRIDES = ["debug=tiny"]


def compose_config(overrides: list[str] = (), tiny: bool = True) -> ShiftlabConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        dict_cfg = compose(config_name="train", overrides=(TINY_OVERRIDES if tiny else []) + list(overrides))
    return validate(OmegaConf.to_object(dict_cfg))
