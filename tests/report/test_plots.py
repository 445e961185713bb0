"""The report's figures (report/plots.py, frontier_plots.py, drawing.py) on synthetic studies: properties a reader relies on, read off the Figure
objects, and a PNG render of each so nothing crashes. The cell colours' own checks are in test_colours.py."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.legend import Legend
from synthetic_runs import write_run, write_study

from shiftlab.metrics import METRICS, direction, unit, value_range
from shiftlab.report import drawing, frontier_plots, plots
from shiftlab.report.frontier import build_units, compute_frontiers
from shiftlab.report.load import load_study
from shiftlab.report.stats import KL_GRID

ALL_CELLS = ("offline", "trdpo", "oaif", "online", "rl")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return load_study([write_study(tmp_path_factory.mktemp("plots") / "sweep", cells=ALL_CELLS)])


@pytest.fixture(scope="module")
def far_study(tmp_path_factory):
    """online ends ~125 nats from π_sft, the others at 5-9: linear axes would flatten them (the researcher's case)."""
    root = write_study(tmp_path_factory.mktemp("far") / "sweep", cells=("offline", "trdpo", "oaif", "rl"))
    for seed in range(3):
        write_run(root / f"far{seed}", "online", seed, 0.2, beta=0.004)
    return load_study([root])


def _curves(study) -> pd.DataFrame:
    """The frontier table as build.py hands it to plot_frontier."""
    return compute_frontiers(build_units(study.evals), study.cells, 20, KL_GRID).rename(columns={"reward": "value"})


def _by_gid(ax, prefix: str) -> dict[str, object]:
    """Artists of `ax` whose gid starts with `prefix:`, keyed by what follows."""
    arts = list(ax.get_lines()) + list(ax.collections)
    return {a.get_gid().split(":", 1)[1]: a for a in arts if (a.get_gid() or "").startswith(prefix + ":")}


def _band_y(coll) -> np.ndarray:
    ys = [p.vertices[:, 1] for p in coll.get_paths()]
    return np.concatenate(ys) if ys else np.array([])


def _legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [c for ax in fig.axes for c in ax.get_children() if isinstance(c, Legend)]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def _render(fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    assert buf.getvalue()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------ units

def test_every_metric_has_a_unit_entry_and_ranges_are_sane():
    from shiftlab.metrics import _SCALES

    assert set(_SCALES) == set(METRICS), "a new metric needs a Scale in shiftlab/metrics.py"
    assert unit("eval/kl_sft") == "nats" and value_range("eval/kl_sft") == (0.0, math.inf)
    assert value_range("eval/c2st_acc") == (0.0, 1.0) and value_range("eval/ess") == (0.0, 1.0)
    assert value_range("eval/kl_ref_k1")[0] == -math.inf  # an unbiased k1 estimate can be negative
    assert unit("eval/kl_sft_per_token") == "nats/token" and value_range("eval/kl_sft_se") == (0.0, math.inf)
    assert unit("eval/c2st_acc_mu") == "accuracy" and unit("not/a/metric") == ""
    assert drawing.axis_label("step") == "optimizer step" and drawing.axis_label("oracle_calls") == "oracle calls (labels)"
    assert drawing.axis_label("eval/kl_sft") == "KL(π_θ‖π_sft) [nats]"


# ------------------------------------------------------------------------------------------------ KL curves

def _kl_axes(fig):
    """The four KL panels (row-major: kl_ref step, kl_ref oracle, kl_sft step, kl_sft oracle) and the two strips."""
    panels = [ax for ax in fig.axes if ax.get_title().startswith("KL(")]
    strips = [ax for ax in fig.axes if ax.get_ylabel() == "refresh"]
    order = {("KL(π_θ‖π_ref)", "optimizer step"): 0, ("KL(π_θ‖π_ref)", "oracle calls (labels)"): 1,
             ("KL(π_θ‖π_sft)", "optimizer step"): 2, ("KL(π_θ‖π_sft)", "oracle calls (labels)"): 3}
    panels.sort(key=lambda ax: order[tuple(ax.get_title().split(" vs "))])
    return panels, strips


def test_kl_axes_go_symlog_with_readable_ticks_when_cells_differ_by_orders_of_magnitude(far_study, study):
    s = far_study
    panels, _ = _kl_axes(plots.plot_kl_curves(s.evals, s.events, s.train, s.cells))
    for ax in panels:
        assert ax.get_yscale() == "symlog"
        shown = {t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]}
        assert {0, 0.5, 1, 2, 5, 10, 20} <= shown, "1-2-5 ticks, not only decades"
        labels = {t.get_text() for t in ax.get_yticklabels()}
        assert {"0", "0.5", "2", "5", "20"} <= labels
    near, _ = _kl_axes(plots.plot_kl_curves(study.evals, study.events, study.train, study.cells))
    assert {ax.get_yscale() for ax in near} == {"linear"}, "5-9 nats across cells: a linear axis reads fine"


def test_kl_bands_never_go_below_zero_and_axes_have_units(study):
    ev = study.evals.copy()
    # a noisy seed: a wide t band around a KL near 0 would dip below 0 if not cut
    ev.loc[ev["run"] == ev["run"].iloc[0], "eval/kl_sft"] *= 3
    panels, strips = _kl_axes(plots.plot_kl_curves(ev, study.events, study.train, study.cells))
    lows = [_band_y(c).min() for ax in panels for c in _by_gid(ax, "band").values() if len(_band_y(c))]
    assert lows and min(lows) >= 0.0
    for ax in panels:
        assert "[nats]" in ax.get_ylabel() and ax.get_xlabel() in ("optimizer step", "oracle calls (labels)")
    assert {ax.get_xlabel() for ax in strips} == {"optimizer step", "oracle calls (labels)"}


def test_fixed_budget_cells_are_vertical_ranges_on_the_oracle_axis(study):
    assert drawing.fixed_budget_cells(study.evals) == ["offline", "trdpo"]  # their one labelled set: 1024 calls
    fig = plots.plot_kl_curves(study.evals, study.events, study.train, study.cells)
    panels, _ = _kl_axes(fig)
    for ax in (panels[1], panels[3]):  # oracle_calls
        stacks = _by_gid(ax, "stack")
        assert set(stacks) == {"offline", "trdpo"}
        for cell, line in stacks.items():
            x, y = line.get_xdata(), line.get_ydata()
            assert x[0] == x[1] == 1024 and y[1] > y[0], cell  # a vertical range, not one dot
            evals = study.evals[study.evals["cell"] == cell]["eval/kl_sft" if ax is panels[3] else "eval/kl_ref"]
            assert y[0] == pytest.approx(evals.min()) and y[1] == pytest.approx(evals.max())
        assert len(_by_gid(ax, "stack-points")["offline"].get_xdata()) == (study.evals["cell"] == "offline").sum()
        # both stacks sit at one budget: drawn side by side, not on top of each other
        a, b = (stacks[c].get_transform().transform((1024, 1.0))[0] for c in ("offline", "trdpo"))
        assert abs(a - b) > 3
        assert not {"offline", "trdpo"} & set(_by_gid(ax, "mean")), "no collapsed mean dot for a fixed budget"
    assert set(_by_gid(panels[0], "mean")) == set(ALL_CELLS)  # on the step axis they are ordinary lines
    assert any("fixed label budget" in t and t.startswith("offline") for t in _legend_texts(fig))


def test_refreshes_of_trdpo_and_online_are_told_apart(study):
    _, strips = _kl_axes(plots.plot_kl_curves(study.evals, study.events, study.train, study.cells))
    for strip in strips:
        marks = _by_gid(strip, "refresh")
        assert set(marks) == {"trdpo", "online"}
        t, o = marks["trdpo"], marks["online"]
        assert t.get_marker() != o.get_marker() and t.get_ydata()[0] != o.get_ydata()[0]
        assert {x.get_text() for x in strip.get_yticklabels()} == {"trdpo", "online"}
    assert set(_by_gid(strips[0], "refresh")["trdpo"].get_xdata()) == {20, 40, 60, 80, 100}


def test_kl_curves_render_with_a_metric_missing_and_a_single_run(study):
    one = study.evals[study.evals["run"] == study.evals["run"].iloc[0]]
    fig = plots.plot_kl_curves(one.drop(columns="eval/kl_ref"), study.events.iloc[:0], study.train, study.cells)
    panels, _ = _kl_axes(fig)
    assert "not logged" in panels[0].texts[0].get_text()
    _render(fig)
    _render(plots.plot_kl_curves(study.evals, study.events, study.train, study.cells))


# ------------------------------------------------------------------------------------------------ frontier

def test_frontier_legend_explains_every_kind_of_line_and_draws_every_cell(study):
    curves = _curves(study)
    assert "rl" in set(curves["cell"])
    fig = frontier_plots.plot_frontier(study.evals, curves, study.cells)
    ax = fig.axes[0]
    texts = " | ".join(_legend_texts(fig))
    for word in ("evaluation", "run", "frontier", "mean over seeds", "band"):
        assert word in texts
    lines = _by_gid(ax, "frontier")
    assert set(lines) == set(ALL_CELLS), "a mean line for every cell in curves, rl included"
    for cell, line in lines.items():
        assert line.get_color() == drawing.cell_palette([cell])[cell] and line.get_linewidth() >= 2.5
        assert np.allclose(line.get_xdata(), np.sort(curves.loc[curves["cell"] == cell, "kl"].unique()))
    assert lines["offline"].get_linestyle() == "-" and lines["trdpo"].get_linestyle() == "--"  # dashed: not colour alone
    bands = _by_gid(ax, "band")
    assert set(bands) == set(ALL_CELLS)
    assert np.nanmax(_band_y(bands["rl"])) == pytest.approx(curves.loc[curves["cell"] == "rl", "band_high"].max())
    assert len(_by_gid(ax, "run")) == len(study.runs)
    _render(fig)


def test_frontier_marks_matched_kls_and_has_readable_symlog_ticks(study):
    curves = _curves(study)
    fig = frontier_plots.plot_frontier(study.evals, curves, study.cells, marks_kl=(1.0, 4.0))
    ax = fig.axes[0]
    verticals = [ln for ln in ax.get_lines() if ln.get_gid() == "matched-kl"]
    assert sorted(ln.get_xdata()[0] for ln in verticals) == [1.0, 4.0]
    ring = _by_gid(ax, "matched")["offline"]
    off = curves[curves["cell"] == "offline"].set_index("kl")["value"]
    assert list(ring.get_xdata()) == [1.0, 4.0] and ring.get_ydata()[0] == pytest.approx(off[1.0])
    assert "matched KL" in " ".join(_legend_texts(fig))
    assert ax.get_xscale() == "symlog"
    labels = {t.get_text() for t in ax.get_xticklabels()}
    assert {"0", "0.5", "1", "2", "5"} <= labels
    assert "nats" in ax.get_xlabel() and "oracle score" in ax.get_ylabel()
    _render(fig)


def test_frontier_says_when_a_cell_has_no_frontier_line(study):
    curves = _curves(study)
    fig = frontier_plots.plot_frontier(study.evals, curves[curves["cell"] != "rl"], study.cells)
    assert "rl" not in _by_gid(fig.axes[0], "frontier")
    assert any(t.startswith("rl (no frontier") for t in _legend_texts(fig))
    # no curves at all (the optimum test's call): dots and runs only, no note per cell
    bare = frontier_plots.plot_frontier(study.evals, pd.DataFrame(), study.cells)
    assert not _by_gid(bare.axes[0], "frontier") and not any("no frontier" in t for t in _legend_texts(bare))
    _render(bare)


# ------------------------------------------------------------------------------------------------ metric panels

def _panel(fig, metric):
    (ax,) = [ax for ax in fig.axes if ax.get_title().split(" (")[0] == metric]
    return ax


@pytest.fixture(scope="module")
def state_fig(study):
    ev = study.evals.copy()
    ev["eval/c2st_acc_excess"] = ev["eval/c2st_acc"] - 0.5
    ev.loc[ev["cell"] == "online", "eval/ess"] = 0.9  # an ESS near 1 with noise: its band must stop at 1
    ev.loc[(ev["cell"] == "online") & (ev["run"] == ev.loc[ev["cell"] == "online", "run"].iloc[0]), "eval/ess"] = 0.3
    # the ratio is 0/0 at a hard refresh: every trdpo run misses step 50
    ev.loc[(ev["cell"] == "trdpo") & (ev["step"] == 50), "eval/kl_shift_ratio"] = np.nan
    return plots.plot_metric_panels(ev, (*plots.STATE_METRICS, "eval/c2st_acc_excess"), study.cells, "State")


def test_no_arrow_on_neutral_metrics(state_fig):
    assert direction("eval/kl_shift_ratio") == "neutral"
    for metric in (*plots.STATE_METRICS, "eval/c2st_acc_excess"):
        title = _panel(state_fig, metric).get_title()
        assert ("↑" in title or "↓" in title) == (direction(metric) != "neutral"), title


def test_reference_lines_chance_equal_shift_and_null(state_fig):
    def horizontal_at(ax, value):
        return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("reference:")
                and np.allclose(ln.get_ydata(), value)]

    assert horizontal_at(_panel(state_fig, "eval/c2st_acc"), 0.5)
    assert horizontal_at(_panel(state_fig, "eval/kl_shift_ratio"), 1.0)
    assert horizontal_at(_panel(state_fig, "eval/c2st_acc_excess"), 0.0)
    assert not horizontal_at(_panel(state_fig, "eval/mmd2"), 0.0)
    lo, hi = _panel(state_fig, "eval/c2st_acc").get_ylim()
    assert lo < 0.5 < hi


