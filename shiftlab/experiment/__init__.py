"""The experiment: the factory (config → policy, π_ref schedule, pair source and objective, chosen once) and
the run/resume lifecycle around the one loop."""

from typing import Any

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    # lazy: Hydra imports shiftlab.experiment.closing (a callback) in a parallel sweep's launcher process, which
    # never trains and need not load torch
    if name == "run":
        from shiftlab.experiment.lifecycle import run

        return run
    raise AttributeError(f"module 'shiftlab.experiment' has no attribute {name!r}")
