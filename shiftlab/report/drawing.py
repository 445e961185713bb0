"""Shared pieces of the report's figures: axis labels with units, symlog axes with 1-2-5 ticks, y limits and t bands
cut to a metric's range, cell-mean lines, fixed-budget stacks, refresh strips, legends. No I/O, no pyplot state.

Conventions every figure keeps:
- each cell has a colour, a marker and a line style (report/colours.py): colour is never the only cue;
- a band is cut to the values its metric can take (shiftlab.metrics.value_range): no negative KL, no accuracy > 1;
- a NaN breaks a line; nothing is interpolated across a missing value;
- every axis names its unit (shiftlab.metrics.unit);
- a quantity ≥ 0 whose cells differ by an order of magnitude or more gets a symlog axis with 1-2-5 ticks, so the
  small cells are not flattened under the large one.
Lines are the mean across the seeds of a cell with a 95% Student-t band (not seaborn's bootstrap: with three seeds a
percentile bootstrap is too narrow, and it is slow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from matplotlib.transforms import offset_copy
from scipy import stats

from shiftlab.metrics import direction, unit, value_range
from shiftlab.report.colours import cell_style

BAND = "lines: mean over seeds; bands: 95% t interval, cut to the metric's possible range"
ARROW = {"higher": " (↑ better)", "lower": " (↓ better)", "neutral": ""}
DEPTH_UNIT = {"state_kl_depth": "response tokens", "off_support_depth": "response words"}  # what t counts
DEPTH_YLABEL = {"state_kl_depth": "KL(d_θ,t ‖ d_μ,t)  [nats]", "off_support_depth": "off support  [fraction of samples]"}
DEPTH_RANGE = {"state_kl_depth": (0.0, math.inf), "off_support_depth": (0.0, 1.0)}
# x-axes in words (shiftlab.metrics names their counters; a reader wants the phrase)
X_LABELS = {"step": "optimizer step", "oracle_calls": "oracle calls (labels)", "pairs_seen": "pairs seen",
            "policy_samples": "policy samples", "time": "wall-clock time [s]"}
NAMES = {"eval/kl_ref": "KL(π_θ‖π_ref)", "eval/kl_sft": "KL(π_θ‖π_sft)", "eval/reward": "eval/reward"}
KL_SFT_LABEL = "KL(π_θ‖π_sft) [nats]"
SCORES = {"eval/reward": "oracle score", "eval/gold_reward": "gold score", "rl/reward": "oracle score"}  # no unit
# Reference values a reader compares a panel with: (value, what it means)
REFERENCE_LINES = {"eval/c2st_acc": (0.5, "chance"), "eval/c2st_acc_mu": (0.5, "chance"),
                   "eval/kl_shift_ratio": (1.0, "equal shift")}
SYMLOG_LINTHRESH = 1.0  # nats: linear below (where every run starts), logarithmic above
FIXED_BUDGET_NOTE = "fixed label budget: every evaluation, as a vertical range"
STACK_SPACING_PT = 9  # horizontal offset between fixed-budget stacks that share one budget


# ---------------------------------------------------------------------------------------------------- styles, axes

def cell_palette(cells: list[str]) -> dict[str, str]:
    """A fixed colour per cell, stable across figures and reports (report/colours.py)."""
    return {c: s["color"] for c, s in cell_style(cells).items()}


def axis_label(name: str) -> str:
    """'optimizer step', 'KL(π_θ‖π_sft) [nats]', 'eval/ess [fraction of N]': the axis's quantity and unit."""
    if name in X_LABELS:
        return X_LABELS[name]
    u = unit(name) or SCORES.get(name, "no unit")
    return f"{NAMES.get(name, name)} [{u}]"


def label_with_arrow(name: str) -> str:
    return name + ARROW[direction(name)]


def nice_ticks(hi: float) -> list[float]:
    """0, 0.5, 1, 2, 5, 10, 20, 50, … up past `hi`, where matplotlib's symlog ticks would label only the decades."""
    top = max(1, math.ceil(math.log10(max(hi, 1.0))) + 1)
    return [0.0, 0.5] + [m * 10.0 ** k for k in range(top) for m in (1, 2, 5)]


