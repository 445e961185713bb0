"""Typed options of the report scripts, parsed from `key=value` arguments."""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from shiftlab.report.load import ReportError

_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


@dataclass
class ReportConfig:
    name: str = ""  # report folder under `out`; default: name of the directory the inputs share
    out: str = "reports"
    kl_grid: int = 20  # KLs per cell frontier (frontier.csv, the frontier figure); the gap's grid is fixed
    n_boot: int = 2000  # unused since the gap's intervals are Welch t (report/gap.py); old command lines parse
    allow_mixed: bool = False  # report runs whose task/model configs differ instead of refusing
    smooth: int = 10  # rolling-mean window (steps) for training-row curves
    seed: int = 0  # unused, as n_boot: the report draws no random numbers

    def validate(self) -> None:
        for key, low in (("kl_grid", 2), ("n_boot", 100), ("smooth", 1)):
            if getattr(self, key) < low:
                raise ReportError(f"option {key} must be at least {low}, got {getattr(self, key)}")


@dataclass
class PlotConfig:
    name: str = ""
    out: str = "reports"
    allow_mixed: bool = False

    def validate(self) -> None:
        pass


def parse_args(argv: list[str], schema: type) -> tuple[list[str], object]:
    """Split arguments into paths and `key=value` options of `schema` (a dataclass); an existing path
    containing '=' stays a path. Unknown keys and ill-typed values raise ReportError naming the key."""
    known = {f.name: f for f in fields(schema)}
    paths, values = [], {}
    for arg in argv:
        m = _OVERRIDE.match(arg)
        if m is None or Path(arg).exists():
            paths.append(arg)
            continue
        key, raw = m.groups()
        if key not in known:
            raise ReportError(f"unknown option {key!r} (known: {', '.join(known)})")
        default = known[key].default
        values[key] = _convert(key, raw, type(default) if default is not MISSING else str)
    cfg = schema(**values)
    cfg.validate()
    return paths, cfg


def default_name(paths: list[str]) -> str:
    """The name of the deepest directory all inputs share (e.g. a sweep's time stamp)."""
    resolved = [Path(p).resolve() for p in paths]
    common = Path(resolved[0]) if len(resolved) == 1 else Path(*Path(resolved[0]).parts[:_shared(resolved)])
    return common.name or "report"


def _shared(paths: list[Path]) -> int:
    n = 0
    for parts in zip(*(p.parts for p in paths)):
        if len(set(parts)) > 1:
            break
        n += 1
    return n


def _convert(key: str, raw: str, kind: type):
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ReportError(f"option {key} expects true or false, got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ReportError(f"option {key} expects {kind.__name__}, got {raw!r}") from None
