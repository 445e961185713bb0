"""Assemble the report: load run directories → statistics → figures → sections → HTML/Markdown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab import __version__
from shiftlab.cell import MAIN_CELLS
from shiftlab.metrics import direction
from shiftlab.report import anomalies, frontier_plots, methods, optimum, plots, staleness, tables
from shiftlab.report.frontier import GOLD_REWARD, REWARD, build_units, common_range, compute_frontiers, limiting_unit
from shiftlab.report.load import Study, load_study, portable_path
from shiftlab.report.options import PlotConfig, ReportConfig, default_name
from shiftlab.report.render import Plot, Section, write_figure, write_report
from shiftlab.report.stats import KL_GRID, compute_gap_curve, compute_gap_table, describe_label_budget, write_gap_csv
from shiftlab.report.summary import lead_sentence, staleness_lead, staleness_summary, write_summary

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
    """Write `<out>/<name>/report.html` and `report.md` with figures, and beside them the CSV files behind every
    figure and table (gap.csv, frontier.csv, shortfall.csv, runs.csv, evals.csv, train.csv), for the runs below
    `paths`."""
    study = load_study(paths, allow_mixed=cfg.allow_mixed)
    out_dir = Path(cfg.out) / (cfg.name or default_name(paths))
    levels = staleness.find_levels(study)
    if levels:  # a staleness study: each (on-policy cell, sample_every) is a cell of its own from here on
        study = staleness.split_levels(study, levels)
    cells = study.cells
    higher = direction(REWARD) != "lower"
    if levels:
        gap = staleness.compute_staleness_table(study.evals, levels, higher_is_better=higher)
        gold = (staleness.compute_staleness_table(study.evals, levels, GOLD_REWARD)
                if GOLD_REWARD in study.evals.columns and study.evals[GOLD_REWARD].notna().any() else pd.DataFrame())
        state = staleness.state_shift_table(study.evals, levels)
    else:
        gap = compute_gap_table(study.evals, cells, higher_is_better=higher)
        gold, state = gold_gap_table(study), pd.DataFrame()
    frontier = build_frontier_table(study, cfg.kl_grid)
    best = optimum.load_optimum(study)
    short = optimum.shortfall(frontier, best, KL_GRID) if not frontier.empty else pd.DataFrame()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_data_files(out_dir, study, gap, frontier, short)
    if not gold.empty:
        write_gap_csv(gold, out_dir / "gold_gap.csv")
        files.insert(1, ("gold_gap.csv", "gap.csv's contrasts with the gold judge's reward in place of the oracle's"))
    sections = [
        _staleness_section(study, levels, gap, gold, state) if levels else _gap_section(study, gap, gold),
        _optimum_section(short, best, study),
        Section("KL over training", figures=[Plot("kl_curves", plots.plot_kl_curves(
            study.evals, study.events, study.train, cells), _KL_CAPTION, ("evals.csv",))]),
        _state_section(study),
        Section("DPO diagnostics", figures=[Plot("dpo_diagnostics", plots.plot_metric_panels(
            study.train, plots.DPO_METRICS, cells, f"Training rows, rolling mean over {cfg.smooth} steps",
            ncols=4, smooth=cfg.smooth), _DPO_CAPTION, ("train.csv",))]),
        _seed_section(study),
        methods.methods_section(GAP_METHOD),
        Section("Configuration", paragraphs=[methods.CONFIG_TEXT],
                tables=[("Settings of the study's runs", methods.build_config_table(study))]),
        Section("Runs", paragraphs=[tables.describe_run_time(study)],
                tables=[(_RUNS_CAPTION, tables.build_run_table(study))]),
        Section("Data notes", bullets=study.notes + anomalies.find_anomalies(study) + tables.missing_metrics(study)
                or ["every run finished and logged every divergence column"]),
        Section("Data files", paragraphs=["The numbers behind every figure and table, beside this report:"],
                links=files),
    ]
    samples = tables.build_samples_table(study)
    if not samples.empty:
        sections.insert(-4, Section("Samples", paragraphs=[tables.SAMPLES_TEXT],
                                    tables=[("The same eval prompts answered by π_sft and by each cell's runs", samples)]))
    shown = ["eval/reward", "eval/gold_reward", "eval/kl_sft", "eval/kl_ref", *plots.STATE_METRICS, *plots.DPO_METRICS]
    sections.append(Section("Metrics", paragraphs=[methods.GLOSSARY_TEXT],
                            tables=[("From shiftlab.metrics", tables.build_glossary(shown))]))
    subtitle = (f"{len(study.runs)} run(s) from {', '.join(map(str, paths))} · generated "
                f"{dt.datetime.now():%Y-%m-%d %H:%M} · shiftlab {__version__}")
    if levels:
        dial = Plot("staleness", frontier_plots.plot_staleness(gap, gold, state, levels), _STALENESS_CAPTION,
                    ("gap.csv", "gold_gap.csv", "evals.csv"))
        lead = _lead_section(study, gap, gold, frontier, best, sentence=staleness_lead(gap),
                             cells=[*(lv.name for lv in levels), staleness.REFERENCE], first=[dial])
        summary = staleness_summary(study, gap, gold, state, levels)
    else:
        lead, summary = _lead_section(study, gap, gold, frontier, best), write_summary(study, gap, gold)
    return write_report(out_dir, f"shiftlab report: {out_dir.name}", summary, sections, subtitle, lead=lead)


def gold_gap_table(study: Study) -> pd.DataFrame:
    """The gap table with the gold judge's reward (eval/gold_reward) in place of the oracle's: where the proxy the
    cells were trained on and a judge they never saw disagree, the proxy's gap is over-optimisation, not skill.
    Empty when no run logs a gold reward."""
    ev = study.evals
    if GOLD_REWARD not in ev.columns or ev[GOLD_REWARD].isna().all():
        return pd.DataFrame()
    return compute_gap_table(ev.assign(**{REWARD: ev[GOLD_REWARD]}), study.cells)


def write_data_files(out_dir: Path, study: Study, gap: pd.DataFrame, frontier: pd.DataFrame,
                     short: pd.DataFrame) -> list[tuple[str, str]]:
    """Write the CSVs beside the report; return (file, what it holds) for the page's list."""
    write_gap_csv(gap, out_dir / "gap.csv")
    frontier.drop(columns="seeds").to_csv(out_dir / "frontier.csv", index=False)
    files = [("gap.csv", "one row per (contrast, axis, at): estimate, Welch interval, p, Holm-adjusted p, seeds"),
             ("frontier.csv", "each cell's frontier: reward and gold reward against KL(π_θ‖π_sft), band, optimum")]
    if not short.empty:
        short.to_csv(out_dir / "shortfall.csv", index=False)
        files.append(("shortfall.csv", "the optimum's reward minus each cell's frontier at the KL grid's points"))
    runs = study.runs.assign(beta=[study.configs.get(r, {}).get("loss.beta") for r in study.runs["run"]],
                             path=[portable_path(p) for p in study.runs["path"]])
    runs.drop(columns=["overrides"], errors="ignore").to_csv(out_dir / "runs.csv", index=False)
    files.append(("runs.csv", "one row per run: cell, seed, β, status, steps, wall time, run directory"))
    beta = dict(zip(runs["run"], runs["beta"]))
    lead = ["run", "cell", "seed", "beta", "step"]
    for name, frame, what in (("evals.csv", study.evals, "every evaluation row of every run (all eval/ columns)"),
                              ("train.csv", study.train, "every training row of every run")):
        if len(frame):
            frame = frame.assign(beta=frame["run"].map(beta))
            frame[[*lead, *(c for c in frame.columns if c not in lead)]].to_csv(out_dir / name, index=False)
            files.append((name, what))
    if len(study.curves):
        study.curves.assign(beta=study.curves["run"].map(beta)).to_csv(out_dir / "curves.csv", index=False)
        files.append(("curves.csv", "depth curves (curves.jsonl) of every run and evaluation, one row per depth t"))
    return files


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


