"""Cell colours (report/colours.py) checked under simulated colour-vision deficiency, and never the only cue."""

from __future__ import annotations

import itertools

import numpy as np

from shiftlab.cell import CELL_ORDER
from shiftlab.report import drawing
from shiftlab.report.colours import (
    CELL_COLOURS,
    CELL_LINESTYLES,
    CELL_MARKERS,
    MIN_DELTA_E,
    VISIONS,
    delta_e,
    hex_to_rgb,
    min_pairwise_delta_e,
    simulate_cvd,
    srgb_to_lab,
)


def test_lab_conversion_matches_reference_values():
    assert np.allclose(srgb_to_lab([1.0, 1.0, 1.0]), [100, 0, 0], atol=0.01)
    assert np.allclose(srgb_to_lab([0.0, 0.0, 0.0]), [0, 0, 0], atol=0.01)
    assert np.allclose(srgb_to_lab([1.0, 0.0, 0.0]), [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65
    assert np.allclose(srgb_to_lab(hex_to_rgb("#808080")), [53.59, 0, 0], atol=0.05)


def test_cvd_simulation_keeps_greys_and_merges_red_with_green():
    grey = np.array([0.5, 0.5, 0.5])
    for vision in VISIONS:
        assert np.allclose(simulate_cvd(grey, vision), grey, atol=2e-3), vision  # achromatic stays achromatic
    red, green = "#D62728", "#2CA02C"
    normal = delta_e(red, green)
    for vision in ("deuteranopia", "protanopia"):
        assert delta_e(red, green, vision) < 0.5 * normal, vision
    # blue–yellow stays distinct for red–green deficiencies
    assert delta_e("#0000FF", "#FFFF00", "deuteranopia") > 60


def test_every_pair_of_cell_colours_stays_apart_under_cvd():
    assert set(CELL_COLOURS) == set(CELL_ORDER)
    for a, b in itertools.combinations(CELL_ORDER, 2):
        for vision in VISIONS:
            d = delta_e(CELL_COLOURS[a], CELL_COLOURS[b], vision)
            assert d >= MIN_DELTA_E, f"{a} vs {b} under {vision}: ΔE {d:.1f}"


def test_the_check_rejects_the_old_two_oranges():
    # the palette the researcher could not read: seaborn colorblind's trdpo and online
    assert min_pairwise_delta_e(["#E69F00", "#D55E00"])[0] < MIN_DELTA_E


def test_colour_is_never_the_only_cue():
    for table in (CELL_MARKERS, CELL_LINESTYLES):
        assert set(table) == set(CELL_ORDER) and len(set(map(str, table.values()))) == len(CELL_ORDER)
    pal = drawing.cell_palette(["rl", "offline", "unknown"])
    assert pal["offline"] == "#0072B2" and pal["rl"] == CELL_COLOURS["rl"] and pal["unknown"] not in CELL_COLOURS.values()
