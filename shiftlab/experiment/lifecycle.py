"""A run's lifecycle: a typed config in, a finished run directory out; and resuming it.

A resumed run rebuilds every stateful piece from the config exactly as at the start (`factory.build_training`),
then overwrites it from the last checkpoint."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from shiftlab.cell import cell_of
from shiftlab.config import ShiftlabConfig, SourceKind, TrackerKind, flatten_config
from shiftlab.experiment.closing import run_summary
from shiftlab.experiment.factory import Training, build_training
from shiftlab.experiment.setup import progress_factory, quiet_libraries, seed_everything
from shiftlab.models.build import save_model
from shiftlab.rundir.checkpoint import Checkpointer, GlobalRng, print_warning, read_latest
from shiftlab.rundir.runlog import NullRunLog, RunDirError, RunLog, hold_run_dir
from shiftlab.rundir.trackers import build_tracker, new_run_id
from shiftlab.training.loop import LoopConfig, Optimization, train
from shiftlab.training.precision import PrecisionChoice, StepProbe, choose_precision
from shiftlab.training.ranks import SINGLE, Processes, connect
from shiftlab.training.sources import OfflinePairs


def run_meta(cfg: ShiftlabConfig, overrides: list[str]) -> dict[str, Any]:
    return {
        "cell": cell_of(cfg),  # derived from what runs; the report reads it from here
        "source": cfg.source.kind.value,
        "reference": cfg.reference.kind.value,
        "seed": cfg.seed,
        "steps": cfg.train.steps,
        "overrides": overrides,
    }


# May differ between a run and its resumption: none of them changes a number the run computes.
RESUME_FREE_KEYS = ("resume", "progress", "cache_dir", "tracker")


def config_identity(cfg: ShiftlabConfig) -> dict[str, Any]:
    """The flattened config a checkpoint must match to be resumed (a changed β would silently mix two runs)."""
    flat = flatten_config(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True))
    return {k: v for k, v in flat.items() if k.split(".")[0] not in RESUME_FREE_KEYS}


def resume_dir(resume: str | None, run_dir: Path) -> Path | None:
    """The run directory `resume` names: `true` is Hydra's run directory, anything else but `false` a path."""
    if resume is None or resume.strip().lower() in ("", "false", "none", "null"):
        return None
    if resume.strip().lower() == "true":
        return run_dir  # may hold no run yet: relaunching a whole study with resume=true starts the missing ones
    target = Path(resume).expanduser()
    if not (target / "run.json").is_file():
        raise FileNotFoundError(f"resume={resume}: {target} holds no run to resume (no run.json)")
    return target


def run(cfg: ShiftlabConfig, run_dir: Path | str, overrides: list[str] | None = None) -> Path:
    """Every stage of one run; everything it writes goes into run_dir (and the shared cache).

    With `cfg.resume`, the run in that directory continues from its newest readable checkpoint (or starts over
    if it wrote none); a finished run is left untouched.
    """
    resuming = resume_dir(cfg.resume, Path(run_dir))
    quiet_libraries()
    processes = connect(cfg.train.device)
    try:
        finished = _start_or_resume(cfg, resuming or Path(run_dir), resuming is not None, overrides, processes)
    except BaseException:
        processes.close(wait=False)  # the launcher stops the other ranks
        raise
    processes.close(wait=True)
    return finished