def _lead_section(study: Study, gap: pd.DataFrame, gold: pd.DataFrame, frontier: pd.DataFrame,
                  best: pd.DataFrame, sentence: str | None = None, cells: list[str] | None = None,
                  first: list[Plot] = ()) -> Section:
    """The finding first: one verdict sentence with its interval (`sentence`, or the off-policy gap's), then the
    figures `first` (a staleness study's dial), then the frontier it is read from, its matched KLs those of the
    range `cells` share (default: the 2x2 cells)."""
    main = cells if cells is not None else [c for c in MAIN_CELLS if c in study.cells]
    span = common_range(build_units(study.evals), main) if main else "no 2x2 cell present"
    marks = [k for k in KL_GRID if not isinstance(span, str) and span[0] <= k <= span[1]]
    curves = frontier.rename(columns={"reward": "value"})
    figure = frontier_plots.plot_frontier(study.evals, curves, study.cells, optimum=best, marks_kl=marks)
    return Section("Finding", paragraphs=[sentence or lead_sentence(gap, gold)], figures_first=True,
                   figures=[*first, Plot("frontier", figure, _FRONTIER_CAPTION, ("frontier.csv", "evals.csv"))])


def _gap_section(study: Study, gap: pd.DataFrame, gold: pd.DataFrame) -> Section:
    cells = study.cells
    main = [c for c in MAIN_CELLS if c in cells]
    units = build_units(study.evals)
    span = common_range(units, main) if main else "no 2x2 cell present"
    text = (f"The KL range every seed of the 2x2 cells present covers is {span[0]:.3g} to {span[1]:.3g} nats; its "
            f"top is set by {limiting_unit(units, main)[0]}. Estimates are differences in eval/reward, positive "
            "when the first cell of the contrast scores higher (Methods says how they are computed)."
            if not isinstance(span, str) else f"No common KL range: {span}.")
    budget = describe_label_budget(study.evals, cells)
    return Section(
        "The off-policy gap",
        paragraphs=[text] + ([budget] if budget else []),
        tables=tables.format_gap_tables(gap) + tables.format_gold_table(gold),
        figures=[Plot("gap_curve", frontier_plots.plot_gap_curve(compute_gap_curve(gap)), _GAP_CAPTION, ("gap.csv",))])


