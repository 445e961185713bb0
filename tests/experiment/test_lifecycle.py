"""A run's lifecycle (shiftlab.experiment.lifecycle): what run.json records, what a resume must match, what
`resume=` names."""

from __future__ import annotations

import json

import pytest
from tiny import compose_config

from shiftlab.experiment.lifecycle import RESUME_FREE_KEYS, config_identity, resume_dir, run_meta


def test_run_json_records_the_cell_that_runs_not_the_preset():
    assert run_meta(compose_config(["mode=offline"]), [])["cell"] == "offline"
    assert run_meta(compose_config(["mode=offline", "source=onpolicy"]), [])["cell"] == "oaif"
    meta = run_meta(compose_config(["mode=trdpo", "reference=fixed"]), ["reference=fixed"])
    assert (meta["cell"], meta["source"], meta["reference"], meta["overrides"]) == ("offline", "offline", "fixed", ["reference=fixed"])


def test_resume_identity_holds_every_number_changing_key_and_nothing_else():
    base = config_identity(compose_config())
    assert base["loss.beta"] == 0.1 and base["loss.kind"] == "dpo" and base["seed"] == 0
    assert not [k for k in base if k.split(".")[0] in RESUME_FREE_KEYS]
    assert config_identity(compose_config(["loss.beta=0.2"])) != base
    assert config_identity(compose_config(["progress=true", "cache_dir=/elsewhere"])) == base
    json.dumps(base)  # a checkpoint stores it as JSON


def test_resume_names_hydras_directory_or_a_run(tmp_path):
    for off in (None, "", "false", "None", "null"):
        assert resume_dir(off, tmp_path) is None
    assert resume_dir("true", tmp_path / "fresh") == tmp_path / "fresh"  # a study relaunch may hold no run yet
    with pytest.raises(FileNotFoundError, match=r"holds no run to resume \(no run.json\)"):
        resume_dir(str(tmp_path), tmp_path / "other")
    (tmp_path / "run.json").write_text("{}")
    assert resume_dir(str(tmp_path), tmp_path / "other") == tmp_path


def test_auto_mixed_precision_is_recorded_and_its_no_keeps_the_float32_run(tmp_path, monkeypatch):
    """train.mixed_precision=auto: the real probe runs before training, yet when it picks "no" the run's files equal
    a train.mixed_precision=no run's; run.json records the choice; a second run reuses the cached verdict."""
    from run_compare import assert_same_run

    from shiftlab.experiment.lifecycle import run
    from shiftlab.training import precision

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda cpuinfo=None: {"avx512_bf16"})  # so the probe runs here
    real = precision.StepProbe.measure
    measured = []

    def slow_bf16(step, calls=precision.PROBE_CALLS):  # the real probe, its timing overruled: bf16 "slower"
        measured.append(real(step, calls))
        return precision.Measurement(1.0, 2.0, measured[-1].stat_diff)

    monkeypatch.setattr(precision.StepProbe, "measure", slow_bf16)
    overrides = [f"cache_dir={tmp_path / 'cache'}", "train.steps=2", "sft.steps=10", "eval.divergences=false"]
    plain = run(compose_config([*overrides, "train.mixed_precision=no"]), tmp_path / "no")
    assert json.loads((plain / "run.json").read_text())["mixed_precision"]["chosen"] == "no" and not measured
    auto = run(compose_config([*overrides, "train.mixed_precision=auto"]), tmp_path / "auto")
    choice = json.loads((auto / "run.json").read_text())["mixed_precision"]
    assert (choice["setting"], choice["chosen"], choice["fp32_s"], choice["bf16_s"]) == ("auto", "no", 1.0, 2.0)
    assert len(measured) == 1 and "measured now" in choice["reason"]
    assert_same_run(plain, auto)
    again = run(compose_config([*overrides, "train.mixed_precision=auto"]), tmp_path / "again")
    assert "reused from" in json.loads((again / "run.json").read_text())["mixed_precision"]["reason"]
    assert len(measured) == 1
