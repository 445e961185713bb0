"""The factory (shiftlab.experiment.factory): one recipe per pair source, sizes checked before any model is built,
and the parts the loop gets for each cell."""

from __future__ import annotations

import pytest
from tiny import compose_config

from shiftlab.config import SourceKind
from shiftlab.experiment.factory import SOURCES, build_training, check_offline_sizes, check_onpolicy_sizes
from shiftlab.experiment.setup import progress_factory
from shiftlab.rundir.runlog import NullRunLog
from shiftlab.stages.task import Task
from shiftlab.training.reference import FixedReference, HardRefresh
from shiftlab.training.rollouts import OnPolicyRollouts
from shiftlab.training.sources import OfflinePairs, OnPolicyPairs
from shiftlab.validation import ConfigError


def test_every_pair_source_has_exactly_one_recipe():
    assert set(SOURCES) == set(SourceKind)


def test_sizes_are_checked_against_the_task_and_name_the_key():
    task = Task(corpus=["a b c"], train_prompts=["a", "b"], eval_prompts=["c"], oracle=None, grammar=None)
    with pytest.raises(ConfigError, match=r"`preferences\.n_prompts` must be ≤ the task's 2 training prompts, got 32"):
        check_offline_sizes(compose_config(), task)
    with pytest.raises(ConfigError, match=r"`source\.prompts_per_round` must be ≤ the task's 2 training prompts, got 6"):
        check_onpolicy_sizes(compose_config(["mode=online"]), task)
    human = Task(["a"], ["a"], ["c"], None, None, user_pairs=[])  # a user's own pairs: no prompt budget to check
    check_offline_sizes(compose_config(), human)


@pytest.mark.parametrize("mode,source,schedule", [
    ("offline", OfflinePairs, FixedReference),
    ("trdpo", OfflinePairs, HardRefresh),
    ("oaif", OnPolicyPairs, FixedReference),
    ("online", OnPolicyPairs, HardRefresh),
    ("rl", OnPolicyRollouts, FixedReference),
])
def test_each_cell_gets_its_source_and_schedule_and_a_trainable_copy_of_sft(tmp_path_factory, mode, source, schedule):
    cache = tmp_path_factory.getbasetemp() / "factory_cache"  # one π_sft for every cell
    cfg = compose_config([f"cache_dir={cache}", f"mode={mode}"] + (["source.sample_every=1"] if mode == "rl" else []))
    parts = build_training(cfg, NullRunLog(), progress_factory(enabled=False))
    assert type(parts.source) is source and type(parts.schedule) is schedule
    sft = parts.evaluator.sft
    assert parts.policy is not sft and all(p.requires_grad for p in parts.policy.parameters())
    assert not any(p.requires_grad for p in sft.parameters())
    if schedule is FixedReference:
        assert parts.schedule.ref is sft  # π_ref = π_sft: no copy, shared evaluation forwards
    else:
        assert parts.schedule.ref is not sft and parts.schedule.ref is not parts.policy