def test_bounded_metrics_stay_in_their_range(state_fig):
    for metric in ("eval/ess", "eval/c2st_acc", "eval/js_ngram"):
        ax = _panel(state_fig, metric)
        lo, hi = ax.get_ylim()
        assert lo >= -0.02 and hi <= 1.02, (metric, lo, hi)
        assert not [t for t in ax.get_yticks() if lo <= t <= hi and (t > 1.0 + 1e-9 or t < -1e-9)], metric
        for band in _by_gid(ax, "band").values():
            y = _band_y(band)
            assert not len(y) or (y.min() >= 0.0 and y.max() <= 1.0), metric
    assert _band_y(_by_gid(_panel(state_fig, "eval/ess"), "band")["online"]).max() == pytest.approx(1.0)


def test_a_missing_value_breaks_the_line(state_fig):
    line = _by_gid(_panel(state_fig, "eval/kl_shift_ratio"), "mean")["trdpo"]
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    assert 50 in x and np.isnan(y[x == 50]).all(), "NaN kept: matplotlib breaks the line there"
    assert np.isfinite(y[x != 50]).all()


def test_metric_panels_have_units_and_render(state_fig, study):
    assert _panel(state_fig, "eval/state_kl").get_ylabel() == "eval/state_kl [nats]"
    assert _panel(state_fig, "eval/ess").get_ylabel() == "eval/ess [fraction of N]"
    assert _panel(state_fig, "eval/js_ngram").get_ylabel() == "eval/js_ngram [bits]"
    assert {_panel(state_fig, m).get_xlabel() for m in plots.STATE_METRICS} == {"optimizer step"}
    _render(state_fig)
    dpo = plots.plot_metric_panels(study.train, plots.DPO_METRICS, study.cells, "DPO", smooth=5)
    assert _panel(dpo, "rewards/accuracies").get_ylim()[1] <= 1.02
    _render(dpo)
    missing = plots.plot_metric_panels(study.evals.drop(columns="eval/mmd2"), plots.STATE_METRICS, study.cells, "x")
    assert "eval/mmd2: not logged" in [t.get_text() for ax in missing.axes for t in ax.texts]
    _render(missing)


