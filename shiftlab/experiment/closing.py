"""What a finished run says on the console: its last evaluation in a few lines, and how to build its report.

`format_run_summary` is pure (a metrics row and run.json in, lines out); the lifecycle prints it to stdout when a
run finishes (never into the run log, which already holds every number). After a multirun, the Hydra callback
`ReportCommand` (conf/train.yaml, hydra.callbacks) prints the report command for the whole sweep directory.
Free of torch: Hydra instantiates the callback in the process that only hands out a parallel sweep's runs.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# (label, column, unit); a column the run did not log is left out, one it logged as null reads "n/a"
SUMMARY_ROWS = (
    ("eval reward (proxy)", "eval/reward", ""),
    ("eval reward (gold)", "eval/gold_reward", ""),
    ("KL(π_θ‖π_sft)", "eval/kl_sft", " nats"),
    ("KL(π_θ‖π_ref)", "eval/kl_ref", " nats"),
    ("state shift", "eval/state_kl", " nats, KL(d_θ‖d_μ) at full depth"),
)


def report_command(path: Path | str) -> str:
    return f"python scripts/report.py {shlex.quote(str(path))}"


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _mean_se(row: Mapping[str, Any], column: str, unit: str) -> str:
    mean = _number(row.get(column))
    if mean == "n/a":
        return mean
    se = row.get(f"{column}_se")
    return (mean if se is None else f"{mean} ± {_number(se)}") + unit


def format_run_summary(eval_row: Mapping[str, Any] | None, meta: Mapping[str, Any], run_dir: Path | str) -> str:
    """The closing lines of a run: the last evaluation's reward (proxy, and gold where logged) ± s.e., KL to π_sft
    and to π_ref, the state shift, wall time, where the run is and the command that builds its report."""
    steps = meta.get("steps_done", meta.get("steps", "?"))
    wall = meta.get("wall_time_s")
    took = f" in {format_duration(wall)}" if isinstance(wall, (int, float)) else ""
    head = f"[shiftlab] {meta.get('cell', 'run')} seed {meta.get('seed', '?')}: {meta.get('status', 'finished')}, {steps} steps{took}"
    lines = [head]
    if eval_row is None:
        lines.append("  (no evaluation row in metrics.jsonl)")
    else:
        lines.append(f"  at the last evaluation (step {eval_row.get('step', '?')}; ± one standard error):")
        lines += [f"  {label:<20} {_mean_se(eval_row, column, unit)}{_why_same(column, meta)}"
                  for label, column, unit in SUMMARY_ROWS if column in eval_row]
    lines += [f"  {'run directory':<20} {run_dir}", f"  {'report':<20} {report_command(run_dir)}"]
    return "\n".join(lines)


def _why_same(column: str, meta: Mapping[str, Any]) -> str:
    """A fixed set logs the state shift only where π_sft sampled it (shiftlab/experiment/factory.py), so μ = π_sft
    and the full-depth state KL is KL(π_θ‖π_sft) itself: the two lines print the same number, and should say why."""
    return "; μ = π_sft here, so it equals KL(π_θ‖π_sft)" if column == "eval/state_kl" and meta.get("source") == "offline" else ""


def last_eval_row(metrics_path: Path) -> dict[str, Any] | None:
    """The last evaluation row of a metrics.jsonl (rows with `eval/kl_sft`, which every evaluation logs, oracle or
    not); a partial last line is skipped."""
    found = None
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "eval/kl_sft" in row:
                found = row
    return found


def run_summary(run_dir: Path) -> str:
    """format_run_summary of a run directory on disk."""
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    return format_run_summary(last_eval_row(run_dir / "metrics.jsonl"), meta, run_dir)


def format_sweep_summary(sweep_dir: Path | str, statuses: Sequence[str]) -> str:
    """The closing lines of a multirun: how its runs ended and the command that builds the sweep's report."""
    counts = {s: list(statuses).count(s) for s in dict.fromkeys(statuses)}
    ended = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no run directories found"
    return "\n".join([f"[shiftlab] sweep done: {ended}", f"  {'sweep directory':<20} {sweep_dir}",
                      f"  {'report':<20} {report_command(sweep_dir)}"])


def sweep_statuses(sweep_dir: Path) -> list[str]:
    """run.json's status of each run directory directly under the sweep directory."""
    statuses = []
    for meta_path in sorted(Path(sweep_dir).glob("*/run.json")):
        try:
            statuses.append(str(json.loads(meta_path.read_text(encoding="utf-8")).get("status", "unknown")))
        except (OSError, json.JSONDecodeError, AttributeError):
            statuses.append("unreadable")
    return statuses


class ReportCommand(Callback):
    """hydra.callbacks.report_command: after a multirun, print the sweep's report command (stdout)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        print(format_sweep_summary(sweep_dir, sweep_statuses(sweep_dir)), flush=True)