def set_symlog(ax, axis: str, hi: float) -> None:
    """Symlog (linear below SYMLOG_LINTHRESH) on `axis` ("x"/"y") with the 1-2-5 ticks labelled plainly."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=SYMLOG_LINTHRESH)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(nice_ticks(hi)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    minor = [m * 10.0 ** k for k in range(int(math.log10(max(hi, 1.0))) + 2) for m in (3, 4, 6, 7, 8, 9)]
    target.set_minor_locator(FixedLocator([0.1 * k for k in range(1, 10) if k != 5] + minor))
    target.set_minor_formatter(NullFormatter())


def wants_symlog(peaks: Sequence[float], floor: float = SYMLOG_LINTHRESH) -> bool:
    """Whether a ≥ 0 quantity whose groups (cells) peak at `peaks` needs a log axis: the largest peak is ≥ 10× the
    smallest (peaks below `floor` count as `floor`), or the range reaches two decades above `floor`."""
    p = np.asarray([v for v in peaks if np.isfinite(v)], float)
    if not len(p) or p.max() <= floor:
        return False
    return p.max() / max(p.min(), floor) >= 10 or p.max() / floor >= 100


def set_ylim(ax, values: np.ndarray, bounds: tuple[float, float], extra: Sequence[float] = (),
              symlog: bool = False) -> None:
    """Keep the runs' own range in view (a t band with 2-3 seeds can be many times wider than the data), never past
    what the metric can take; `extra` values (reference lines) stay in view too."""
    v = np.r_[np.asarray(values, float)[np.isfinite(values)], list(extra)]
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())  # the data always stay in view, even a value past a bound (a bug)
    span = (bounds[1] - bounds[0]) if np.isfinite(bounds[1] - bounds[0]) else (hi - lo)
    margin = 0.015 * span  # lets a marker sitting on a bound show whole, without a tick beyond the bound
    if symlog:
        ax.set_ylim(min(lo, max(lo - 0.05 * SYMLOG_LINTHRESH, bounds[0] - 0.05 * SYMLOG_LINTHRESH)), hi * 1.35 + 0.1)
        return
    pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 0.1
    ax.set_ylim(min(lo, max(lo - pad, bounds[0] - margin)), max(hi, min(hi + pad, bounds[1] + margin)))


# ---------------------------------------------------------------------------------------------------- aggregation

def t_interval(values: pd.Series, bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """95% Student-t interval of the mean of `values` (one per seed), cut to `bounds`; a point when there is one."""
    v = np.asarray(values, dtype=float)
    m = v.mean()
    if len(v) < 2:
        return m, m
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return max(m - half, bounds[0]), min(m + half, bounds[1])


def cell_means(d: pd.DataFrame, x: str, y: str, bounds: tuple[float, float] = (-math.inf, math.inf)) -> pd.DataFrame:
    """cell, x, mean, low, high, n: the seeds' mean at each x with its t band cut to `bounds`. Where no run has a
    value at x the mean is NaN, so the line breaks there; the band is NaN below two values."""
    d = d.assign(**{y: pd.to_numeric(d[y], errors="coerce")})  # a column with a logged null is object-typed
    g = d.groupby(["cell", x], sort=True)[y]
    out = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    n = out["n"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * out["std"].to_numpy(float) / np.sqrt(n)
    half[n < 2] = np.nan
    out["low"] = np.maximum(out["mean"] - half, bounds[0])
    out["high"] = np.minimum(out["mean"] + half, bounds[1])
    return out.drop(columns="std")


def align_x(evals: pd.DataFrame, x: str) -> pd.DataFrame:
    """Give the k-th evaluation of every run of a cell the cell's median x, so seeds aggregate even when
    their counters (e.g. oracle_calls) differ slightly."""
    if x not in evals.columns:
        return evals
    d = evals.dropna(subset=[x]).sort_values(["run", "step"]).copy()
    d["_k"] = d.groupby("run").cumcount()
    d[x] = d.groupby(["cell", "_k"])[x].transform("median")
    return d


def fixed_budget_cells(evals: pd.DataFrame, x: str = "oracle_calls") -> list[str]:
    """Cells whose `x` does not move over training (an offline set is labelled once): on that axis their curve is
    a vertical stack at one budget, not a line. A spread within 1% of the level counts as constant."""
    if x not in evals.columns or "cell" not in evals.columns:
        return []
    r = evals.dropna(subset=[x]).groupby("cell")[x].agg(["min", "max"])
    fixed = (r["max"] - r["min"]) <= 0.01 * np.maximum(r["max"].abs(), 1.0)
    return [c for c in r.index[fixed]]


def peaks(d: pd.DataFrame, y: str) -> list[float]:
    return d.groupby("cell")[y].max().tolist() if len(d) else []


# ---------------------------------------------------------------------------------------------------- drawing

def cell_lines(ax, d: pd.DataFrame, x: str, y: str, cells: list[str], bounds=(-math.inf, math.inf),
                marker: bool = True) -> list[str]:
    """Mean line and t band per cell of `d` (all rows kept: a NaN breaks the line); the cells drawn."""
    style = cell_style(cells)
    present = [c for c in cells if c in set(d["cell"])]
    means = cell_means(d[d["cell"].isin(present)], x, y, bounds)
    for cell in present:
        m, s = means[means["cell"] == cell], style[cell]
        ax.fill_between(m[x], m["low"], m["high"], color=s["color"], alpha=0.16, lw=0, gid=f"band:{cell}")
        ax.plot(m[x], m["mean"], color=s["color"], ls=s["linestyle"], lw=1.6, label=cell, gid=f"mean:{cell}",
                marker=s["marker"] if marker else None, ms=4, mec="white", mew=0.4)
    return present


def metric_panel(ax, d: pd.DataFrame, x: str, y: str, cells: list[str], marker: bool = True) -> list[str]:
    """One metric against `x`: cell lines, the metric's reference line, y-limits and -scale; the cells drawn."""
    if y not in d.columns or x not in d.columns or d[[x, y]].dropna().empty:
        empty_panel(ax.figure, ax, f"{y}: not logged")
        return []
    bounds = value_range(y)
    present = cell_lines(ax, d, x, y, cells, bounds, marker)
    ref = _reference(y)
    if ref is not None:
        ax.axhline(ref[0], color="0.3", lw=1.0, ls=(0, (4, 3)), zorder=1, gid=f"reference:{ref[1]}")
        ax.annotate(f"{ref[1]} ({ref[0]:g})", (1.0, ref[0]), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=7, color="0.3", xytext=(-2, 1), textcoords="offset points")
    symlog = bounds[0] >= 0 and not np.isfinite(bounds[1]) and wants_symlog(peaks(d, y))
    if symlog:
        set_symlog(ax, "y", float(np.nanmax(d[y])))
    set_ylim(ax, d[y].to_numpy(float), bounds, [ref[0]] if ref else (), symlog)
    ax.set_ylabel(axis_label(y), fontsize=8)
    ax.set_xlabel(axis_label(x), fontsize=8)
    return present