def _start_or_resume(cfg: ShiftlabConfig, run_dir: Path, resuming: bool, overrides: list[str] | None, processes: Processes) -> Path:
    # Under a multi-process launch only rank 0 owns the run directory; the others write nothing to it.
    with hold_run_dir(run_dir) if processes.is_main else contextlib.nullcontext():
        if not resuming or not (run_dir / "run.json").is_file():
            if resuming:
                print(f"[shiftlab] resume: {run_dir} holds no run yet; starting one", file=sys.stderr)
            if processes.is_main and (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size:
                raise RunDirError(
                    f"{run_dir} already holds a run; pass resume=true to continue it, or choose another hydra.run.dir"
                )
            return _run(cfg, run_dir, run_meta(cfg, overrides or []), None, processes)
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if meta.get("status") == "finished":
            print(f"[shiftlab] {run_dir} has finished already; nothing to resume", file=sys.stderr)
            return run_dir
        checkpoint = read_latest(run_dir, warn=print_warning)
        start = checkpoint["step"] if checkpoint else 0
        how = "" if checkpoint else " (it wrote no checkpoint, so it starts over)"
        print(f"[shiftlab] resuming {run_dir} at step {start}{how}", file=sys.stderr)
        meta = {k: v for k, v in meta.items() if k not in ("status", "steps_done", "wall_time_s", "last_checkpoint",
                                                       "finished_at")}
        return _run(cfg, run_dir, meta | {"resumed_at": [*meta.get("resumed_at", []), start]}, checkpoint, processes)


def choose_run_precision(cfg: ShiftlabConfig, t: Training, processes: Processes, recorded: dict | None) -> PrecisionChoice:
    """train.mixed_precision for this run (`shiftlab.training.precision`): rank 0 decides, every rank follows. The
    probe's batch has the shape of one micro-batch of this rank's share of a step: the set's first pairs where the
    run trains on a fixed set, synthetic rows otherwise."""
    choice = None
    if processes.is_main:
        rows = cfg.source.prompts_per_round * cfg.source.k if cfg.source.kind is SourceKind.rollouts else 2 * cfg.source.batch_size
        rows = max(2, -(-rows // (cfg.optim.grad_accum * processes.world_size)))

        def probe() -> StepProbe:
            own = t.source.collator(t.source.pairs[: rows // 2]) if isinstance(t.source, OfflinePairs) else None
            return StepProbe(t.policy, t.schedule.ref, t.objective, rows=rows, max_length=cfg.train.max_length,
                             max_prompt_length=cfg.train.max_prompt_length, device=processes.device, batch=own)

        choice = choose_precision(cfg.train.mixed_precision, probe, t.policy, processes.device,
                                  Path(cfg.cache_dir).expanduser(), recorded)
    return processes.gather(choice)[0]


def _run(cfg: ShiftlabConfig, run_dir: Path, meta: dict[str, Any], checkpoint: dict[str, Any] | None, processes: Processes = SINGLE) -> Path:
    tracker = None
    if processes.is_main and cfg.tracker.kind is not TrackerKind.none:
        meta = {"tracker_run_id": new_run_id()} | meta  # a resumed run keeps its id: W&B continues the same run
        tracker = build_tracker(cfg.tracker, run_dir, run_id=meta["tracker_run_id"], name="/".join(run_dir.parts[-2:]),
                                resumed_at=checkpoint["step"] if checkpoint else None)
    seed_everything(cfg.seed, cfg.threads)
    if processes.is_main:
        # Without a checkpoint the files start empty; with one, they are cut back to it once it is loaded.
        log = RunLog(run_dir, meta | {"processes": processes.world_size}, truncate=checkpoint is None, tracker=tracker)
        if checkpoint is None:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        if tracker is not None:
            tracker.log_config(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True))
    else:
        log = NullRunLog()
    progress = progress_factory(cfg.progress and processes.is_main)
    steps_done, checkpoints = 0, None
    try:
        t = build_training(cfg, log, progress, processes)
        precision = choose_run_precision(cfg, t, processes, meta.get("mixed_precision"))
        log.note(mixed_precision=precision.as_dict())
        opt = Optimization.build(t.policy, cfg.optim, processes, mixed_precision=precision.bf16)
        parts = {"policy": t.policy, "optimizer": opt.optimizer, "scheduler": opt.scheduler, "reference": t.schedule,
                 "source": t.source, "log": log, "rng": GlobalRng()}
        checkpoints = Checkpointer(run_dir, parts, config_identity(cfg), cfg.checkpoint.every, cfg.checkpoint.keep_last)
        start = checkpoints.restore(checkpoint) if checkpoint is not None else 0
        with progress(total=cfg.train.steps, desc=f"{cell_of(cfg)} training") as bar:
            bar.update(start)
            steps_done = train(t, opt, LoopConfig(cfg.train.steps, cfg.train.eval_every, start), log, progress=bar,
                               checkpoints=checkpoints if processes.is_main else None)
        if processes.is_main:
            save_model(t.policy, t.tokenizer, run_dir / "policy")
    except BaseException:
        if checkpoints is not None and checkpoints.last is not None:
            log.note(last_checkpoint=str(checkpoints.last))
        log.finish("failed", steps_done)
        raise
    log.finish("finished", steps_done)
    if processes.is_main:
        print(run_summary(run_dir), flush=True)  # stdout, for the person who started the run; the log has it all
    return run_dir
