"""Checkpoints: everything a run needs to continue exactly where it stopped, written so a kill never corrupts one.

Layout: `run_dir/checkpoints/step_000050/` holds `state.json` (structure, counters, RNG states, config) and
`tensors.safetensors` (every tensor: π_θ, π_ref, optimizer moments, the on-policy behaviour snapshot, torch
generator states). Nothing is pickled, so loading a checkpoint never runs code from the file.

A checkpoint is built in `step_000050.tmp/`, fsynced, then renamed: a kill during the write leaves only a `.tmp`
directory that readers ignore, and the previous checkpoint intact. The last `keep_last` complete ones are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
FORMAT = 1
_STEP_DIR = re.compile(r"step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not belong to the run being resumed; the message says which."""


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


# --- a nested state as JSON + a flat dict of tensors ---------------------------------------------------------


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """JSON-able structure; every tensor moves into `tensors` under its path. Tuples and non-string dict keys
    are tagged so `decode_tree` gives back exactly the types `load_state_dict` methods expect."""
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise ValueError(f"two tensors of the checkpoint state share the path {path!r}")
        # a private contiguous CPU copy: safetensors refuses tensors sharing storage (tied embeddings)
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode_tree(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {"__items__": [[encode_tree(k, tensors), encode_tree(v, tensors, f"{path}/{k}")] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state at {path or '/'} holds a {type(obj).__name__}, which has no safe encoding")


def decode_tree(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode_tree(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        if obj["__tensor__"] not in tensors:
            raise CheckpointError(f"tensor {obj['__tensor__']!r} is missing from tensors.safetensors")
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(decode_tree(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode_tree(k, tensors): decode_tree(v, tensors) for k, v in obj["__items__"]}
    return {k: decode_tree(v, tensors) for k, v in obj.items()}


# --- checkpoint directories ------------------------------------------------------------------------------------


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first; `.tmp` directories (an interrupted write) are not checkpoints."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_checkpoint(run_dir: Path, step: int, state: Mapping[str, Any], keep_last: int) -> Path:
    """Write atomically (temporary name + rename), then drop all but the newest `keep_last` checkpoints."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step_{step:06d}"
    tmp = root / f"{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = {"format": FORMAT, "step": step, "state": encode_tree(dict(state), tensors)}
    save_file(tensors, tmp / "tensors.safetensors")
    (tmp / "state.json").write_text(json.dumps(tree), encoding="utf-8")
    for name in ("tensors.safetensors", "state.json"):
        _fsync(tmp / name)  # the data is on disk before the rename makes it visible
    if final.exists():  # a stale checkpoint of an abandoned history (resumed from an older one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by `write_checkpoint`; CheckpointError names the directory if anything is unreadable."""
    path = Path(path)
    try:
        tensors = load_file(path / "tensors.safetensors")
        tree = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if tree.get("format") != FORMAT:
            raise CheckpointError(f"format {tree.get('format')!r}, expected {FORMAT}")
        return {"step": tree["step"], **decode_tree(tree["state"], tensors)}
    except (OSError, SafetensorError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from None


def read_latest(run_dir: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The newest readable checkpoint, or None when there is none; an unreadable one (a damaged disk, a copy cut
    short) is reported and the next older one tried, which is still an exact resume point."""
    errors = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            if warn is not None:
                warn(f"{err}; trying an older checkpoint")
    if errors:
        raise CheckpointError(f"no readable checkpoint in {Path(run_dir) / CHECKPOINTS}: {'; '.join(errors)}")
    return None


# --- the pieces of a run -------------------------------------------------------------------------------------


class GlobalRng:
    """Python's, numpy's and torch's global generators. The loop's own draws use private generators, but
    library code may touch the global ones, and an exact resume must not depend on whether it does."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state(legacy=False)
        np_state["state"]["key"] = np_state["state"]["key"].tolist()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        np_state = state["numpy"]
        np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
        np.random.set_state(np_state)
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _first_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    for key in sorted(set(saved) | set(current)):
        if saved.get(key, "<unset>") != current.get(key, "<unset>"):
            return f"config key `{key}` is {current.get(key, '<unset>')!r} but the run was started with {saved.get(key, '<unset>')!r}"
    return None


class Checkpointer:
    """Saves and restores a run's stateful parts, by name, together with the config they belong to."""

    def __init__(self, run_dir: Path, parts: Mapping[str, Stateful], identity: Mapping[str, Any], every: int, keep_last: int):
        self.run_dir, self.parts, self.identity = Path(run_dir), dict(parts), dict(identity)
        self.every, self.keep_last = every, keep_last
        self.last: Path | None = None

    def due(self, step: int, last_step: int) -> bool:
        """Every `every` steps and at the end (every=0: at the end only)."""
        return step == last_step or (self.every > 0 and step % self.every == 0)

    def save(self, step: int) -> Path:
        state = {name: part.state_dict() for name, part in self.parts.items()}
        self.last = write_checkpoint(self.run_dir, step, {"identity": self.identity, **state}, self.keep_last)
        return self.last

    def restore(self, checkpoint: dict[str, Any]) -> int:
        """Load every part; returns the step to continue from. Refuses a checkpoint of another config.

        Each part's state is removed from `checkpoint` once loaded, so a large model is not held twice for the
        rest of the run."""
        problem = _first_difference(checkpoint["identity"], self.identity)
        if problem is not None:
            raise CheckpointError(f"cannot resume {self.run_dir}: {problem} (a resumed run must use its original config)")
        missing = set(self.parts) - set(checkpoint)
        if missing:
            raise CheckpointError(f"checkpoint of {self.run_dir} at step {checkpoint['step']} lacks {sorted(missing)}")
        for name, part in self.parts.items():
            part.load_state_dict(checkpoint.pop(name))
        self.last = self.run_dir / CHECKPOINTS / f"step_{checkpoint['step']:06d}"
        return int(checkpoint["step"])


def print_warning(message: str) -> None:
    print(f"[shiftlab] warning: {message}", file=sys.stderr)
