"""The cell a run records is derived from what it runs (shiftlab/cell.py): every combination, one answer."""

from __future__ import annotations

import pytest

from shiftlab.cell import CELL_ORDER, MAIN_CELLS, derive_cell
from shiftlab.config import LossKind, ReferenceKind, SourceKind


@pytest.mark.parametrize(
    "source,reference,loss,cell",
    [("offline", "fixed", "dpo", "offline"), ("offline", "hard", "dpo", "trdpo"), ("offline", "soft", "dpo", "trdpo"),
     ("onpolicy", "fixed", "dpo", "oaif"), ("onpolicy", "hard", "dpo", "online"), ("onpolicy", "soft", "dpo", "online"),
     ("rollouts", "fixed", "rloo", "rl"),
     ("offline", "fixed", "ipo", "offline"), ("onpolicy", "hard", "hinge", "online")],  # the loss is its own axis
)
def test_the_design_cells(source, reference, loss, cell):
    assert derive_cell(source, reference, loss) == cell
    assert derive_cell(SourceKind(source), ReferenceKind(reference), LossKind(loss)) == cell  # enums or values


@pytest.mark.parametrize(
    "source,reference,loss",
    [("rollouts", "fixed", "dpo"), ("rollouts", "hard", "rloo"), ("offline", "fixed", "rloo"), ("onpolicy", "soft", "rloo")],
)
def test_a_combination_outside_the_design_is_named_by_its_parts_not_a_cell(source, reference, loss):
    name = derive_cell(source, reference, loss)
    assert name == f"{source}-{reference}-{loss}" and name not in CELL_ORDER


def test_the_cell_names():
    assert MAIN_CELLS == ("offline", "trdpo", "oaif", "online") and CELL_ORDER == (*MAIN_CELLS, "rl")
