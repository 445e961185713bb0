"""The gap's figures: each cell's reward-vs-KL frontier beside the objective's optimum (the report's Figure 1), and the
matched-KL contrasts on the fixed KL grid. DataFrame → Figure, no I/O (shared pieces in report/drawing.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from shiftlab.metrics import direction
from shiftlab.report.colours import cell_style
from shiftlab.report.drawing import ARROW, KL_SFT_LABEL, axis_label, cell_handles, empty_panel, set_symlog
from shiftlab.report.frontier import build_units, common_range


def plot_frontier(evals: pd.DataFrame, curves: pd.DataFrame, cells: list[str], optimum: pd.DataFrame | None = None,
                  marks_kl: Sequence[float] = ()) -> Figure:
    """Reward against KL(π_θ‖π_sft): one dot per evaluation, thin lines per run, thick cell frontiers (mean over
    seeds, on the KLs in `curves`: cell, kl, value and optionally band_low/band_high, shaded) — the values the gap is
    computed from; with `optimum` (report.optimum.load_optimum), the KL-regularised optimum as a dashed black line
    up to the KL where its estimate is reliable; with `marks_kl`, the matched KLs of the gap table as dotted
    verticals and a ring where each frontier crosses them."""
    fig = Figure(figsize=(8, 6.6), layout="constrained")  # narrow enough to stay legible on a phone
    ax = fig.subplots()
    cols = ["eval/kl_sft", "eval/reward"]
    if any(c not in evals.columns for c in cols) or evals.dropna(subset=cols).empty:
        return empty_panel(fig, ax, "eval/reward or eval/kl_sft not logged")
    ev = evals.dropna(subset=cols).sort_values(["run", "step"])
    curve_cells = list(dict.fromkeys(curves["cell"])) if len(curves) and "cell" in curves.columns else []
    everyone = cells + [c for c in curve_cells if c not in cells]
    style = cell_style(everyone)
    for run, d in ev.groupby("run"):
        s = style.get(d["cell"].iloc[0]) or {"color": "0.5"}
        ax.plot(d["eval/kl_sft"], d["eval/reward"], color=s["color"], alpha=0.3, lw=0.8, gid=f"run:{run}")
    for cell, d in ev.groupby("cell"):
        if cell in style:
            ax.scatter(d["eval/kl_sft"], d["eval/reward"], marker=style[cell]["marker"], color=style[cell]["color"],
                       s=22, alpha=0.75, edgecolors="white", linewidths=0.3, zorder=2, gid=f"evaluations:{cell}")
    for cell in curve_cells:  # every cell the curves hold (rl included), not only the 2x2
        _frontier_line(ax, curves[curves["cell"] == cell].sort_values("kl"), cell, style[cell], marks_kl)
    opt = _optimum_line(ax, optimum)
    for k in marks_kl:
        ax.axvline(k, color="0.45", lw=0.9, ls=":", zorder=1, gid="matched-kl")
    top = max(float(ev["eval/kl_sft"].max()), max(marks_kl, default=0.0))
    set_symlog(ax, "x", top)  # KL spans three orders of magnitude across cells
    ax.set_xlim(-0.1, top * 1.25 + 0.1)
    ax.set_xlabel(KL_SFT_LABEL + "  (symlog: linear below 1 nat)")
    ax.set_ylabel(axis_label("eval/reward") + ARROW[direction("eval/reward")])
    ax.grid(color="0.93", lw=0.6)
    present = [c for c in everyone if c in set(ev["cell"]) or c in curve_cells]
    ax.legend(handles=cell_handles(present, _missing_frontiers(ev, present, curve_cells, curves)), fontsize=8,
              loc="lower right", title="cell")
    fig.legend(handles=_frontier_kinds(curves, opt, marks_kl), loc="outside lower center", ncols=2, fontsize=8,
               title="what is drawn", frameon=False)
    ax.set_title("Reward vs KL frontier")
    return fig


def _frontier_line(ax, c: pd.DataFrame, cell: str, s: dict, marks_kl: Sequence[float]) -> None:
    """A cell's frontier: thick line, its band where `curves` has one, rings at the matched KLs it reaches."""
    mean = c.groupby("kl", as_index=False)["value"].mean()  # one row per KL even if `curves` repeats one
    if {"band_low", "band_high"} <= set(c.columns):
        band = c.groupby("kl", as_index=False)[["band_low", "band_high"]].mean()
        ax.fill_between(band["kl"], band["band_low"].astype(float), band["band_high"].astype(float), color=s["color"],
                        alpha=0.18, lw=0, zorder=2.5, gid=f"band:{cell}")
    ax.plot(mean["kl"], mean["value"], color=s["color"], ls=s["linestyle"], lw=2.8, zorder=3,
            solid_capstyle="round", gid=f"frontier:{cell}")
    kl = mean["kl"].to_numpy(float)
    at = [k for k in marks_kl if len(kl) and kl.min() <= k <= kl.max()]  # never read a frontier past its range
    if at:
        ax.plot(at, np.interp(at, kl, mean["value"].to_numpy(float)), ls="none", marker="o", ms=8, mfc="white",
                mec=s["color"], mew=1.8, zorder=4, gid=f"matched:{cell}")


