"""DataFrame → matplotlib Figure. No I/O and no pyplot state: figures are built with `Figure()` directly.

Lines are the mean across the seeds of a cell with a 95% Student-t band, one colour per cell. (A t band
rather than seaborn's bootstrap: with three seeds a percentile bootstrap is too narrow, and it is slow.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import stats

from shiftlab.metrics import direction
from shiftlab.report.load import CELL_ORDER

BAND = "mean ± 95% t interval over seeds, clipped to the runs' range"
ARROW = {"higher": " (↑ better)", "lower": " (↓ better)", "neutral": ""}
STATE_METRICS = ("eval/ess", "eval/kl_shift_ratio", "eval/kl_ref_on_data", "eval/kl_ref_on_policy",
                 "eval/state_kl", "eval/c2st_acc", "eval/mmd2", "eval/js_ngram")
DEPTH_UNIT = {"state_kl_depth": "response tokens", "off_support_depth": "response words"}  # what t counts
DEPTH_YLABEL = {"state_kl_depth": "KL(d_θ,t ‖ d_μ,t)  [nats]", "off_support_depth": "fraction off support"}
DPO_METRICS = ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")


def cell_palette(cells: list[str]) -> dict[str, tuple]:
    """A fixed colour per cell, stable across figures and reports."""
    colours = sns.color_palette("colorblind", 10)
    order = list(CELL_ORDER) + sorted(set(cells) - set(CELL_ORDER))
    return {c: colours[order.index(c) % 10] for c in cells}


def plot_kl_curves(evals: pd.DataFrame, events: pd.DataFrame, train: pd.DataFrame, cells: list[str]) -> Figure:
    """KL(π_θ‖π_ref) and KL(π_θ‖π_sft) against step and oracle_calls; refreshes as ticks on the x-axis."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    marks = refresh_marks(events, train)
    for i, y in enumerate(("eval/kl_ref", "eval/kl_sft")):
        for j, x in enumerate(("step", "oracle_calls")):
            ax = axes[i, j]
            _line(ax, align_x(evals, x), x, y, cells, legend=(i == 0 and j == 0))
            if not marks.empty and x in marks.columns:
                _rug(ax, marks, x, cells)
            ax.set_title(f"{_label(y)} vs {x}")
    fig.suptitle(f"KL from the current reference and from π_sft ({BAND}; ticks: refreshes)")
    return fig


def plot_frontier(evals: pd.DataFrame, curves: pd.DataFrame, cells: list[str], optimum: pd.DataFrame | None = None) -> Figure:
    """Reward against KL(π_θ‖π_sft): one dot per evaluation, thin lines per run, thick cell means on the
    common KL grid (the values the gap is computed from); with `optimum` (report.optimum.load_optimum), the
    KL-regularised optimum as a dashed black line up to the KL where its estimate is reliable."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    pal = cell_palette(cells)
    cols = ["eval/kl_sft", "eval/reward"]
    if any(c not in evals.columns for c in cols) or evals.dropna(subset=cols).empty:
        return _empty(fig, ax, "eval/reward or eval/kl_sft not logged")
    ev = evals.dropna(subset=cols).sort_values(["run", "step"])
    for _, d in ev.groupby("run"):
        ax.plot(d["eval/kl_sft"], d["eval/reward"], color=pal[d["cell"].iloc[0]], alpha=0.25, lw=0.8)
    sns.scatterplot(data=ev, x="eval/kl_sft", y="eval/reward", hue="cell", hue_order=cells, palette=pal,
                    ax=ax, s=28, alpha=0.8)
    if not curves.empty:
        mean = curves.groupby(["cell", "kl"], as_index=False)["value"].mean()
        for cell, d in mean.groupby("cell"):
            ax.plot(d["kl"], d["value"], color=pal[cell], lw=2.5)
    if optimum is not None and not optimum.empty and optimum["reliable"].any():
        best = optimum[optimum["reliable"].astype(bool) & (optimum["sft"] == optimum["sft"].iloc[0])].sort_values("kl")
        ax.plot(best["kl"], best["reward"], color="black", ls="--", lw=1.8,
                label=f"optimum π*_β (reliable to {best['kl'].max():.2g} nats)")
    # KL spans three orders of magnitude across cells; linear near 0, logarithmic beyond 1 nat
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(π_θ‖π_sft)  [eval/kl_sft, nats; symlog scale]")
    ax.set_ylabel(_label("eval/reward"))
    ax.legend(fontsize=8, loc="lower right", title="cell")
    ax.set_title("Reward vs KL frontier (dots: evaluations; lines: runs and cell means)")
    return fig


def plot_gap_curve(gap: pd.DataFrame) -> Figure:
    """Contrasts of eval reward at the points of the fixed KL grid, with pointwise 95% Welch bands."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    if gap.empty:
        return _empty(fig, ax, "no common KL range: gap curve not available")
    colours = sns.color_palette("dark", 5)  # one per contrast
    for k, (name, d) in enumerate(gap.groupby("contrast", sort=False)):
        ax.plot(d["kl"], d["estimate"], color=colours[k % len(colours)], lw=2, marker="o", label=name)
        ax.fill_between(d["kl"], d["ci_low"].astype(float), d["ci_high"].astype(float), color=colours[k % len(colours)],
                        alpha=0.15)
    ax.axhline(0, color="0.3", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)  # the grid doubles: 0.5, 1, 2, … nats
    ax.set_xlabel("KL(π_θ‖π_sft)  [nats, log scale]")
    ax.set_ylabel("difference in eval/reward")
    ax.legend(fontsize=8)
    ax.set_title("Reward difference at matched KL (pointwise 95% Welch band over seeds)")
    return fig