def test_smoothing_does_not_fill_a_gap(study):
    tr = study.train.copy()
    tr.loc[(tr["cell"] == "oaif") & tr["step"].between(40, 49), "rewards/margins"] = np.nan
    fig = plots.plot_metric_panels(tr, ("rewards/margins",), study.cells, "DPO", ncols=1, smooth=5)
    line = _by_gid(fig.axes[0], "mean")["oaif"]
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    assert np.isnan(y[(x >= 40) & (x <= 49)]).all() and np.isfinite(y[x == 50]).all()


def test_depth_curves_render_with_units(study):
    fig = plots.plot_depth_curves(study.curves, study.cells)
    assert [ax.get_xlabel() for ax in fig.axes] == ["depth t [response tokens]", "depth t [response words]"]
    assert fig.axes[1].get_ylim()[1] <= 1.02
    _render(fig)
    _render(plots.plot_depth_curves(study.curves.iloc[:0], study.cells))


# ------------------------------------------------------------------------------------------------ seed curves

def test_seed_curves_draw_every_run_in_its_cells_column(study):
    cells = study.cells
    fig = plots.plot_seed_curves(study.evals, cells)
    axes = np.array(fig.axes).reshape(2, len(cells))
    assert [ax.get_title() for ax in axes[0]] == cells
    for j, cell in enumerate(cells):
        runs = set(study.runs.loc[study.runs["cell"] == cell, "run"])
        for i in range(2):
            assert set(_by_gid(axes[i, j], "run")) == runs
    labels = [t.get_text() for t in axes[0, 0].get_legend().get_texts()]
    assert labels == ["seed 0", "seed 1", "seed 2"]
    # a seed keeps its colour across cells
    c0 = {_by_gid(axes[0, j], "run")[r].get_color() for j, cell in enumerate(cells)
          for r in study.runs.loc[(study.runs["cell"] == cell) & (study.runs["seed"] == 0), "run"]}
    assert len(c0) == 1
    assert axes[0, 0].get_ylabel() == "eval/reward [oracle score]" and "[nats]" in axes[1, 0].get_ylabel()
    assert {ax.get_xlabel() for ax in axes[1]} == {"optimizer step"}
    assert len({ax.get_ylim() for ax in axes[1]}) == 1, "a row shares its y range"
    _render(fig)


