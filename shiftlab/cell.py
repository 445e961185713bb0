"""The study's cell: named from what a run actually does, never declared.

A cell is the pair source × the reference schedule of the 2x2 design, plus the RL reference point. A `mode`
preset (conf/mode/*.yaml) only sets those parts, and the command line may change any of them afterwards
(`mode=offline source=onpolicy` samples on-policy), so the name is derived here, once, from the parts: run.json
records it, the progress bar and Hydra's run directory show it (the `cell` resolver, `config.register_configs`),
and the report reads the recorded name instead of deriving it again.

Kept at the package's top level, beside config.py, and free of torch: the config's resolver and the report import it.
"""

from __future__ import annotations

from enum import Enum

# The 2x2 design (pair source x reference), in the report's order, then the RL reference point.
MAIN_CELLS = ("offline", "trdpo", "oaif", "online")
CELL_ORDER = (*MAIN_CELLS, "rl")

# (source, moving reference?) -> cell. Hard and soft refreshes are the same cell: both move π_ref toward π_θ.
_DESIGN = {("offline", False): "offline", ("offline", True): "trdpo",
           ("onpolicy", False): "oaif", ("onpolicy", True): "online"}


def derive_cell(source: Enum | str, reference: Enum | str, loss: Enum | str) -> str:
    """The cell of a run with this pair source, reference schedule and loss (enum members or their values).

    The preference losses (dpo, ipo, hinge) are an axis of their own, recorded in the config: they do not change
    the cell. RLOO on rollouts against a fixed π_ref is `rl`. Any other combination (validation rejects them, but
    Hydra names the run directory before validation runs) gets a name that spells out its parts, not a cell's.
    """
    source, reference, loss = (x.value if isinstance(x, Enum) else str(x) for x in (source, reference, loss))
    if loss == "rloo":
        if (source, reference) == ("rollouts", "fixed"):
            return "rl"
    elif source in ("offline", "onpolicy") and reference in ("fixed", "hard", "soft"):
        return _DESIGN[(source, reference != "fixed")]
    return f"{source}-{reference}-{loss}"


def cell_of(cfg) -> str:
    """The cell of a `ShiftlabConfig` (untyped here so that config.py can import this module)."""
    return derive_cell(cfg.source.kind, cfg.reference.kind, cfg.loss.kind)