def plot_depth_curves(curves: pd.DataFrame, cells: list[str]) -> Figure:
    """Depth curves (curves.jsonl) at each run's last evaluation."""
    kinds = ["state_kl_depth", "off_support_depth"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, len(kinds))
    last = curves[curves["step"] == curves.groupby("run")["step"].transform("max")] if len(curves) else curves
    for k, (ax, kind) in enumerate(zip(axes, kinds)):
        d = last[last["curve"] == kind] if len(last) else last
        if d.empty:
            _empty(fig, ax, f"{kind}: not logged")
            continue
        _line(ax, d, "t", "value", cells, legend=(k == 0), marker=None)
        ax.set_xlabel(f"depth t ({DEPTH_UNIT.get(kind, 'positions')})")
        ax.set_ylabel(DEPTH_YLABEL.get(kind, "value"))
        ax.set_title(kind)
    fig.suptitle(f"State divergence by depth at each run's last evaluation ({BAND})")
    return fig


def plot_metric_panels(df: pd.DataFrame, metrics: tuple[str, ...], cells: list[str], title: str,
                       ncols: int = 4, smooth: int = 1, max_points: int = 150) -> Figure:
    """One panel per metric against step; `smooth` > 1 applies a per-run rolling mean first."""
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(2.9 * ncols, 2.9 * nrows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for k, (ax, y) in enumerate(zip(axes, metrics)):
        if y not in df.columns or df[y].isna().all():
            _empty(fig, ax, f"{y}: not logged")
            continue
        d = df.dropna(subset=[y])[["run", "cell", "step", y]].sort_values(["run", "step"])
        if smooth > 1:
            d[y] = d.groupby("run")[y].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
        steps = np.sort(d["step"].unique())
        if len(steps) > max_points:  # thin the x grid: a band is computed at every x
            d = d[d["step"].isin(steps[:: int(np.ceil(len(steps) / max_points))])]
        _line(ax, d, "step", y, cells, legend=(k == 0), marker="o" if smooth <= 1 else None)
        ax.set_title(_label(y), fontsize=9)
        ax.set_ylabel("")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{title} ({BAND})")
    return fig


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


def align_x(evals: pd.DataFrame, x: str) -> pd.DataFrame:
    """Give the k-th evaluation of every run of a cell the cell's median x, so seeds aggregate even when
    their counters (e.g. oracle_calls) differ slightly."""
    if x not in evals.columns:
        return evals
    d = evals.dropna(subset=[x]).sort_values(["run", "step"]).copy()
    d["_k"] = d.groupby("run").cumcount()
    d[x] = d.groupby(["cell", "_k"])[x].transform("median")
    return d


def _line(ax, d: pd.DataFrame, x: str, y: str, cells: list[str], legend: bool,
          marker: str | None = "o") -> None:
    if y not in d.columns or x not in d.columns or d[[x, y]].dropna().empty:
        _empty(ax.figure, ax, f"{y}: not logged")
        return
    present = [c for c in cells if c in set(d["cell"])]
    sns.lineplot(data=d, x=x, y=y, hue="cell", hue_order=present, palette=cell_palette(present), ax=ax,
                 errorbar=t_interval, marker=marker, markersize=4, legend=legend)
    # With 2-3 seeds a t band can be many times wider than the data; keep the runs' own range in view.
    lo, hi = float(d[y].min()), float(d[y].max())
    pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 0.1
    ax.set_ylim(lo - pad, hi + pad)
    if legend and ax.get_legend() is not None:
        ax.legend(fontsize=8, title=None)


def t_interval(values: pd.Series) -> tuple[float, float]:
    """95% Student-t interval of the mean of `values` (one per seed); a point when there is one value."""
    v = np.asarray(values, dtype=float)
    m = v.mean()
    if len(v) < 2:
        return m, m
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return m - half, m + half


def _rug(ax, marks: pd.DataFrame, x: str, cells: list[str]) -> None:
    pal = cell_palette(cells)
    for i, (cell, d) in enumerate(marks.dropna(subset=[x]).groupby("cell")):
        if cell in pal:
            xs = np.unique(d[x].to_numpy(float))
            ax.plot(xs, np.full_like(xs, 0.015 + 0.03 * i), "|", color=pal[cell], ms=9, mew=1.5,
                    transform=ax.get_xaxis_transform(), clip_on=False)


def _empty(fig: Figure, ax, text: str) -> Figure:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _label(name: str) -> str:
    return name + ARROW[direction(name)]
