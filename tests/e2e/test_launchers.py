"""The study in parallel (conf/hydra/launcher/): a multirun under Hydra's joblib and submitit launchers writes
the same run directories as the serial multirun, the runs share one cache safely, a relaunch with resume=true
finishes only what is missing, and each run's torch threads follow the launcher.

Runs are bit-identical across launchers only at equal torch threads, which set the order of float sums (README,
"Running the study in parallel"): the joblib sweep's runs get theirs from the launcher (cores ÷ n_jobs), and the
serial and submitit sweeps are given the same number."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from run_compare import assert_same_run, mark_failed
from tiny import CONF_DIR

from shiftlab.config import register_configs
from shiftlab.launch import launcher_threads, threads_per_run

ROOT = Path(__file__).resolve().parents[2]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # not even the hydra_plugins namespace
        return False


HAS_LAUNCHERS = all(_installed(f"hydra_plugins.hydra_{name}_launcher") for name in ("joblib", "submitit"))
needs_launchers = pytest.mark.skipif(not HAS_LAUNCHERS, reason='needs the launcher plugins: pip install -e ".[parallel]"')

SWEEP = ["debug=tiny", "mode=offline,online", "seed=0,1"]
RUNS = ["0_offline_seed0", "1_offline_seed1", "2_online_seed0", "3_online_seed1"]  # Hydra's job order
JOBLIB = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]  # threads per run: cores // 2, from the launcher


def _joblib_threads() -> int:
    from joblib import cpu_count

    return launcher_threads({"n_jobs": 2}, 2, cpu_count())


def _multirun(tmp: Path, sweep_dir: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "-m", *SWEEP, f"cache_dir={cache}",
           f"hydra.sweep.dir={sweep_dir}", *extra]
    out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The 4-run tiny sweep, run lazily once per module per launcher; all share one cache, and the joblib sweep
    runs first, on an empty cache, so its first two runs both need π_sft at once."""
    tmp, done = tmp_path_factory.mktemp("sweeps"), {}
    same_threads = f"threads={_joblib_threads()}"
    launchers = {"joblib": JOBLIB, "serial": [same_threads], "submitit": ["hydra/launcher=submitit_local", same_threads]}

    def get(name: str) -> tuple[Path, subprocess.CompletedProcess]:
        if "joblib" not in done and name != "joblib":
            get("joblib")
        if name not in done:
            done[name] = (tmp / name, _multirun(tmp, tmp / name, tmp / "cache", *launchers[name]))
        return done[name]

    return get


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@needs_launchers
@pytest.mark.slow
def test_parallel_runs_on_an_empty_cache_train_pi_sft_once_and_take_their_threads_from_the_launcher(sweeps):
    sweep_dir, _ = sweeps("joblib")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == RUNS
    sft = [e["event"] for name in RUNS for e in _events(sweep_dir / name) if e["event"].startswith("sft_")]
    assert sorted(sft) == ["sft_cached"] * 3 + ["sft_trained"], "one run trains π_sft, the others read it"
    built = [e["cached"] for name in RUNS[:2] for e in _events(sweep_dir / name) if e["event"] == "preference_set"]
    assert built == [False, False]  # each seed's offline set built once, by its offline run
    # each worker process resolved `threads` from the launcher (Hydra hands it the registered resolvers)
    assert {OmegaConf.load(sweep_dir / name / "config.yaml").threads for name in RUNS} == {_joblib_threads()}


@needs_launchers
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit"])
def test_every_parallel_run_equals_its_serial_counterpart(sweeps, launcher):
    serial, _ = sweeps("serial")
    parallel, _ = sweeps(launcher)
    for name in RUNS:
        assert_same_run(serial / name, parallel / name)


@needs_launchers
@pytest.mark.slow
def test_a_parallel_relaunch_with_resume_finishes_only_what_is_missing(sweeps, tmp_path):
    serial, _ = sweeps("serial")
    source, _ = sweeps("joblib")
    sweep_dir = tmp_path / "relaunched"
    shutil.copytree(source, sweep_dir)
    shutil.rmtree(sweep_dir / RUNS[1])  # never started
    mark_failed(sweep_dir / RUNS[2])  # stopped after its last checkpoint
    untouched = {name: (sweep_dir / name / "metrics.jsonl").stat().st_mtime_ns for name in (RUNS[0], RUNS[3])}
    out = _multirun(tmp_path, sweep_dir, source.parent / "cache", *JOBLIB, "resume=true")
    for name in untouched:
        assert f"{sweep_dir / name} has finished already" in out.stderr
    assert f"resume: {sweep_dir / RUNS[1]} holds no run yet; starting one" in out.stderr
    assert f"resuming {sweep_dir / RUNS[2]} at step" in out.stderr
    assert out.stderr.count("has finished already") == 2
    assert {name: (sweep_dir / name / "metrics.jsonl").stat().st_mtime_ns for name in untouched} == untouched
    for name in RUNS:
        assert_same_run(serial / name, sweep_dir / name)


# --- threads per run ------------------------------------------------------------------------------------------


def _threads(overrides: list[str]) -> int:
    """`threads` as a job of this launcher resolves it: Hydra sets its config for the job, then the task resolves."""
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        return cfg.threads
    finally:
        HydraConfig.instance().cfg = None  # later compose calls run outside a Hydra job again


@needs_launchers
@pytest.mark.parametrize("overrides,expected", [
    ([], lambda cores: 2),  # one run after another: a run alone keeps its 2 threads (and its numbers)
    (["hydra/launcher=parallel"], lambda cores: 1),  # n_jobs=-1: one run per core
    (["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], lambda cores: max(1, cores // 2)),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=1000"], lambda cores: 1),  # more runs than cores: ≥ 1
    (["hydra/launcher=parallel", "threads=3"], lambda cores: 3),  # the command line wins
    (["hydra/launcher=slurm"], lambda cores: 2),  # cpus_per_task of the example config
    (["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=8"], lambda cores: 8),
    (["hydra/launcher=submitit_local"], lambda cores: 2),  # no CPUs reserved: as a run alone
])
def test_threads_follow_the_launcher(overrides, expected):
    from joblib import cpu_count

    assert _threads(overrides) == expected(cpu_count())


@pytest.mark.parametrize("launcher,cores,expected", [
    ({"n_jobs": -1}, 16, 1), ({"n_jobs": -2}, 16, 1), ({"n_jobs": 3}, 16, 5), ({"n_jobs": 4}, 2, 1),
    ({"n_jobs": None}, 4, 4), ({"cpus_per_task": 6}, 16, 6), ({"cpus_per_task": None}, 16, 2), (None, 16, 2),
])
def test_launcher_threads_make_runs_times_threads_the_cores(launcher, cores, expected):
    assert launcher_threads(launcher, 2, cores) == expected


@pytest.mark.parametrize("launcher,key", [({"n_jobs": 0}, "hydra.launcher.n_jobs"),
                                          ({"cpus_per_task": 0}, "hydra.launcher.cpus_per_task")])
def test_a_bad_launcher_value_fails_naming_the_key(launcher, key):
    with pytest.raises(ValueError, match=key):
        launcher_threads(launcher, 2, 4)


def test_outside_a_hydra_job_threads_are_those_of_a_run_alone():
    assert not HydraConfig.initialized() and threads_per_run(2) == 2
