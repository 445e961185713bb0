"""Every option of every config group composes; bad keys, types, options and ranges fail at start-up, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError
from tiny import CONF_DIR, compose_config

from shiftlab.cell import cell_of
from shiftlab.config import ReferenceKind, ShiftlabConfig, SourceKind
from shiftlab.validation import ConfigError

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_of_every_group_composes(group, option):
    prefix = "+" if group == "experiment" else ""
    # options valid only together (the RL objective consumes rollouts) compose inside their mode
    # and no oracle (oracle=none) needs pairs that are given, not built (a human-pair task)
    partner = {("loss", "rloo"): ["mode=rl"], ("source", "rollouts"): ["mode=rl"],
               ("oracle", "none"): ["task=hh"]}.get((group, option), [])
    cfg = compose_config([*partner, f"{prefix}{group}={option}"], tiny=False)
    assert isinstance(cfg, ShiftlabConfig)


def test_groups_cover_the_documented_axes():
    assert {"mode", "task", "model", "source", "reference", "loss", "optim", "debug"} <= set(GROUPS)


@pytest.mark.parametrize(
    "mode,source,reference",
    [("offline", SourceKind.offline, ReferenceKind.fixed), ("trdpo", SourceKind.offline, ReferenceKind.hard),
     ("oaif", SourceKind.onpolicy, ReferenceKind.fixed), ("online", SourceKind.onpolicy, ReferenceKind.hard),
     ("rl", SourceKind.rollouts, ReferenceKind.fixed)],
)
def test_each_mode_preset_sets_the_parts_of_its_cell(mode, source, reference):
    cfg = compose_config([f"mode={mode}"], tiny=False)
    assert (cell_of(cfg), cfg.source.kind, cfg.reference.kind) == (mode, source, reference)
    assert set(_options("mode")) == {"offline", "trdpo", "oaif", "online", "rl"}  # a new preset needs a row here


def test_the_cell_follows_a_command_line_part_not_the_preset():
    assert cell_of(compose_config(["mode=offline", "source=onpolicy"], tiny=False)) == "oaif"
    assert cell_of(compose_config(["mode=online", "reference=fixed"], tiny=False)) == "oaif"
    assert cell_of(compose_config(["mode=offline", "reference=soft"], tiny=False)) == "trdpo"


def test_hydra_names_the_run_directory_by_the_derived_cell():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from shiftlab.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["mode=offline", "source=onpolicy", "seed=3"], return_hydra_config=True)
    cfg.hydra.job.num = 7  # set by the launcher in a sweep
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert run_dir.startswith("outputs/oaif/") and run_dir.endswith("_seed3")
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == "7_oaif_seed3"


@pytest.mark.parametrize(
    "override,old,new",
    [("loss.name=ipo", "loss.name", "loss.kind"), ("optim.name=rmsprop", "optim.name", "optim.kind"),
     ("task.corpus=text", "task.corpus", "task.kind"),
     ("preferences.pairing=all_pairs", "preferences.pairing", "pairs.pairing"),
     ("source.pairing=all_pairs", "source.pairing", "pairs.pairing")],
)
def test_a_renamed_key_on_the_command_line_fails_naming_the_new_key(override, old, new):
    with pytest.raises(ConfigError, match=f"`{old}` was renamed `{new}`"):
        compose_config([override], tiny=False)


def test_a_renamed_key_in_a_yaml_file_fails_naming_the_new_key(tmp_path):
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "old_style.yaml").write_text("name: ipo\nbeta: 0.1\n")  # a user's file from before the rename
    with pytest.raises(ConfigError, match="`loss.name` was renamed `loss.kind`: write loss.kind=ipo"):
        compose_config([f"hydra.searchpath=[file://{tmp_path}]", "loss=old_style"], tiny=False)


def test_debug_tiny_is_a_small_run_of_any_mode():
    cfg = compose_config(["debug=tiny", "mode=online"], tiny=False)
    assert (cfg.train.steps, cfg.model.n_layer, cfg.progress, cell_of(cfg)) == (4, 1, False, "online")
    assert compose_config(["mode=online"], tiny=False).train.steps == 200  # off unless asked for


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
        compose_config(["pairs.pairing=random"], tiny=False)
    assert "pairing" in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize(
    "override,key",
    [("loss.beta=0", "loss.beta"), ("reference.alpha=1.5", "reference.alpha"), ("reference.refresh_every=0", "reference.refresh_every"),
     ("source.k=1", "source.k"), ("preferences.k=1", "preferences.k"), ("train.max_length=0", "train.max_length"),
     ("train.max_prompt_length=64", "train.max_prompt_length"), ("train.max_new_tokens=60", "train.max_new_tokens"), ("optim.lr=-1", "optim.lr"),
     ("loss.label_smoothing=0.7", "loss.label_smoothing"), ("train.max_length=128", "train.max_length"),
     ("train.device=gpu0", "train.device"), ("train.mixed_precision=fp8", "train.mixed_precision"),
     ("pairs.temperature=0", "pairs.temperature"), ("pairs.temperature=-1", "pairs.temperature")],
)
def test_range_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config([override], tiny=False)


@pytest.mark.parametrize(
    "overrides,needs",
    [(["task=hh", "mode=oaif"], "with source=onpolicy"), (["task=hh", "mode=online"], "with source=onpolicy"),
     (["task=hh", "mode=rl"], "with source=rollouts"), ([], "unless the pairs are given")],  # the built set is labelled
)
def test_no_oracle_where_labels_are_needed_fails_naming_oracle_kind(overrides, needs):
    with pytest.raises(ConfigError, match=f"`oracle.kind` must be vader, hf_classifier or function .*{needs}"):
        compose_config([*overrides, "oracle=none"], tiny=False)
    assert compose_config(["task=hh", "mode=trdpo", "oracle.kind=none"], tiny=False).oracle.kind.value == "none"


@pytest.mark.parametrize(
    "overrides,key",
    [(["mode=trdpo", "reference.precompute_logps=true"], "reference.precompute_logps"),  # π_ref moves
     (["mode=oaif", "reference.precompute_logps=true"], "reference.precompute_logps"),  # the pairs move
     (["mode=rl", "train.packing=true"], "train.packing")],  # rollouts are scored padded
)
def test_speed_options_where_they_would_do_nothing_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config(overrides, tiny=False)


def test_speed_options_default_to_auto_and_compose_where_they_apply():
    default = compose_config([], tiny=False)
    assert default.reference.precompute_logps is None and default.train.packing is None  # auto: the factory decides
    cfg = compose_config(["mode=offline", "reference.precompute_logps=true", "train.packing=true"], tiny=False)
    assert cfg.reference.precompute_logps and cfg.train.packing
    assert compose_config(["mode=online", "train.packing=true"], tiny=False).train.packing
    assert compose_config(["mode=offline", "train.packing=false"], tiny=False).train.packing is False


@pytest.mark.parametrize("overrides,packing,precompute", [
    (["mode=offline"], True, True),  # π_ref and the pairs fixed: the table is valid
    (["mode=trdpo"], True, False),
    (["mode=oaif"], True, False),
    (["mode=online"], True, False),
    (["mode=rl", "source.sample_every=1"], False, False),  # rollouts are scored padded
    (["mode=offline", "train.packing=false", "reference.precompute_logps=false"], False, False),
])
def test_auto_speed_options_resolve_to_the_fastest_valid_path(overrides, packing, precompute):
    from shiftlab.experiment.factory import SpeedPath, resolve_speed_path

    assert resolve_speed_path(compose_config(overrides)) == SpeedPath(packing, precompute)




@pytest.mark.parametrize("every,prompts", [(4, 32), (25, 200), (200, 1600)])
def test_the_staleness_experiment_holds_budget_and_reuse_fixed(every, prompts):
    cfg = compose_config(["+experiment=staleness", f"source.sample_every={every}"], tiny=False)
    assert cfg.source.kind == SourceKind.onpolicy and cfg.reference.kind == ReferenceKind.hard
    assert cfg.source.prompts_per_round == prompts  # every pair serves 4 steps' worth of batches
    rounds = -(-cfg.train.steps // every)
    assert rounds * prompts * cfg.source.k == 6400  # the offline set's labelling budget


def test_prompts_for_reuse_refuses_a_round_that_does_not_divide():
    from shiftlab.config import prompts_for_reuse

    assert prompts_for_reuse(10, 32, 4) == 80
    with pytest.raises(ValueError, match="not a multiple of uses = 3"):
        prompts_for_reuse(1, 32, 3)
