"""Entry-point helpers: turn expected user errors into one clear line and a non-zero exit, not a traceback.
Set SHIFTLAB_DEBUG=1 to see the traceback instead."""

from __future__ import annotations

import contextlib
import os
import sys

from shiftlab.data.pairs import PreferenceDataError
from shiftlab.training.loop import NonFiniteError
from shiftlab.training.ranks import DistributedSetupError
from shiftlab.validation import ConfigError

USER_ERRORS = (ConfigError, PreferenceDataError, FileNotFoundError, NonFiniteError, DistributedSetupError, ValueError)


@contextlib.contextmanager
def user_errors():
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("SHIFTLAB_DEBUG"):
            raise
        print(f"[shiftlab] error: {err}", file=sys.stderr)
        sys.exit(2)