def _optimum_line(ax, optimum: pd.DataFrame | None) -> str | None:
    """The reliable part of the optimum frontier, dashed black; its legend text, or None if not drawn."""
    if optimum is None or optimum.empty or not optimum["reliable"].any():
        return None
    best = optimum[optimum["reliable"].astype(bool) & (optimum["sft"] == optimum["sft"].iloc[0])].sort_values("kl")
    label = f"dashed black: optimum π*_β (reliable to {best['kl'].max():.2g} nats)"
    ax.plot(best["kl"], best["reward"], color="black", ls="--", lw=1.8, zorder=3)
    return label


def _frontier_kinds(curves: pd.DataFrame, optimum: str | None, marks_kl: Sequence[float]) -> list:
    """Proxy handles explaining each kind of mark on the frontier figure."""
    grey = "0.35"
    kinds = [Line2D([], [], ls="none", marker="o", color=grey, ms=5, label="dot: one evaluation"),
             Line2D([], [], color=grey, lw=0.8, alpha=0.5, label="thin line: one run (its evaluations in order)"),
             Line2D([], [], color=grey, lw=2.8, label="thick line: cell frontier (mean over seeds)")]
    if {"band_low", "band_high"} <= set(curves.columns):
        kinds.append(Patch(color=grey, alpha=0.25, label="band: 95% t interval of the frontier"))
    if optimum:
        kinds.append(Line2D([], [], color="black", ls="--", lw=1.8, label=optimum))
    if len(marks_kl):
        kinds += [Line2D([], [], color="0.45", ls=":", lw=0.9, label="dotted: matched KL of the gap table"),
                  Line2D([], [], ls="none", marker="o", ms=7, mfc="white", mec=grey, mew=1.6,
                         label="ring: a frontier at a matched KL")]
    return kinds


def _missing_frontiers(ev: pd.DataFrame, cells: list[str], curve_cells: list[str], curves: pd.DataFrame
                       ) -> dict[str, str]:
    """Why a cell with evaluations has no frontier line (only when curves were given at all)."""
    if not len(curves):
        return {}
    units = build_units(ev)
    out = {}
    for cell in (c for c in cells if c not in curve_cells):
        span = common_range(units, [cell]) if units.of([cell]).any() else "no evaluations"
        out[cell] = "no frontier: its seeds share no KL range" if isinstance(span, str) and "overlap" in span \
            else "no frontier line"
    return out


