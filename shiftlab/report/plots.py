"""DataFrame → matplotlib Figure for the curves over training: KL from π_ref and π_sft, state divergence by depth
and over training, DPO's diagnostics, every run's own trajectory. No I/O and no pyplot state (figures are built
with `Figure()` directly); the conventions every figure keeps and the shared pieces are in report/drawing.py, the
gap's figures in report/frontier_plots.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from shiftlab.metrics import value_range
from shiftlab.report.colours import cell_style
from shiftlab.report.drawing import (
    BAND,
    DEPTH_RANGE,
    DEPTH_UNIT,
    DEPTH_YLABEL,
    FIXED_BUDGET_NOTE,
    NAMES,
    align_x,
    axis_label,
    cell_handles,
    cell_lines,
    empty_panel,
    fixed_budget_cells,
    fixed_budget_stacks,
    label_with_arrow,
    metric_panel,
    peaks,
    refresh_marks,
    refresh_strip,
    set_symlog,
    set_ylim,
    wants_symlog,
)

STATE_METRICS = ("eval/ess", "eval/kl_shift_ratio", "eval/kl_ref_on_data", "eval/kl_ref_on_policy",
                 "eval/state_kl", "eval/c2st_acc", "eval/mmd2", "eval/js_ngram")
DPO_METRICS = ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")
SEED_METRICS = ("eval/reward", "eval/kl_sft")



# ---------------------------------------------------------------------------------------------------- figures

def plot_kl_curves(evals: pd.DataFrame, events: pd.DataFrame, train: pd.DataFrame, cells: list[str]) -> Figure:
    """KL(π_θ‖π_ref) and KL(π_θ‖π_sft) against step and oracle_calls, reference refreshes in a strip below each
    column. On the oracle_calls axis a fixed-budget cell (fixed_budget_cells) is a vertical range of its
    evaluations at its budget; the legend says so."""
    fig = Figure(figsize=(11, 8.6), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 0.08 + 0.07 * max(1, _refreshing_cells(events, cells))])
    marks = refresh_marks(events, train)
    fixed = [c for c in fixed_budget_cells(evals) if c in cells]
    drawn: set[str] = set()
    for j, x in enumerate(("step", "oracle_calls")):
        panels = [fig.add_subplot(grid[i, j]) for i in range(2)]
        stacked = fixed if x == "oracle_calls" else []
        d = align_x(evals, x)
        lines = d[~d["cell"].isin(stacked)] if "cell" in d.columns else d
        for ax, y in zip(panels, ("eval/kl_ref", "eval/kl_sft")):
            drawn |= set(_kl_panel(ax, lines, d, x, y, cells, stacked))
            ax.set_title(f"{NAMES[y]} vs {axis_label(x)}", fontsize=10)
        strip = fig.add_subplot(grid[2, j])
        refresh_strip(strip, marks, x, cells)
        live = [a.get_xlim() for a in panels if a.has_data()]
        if live:
            strip.set_xlim(min(lo for lo, _ in live), max(hi for _, hi in live))
    present = [c for c in cells if c in drawn]
    handles = cell_handles(present, {c: FIXED_BUDGET_NOTE + " on the oracle-calls axis" for c in fixed if c in present})
    handles.append(Patch(color="0.6", alpha=0.3, label="95% t interval over seeds (cut at 0 nats)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"KL from the current reference and from π_sft\n({BAND}; strips: reference refreshes)", fontsize=11)
    return fig


def _refreshing_cells(events: pd.DataFrame, cells: list[str]) -> int:
    if events.empty or "event" not in events.columns:
        return 0
    return len(set(events.loc[events["event"] == "refresh", "cell"]) & set(cells))


def _kl_panel(ax, lines: pd.DataFrame, all_rows: pd.DataFrame, x: str, y: str, cells: list[str],
              stacked: list[str]) -> list[str]:
    """One KL panel: mean lines for the cells that move along `x`, stacks for the fixed-budget ones; the cells drawn."""
    if y not in all_rows.columns or x not in all_rows.columns or all_rows[[x, y]].dropna().empty:
        empty_panel(ax.figure, ax, f"{y}: not logged")
        return []
    drawn = cell_lines(ax, lines, x, y, cells, value_range(y)) if len(lines) else []
    if stacked:
        fixed_budget_stacks(ax, all_rows, x, y, [c for c in cells if c in stacked])
        drawn += [c for c in stacked if c in set(all_rows["cell"])]
    values = all_rows[y].to_numpy(float)
    symlog = wants_symlog(peaks(all_rows, y))
    if symlog:
        set_symlog(ax, "y", float(np.nanmax(values)))
    set_ylim(ax, values, value_range(y), symlog=symlog)
    ax.set_ylabel(axis_label(y))
    ax.set_xlabel(axis_label(x), fontsize=8)
    ax.grid(color="0.93", lw=0.6)
    return drawn


def plot_depth_curves(curves: pd.DataFrame, cells: list[str]) -> Figure:
    """Depth curves (curves.jsonl) at each run's last evaluation."""
    kinds = ["state_kl_depth", "off_support_depth"]
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    axes = fig.subplots(1, len(kinds))
    last = curves[curves["step"] == curves.groupby("run")["step"].transform("max")] if len(curves) else curves
    drawn: list[str] = []
    for ax, kind in zip(axes, kinds):
        d = last[last["curve"] == kind] if len(last) else last
        if d.empty:
            empty_panel(fig, ax, f"{kind}: not logged")
            continue
        bounds = DEPTH_RANGE.get(kind, (-math.inf, math.inf))
        drawn += cell_lines(ax, d, "t", "value", cells, bounds, marker=False)
        symlog = not np.isfinite(bounds[1]) and wants_symlog(peaks(d, "value"))
        if symlog:
            set_symlog(ax, "y", float(np.nanmax(d["value"])))
        set_ylim(ax, d["value"].to_numpy(float), bounds, symlog=symlog)
        ax.set_xlabel(f"depth t [{DEPTH_UNIT.get(kind, 'positions')}]")
        ax.set_ylabel(DEPTH_YLABEL.get(kind, "value"))
        ax.set_title(kind)
    if drawn:
        fig.legend(handles=cell_handles([c for c in cells if c in drawn]), loc="outside lower center",
                   ncols=5, fontsize=8, frameon=False)
    fig.suptitle(f"State divergence by depth at each run's last evaluation\n({BAND})", fontsize=11)
    return fig


