"""The run log: append-only JSON-lines files inside the (Hydra-owned) run directory, flushed on every write.

    run.json        cell, source, reference, seed, status, steps, wall time, overrides
    metrics.jsonl   one row per training step and per evaluation (names: shiftlab/metrics.py)
    events.jsonl    refreshes, tied rounds, cache hits, ...
    curves.jsonl    depth curves at each evaluation
    samples.jsonl   a few π_θ samples per evaluation, for reading
    sft.jsonl       π_sft's training curve (copied from the cache when π_sft was reused)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write null so every reader (pandas included) parses the row."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


class _JsonLines:
    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        self._file.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RunLog:
    def __init__(self, run_dir: Path | str, meta: Mapping[str, Any]):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start = time.perf_counter()
        self._meta = dict(meta) | {"status": "running"}
        self._write_meta()
        self._files = {name: _JsonLines(self.dir / f"{name}.jsonl") for name in ("metrics", "events", "curves", "samples", "sft")}
        self.counters: dict[str, int] = {"pairs_seen": 0, "oracle_calls": 0, "policy_samples": 0}

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def _axes(self, step: int) -> dict[str, Any]:
        return {"step": step, **self.counters, "time": round(self.elapsed(), 3)}

    def metrics(self, step: int, values: Mapping[str, Any]) -> None:
        self._files["metrics"].write(self._axes(step) | dict(values))

    def event(self, step: int, event: str, **details: Any) -> None:
        self._files["events"].write({"step": step, "event": event, **details})

    def curve(self, step: int, name: str, t: list[int], value: list[float], stderr: list[float]) -> None:
        self._files["curves"].write({"step": step, "curve": name, "t": t, "value": value, "stderr": stderr})

    def samples(self, step: int, rows: list[Mapping[str, Any]]) -> None:
        for row in rows:
            self._files["samples"].write({"step": step, **row})

    def sft_rows(self, rows: list[Mapping[str, Any]]) -> None:
        for row in rows:
            self._files["sft"].write(row)

    def count(self, **increments: int) -> None:
        for key, value in increments.items():
            self.counters[key] += value

    def finish(self, status: str, steps: int) -> None:
        self._meta |= {"status": status, "steps_done": steps, "wall_time_s": round(self.elapsed(), 3)}
        self._write_meta()
        for f in self._files.values():
            f.close()

    def _write_meta(self) -> None:
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(self._meta, indent=2), encoding="utf-8")
        os.replace(tmp, self.dir / "run.json")