def _staleness_section(study: Study, levels: list, gap: pd.DataFrame, gold: pd.DataFrame,
                       state: pd.DataFrame) -> Section:
    names = [lv.name for lv in levels]
    units = build_units(study.evals)
    span = staleness.shared_span(units, names)
    text = (f"Each level is the online cell with a sampling round every `source.sample_every` optimizer steps; a "
            f"round draws enough prompts that every pair serves the same number of steps and every run spends the "
            f"same labelling budget, so only how stale the pairs are changes (conf/experiment/staleness.yaml). The "
            f"KL range every seed of every level and of offline DPO covers is {span[0]:.3g} to {span[1]:.3g} nats; "
            f"its top is set by {limiting_unit(units, [*names, staleness.REFERENCE])[0]}. Gaps are differences in "
            f"eval/reward, positive when the level scores higher than offline DPO; the trend is the least-squares "
            f"slope of the levels' frontier means on log2(sample_every), a linear contrast of seed-level values with a "
            f"Welch interval like every other (report/staleness.py)."
            if not isinstance(span, str) else f"No KL range shared by every level and offline DPO: {span}.")
    means = staleness.level_frontier_means(study.evals, levels)
    return Section(
        "Off-policyness as a dial",
        paragraphs=[text],
        tables=tables.format_gap_tables(gap) + tables.format_gold_table(gold)
        + [("Each level's frontier averaged over the shared KL range (eval/reward; 95% t interval over seeds)",
            tables.format_level_means(means)),
           ("State shift: each run's mean eval/state_kl (nats) over its evaluations after step 0; per level the mean "
            "over seeds with a 95% t interval, and its trend per doubling of sample_every (Welch 95% CI)",
            tables.format_level_means(state))])


def _optimum_section(short: pd.DataFrame, best: pd.DataFrame, study: Study) -> Section:
    law = [("Over-optimisation law R(d) = d(α − b·log d), d = √KL(π_θ‖π_sft), fitted per cell to every evaluation's "
            "gain over its run's step 0 (least squares; descriptive, no interval)", tables.format_law(
                optimum.fit_cells(study.evals), optimum.fit_cells(study.evals, GOLD_REWARD)
                if GOLD_REWARD in study.evals.columns else None, study.cells))]
    law = law if len(law[0][1]) else []
    if best.empty:
        return Section("The optimum of the objective", paragraphs=[
            "No run wrote optimum.jsonl (eval.optimum_samples = 0, or runs from before the optimum stage existed), "
            "so the optimum frontier and each cell's shortfall from it are not available.", _LAW_TEXT], tables=law)
    return Section("The optimum of the objective", paragraphs=[methods.optimum_text(best), _LAW_TEXT],
                   tables=[("Shortfall from the optimum at matched KL (optimum − cell frontier; eval/reward)",
                            tables.format_shortfall(short)), *law])


