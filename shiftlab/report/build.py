"""Assemble the report: load run directories → statistics → figures → sections → HTML/Markdown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab import __version__
from shiftlab.cell import MAIN_CELLS
from shiftlab.metrics import direction
from shiftlab.report import optimum, plots, tables
from shiftlab.report.frontier import GOLD_REWARD, REWARD, build_units, common_range, compute_frontiers, limiting_unit
from shiftlab.report.load import Study, load_study
from shiftlab.report.options import PlotConfig, ReportConfig, default_name
from shiftlab.report.render import Section, write_figure, write_report
from shiftlab.report.stats import KL_GRID, compute_gap_curve, compute_gap_table, describe_label_budget, write_gap_csv
from shiftlab.report.summary import write_summary

GAP_METHOD = (
    "How the gap is computed. The unit is a (cell, seed): the seed's runs over the β grid are pooled. Each unit's "
    "evaluations (every run, every checkpoint; equal KLs averaged) are sorted by KL(π_θ‖π_sft) and joined by "
    "straight lines in √KL, never extrapolated; a cell's frontier is the mean of its seeds' curves (report/frontier.py). "
    "A contrast is a difference of frontiers, estimated from seed-level values with a Welch t interval "
    "(Welch–Satterthwaite df) — its coverage is checked on simulated studies, the percentile bootstrap's failed at "
    "3 seeds. The gap curve is read on a KL grid fixed before the data (0.5 … 64 nats), only inside the range every "
    "seed of the contrast's cells covers; the mean gap averages it over the common range (the four 2x2 contrasts "
    "over the range all 2x2 cells share, so that sampling + refresh + interaction = total). The mean gaps are the "
    "family Holm adjusts; a verdict is 'better'/'worse' only where the adjusted p < 0.05, which is where the "
    "adjusted interval (Welch at the Bonferroni level of the Holm step) excludes 0 (report/gap.py)."
)


def build_report(paths: list[str], cfg: ReportConfig) -> tuple[Path, Path]:
    """Write `<out>/<name>/report.html` and `report.md` with figures, and the machine-readable `gap.csv` and
    `frontier.csv` beside them, for the runs below `paths`."""
    study = load_study(paths, allow_mixed=cfg.allow_mixed)
    out_dir = Path(cfg.out) / (cfg.name or default_name(paths))
    cells = study.cells
    gap = compute_gap_table(study.evals, cells, higher_is_better=direction(REWARD) != "lower")
    frontier = build_frontier_table(study, cfg.kl_grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_gap_csv(gap, out_dir / "gap.csv")
    frontier.drop(columns="seeds").to_csv(out_dir / "frontier.csv", index=False)
    sections = [
        _gap_section(study, gap, frontier),
        Section("KL over training", figures=[("kl_curves", plots.plot_kl_curves(
            study.evals, study.events, study.train, cells), _KL_CAPTION)]),
        _state_section(study),
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


def build_frontier_table(study: Study, n_points: int) -> pd.DataFrame:
    """frontier.csv: each cell's frontier (cell, kl, reward, gold_reward, band_low, band_high, optimum, seeds) on
    `n_points` KLs of its own common range plus the KL grid's points inside it. gold_reward is empty unless the runs
    log eval/gold_reward; optimum is the optimum frontier's reward at that KL from report/optimum.py (empty until
    that module exists, and beyond the KL its estimate is reliable to)."""
    gold = build_units(study.evals, GOLD_REWARD) if GOLD_REWARD in study.evals.columns else None
    table = compute_frontiers(build_units(study.evals), study.cells, n_points, KL_GRID, gold)
    table.insert(6, "optimum", _optimum_at(study, table["kl"].to_numpy(float)))
    return table


def _optimum_at(study: Study, kl: np.ndarray) -> np.ndarray:
    """The optimum frontier's reward at each KL (NaN past its reliable KL, or where no run wrote optimum.jsonl)."""
    return optimum.optimum_at(optimum.load_optimum(study), kl)


def _gap_section(study: Study, gap, frontier) -> Section:
    cells = study.cells
    main = [c for c in MAIN_CELLS if c in cells]
    units = build_units(study.evals)
    span = common_range(units, main) if main else "no 2x2 cell present"
    text = (f"The KL range every seed of the 2x2 cells present covers is {span[0]:.3g} to {span[1]:.3g} nats; its "
            f"top is set by {limiting_unit(units, main)[0]}. Estimates are differences in eval/reward, positive "
            "when the first cell of the contrast scores higher. gap.csv and frontier.csv beside this report hold "
            "the same numbers." if not isinstance(span, str) else f"No common KL range: {span}.")
    budget = describe_label_budget(study.evals, cells)
    curves = frontier.rename(columns={"reward": "value"})
    return Section(
        "The off-policy gap",
        paragraphs=[GAP_METHOD, text] + ([budget] if budget else []),
        tables=tables.format_gap_tables(gap),
        figures=[("frontier", plots.plot_frontier(study.evals, curves, cells, optimum=optimum.load_optimum(study)), _FRONTIER_CAPTION),
                 ("gap_curve", plots.plot_gap_curve(compute_gap_curve(gap)),
                  "The matched-KL contrasts at the points of the fixed KL grid inside each contrast's common range, "
                  "with pointwise Welch 95% bands (not adjusted); the claims are the mean-gap rows of the table.")])


def _state_section(study: Study) -> Section:
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
_FRONTIER_CAPTION = ("Reward vs KL(π_θ‖π_sft), as in Figure 2 of the DPO paper. Thick lines: each cell's frontier, the "
                     "mean over its seeds of each seed's curve through all its runs' evaluations (every β), on the "
                     "range all its seeds cover — the values the matched-KL gap is read from (frontier.csv).")
_STATE_TEXT = ("Where DPO's training states (d_D, or those of the behaviour policy μ) and the policy's own states (d_θ) part "
               "ways. An ESS near 1 and a shift ratio near 1 mean the data are still on-policy.")
_STATE_CAPTION = ("Effective sample size, KL on data vs on policy states and their ratio, state KL, and the "
                  "behaviour-agnostic two-sample divergences (classifier accuracy, MMD², n-gram JS).")