def test_seed_curves_take_labels_and_survive_a_missing_metric_and_one_run(study):
    run = study.runs["run"].iloc[0]
    one = study.evals[study.evals["run"] == run]
    fig = plots.plot_seed_curves(one, study.cells, metrics=("eval/reward", "eval/gold_reward"),
                                 labels={run: "seed 0, β=0.1"})
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["seed 0, β=0.1"]
    assert "eval/gold_reward: not logged" in fig.axes[1].texts[0].get_text()
    _render(fig)
    _render(plots.plot_seed_curves(study.evals.iloc[:0], study.cells))


def test_seed_curves_go_symlog_when_a_cell_runs_far(far_study):
    fig = plots.plot_seed_curves(far_study.evals, far_study.cells, metrics=("eval/kl_sft",))
    assert {ax.get_yscale() for ax in fig.axes} == {"symlog"}
    _render(fig)


def test_gap_curve_ticks_read_as_nats():
    gap = pd.DataFrame({"contrast": ["total"] * 3, "kl": [0.5, 1.0, 2.0], "estimate": [0.1, 0.2, 0.15],
                        "ci_low": [0.0, 0.1, 0.05], "ci_high": [0.2, 0.3, 0.25]})
    fig = frontier_plots.plot_gap_curve(gap)
    fig.canvas.draw()
    assert {"0.5", "1", "2"} <= {t.get_text() for t in fig.axes[0].get_xticklabels()}
    _render(fig)