def _state_section(study: Study) -> Section:
    return Section(
        "State divergence",
        paragraphs=[_STATE_TEXT],
        figures=[Plot("depth_curves", plots.plot_depth_curves(study.curves, study.cells),
                      "KL(d_θ,t ‖ d_μ,t) and the off-support fraction by depth t at each run's last evaluation: where "
                      "along a response the policy's states leave the data's.", ("curves.csv",)),
                 Plot("state_divergence", plots.plot_metric_panels(
                     study.evals, plots.STATE_METRICS, study.cells, "Evaluation rows over training"),
                     _STATE_CAPTION, ("evals.csv",))])


def _seed_section(study: Study) -> Section:
    labels = {r: f"seed {s}, β {study.configs.get(r, {}).get('loss.beta')}"
              for r, s in zip(study.runs["run"], study.runs["seed"])}
    return Section("Every run", paragraphs=[
        "The cell means above average seeds; here each run's own trajectory, one panel per cell, so a seed that "
        "behaves unlike the others is visible."],
        figures=[Plot("seed_curves", plots.plot_seed_curves(study.evals, study.cells, labels=labels),
                      "Eval reward and KL(π_θ‖π_sft) of every run against optimizer steps (one line per run).",
                      ("evals.csv",))])


_KL_CAPTION = ("Top: KL(π_θ‖π_ref) — it drops to 0 at a hard refresh by construction. Bottom: KL(π_θ‖π_sft), "
               "comparable across cells: look here for how far each cell moves from π_sft. Left against optimizer "
               "steps, right against the labelling budget (oracle_calls). The strip under each column marks "
               "reference refreshes, one labelled row per cell. A cell trained on a fixed offline set spends its "
               "whole budget at step 0, so on the right it is a vertical range of all its evaluations at that budget. "
               "The y axis is symlog when the cells' KLs differ by an order of magnitude.")
_LAW_TEXT = ("Rafailov et al. (2024) found direct alignment's reward against d = √KL to follow the over-optimisation "
             "law Gao et al. (2023) fitted to RL, R(d) = d(α − b·log d): rising, peaking at d* = exp(α/b − 1), then "
             "falling. Its fit per cell below, to the oracle's reward and to the gold judge's: a peak KL inside the "
             "range a cell reached says that cell went past its best; b ≤ 0 means no peak (still rising). The fit "
             "pools seeds and β values and has no interval: read it as a description, not a test.")
_STALENESS_CAPTION = ("Left: each staleness level's mean reward gap to offline DPO over the KL range all levels share, "
                      "scored by the oracle the pairs were labelled with and by the gold judge, with pointwise Welch "
                      "95% intervals (the tables under Off-policyness as a dial give the Holm-adjusted ones); a flat "
                      "line is robustness to stale samples. Right: how far the policy's states are from those of the "
                      "behaviour policy μ that sampled its training pairs, per run averaged over its evaluations; "
                      "offline DPO's μ is π_sft.")
_DPO_CAPTION = ("Implicit-reward margins and accuracies, and the log-likelihoods of chosen and rejected responses "
                "(likelihood displacement: both can fall while the margin grows).")
_RUNS_CAPTION = ("One row per run: configuration differences from the most common value, progress, and the last "
                 "evaluation (± standard error)")
_FRONTIER_CAPTION = ("Reward vs KL(π_θ‖π_sft), as in Figure 2 of the DPO paper. Look at the thick lines: each "
                     "cell's frontier, the mean over its seeds of each seed's curve through all its runs' evaluations "
                     "(every β), on the range all its seeds cover, with a 95% t band over seeds; the gap is the vertical "
                     "distance between two of them, read at the dotted KLs (the fixed grid inside the common range). "
                     "Dots are single evaluations, thin lines single runs; the dashed black line is the optimum π*_β "
                     "of the same objective, drawn only up to the KL its estimate is reliable to.")
_GAP_CAPTION = ("The matched-KL contrasts at the points of the fixed KL grid inside each contrast's common range, with "
                "pointwise Welch 95% bands (not adjusted): a band that leaves 0 is a pointwise difference, the claims "
                "are the Holm-adjusted mean-gap rows of the table above.")
_STATE_TEXT = ("Where DPO's training states (d_D, or those of the behaviour policy μ) and the policy's own states (d_θ) part "
               "ways. An ESS near 1 and a shift ratio near 1 mean the data are still on-policy.")
_STATE_CAPTION = ("Effective sample size, KL on data vs on policy states and their ratio, state KL, and the "
                  "behaviour-agnostic two-sample divergences (classifier accuracy, MMD², n-gram JS).")
