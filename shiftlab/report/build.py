"""Assemble the report: load run directories → statistics → figures → sections → HTML/Markdown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from shiftlab import __version__
from shiftlab.report import plots, tables
from shiftlab.report.load import Study, load_study
from shiftlab.report.options import PlotConfig, ReportConfig, default_name
from shiftlab.report.render import Section, write_figure, write_report
from shiftlab.report.stats import (
    MAIN_CELLS,
    compute_gap_curve,
    compute_gap_table,
    interpolate_on_kl,
    kl_limiting_run,
    kl_overlap,
)
from shiftlab.report.summary import write_summary

GAP_METHOD = (
    "How the gap is computed. Each row is a contrast of cell means over seeds (one value per run). "
    "Matched KL: each run's evaluations are sorted by KL(π_θ‖π_sft) (equal KLs averaged) and its eval reward "
    "is linearly interpolated to a common KL; KL is not assumed to grow with the step. The common KL is the "
    "largest value every compared run reached, i.e. the top of the range they all cover. Matched step / "
    "oracle_calls: each run's last evaluation at or before the last point all compared runs reached. "
    "The four 2x2 rows are matched on the same runs, so sampling + refresh + interaction = total. "
    "Intervals: percentile bootstrap resampling each cell's seeds independently (scipy.stats.bootstrap) and "
    "the Welch t interval of the contrast (Welch–Satterthwaite df); p-values: Welch t-test and, for "
    "two-cell rows, a permutation test over seeds (exact when the number of splits is small)."
)


def build_report(paths: list[str], cfg: ReportConfig) -> tuple[Path, Path]:
    """Write `<out>/<name>/report.html` and `report.md` with figures for the runs below `paths`."""
    study = load_study(paths, allow_mixed=cfg.allow_mixed)
    out_dir = Path(cfg.out) / (cfg.name or default_name(paths))
    cells = study.cells
    gap = compute_gap_table(study.evals, cells, n_boot=cfg.n_boot, seed=cfg.seed)
    sections = [
        _gap_section(study, gap, cfg),
        Section("KL over training", figures=[("kl_curves", plots.plot_kl_curves(
            study.evals, study.events, study.train, cells), _KL_CAPTION)]),
        _state_section(study, cfg),
        Section("DPO diagnostics", figures=[("dpo_diagnostics", plots.plot_metric_panels(
            study.train, plots.DPO_METRICS, cells, f"Training rows, rolling mean over {cfg.smooth} steps",
            ncols=4, smooth=cfg.smooth),
            _DPO_CAPTION)]),
        Section("Runs", tables=[(_RUNS_CAPTION, tables.build_run_table(study))]),
        Section("Data notes", bullets=study.notes + tables.missing_metrics(study)
                or ["every run finished and logged every divergence column"]),
    ]
    samples = tables.build_samples_table(study)
    if not samples.empty:
        sections.insert(-2, Section("Samples", tables=[("Samples from each cell at its runs' last evaluation",
                                                        samples)]))
    shown = ["eval/reward", "eval/kl_sft", "eval/kl_ref", *plots.STATE_METRICS, *plots.DPO_METRICS]
    sections.append(Section("Metrics", tables=[("From shiftlab.metrics", tables.build_glossary(shown))]))
    subtitle = (f"{len(study.runs)} run(s) from {', '.join(map(str, paths))} · generated "
                f"{dt.datetime.now():%Y-%m-%d %H:%M} · shiftlab {__version__}")
    return write_report(out_dir, f"shiftlab report: {out_dir.name}", write_summary(study, gap), sections, subtitle)


def build_kl_plot(paths: list[str], cfg: PlotConfig) -> Path:
    """Write the KL-curves figure alone (PNG and SVG) into `<out>/<name>/`; return the PNG path."""
    study = load_study(paths, allow_mixed=cfg.allow_mixed)
    out_dir = Path(cfg.out) / (cfg.name or default_name(paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_figure(plots.plot_kl_curves(study.evals, study.events, study.train, study.cells), out_dir, "kl_curves")
    return out_dir / "kl_curves.png"


def _gap_section(study: Study, gap, cfg: ReportConfig) -> Section:
    cells = study.cells
    main = [c for c in MAIN_CELLS if c in cells]
    overlap = kl_overlap(study.evals, main) if main else "no 2x2 cell present"
    curves = (interpolate_on_kl(study.evals[study.evals["cell"].isin(main)], np.linspace(*overlap, cfg.kl_grid))
              if not isinstance(overlap, str) else interpolate_on_kl(study.evals.iloc[0:0], np.array([])))
    gap_curve = compute_gap_curve(study.evals, cells, n_grid=cfg.kl_grid, n_boot=cfg.n_boot, seed=cfg.seed)
    span = (f"The common KL range of the runs of the 2x2 cells present is {overlap[0]:.3g} to {overlap[1]:.3g} nats; its top is set by "
            f"run {kl_limiting_run(study.evals, main)}. Estimates are differences in eval/reward, positive when the "
            "first cell of the contrast scores higher."
            if not isinstance(overlap, str) else f"No common KL range: {overlap}.")
    return Section(
        "The off-policy gap",
        paragraphs=[GAP_METHOD, span],
        tables=tables.format_gap_tables(gap),
        figures=[("frontier", plots.plot_frontier(study.evals, curves, cells), _FRONTIER_CAPTION),
                 ("gap_curve", plots.plot_gap_curve(gap_curve),
                  "The matched-KL contrasts at every point of the common KL grid; the table's value is the right end.")])


def _state_section(study: Study, cfg: ReportConfig) -> Section:
    return Section(
        "State divergence",
        paragraphs=[_STATE_TEXT],
        figures=[("depth_curves", plots.plot_depth_curves(study.curves, study.cells),
                  "KL(d_θ,t ‖ d_μ,t) and the off-support fraction by depth t at each run's last evaluation."),
                 ("state_divergence", plots.plot_metric_panels(
                     study.evals, plots.STATE_METRICS, study.cells, "Evaluation rows over training"),
                  _STATE_CAPTION)])


_KL_CAPTION = ("Top: KL(π_θ‖π_ref) — it drops to 0 at a hard refresh by construction. Bottom: KL(π_θ‖π_sft), "
               "comparable across cells. Left against optimizer steps, right against the labelling budget "
               "(oracle_calls). Ticks at the bottom of each panel mark reference refreshes (one row per cell). "
               "A cell trained on a fixed offline set has a constant oracle_calls (the set is labelled once), so "
               "its curve is a vertical stack at that budget.")
_DPO_CAPTION = ("Implicit-reward margins and accuracies, and the log-likelihoods of chosen and rejected responses "
                "(likelihood displacement: both can fall while the margin grows).")
_RUNS_CAPTION = ("One row per run: configuration differences from the most common value, progress, and the last "
                 "evaluation (± standard error)")
_FRONTIER_CAPTION = ("Reward vs KL(π_θ‖π_sft), as in Figure 2 of the DPO paper. Thick lines: the mean over seeds of "
                     "each run's interpolated reward on the common KL grid — the values the matched-KL gap is read "
                     "from.")
_STATE_TEXT = ("Where DPO's training states (d_D, or those of the behaviour policy μ) and the policy's own states (d_θ) part "
               "ways. An ESS near 1 and a shift ratio near 1 mean the data are still on-policy.")
_STATE_CAPTION = ("Effective sample size, KL on data vs on policy states and their ratio, state KL, and the "
                  "behaviour-agnostic two-sample divergences (classifier accuracy, MMD², n-gram JS).")