def _reference(name: str) -> tuple[float, str] | None:
    if name in REFERENCE_LINES:
        return REFERENCE_LINES[name]
    if name.endswith("_excess"):
        return 0.0, "null"
    return None


def fixed_budget_stacks(ax, d: pd.DataFrame, x: str, y: str, cells: list[str]) -> None:
    """Each fixed-budget cell's evaluations as a vertical range with a dot per evaluation at its budget. Cells that
    share a budget (offline and trdpo both label one set) sit side by side, a few points apart."""
    style = cell_style(cells)
    for k, cell in enumerate(cells):
        e = d[d["cell"] == cell].dropna(subset=[x, y])
        if e.empty:
            continue
        shift = offset_copy(ax.transData, fig=ax.figure, x=(k - (len(cells) - 1) / 2) * STACK_SPACING_PT,
                            units="points")
        at, lo, hi = float(e[x].median()), float(e[y].min()), float(e[y].max())
        s = style[cell]
        ax.plot([at, at], [lo, hi], color=s["color"], lw=3, alpha=0.45, solid_capstyle="butt", transform=shift,
                gid=f"stack:{cell}")
        ax.plot(np.full(len(e), at), e[y], ls="none", marker=s["marker"], color=s["color"], ms=3.5, mec="white",
                mew=0.3, transform=shift, gid=f"stack-points:{cell}")
        ax.update_datalim([(at, lo), (at, hi)])
    ax.autoscale_view()


def refresh_marks(events: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Refresh events with the oracle_calls each run had reached at that step."""
    if events.empty or "event" not in events.columns:
        return pd.DataFrame()
    ref = events[events["event"] == "refresh"][["run", "cell", "step"]].dropna()
    if ref.empty or "oracle_calls" not in train.columns:
        return ref
    axis = train.dropna(subset=["step", "oracle_calls"]).sort_values("step")[["run", "step", "oracle_calls"]]
    out = pd.merge_asof(ref.sort_values("step").astype({"step": float}), axis.astype({"step": float}),
                        on="step", by="run", direction="backward")
    return out


def refresh_strip(ax, marks: pd.DataFrame, x: str, cells: list[str]) -> None:
    """Reference refreshes, one labelled row per cell with the cell's own marker: trdpo and online refresh at the
    same steps, and two tick rows in two oranges on one baseline could not be told apart."""
    style = cell_style(cells)
    rows = [c for c in cells if not marks.empty and x in marks.columns and c in set(marks["cell"])]
    for i, cell in enumerate(rows):
        xs, counts = np.unique(marks.loc[marks["cell"] == cell, x].dropna().to_numpy(float), return_counts=True)
        n_runs = max(1, marks.loc[marks["cell"] == cell, "run"].nunique())
        s = style[cell]
        ax.plot(xs, np.full(len(xs), i), ls="none", marker=s["marker"], color=s["color"], ms=5, mec="white", mew=0.4,
                gid=f"refresh:{cell}")
        for at, c in zip(xs, counts):  # refreshes at one budget collapse to one mark: say how many
            if c > n_runs:
                ax.annotate(f"×{c // n_runs}", (at, i), xytext=(5, -3), textcoords="offset points", fontsize=7,
                            color=s["color"])
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for tick, cell in zip(ax.get_yticklabels(), rows):
        tick.set_color(style[cell]["color"])
    ax.set_ylim(-0.7, len(rows) - 0.3 if rows else 0.7)
    if not rows:
        ax.text(0.5, 0.5, "no reference refreshes", ha="center", va="center", transform=ax.transAxes, fontsize=7,
                color="0.4")
    ax.set_ylabel("refresh", fontsize=7)
    ax.set_xlabel(axis_label(x))
    ax.grid(axis="x", color="0.9", lw=0.6)


def cell_handles(cells: list[str], extra: dict[str, str] | None = None) -> list[Line2D]:
    style = cell_style(cells)
    return [Line2D([], [], color=style[c]["color"], ls=style[c]["linestyle"], marker=style[c]["marker"], ms=5, lw=1.6,
                   label=c + (f" ({extra[c]})" if extra and c in extra else "")) for c in cells]


def empty_panel(fig: Figure, ax, text: str) -> Figure:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig
