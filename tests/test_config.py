"""Every option of every config group composes; bad keys, types, options and ranges fail at start-up, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError
from tiny import CONF_DIR, compose_config

from shiftlab.config import ReferenceKind, ShiftlabConfig, SourceKind
from shiftlab.validation import ConfigError

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_of_every_group_composes(group, option):
    prefix = "+" if group == "experiment" else ""
    # options valid only together (the RL objective consumes rollouts) compose inside their mode
    partner = {("loss", "rloo"): ["mode=rl"], ("source", "rollouts"): ["mode=rl"]}.get((group, option), [])
    cfg = compose_config([*partner, f"{prefix}{group}={option}"], tiny=False)
    assert isinstance(cfg, ShiftlabConfig)


def test_groups_cover_the_documented_axes():
    assert {"mode", "task", "model", "source", "reference", "loss", "optim"} <= set(GROUPS)


@pytest.mark.parametrize(
    "mode,source,reference",
    [("offline", SourceKind.offline, ReferenceKind.fixed), ("trdpo", SourceKind.offline, ReferenceKind.hard),
     ("oaif", SourceKind.onpolicy, ReferenceKind.fixed), ("online", SourceKind.onpolicy, ReferenceKind.hard)],
)
def test_mode_presets_are_the_four_cells(mode, source, reference):
    cfg = compose_config([f"mode={mode}"], tiny=False)
    assert (cfg.mode, cfg.source.kind, cfg.reference.kind) == (mode, source, reference)


def test_command_line_axis_overrides_a_mode_preset():
    cfg = compose_config(["mode=online", "reference=soft"], tiny=False)
    assert cfg.source.kind is SourceKind.onpolicy and cfg.reference.kind is ReferenceKind.soft


def test_misspelt_key_fails():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["loss.betta=0.2"], tiny=False)
    assert "betta" in str(err.value) + str(err.value.__cause__)


def test_wrong_type_fails():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_config(["loss.beta=high"], tiny=False)
    assert "beta" in str(err.value) + str(err.value.__cause__)


def test_unknown_group_option_fails():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["mode=offpolicy"], tiny=False)
    assert "offpolicy" in str(err.value)


def test_unknown_enum_value_fails():
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError)) as err:
        compose_config(["source.pairing=random"], tiny=False)
    assert "pairing" in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize(
    "override,key",
    [("loss.beta=0", "loss.beta"), ("reference.alpha=1.5", "reference.alpha"), ("reference.refresh_every=0", "reference.refresh_every"),
     ("source.k=1", "source.k"), ("preferences.k=1", "preferences.k"), ("train.max_length=0", "train.max_length"),
     ("train.max_prompt_length=64", "train.max_prompt_length"), ("train.max_new_tokens=60", "train.max_new_tokens"), ("optim.lr=-1", "optim.lr"),
     ("loss.label_smoothing=0.7", "loss.label_smoothing"), ("train.max_length=128", "train.max_length"),
     ("train.device=gpu0", "train.device"), ("train.mixed_precision=fp8", "train.mixed_precision")],
)
def test_range_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config([override], tiny=False)


@pytest.mark.parametrize(
    "overrides,key",
    [(["mode=trdpo", "reference.precompute_logps=true"], "reference.precompute_logps"),  # π_ref moves
     (["mode=oaif", "reference.precompute_logps=true"], "reference.precompute_logps"),  # the pairs move
     (["mode=rl", "train.packing=true"], "train.packing")],  # rollouts are scored padded
)
def test_speed_options_where_they_would_do_nothing_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config(overrides, tiny=False)


def test_speed_options_compose_where_they_apply_and_default_off():
    cfg = compose_config(["mode=offline", "reference.precompute_logps=true", "train.packing=true"], tiny=False)
    assert cfg.reference.precompute_logps and cfg.train.packing
    default = compose_config([], tiny=False)
    assert not default.reference.precompute_logps and not default.train.packing
    assert compose_config(["mode=online", "train.packing=true"], tiny=False).train.packing
