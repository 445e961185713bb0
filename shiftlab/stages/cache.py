"""The stage cache: π_sft and the offline set live under `cache_dir`, keyed by a hash of everything that
determines them, so a second run (or every run of a study) reuses them. Entries are written to a temporary
directory and renamed, so an interrupted build never leaves a half-written entry behind.

Several runs may want one entry at once (a study under a parallel launcher): `cache_entry` lets one build it while
the others wait on `<entry>.lock` (`fcntl.flock`, released by the kernel when its holder dies, even by SIGKILL),
then read what it published. flock is POSIX-only and across machines needs a shared filesystem that supports it
(NFSv4, or Lustre / BeeGFS mounted with flock). Where locking fails, each run builds in a directory of its own
(host and process id in its name) and the first rename wins: duplicated work, never a torn or mixed entry."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
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
    """Rename a finished build into place; if another run published first (locking unavailable), keep theirs."""
    try:
        if not final.exists():
            tmp.rename(final)
            return
    except OSError:  # lost the race between the check and the rename: a directory is never renamed over another
        if not final.exists():
            raise
    shutil.rmtree(tmp, ignore_errors=True)  # both built the same thing


def build_dir(final: Path) -> Path:
    """This process's own build directory for `final`: no other run, on this host or another, writes into it."""
    return final.with_name(f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")


# flock is refused with these on filesystems that do not support it (an NFS without a lock manager, Lustre without
# -o flock); any other error is a real one
_NO_FLOCK = {errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


@contextlib.contextmanager
def entry_lock(final: Path, what: str) -> Iterator[bool]:
    """Hold `<entry>.lock` exclusively (blocking while another run builds the entry). Yields whether it is held:
    False where the filesystem cannot lock (after a warning) or the platform has no flock (not POSIX)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; concurrent runs may each build the entry, the first rename wins
        yield False
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(final.name + ".lock"), "a") as handle:
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"[shiftlab] waiting for another run to finish building {what} in {final}", file=sys.stderr)
                fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
            print(f"[shiftlab] warning: cannot lock {handle.name} ({err.strerror}); concurrent runs may each build "
                  f"{what} (the first to finish is kept)", file=sys.stderr)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def cache_entry(final: Path, marker: str, what: str) -> Iterator[Path | None]:
    """Build `final` at most once across concurrent runs. Yields None when the entry is there to read (its `marker`
    file exists: perhaps another run built it while this one waited), else an empty build directory of this
    process's own, which is published as `final` when the block ends without an exception and removed otherwise.

        with cache_entry(final, "pairs.jsonl", "the offline set") as tmp:
            if tmp is None:
                return read(final)
            write(tmp)
    """
    if (final / marker).exists():  # published entries are complete (renamed into place), so reading needs no lock
        yield None
        return
    with entry_lock(final, what) as locked:
        if (final / marker).exists():
            yield None
            return
        if locked:  # nobody else builds this entry now: what is left of a killed build is garbage
            for stale in final.parent.glob(f"{final.name}.tmp*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = build_dir(final)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish(tmp, final)


def local_stamp(path: str | None) -> list | None:
    """Sizes and modification times of a local file or folder, so that editing local data or a local checkpoint
    invalidates the cache (a hub id or a missing path stamps as None)."""
    if not path or not Path(path).expanduser().exists():
        return None
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())[:1000]
    return [[str(f.relative_to(root)) if f != root else "", f.stat().st_size, f.stat().st_mtime_ns] for f in files]
