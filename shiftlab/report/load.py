"""Run directories → tidy DataFrames. Read-only: the report never writes into a run directory.

A run directory holds `run.json`, `config.yaml`, `metrics.jsonl` (the run log), `events.jsonl`,
`curves.jsonl` and `samples.jsonl`; only `metrics.jsonl` is required. A study is any set of run
directories, usually the numbered subdirectories of a Hydra multirun sweep.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shiftlab.cell import CELL_ORDER
from shiftlab.config import flatten_config
from shiftlab.metrics import X_AXES

RUN_LOG = "metrics.jsonl"
# A run whose run.json records no cell (none readable, or hand-made): named so, and left out of every contrast.
UNKNOWN_CELL = "unknown"
# Config sections that must agree for a gap comparison to mean anything.
COMPAT_SECTIONS = ("task", "model")


class ReportError(Exception):
    """A problem with the user's input (paths, options, run logs); printed without a traceback."""


@dataclass
class Study:
    """Everything the report reads from a set of run directories, one row per run/row/event."""

    runs: pd.DataFrame  # run, path, cell, source, reference, seed, status, steps, last_step, wall_time_s
    configs: dict[str, dict[str, Any]]  # run -> flattened config ({"loss.beta": 0.1, ...})
    train: pd.DataFrame  # training rows of metrics.jsonl + run, cell, seed
    evals: pd.DataFrame  # evaluation rows (any `eval/` column) + run, cell, seed
    events: pd.DataFrame  # run, cell, step, event, kind
    curves: pd.DataFrame  # run, cell, seed, step, curve, t, value, stderr (one row per depth t)
    samples: pd.DataFrame  # run, cell, step, prompt, response, reward
    notes: list[str] = field(default_factory=list)  # data problems worth telling the reader

    @property
    def cells(self) -> list[str]:
        present = set(self.runs["cell"])
        # natural order for the rest, so that staleness levels read "online every 4, 10, 25" (report/staleness.py)
        return [c for c in CELL_ORDER if c in present] + sorted(present - set(CELL_ORDER), key=_natural_text)


def find_run_dirs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run directories named by `paths`: each path is a run directory or has run directories below it."""
    if not paths:
        raise ReportError("no run directories given")
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ReportError(f"no such directory: {p}")
        if (p / RUN_LOG).is_file():
            found.append(p)
            continue
        below = sorted({f.parent for f in p.rglob(RUN_LOG)}, key=_natural_key)
        if not below:
            raise ReportError(f"no run log ({RUN_LOG}) in {p} or below it")
        found.extend(below)
    unique = list(dict.fromkeys(d.resolve() for d in found))
    return unique


def portable_path(path: str | os.PathLike) -> str:
    """A run directory as a committed report records it: relative to the working directory where it lies below it,
    so the report names no one machine's checkout."""
    p = Path(path)
    return str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else str(p)


def load_study(paths: list[str | os.PathLike], allow_mixed: bool = False) -> Study:
    """Load every run below `paths`; raise ReportError if runs' `task`/`model` configs differ."""
    dirs = find_run_dirs(paths)
    names = _run_names(dirs)
    notes: list[str] = []
    metas, configs, frames = [], {}, {k: [] for k in ("train", "evals", "events", "curves", "samples")}
    for d, name in zip(dirs, names):
        rows, bad = read_jsonl(d / RUN_LOG)
        if bad:
            first = first_unreadable_line(d / RUN_LOG)
            what = "no line of it could be read" if not rows else "truncated write?"
            notes.append(f"run {name}: skipped {bad} unreadable line(s) of {d / RUN_LOG}, the first at line {first} "
                         f"({what})")
        configs[name] = _hashable(flatten_config(_read_yaml(d / "config.yaml")))
        meta = _read_meta(d, name, configs[name], rows)
        metas.append(meta)
        tag = {"run": name, "cell": meta["cell"], "seed": meta["seed"]}
        is_eval = [any(k.startswith("eval/") and v is not None for k, v in r.items()) for r in rows]
        frames["train"].append(pd.DataFrame([r for r, e in zip(rows, is_eval) if not e]).assign(**tag))
        frames["evals"].append(pd.DataFrame([r for r, e in zip(rows, is_eval) if e]).assign(**tag))
        frames["events"].append(pd.DataFrame(read_jsonl(d / "events.jsonl")[0]).assign(**tag))
        frames["curves"].append(_explode_curves(read_jsonl(d / "curves.jsonl")[0]).assign(**tag))
        frames["samples"].append(pd.DataFrame(read_jsonl(d / "samples.jsonl")[0]).assign(**tag))
    runs = pd.DataFrame(metas)
    if not allow_mixed:
        check_compatible(configs, dict(zip(names, dirs)))
    else:
        notes.extend(f"mixed configs allowed: {m}" for m in _incompatibilities(configs, dict(zip(names, dirs))))
    notes.extend(_progress_notes(runs))
    study = Study(runs=runs, configs=configs, notes=notes,
                  **{k: _concat(v, k) for k, v in frames.items()})
    return study


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Rows of a JSON-lines file and the number of unreadable lines (a killed run truncates the last)."""
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def first_unreadable_line(path: Path) -> int:
    """The 1-based number of the first non-empty line of a JSON-lines file that is not a JSON object (0: none)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for k, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return k
            except json.JSONDecodeError:
                return k
    return 0