def plot_gap_curve(gap: pd.DataFrame) -> Figure:
    """Contrasts of eval reward at the points of the fixed KL grid, with pointwise 95% Welch bands."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    if gap.empty:
        return empty_panel(fig, ax, "no common KL range: gap curve not available")
    colours = ("#000000", "#0072B2", "#009E73", "#D55E00", "#882255")  # one per contrast, distinct under CVD
    markers = ("o", "s", "^", "D", "X")
    for k, (name, d) in enumerate(gap.groupby("contrast", sort=False)):
        c = colours[k % len(colours)]
        ax.plot(d["kl"], d["estimate"], color=c, lw=2, marker=markers[k % len(markers)], label=name)
        ax.fill_between(d["kl"], d["ci_low"].astype(float), d["ci_high"].astype(float), color=c, alpha=0.15)
    ax.axhline(0, color="0.3", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)  # the grid doubles: 0.5, 1, 2, … nats
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # "0.5", not "2^-1"
    ax.set_xlabel("KL(π_θ‖π_sft) [nats, log scale]")
    ax.set_ylabel("difference in eval/reward [oracle score]")
    ax.legend(fontsize=8)
    ax.set_title("Reward difference at matched KL (pointwise 95% Welch band over seeds)")
    return fig


def plot_staleness(gap: pd.DataFrame, gold: pd.DataFrame, state: pd.DataFrame, levels: Sequence) -> Figure:
    """Off-policyness as a dial (report/staleness.py). Left: each staleness level's mean gap to the offline cell
    over the shared KL range, proxy (oracle) and gold judge, with Welch 95% intervals (not adjusted). Right: the
    run-mean state KL of each level with t intervals over seeds, the offline cell's as a horizontal band."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    every = {lv.name: lv.every for lv in levels}
    for table, label, colour, marker, shift in ((gap, "oracle (proxy) reward", "#D55E00", "D", 0.97),
                                                (gold, "gold judge's reward", "#009E73", "s", 1.03)):
        if table.empty:
            continue
        d = table[(table["axis"] == "kl_sft_mean") & table["contrast"].str.startswith("every")]
        d = d[np.isfinite(d["estimate"].astype(float))]
        if d.empty:
            continue
        x = np.array([every[f.split(" vs ")[0]] for f in d["comparison"]], float) * shift
        y = d["estimate"].to_numpy(float)
        err = np.vstack([y - d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float) - y])
        left.errorbar(x, y, yerr=err, color=colour, marker=marker, ms=6, lw=1.6, capsize=3, label=label)
    left.axhline(0, color="0.3", lw=0.8, ls="--")
    _log_every(left, every.values())
    left.set_ylabel("level − offline, mean over the shared KL range")
    left.set_title("Reward gap to offline DPO at matched KL")
    if left.has_data():
        left.legend(fontsize=8, title="scored by", loc="best")
    rows = state[state["cell"].isin(list(every))] if len(state) else state
    if len(rows):
        x = rows["cell"].map(every).to_numpy(float)
        y = rows["estimate"].to_numpy(float)
        err = np.vstack([y - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - y])
        right.errorbar(x, y, yerr=np.nan_to_num(err), color="#D55E00", marker="D", ms=6, lw=1.6, capsize=3,
                       label="online, by sampling interval")
        ref = state[state["cell"] == "offline"]
        if len(ref) and np.isfinite(ref["ci_low"].iloc[0]):
            right.axhspan(ref["ci_low"].iloc[0], ref["ci_high"].iloc[0], color="#0072B2", alpha=0.18, lw=0,
                          label="offline DPO (95% t interval)")
            right.axhline(ref["estimate"].iloc[0], color="#0072B2", lw=1.2)
        right.set_ylim(bottom=0)  # a KL: never below 0
        right.legend(fontsize=8, loc="best")
    else:
        empty_panel(fig, right, "eval/state_kl not logged")
    _log_every(right, every.values())
    right.set_ylabel(axis_label("eval/state_kl") + ARROW[direction("eval/state_kl")])
    right.set_title("State shift from the behaviour policy μ")
    return fig


def _log_every(ax, every) -> None:
    ticks = sorted(set(int(e) for e in every))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("source.sample_every [steps per sampling round, log]")
    ax.grid(color="0.93", lw=0.6)
