"""Process-wide set-up for a run: library verbosity, seeds and threads, progress bars."""

from __future__ import annotations

import contextlib
import random
import sys
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


def quiet_libraries() -> None:
    """Keep the terminal for shiftlab's own phases: no per-save progress bars or config notices from transformers."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def progress_factory(enabled: bool):
    def make(total: int, desc: str):
        if not enabled:
            return contextlib.nullcontext(_Silent())
        return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, file=sys.stderr)

    return make


class _Silent:
    """The progress bar of a run with progress=false (and of every non-main rank): it shows nothing."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
