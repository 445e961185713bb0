"""Where one evaluation's time goes: `cProfile` of the evaluator a run builds, on the cache an end-to-end run
left behind (its π_sft and preference set, so nothing is trained again).

The evaluator is built by `shiftlab.experiment.factory.build_training`, exactly as a run builds it, and called once to
warm up, then once under the profiler. Rows are shiftlab's own functions by cumulative time (a function's time
includes what it calls, so nested rows overlap); together they say which part of the evaluation to make cheaper.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path

import torch

SHOWN = 10


def _compose(repo: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from shiftlab.config import register_configs
    from shiftlab.validation import validate

    register_configs()
    with initialize_config_dir(config_dir=str((repo / "conf").resolve()), version_base="1.3"):
        return validate(OmegaConf.to_object(compose(config_name="train", overrides=overrides)))


def profile_evaluation(repo: Path, overrides: list[str], workdir: Path) -> tuple[float, list[tuple[str, float]]]:
    """(seconds of the profiled evaluation, [(function, cumulative seconds)]) for the config the overrides give."""
    from shiftlab.cell import cell_of
    from shiftlab.experiment.factory import build_training
    from shiftlab.experiment.setup import progress_factory, quiet_libraries, seed_everything
    from shiftlab.rundir.runlog import RunLog

    cfg = _compose(repo, overrides)
    quiet_libraries()
    seed_everything(cfg.seed, cfg.threads)
    log = RunLog(workdir / "profile_run", {"cell": cell_of(cfg)})
    training = build_training(cfg, log, progress_factory(enabled=False))
    training.evaluator(training.policy, training.schedule.ref, 0)  # warm-up
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    training.evaluator(training.policy, training.schedule.ref, 0)
    profiler.disable()
    seconds = time.perf_counter() - start
    rows = [(f"{Path(path).parent.name}/{Path(path).name}:{name}", cumulative)
            for (path, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items() if _shown(path, name)]
    rows.sort(key=lambda r: -r[1])
    torch.set_num_threads(cfg.threads)
    return seconds, rows[:SHOWN]


def _shown(path: str, name: str) -> bool:
    """shiftlab's functions, less the evaluator's own `__call__` (the whole) but with the oracle's."""
    if "/shiftlab/" not in path or "/bench/" in path:
        return False
    return name != "__call__" or "oracle" in Path(path).name


def render_profile(mode: str, seconds: float, rows: list[tuple[str, float]]) -> str:
    lines = [f"Where one evaluation's {seconds:.2f} s go (mode={mode}, cProfile, cumulative; nested rows overlap):", "",
             "| function | seconds | share |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {s:.2f} | {s / seconds:.0%} |" for name, s in rows]
    return "\n".join(lines)
