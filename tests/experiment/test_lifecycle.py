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
