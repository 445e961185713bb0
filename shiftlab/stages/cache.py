"""The stage cache: π_sft and the offline set live under `cache_dir`, keyed by a hash of everything that
determines them, so a second run (or every run of a study) reuses them. Entries are written to a temporary
directory and renamed, so an interrupted build never leaves a half-written entry behind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from enum import Enum
from pathlib import Path
from typing import Any

from shiftlab import __version__


def fingerprint(*parts: Any) -> str:
    """A short stable hash of config sections (dataclasses, enums, plain values)."""

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Enum):
            return obj.value
        return obj

    blob = json.dumps([__version__, *map(plain, parts)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def publish(tmp: Path, final: Path) -> None:
    if final.exists():  # another run won the race; both built the same thing
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(final)


def local_stamp(path: str | None) -> list | None:
    """Sizes and modification times of a local file or folder, so that editing local data or a local checkpoint
    invalidates the cache (a hub id or a missing path stamps as None)."""
    if not path or not Path(path).expanduser().exists():
        return None
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())[:1000]
    return [[str(f.relative_to(root)) if f != root else "", f.stat().st_size, f.stat().st_mtime_ns] for f in files]
