"""Trackers: the run log mirrored into TensorBoard or Weights & Biases (`tracker=tensorboard | wandb`).

The run log stays the source of truth (the report reads only it); a tracker is a view for the tools researchers
already watch. `RunLog` hands it every metric row it writes, with the row's step and the run log's names
(`loss`, `eval/reward`, `pairs_seen`, ...), and every batch of evaluation samples; the lifecycle hands it the
resolved config once. Only rank 0 of a data-parallel run holds a run log, so only rank 0 mirrors.

    tensorboard   <run dir>/tensorboard/events.out.tfevents.*   scalars, the config as hparams and text, samples as text
    wandb         <run dir>/wandb/offline-run-*/                history, run config, samples as a table

The optional packages are imported only when a tracker is built, so a run without one never needs them. A
resumed run appends: TensorBoard is told the step it resumed at (`purge_step`), so the rows written after the
checkpoint, which the run log also dropped, are hidden; W&B continues the same run id, which run.json records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from shiftlab.config import TrackerConfig, TrackerKind, flatten_config
from shiftlab.validation import ConfigError

EXTRAS = {TrackerKind.tensorboard: "tensorboard", TrackerKind.wandb: "wandb"}
NOT_SCALARS = ("step",)  # the x-axis itself, not a series


class Tracker(Protocol):
    def log_metrics(self, row: Mapping[str, Any], step: int) -> None: ...

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


def scalars_of(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric columns of a run-log row (the run log writes NaN/inf as null: those are left out)."""
    return {k: float(v) for k, v in row.items()
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def samples_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Evaluation samples as a Markdown table (TensorBoard renders text summaries as Markdown)."""
    if not rows:
        return "(no samples)"
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "step"))

    def cell(value: Any) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _missing(kind: TrackerKind, err: ImportError) -> ConfigError:
    extra = EXTRAS[kind]
    return ConfigError(f"tracker={kind.value} needs the `{extra}` package, which is not installed ({err}): "
                       f"pip install 'shiftlab[{extra}]' (or pip install {extra}), or run with tracker=none")


class TensorBoardTracker:
    def __init__(self, log_dir: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as err:
            raise _missing(TrackerKind.tensorboard, err) from None
        self._hparams = hparams
        # flushed every few seconds, so a live `tensorboard --logdir` follows the run
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)

    def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
        for name, value in scalars_of(row).items():
            self._writer.add_scalar(name, value, step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        flat = {k: v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
                for k, v in flatten_config(dict(config)).items()}
        # written into this run's own event file: SummaryWriter.add_hparams would start a second run beside it
        for summary in self._hparams(flat, {"eval/reward": 0.0, "eval/kl_sft": 0.0}):
            self._writer.file_writer.add_summary(summary)
        text = json.dumps(dict(config), indent=2, default=str)
        self._writer.add_text("config", "    " + text.replace("\n", "\n    "))  # indented: a Markdown code block

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        self._writer.add_text("samples", samples_markdown(rows), step)

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, cfg: TrackerConfig, run_id: str, name: str):
        try:
            import wandb
        except ImportError as err:
            raise _missing(TrackerKind.wandb, err) from None
        self._wandb = wandb
        # console="off": W&B would otherwise wrap stdout/stderr, which belong to the run (and to pytest)
        self._run = wandb.init(project=cfg.project, mode=cfg.mode.value, dir=str(run_dir), id=run_id, name=name,
                               resume="allow", reinit="create_new", settings=wandb.Settings(console="off"))

    def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
        # rows of one step (an evaluation, then the step's training row) merge into one W&B history row
        self._run.log(scalars_of(row), step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row if k != "step"))
        table = self._wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        self._run.log({"samples": table}, step=step)

    def close(self) -> None:
        self._run.finish()


def new_run_id() -> str:
    """A tracker run id from the OS's entropy (uuid4), never from the seeded generators the run's numbers use."""
    return uuid.uuid4().hex[:12]


def build_tracker(cfg: TrackerConfig, run_dir: Path, *, run_id: str, name: str, resumed_at: int | None) -> Tracker | None:
    """The tracker `tracker.kind` names (None for `none`). `resumed_at`: the step a resumed run starts at."""
    if cfg.kind is TrackerKind.none:
        return None
    if cfg.kind is TrackerKind.tensorboard:
        return TensorBoardTracker(Path(run_dir) / "tensorboard", purge_step=resumed_at)
    return WandbTracker(Path(run_dir), cfg, run_id, name)