def plot_metric_panels(df: pd.DataFrame, metrics: tuple[str, ...], cells: list[str], title: str,
                       ncols: int = 4, smooth: int = 1, max_points: int = 150) -> Figure:
    """One panel per metric against step; `smooth` > 1 applies a per-run rolling mean first (a missing value stays
    missing). Reference lines: chance (0.5) for classifier accuracies, 1 for the shift ratio, 0 for `_excess`."""
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(2.9 * ncols, 2.9 * nrows + 0.7), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    drawn: set[str] = set()
    for ax, y in zip(axes, metrics):
        if y not in df.columns or df[y].isna().all():
            empty_panel(fig, ax, f"{y}: not logged")
            continue
        d = df[["run", "cell", "step", y]].dropna(subset=["step"]).sort_values(["run", "step"])
        if smooth > 1:  # rolling over the values present; a NaN row stays NaN (a gap, not a bridge)
            rolled = d.groupby("run")[y].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
            d[y] = rolled.where(d[y].notna())
        steps = np.sort(d["step"].unique())
        if len(steps) > max_points:  # thin the x grid: a band is computed at every x
            d = d[d["step"].isin(steps[:: int(np.ceil(len(steps) / max_points))])]
        drawn |= set(metric_panel(ax, d, "step", y, cells, marker=smooth <= 1))
        ax.set_title(label_with_arrow(y), fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if drawn:
        fig.legend(handles=cell_handles([c for c in cells if c in drawn]), loc="outside lower center",
                   ncols=5, fontsize=8, frameon=False)
    fig.suptitle(f"{title}\n({BAND})", fontsize=11)
    return fig


def plot_seed_curves(evals: pd.DataFrame, cells: list[str], metrics: Sequence[str] = SEED_METRICS,
                     labels: dict[str, str] | None = None) -> Figure:
    """Small multiples: one column per cell, one row per metric, one thin line per run against step, so every
    seed's own trajectory shows (the other figures average seeds). A run is labelled `labels[run]` (e.g. its seed
    and β) or by its seed; a seed keeps its colour across columns, a second run of one seed (another β) its own
    line style. Each row shares a y range, so cells compare at a glance."""
    present = [c for c in cells if "cell" in evals.columns and c in set(evals["cell"])]
    if not present or "step" not in evals.columns:
        fig = Figure(figsize=(6, 3), layout="constrained")
        return empty_panel(fig, fig.subplots(), "no evaluation rows for these cells")
    nrows, ncols = len(metrics), len(present)
    fig = Figure(figsize=(2.7 * ncols + 0.8, 2.3 * nrows + 0.9), layout="constrained")
    axes = np.array(fig.subplots(nrows, ncols, squeeze=False))
    colours = _seed_colours(evals)
    legend = True  # on the first row drawn: a seed's colour is the same in every row
    for i, y in enumerate(metrics):
        row = axes[i]
        if y not in evals.columns or evals[y].isna().all():
            for ax in row:
                empty_panel(fig, ax, f"{y}: not logged")
            continue
        for ax, cell in zip(row, present):
            _seed_panel(ax, evals[evals["cell"] == cell], y, colours, labels, legend)
        legend = False
        _share_row(row, evals[evals["cell"].isin(present)], y)
        row[0].set_ylabel(axis_label(y), fontsize=8)
    style = cell_style(present)
    for ax, cell in zip(axes[0], present):
        ax.set_title(cell, fontsize=10, color=style[cell]["color"])
    for ax in axes[-1]:
        ax.set_xlabel(axis_label("step"), fontsize=8)
    fig.suptitle("Every run's own trajectory (one thin line per run; columns: cells)")
    return fig


def _seed_colours(evals: pd.DataFrame) -> dict:
    """A colour per seed, the same in every column (viridis: ordered, and readable under colour-vision deficiency)."""
    seeds = sorted(evals["seed"].dropna().unique().tolist(), key=_seed_key) if "seed" in evals.columns else []
    cmap = colormaps["viridis"]
    return {s: cmap(0.85 * k / max(1, len(seeds) - 1)) for k, s in enumerate(seeds)}


def _seed_key(seed) -> tuple:
    """Numeric seeds in numeric order (2 before 10), anything else after them as text."""
    try:
        value = float(seed)
    except (TypeError, ValueError):
        return 1, 0.0, str(seed)
    return (0, value, "") if np.isfinite(value) else (2, 0.0, "")


def _seed_panel(ax, e: pd.DataFrame, y: str, colours: dict, labels: dict[str, str] | None, legend: bool) -> None:
    styles = ("-", "--", ":", "-.")
    runs = e.sort_values(["run", "step"]).groupby("run", sort=False)
    seed_of = e.groupby("run")["seed"].first() if "seed" in e.columns else pd.Series(dtype=object)
    order = sorted(runs.groups, key=lambda r: (_seed_key(seed_of.get(r)), str(r)))
    per_seed = e.groupby("seed")["run"].nunique() if "seed" in e.columns else pd.Series(dtype=int)
    used: dict = {}
    for run in order:
        d = runs.get_group(run)
        seed = d["seed"].iloc[0] if "seed" in d.columns else None
        k = used[seed] = used.get(seed, -1) + 1
        text = f"seed {seed}" if seed is not None and pd.notna(seed) else str(run)
        if per_seed.get(seed, 1) > 1:  # two runs of one seed (a β grid): name the run, or the legend repeats itself
            text += f" ({run})"
        text = labels[run] if labels and run in labels else text
        ax.plot(d["step"], d[y], lw=1.0, marker="o", ms=2.5, ls=styles[k % 4], color=colours.get(seed, "0.4"),
                label=text, gid=f"run:{run}")
    if not ax.has_data():
        empty_panel(ax.figure, ax, "no runs")
    elif legend:
        ax.legend(fontsize=6.5, loc="best", handlelength=2.2)
    ax.tick_params(labelsize=7)
    ax.grid(color="0.93", lw=0.6)


def _share_row(row, d: pd.DataFrame, y: str) -> None:
    """One y range (and symlog choice) and one x range for a row's panels."""
    live = [ax for ax in row if ax.has_data()]
    if not live:
        return
    bounds = value_range(y)
    symlog = bounds[0] >= 0 and not np.isfinite(bounds[1]) and wants_symlog(peaks(d, y))
    xlo, xhi = float(d["step"].min()), float(d["step"].max())
    for ax in live:
        if symlog:
            set_symlog(ax, "y", float(np.nanmax(d[y])))
        set_ylim(ax, d[y].to_numpy(float), bounds, symlog=symlog)
        ax.set_xlim(xlo - 0.03 * (xhi - xlo + 1), xhi + 0.03 * (xhi - xlo + 1))
