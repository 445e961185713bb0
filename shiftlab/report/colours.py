"""Cell colours, markers and line styles, and the colour-vision check they are chosen by.

The five cells get Okabe–Ito colours (Wong 2011, Nature Methods 8:441) picked so that every pair stays apart under
normal vision, deuteranopia and protanopia: at least MIN_DELTA_E in CIELAB after a full-severity simulation
(Machado, Oliveira & Fernandes 2009, the linear-RGB matrices at severity 1). The two offline-data cells share a hue
family (blue / sky blue), the two on-policy cells are green / vermillion; rl, the reference point, is a dark wine
rather than black so it is not mistaken for the optimum's dashed black line. Colour is never the only cue: every
cell also has its own marker and line style.

Pure functions of RGB triples in [0, 1]; no matplotlib here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from shiftlab.cell import CELL_ORDER

Vision = Literal["normal", "deuteranopia", "protanopia"]
VISIONS: tuple[Vision, ...] = ("normal", "deuteranopia", "protanopia")
MIN_DELTA_E = 20.0  # CIE76 distance every pair of cell colours keeps under each vision (a glance, not a squint)

CELL_COLOURS = {"offline": "#0072B2", "trdpo": "#56B4E9", "oaif": "#009E73", "online": "#D55E00", "rl": "#882255"}
CELL_MARKERS = {"offline": "o", "trdpo": "s", "oaif": "^", "online": "D", "rl": "X"}
CELL_LINESTYLES = {"offline": "-", "trdpo": (0, (5, 2)), "oaif": (0, (6, 2, 1.5, 2)), "online": (0, (1.5, 1.5)),
                   "rl": (0, (8, 2, 1.5, 2, 1.5, 2))}
# cells outside the design (e.g. "unknown"): greys, told apart by marker and line style
EXTRA_COLOURS = ("#555555", "#999999", "#333333")
EXTRA_MARKERS = ("v", "P", "*")
EXTRA_LINESTYLES = ((0, (3, 1, 1, 1)), (0, (2, 3)), (0, (10, 3)))
# staleness levels ("online every 4", …, report/staleness.py): an ordered quantity, so a sequential palette (inferno,
# 0.2–0.85: dark = freshest), its pairs ≥ 16 ΔE apart under every VISION and away from offline's blue; each level
# also has its own marker and line style
LEVEL_COLOURS = ("#420a68", "#8c2369", "#cc4248", "#f37819", "#fbbe23")
LEVEL_MARKERS = ("D", "v", "P", "*", "h")
LEVEL_LINESTYLES = ((0, (1.5, 1.5)), "-", (0, (5, 2)), (0, (6, 2, 1.5, 2)), (0, (8, 2, 1.5, 2, 1.5, 2)))
LEVEL_SEPARATOR = " every "

# Machado et al. (2009), severity 1.0, applied to linear RGB
_CVD = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}
# linear sRGB → CIE XYZ (D65), and the D65 white point
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def hex_to_rgb(colour: str) -> np.ndarray:
    """'#RRGGBB' → (3,) sRGB in [0, 1]."""
    h = colour.lstrip("#")
    return np.array([int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def srgb_to_linear(rgb) -> np.ndarray:
    """Undo the sRGB transfer curve (IEC 61966-2-1): light adds linearly only after this."""
    c = np.asarray(rgb, float)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin) -> np.ndarray:
    c = np.clip(np.asarray(lin, float), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def simulate_cvd(rgb, vision: Vision) -> np.ndarray:
    """sRGB (..., 3) as seen with `vision`; values leaving the gamut are clipped, as a screen would."""
    lin = srgb_to_linear(rgb) @ _CVD[vision].T
    return linear_to_srgb(lin)


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB (..., 3) → CIELAB (..., 3), D65 white."""
    xyz = srgb_to_linear(rgb) @ _RGB_TO_XYZ.T / _WHITE
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e(a, b, vision: Vision = "normal") -> float:
    """CIE76 ΔE between two sRGB colours (hex or triples) as seen with `vision`."""
    a, b = (hex_to_rgb(c) if isinstance(c, str) else np.asarray(c, float) for c in (a, b))
    return float(np.linalg.norm(srgb_to_lab(simulate_cvd(a, vision)) - srgb_to_lab(simulate_cvd(b, vision))))


def min_pairwise_delta_e(colours: list[str]) -> tuple[float, str, str, Vision]:
    """The closest pair of `colours` over all VISIONS: (ΔE, colour, colour, vision)."""
    return min(((delta_e(a, b, v), a, b, v) for i, a in enumerate(colours) for b in colours[i + 1:] for v in VISIONS),
               key=lambda t: t[0], default=(np.inf, "", "", "normal"))


def cell_style(cells: list[str]) -> dict[str, dict]:
    """color / marker / linestyle per cell: fixed for the design's cells, sequential for staleness levels (ordered
    by their sampling interval), stable for others (sorted order)."""
    levels = sorted((c for c in set(cells) if LEVEL_SEPARATOR in c and c.rsplit(" ", 1)[-1].isdigit()),
                    key=lambda c: (c.split(LEVEL_SEPARATOR)[0], int(c.rsplit(" ", 1)[-1])))
    extra = sorted(set(cells) - set(CELL_ORDER) - set(levels))
    out = {}
    for c in cells:
        if c in levels:
            k = levels.index(c) % len(LEVEL_COLOURS)
            out[c] = {"color": LEVEL_COLOURS[k], "marker": LEVEL_MARKERS[k], "linestyle": LEVEL_LINESTYLES[k]}
        elif c in CELL_COLOURS:
            out[c] = {"color": CELL_COLOURS[c], "marker": CELL_MARKERS[c], "linestyle": CELL_LINESTYLES[c]}
        else:
            k = extra.index(c)
            out[c] = {"color": EXTRA_COLOURS[k % 3], "marker": EXTRA_MARKERS[k % 3],
                      "linestyle": EXTRA_LINESTYLES[k % 3]}
    return out
