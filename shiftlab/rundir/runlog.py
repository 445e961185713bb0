"""The run log: append-only JSON-lines files inside the (Hydra-owned) run directory, flushed on every write.

    run.json        cell, source, reference, seed, status, steps, wall time, overrides, processes (data-parallel
                    ranks); resumed_at, last_checkpoint
    metrics.jsonl   one row per training step and per evaluation (names: shiftlab/metrics.py)
    events.jsonl    refreshes, tied rounds, cache hits, ...
    curves.jsonl    depth curves at each evaluation
    samples.jsonl   a few π_θ samples per evaluation, for reading
    sft.jsonl       π_sft's training curve (copied from the cache when π_sft was reused)
    optimum.jsonl   the KL-regularised optimum's frontier, one row per β (shiftlab/stages/optimum.py); a table
                    written whole at the start (`table`), not a log: it is not cut back on resume

Every row is one `write` followed by a flush, so a killed run loses at most its last, partial line (readers skip
it). A checkpoint records each file's length; resuming truncates the files back to it, which drops the rows
written after the checkpoint (and any partial line) before the resumed steps write them again.

A tracker (`tracker=tensorboard | wandb`, shiftlab/rundir/trackers.py) is handed each metric row and each batch of
samples as written, so it mirrors exactly what the files hold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shiftlab.rundir.trackers import Tracker


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write null so every reader (pandas included) parses the row."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


class RunDirError(ValueError):
    """The run directory cannot be used as asked (in use, already holds a run, log shorter than its checkpoint)."""


class _JsonLines:
    def __init__(self, path: Path, truncate: bool):
        self.path = path
        # append mode: every write lands at the end of the file even after `truncate_to` shortened it
        self._file = open(path, "w" if truncate else "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> dict[str, Any]:
        clean = {k: _clean(v) for k, v in row.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        return clean  # what the file now holds: a tracker mirrors exactly this

    def sync(self) -> int:
        """Flush to disk and return the length: a checkpoint must never record rows the disk does not hold."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return os.fstat(self._file.fileno()).st_size

    def truncate_to(self, size: int) -> None:
        have = os.fstat(self._file.fileno()).st_size
        if have < size:
            raise RunDirError(
                f"{self.path} holds {have} bytes but held {size} at the checkpoint: the run log was cut or "
                "replaced, so the run cannot be continued exactly (start a new run)"
            )
        os.truncate(self.path, size)

    def close(self) -> None:
        self._file.close()


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on the run directory for as long as the run lives: two processes appending to one run
    log would interleave their rows. The kernel drops the lock when the process dies, even by SIGKILL, so a
    killed run never leaves a stale lock behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked
        yield
        return
    with open(run_dir / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunDirError(f"run directory {run_dir} is in use by another process ({handle.read().strip()})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def utc_now() -> str:
    """The wall clock as run.json records it: UTC, ISO 8601, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunLog:
    FILES = ("metrics", "events", "curves", "samples", "sft")

    def __init__(self, run_dir: Path | str, meta: Mapping[str, Any], truncate: bool = False, tracker: Tracker | None = None):
        """`truncate`: start the files empty (a run restarted in its own directory); else append to them.
        `tracker`: mirrors every metric row and every sample written (shiftlab/rundir/trackers.py); closed by `finish`."""
        self.tracker = tracker
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start = time.perf_counter()
        # started_at survives a resume (the resumed run's meta carries it), so a sweep's span counts from its first start
        self._meta = {"started_at": utc_now()} | dict(meta) | {"status": "running"}
        self._write_meta()
        self._files = {name: _JsonLines(self.dir / f"{name}.jsonl", truncate) for name in self.FILES}
        self.counters: dict[str, int] = {"pairs_seen": 0, "oracle_calls": 0, "policy_samples": 0}

    def state_dict(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "elapsed": self.elapsed(),
            "sizes": {name: f.sync() for name, f in self._files.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Back to the checkpoint: rows written after it are dropped, budgets and the clock continue from it."""
        for name, size in state["sizes"].items():
            self._files[name].truncate_to(size)
        self.counters = dict(state["counters"])
        self._start = time.perf_counter() - state["elapsed"]

    def note(self, **meta: Any) -> None:
        """Add to run.json (e.g. where a resume started)."""
        self._meta |= meta
        self._write_meta()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def _axes(self, step: int) -> dict[str, Any]:
        return {"step": step, **self.counters, "time": round(self.elapsed(), 3)}

    def metrics(self, step: int, values: Mapping[str, Any]) -> None:
        row = self._files["metrics"].write(self._axes(step) | dict(values))
        if self.tracker is not None:
            self.tracker.log_metrics(row, step)

    def event(self, step: int, event: str, **details: Any) -> None:
        self._files["events"].write({"step": step, "event": event, **details})

    def curve(self, step: int, name: str, t: list[int], value: list[float], stderr: list[float]) -> None:
        self._files["curves"].write({"step": step, "curve": name, "t": t, "value": value, "stderr": stderr})

    def samples(self, step: int, rows: list[Mapping[str, Any]]) -> None:
        written = [self._files["samples"].write({"step": step, **row}) for row in rows]
        if self.tracker is not None:
            self.tracker.log_samples(step, written)

    def sft_rows(self, rows: list[Mapping[str, Any]]) -> None:
        for row in rows:
            self._files["sft"].write(row)

    def table(self, name: str, rows: list[Mapping[str, Any]]) -> None:
        """Write `<name>.jsonl` whole, atomically (a reader sees the old table or the new one, never a part)."""
        tmp = self.dir / f"{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n" for row in rows), encoding="utf-8")
        os.replace(tmp, self.dir / f"{name}.jsonl")

    def count(self, **increments: int) -> None:
        for key, value in increments.items():
            self.counters[key] += value

    def finish(self, status: str, steps: int) -> None:
        self._meta |= {"status": status, "steps_done": steps, "wall_time_s": round(self.elapsed(), 3),
                       "finished_at": utc_now()}
        self._write_meta()
        for f in self._files.values():
            f.close()
        if self.tracker is not None:
            self.tracker.close()

    def _write_meta(self) -> None:
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(self._meta, indent=2), encoding="utf-8")
        os.replace(tmp, self.dir / "run.json")


class NullRunLog:
    """The run log of a data-parallel rank other than 0: the same calls, nothing written (rank 0 writes the one log)."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {"pairs_seen": 0, "oracle_calls": 0, "policy_samples": 0}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def count(self, **increments: int) -> None:
        for key, value in increments.items():
            self.counters[key] += value

    def note(self, **meta: Any) -> None: ...

    def metrics(self, step: int, values: Mapping[str, Any]) -> None: ...

    def event(self, step: int, event: str, **details: Any) -> None: ...

    def curve(self, step: int, name: str, t: list[int], value: list[float], stderr: list[float]) -> None: ...

    def samples(self, step: int, rows: list[Mapping[str, Any]]) -> None: ...

    def sft_rows(self, rows: list[Mapping[str, Any]]) -> None: ...

    def table(self, name: str, rows: list[Mapping[str, Any]]) -> None: ...

    def finish(self, status: str, steps: int) -> None: ...