def _hashable(flat: dict[str, Any]) -> dict[str, Any]:
    """Lists become tuples, so config values can be grouped and compared."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def check_compatible(configs: dict[str, dict[str, Any]], dirs: dict[str, Path]) -> None:
    """Raise ReportError naming both run directories and the key when `task`/`model` settings differ."""
    problems = _incompatibilities(configs, dirs)
    if problems:
        raise ReportError(problems[0] + " — these runs are not comparable for a gap estimate "
                          "(pass allow_mixed=true to report them anyway)")


def _incompatibilities(configs: dict[str, dict[str, Any]], dirs: dict[str, Path]) -> list[str]:
    # `task.seed` is included: the world and π_sft depend on it, so runs with different values are not comparable.
    def section(cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cfg.items() if k.split(".")[0] in COMPAT_SECTIONS}

    with_cfg = [n for n in configs if configs[n]]
    if len(with_cfg) < 2:
        return []
    first = with_cfg[0]
    base = section(configs[first])
    problems = []
    for name in with_cfg[1:]:
        other = section(configs[name])
        for key in sorted(set(base) | set(other)):
            if base.get(key, "<unset>") != other.get(key, "<unset>"):
                problems.append(f"runs {dirs[first]} and {dirs[name]} differ in {key}: "
                                f"{base.get(key, '<unset>')!r} vs {other.get(key, '<unset>')!r}")
                break
    return problems


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ReportError(f"cannot parse {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def _read_meta(d: Path, name: str, cfg: dict[str, Any], rows: list[dict]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    problem = ""
    if (d / "run.json").is_file():
        try:
            meta = json.loads((d / "run.json").read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            problem = f"{d / 'run.json'} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        if not problem and not isinstance(meta, dict):
            problem, meta = f"{d / 'run.json'} holds a JSON {type(meta).__name__}, not an object", {}
    else:
        problem = f"{d / 'run.json'} is missing"
    source = meta.get("source", cfg.get("source.kind"))
    reference = meta.get("reference", cfg.get("reference.kind"))
    steps = [r.get("step") for r in rows if isinstance(r.get("step"), (int, float))]
    return {
        "run": name,
        "path": str(d),
        # recorded by the run from what it ran (shiftlab.cell); never derived again here, so there is one answer
        "cell": meta.get("cell") or UNKNOWN_CELL,
        "source": source,
        "reference": reference,
        "seed": meta.get("seed", cfg.get("seed")),
        "status": meta.get("status", "unknown"),
        "steps": meta.get("steps", cfg.get("train.steps")),
        "last_step": max(steps) if steps else np.nan,
        "wall_time_s": meta.get("wall_time_s", np.nan),
        "started_at": meta.get("started_at"),  # UTC ISO 8601; absent from runs older than the field
        "finished_at": meta.get("finished_at"),
        "overrides": tuple(meta.get("overrides", ())),
        "meta_problem": problem,
    }


def _progress_notes(runs: pd.DataFrame) -> list[str]:
    notes = []
    for r in runs.itertuples():
        planned = isinstance(r.steps, (int, float)) and not pd.isna(r.steps)
        if pd.isna(r.last_step):
            progress = "nothing logged yet" + (f" ({int(r.steps)} steps planned)" if planned else "")
        else:
            progress = f"last step {int(r.last_step)}" + (f" of {int(r.steps)}" if planned else "")
        if r.status == "unknown":
            why = getattr(r, "meta_problem", "") or "its run.json records no status"
            notes.append(f"run {r.run}: {why}, so its status and cell are unknown and it is in no contrast; {progress}")
        elif r.cell == UNKNOWN_CELL:
            notes.append(f"run {r.run}: its run.json records no cell, so it is in no contrast")
        elif r.status != "finished":
            notes.append(f"run {r.run} has status {r.status}, {progress}")
        elif planned and not pd.isna(r.last_step) and r.last_step < r.steps:
            notes.append(f"run {r.run} is marked finished but stopped early: {progress}")
    return notes


def _explode_curves(rows: list[dict]) -> pd.DataFrame:
    out = []
    for r in rows:
        t, v = r.get("t") or [], r.get("value") or []
        se = r.get("stderr") or [np.nan] * len(t)
        for ti, vi, si in zip(t, v, se):
            out.append({"step": r.get("step"), "curve": r.get("curve"), "t": ti, "value": vi, "stderr": si})
    return pd.DataFrame(out, columns=["step", "curve", "t", "value", "stderr"])


def _concat(frames: list[pd.DataFrame], kind: str) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["run", "cell", "seed", "step"])
    df = pd.concat(frames, ignore_index=True)
    axes = [c for c in X_AXES if c in df.columns]
    for c in axes:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if kind in ("train", "evals") and "step" in df.columns:
        df = df.sort_values(["run", "step"], kind="stable").reset_index(drop=True)
    return df


def _run_names(dirs: list[Path]) -> list[str]:
    """Short unique labels: the path below the sweep directory's parent (e.g. `12-00-00/3`)."""
    if len(dirs) == 1:
        return [dirs[0].name]
    root = Path(os.path.commonpath(dirs))
    names = [str(d.relative_to(root.parent)) for d in dirs]
    return names


def _natural_text(text: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))]

