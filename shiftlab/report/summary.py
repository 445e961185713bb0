"""Plain sentences derived from the gap table: what the numbers say, with their uncertainty. A cell is said to do
better or worse only where the Holm-adjusted interval of its mean gap excludes 0 (report/gap.py); everywhere else
the sentence says "inconclusive" and how many seeds would settle it at the observed spread."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shiftlab.cell import MAIN_CELLS
from shiftlab.report.frontier import Units, build_units, limiting_unit
from shiftlab.report.gap import ALPHA, POWER
from shiftlab.report.load import Study
from shiftlab.report.tables import signed

COVERAGE_SEEDS = 5  # the seeds per cell at which tests/report/test_coverage.py checks the intervals
NAMES = {"online": "online DPO", "offline": "offline DPO", "trdpo": "trdpo", "oaif": "oaif", "rl": "the RL cell"}


def contrast_verdicts(table: pd.DataFrame) -> dict[str, str]:
    """contrast → 'better' / 'worse' / 'inconclusive' from its Holm-adjusted mean gap ('not available' without)."""
    out = {}
    for con in dict.fromkeys(table["contrast"]) if len(table) else ():
        row = _row(table, "kl_sft_mean", con)
        out[con] = row["verdict"] if row is not None and row["verdict"] else "not available"
    return out


def lead_sentence(table: pd.DataFrame, gold: pd.DataFrame | None = None) -> str:
    """The report's first line: the off-policy gap's verdict with its Holm-adjusted interval, and the gold judge's
    where there is one (a proxy's gap that the gold judge does not see is over-optimisation, not skill)."""
    text = _proxy_lead(table)
    row = None if gold is None else _row(gold, "kl_sft_mean", "total")
    if row is None or not np.isfinite(row["estimate"]) or not np.isfinite(row["p_adjusted"]):
        return text
    verdict = f"online DPO does {row['verdict']}" if row["verdict"] in ("better", "worse") else "inconclusive"
    return (f"{text} Scored by the gold judge no cell trained on, the same gap is {signed(row['estimate'])} "
            f"(Holm-adjusted 95% interval {signed(row['adj_low'])} to {signed(row['adj_high'])}): {verdict}.")


def _proxy_lead(table: pd.DataFrame) -> str:
    row = _row(table, "kl_sft_mean", "total")
    if row is None or not np.isfinite(row["estimate"]):
        why = "" if row is None else f": {row['note'].removeprefix('not available: ')}"
        return f"The off-policy gap (online − offline DPO at matched KL) is not available{why}."
    head = (f"Off-policy gap, online − offline DPO (mean eval-reward difference over the common KL(π_θ‖π_sft) range "
            f"{row['kl_low']:.3g}–{row['kl_high']:.3g} nats): {signed(row['estimate'])}")
    seeds = f"seeds: {row['seeds_by_cell']}"
    if not np.isfinite(row["p_adjusted"]):
        return f"{head} ({seeds}; no interval: too few seeds)."
    interval = f"Holm-adjusted 95% interval {signed(row['adj_low'])} to {signed(row['adj_high'])}; {seeds}"
    if row["verdict"] in ("better", "worse"):
        return f"{head} ({interval}): online DPO does {row['verdict']} than offline DPO at matched KL."
    return f"{head} ({interval}): inconclusive — the interval includes 0."


def write_summary(study: Study, table: pd.DataFrame, gold: pd.DataFrame | None = None) -> list[str]:
    """Sentences for the top of the report, in reading order; `gold` is the same table on the gold judge's reward."""
    units = build_units(study.evals)
    lines = [_describe_cells(study)]
    row = _row(table, "kl_sft_mean", "total")
    if row is None or not np.isfinite(row["estimate"]):
        why = "" if row is None else f" ({row['note'].removeprefix('not available: ')})"
        lines.append(f"The off-policy gap (online − offline) at matched KL is not available{why}.")
    else:
        lines.append(_mean_gap_sentence(row, table) + _limit_sentence(study, units))
        lines.append(_curve_sentence(table, "total"))
        lines.append(_decomposition_sentence(table))
        lines.append(_gold_sentence(gold))
    r = _row(table, "step", "total")
    if r is not None and np.isfinite(r["estimate"]):
        lines.append(f"At the last step every compared run reached ({r['at']:.0f}) the gap is {_est(r)}; that compares "
                     "policies at whatever KL each reached, so it is not the matched-KL gap.")
    r = _row(table, "oracle_calls", "total")  # absent when it would repeat the step row (the section says why)
    if r is not None and np.isfinite(r["estimate"]):
        lines.append(f"At a matched labelling budget of {r['at']:.0f} oracle calls the gap is {_est(r)}.")
    r = _row(table, "kl_sft_mean", "rl")
    if r is not None and np.isfinite(r["estimate"]):
        lines.append("RL reference point: o" + _mean_gap_sentence(r, table, first="rl", second="offline")[1:])
    lines.append(_seed_caveat(table))
    lines.append(_unfinished_sentence(study))
    return [s for s in lines if s]


def _unfinished_sentence(study: Study) -> str:
    unfinished = (study.runs["status"] != "finished").sum()
    if not unfinished:
        return ""
    return (f"{unfinished} of {len(study.runs)} runs are not marked finished; the estimates use the evaluations "
            "logged so far (see Data notes).")


def _describe_cells(study: Study, design: bool = True) -> str:
    """Which cells the study has, runs × seeds × β values each; with `design`, which cells of the 2x2 it lacks."""
    counts = study.runs.groupby("cell").size()
    betas = {r: study.configs.get(r, {}).get("loss.beta") for r in study.runs["run"]}
    parts = []
    for c in study.cells:
        runs = study.runs[study.runs["cell"] == c]
        seeds = runs["seed"].where(runs["seed"].notna(), runs["run"]).nunique()
        nb = len({betas[r] for r in runs["run"]})
        parts.append(f"{c} ({counts[c]} run{'s' if counts[c] != 1 else ''}: {seeds} seed{'s' if seeds != 1 else ''}"
                     f" × {nb} β value{'s' if nb != 1 else ''})")
    missing = [c for c in MAIN_CELLS if c not in counts.index]
    n = len(study.runs)
    text = f"The study has {n} run{'s' if n != 1 else ''}. Cells present: {', '.join(parts)}."
    if missing and design:
        text += f" Missing: {', '.join(missing)} — comparisons that need them are marked not available."
    return text


def _mean_gap_sentence(row: pd.Series, table: pd.DataFrame, first: str = "online", second: str = "offline") -> str:
    est, m = row["estimate"], int(np.isfinite(table.loc[table["axis"] == "kl_sft_mean", "p"]).sum())
    side = "above" if est > 0 else "below"
    text = (f"Over the common KL(π_θ‖π_sft) range {row['kl_low']:.3g}–{row['kl_high']:.3g} nats, {NAMES[first]}'s "
            f"reward frontier lies on average {abs(est):.3f} {side} {NAMES[second]}'s (mean gap {_est(row, nest=False)}; "
            f"{row['seeds_by_cell'].replace(', ', ' vs ')} seeds).")
    if not np.isfinite(row["p_adjusted"]):
        return text + " No interval: too few seeds."
    text += (f" Holm-adjusted over the {m} mean-gap contrast{'s' if m != 1 else ''} stated, p = "
             f"{row['p_adjusted']:.2g} (adjusted interval {signed(row['adj_low'])} to {signed(row['adj_high'])}):")
    if row["verdict"] in ("better", "worse"):
        return text + f" {NAMES[first]} does {row['verdict']} on this evidence."
    return text + " inconclusive, the adjusted interval includes 0" + _power_clause(row) + "."


def _power_clause(row: pd.Series) -> str:
    n = row["seeds_needed"]
    if not np.isfinite(n):
        return ""
    count = "more than 1,000" if n > 1000 else f"about {n:.0f}"
    return (f"; at the observed seed-level SD ({row['sd']:.3f}) {count} seeds per cell would resolve a gap of this "
            f"size (power {POWER:.0%}, two-sided α = {ALPHA:g})")


def _curve_sentence(table: pd.DataFrame, contrast: str) -> str:
    d = table[(table["axis"] == "kl_sft") & (table["contrast"] == contrast) & np.isfinite(table["ci_low"])]
    if d.empty:
        return ""
    out = d[(d["ci_low"] > 0) | (d["ci_high"] < 0)]
    at = ", ".join(f"{k:g} nats ({signed(e)})" for k, e in zip(out["at"], out["estimate"]))
    where = f"excludes 0 at {at}" if len(out) else "includes 0 at every grid point"
    return (f"On the fixed KL grid ({', '.join(f'{k:g}' for k in d['at'])} nats inside the range) the pointwise 95% "
            f"band of online − offline {where}; pointwise bands are not adjusted for multiplicity.")


def _limit_sentence(study: Study, units: Units) -> str:
    label, runs = limiting_unit(units, [c for c in MAIN_CELLS if c in study.cells])
    status = study.runs.set_index("run")["status"]
    running = [r for r in runs if status.get(r, "unknown") != "finished"]
    if not label:
        return ""
    text = f" The top of the range is set by {label} (its largest KL over its runs)."
    if running:
        text += f" Its run(s) {', '.join(running)} are not finished: the range will grow as they progress."
    return text


def _gold_sentence(gold: pd.DataFrame | None) -> str:
    row = None if gold is None else _row(gold, "kl_sft_mean", "total")
    if row is None or not np.isfinite(row["estimate"]):
        return ""
    verdict = (f"{NAMES['online']} does {row['verdict']}" if row["verdict"] in ("better", "worse")
               else "inconclusive, the adjusted interval includes 0")
    return (f"Scored by the gold judge instead of the oracle (eval/gold_reward, which no cell trained on), the same "
            f"mean gap is {_est(row)}; Holm-adjusted p = {row['p_adjusted']:.2g} (adjusted interval "
            f"{signed(row['adj_low'])} to {signed(row['adj_high'])}): {verdict}.")


def _decomposition_sentence(table: pd.DataFrame) -> str:
    parts = {k: _row(table, "kl_sft_mean", k) for k in ("sampling", "refresh", "interaction")}
    if any(r is None or not np.isfinite(r["estimate"]) for r in parts.values()):
        return ("The split into an on-policy-sampling part and a reference-refresh part needs all four cells "
                "(offline, trdpo, oaif, online); it is not available here.")
    return (f"Split over the same range: on-policy sampling alone (oaif − offline) {_est(parts['sampling'])}, "
            f"{parts['sampling']['verdict']}; refreshing the reference alone (trdpo − offline) "
            f"{_est(parts['refresh'])}, {parts['refresh']['verdict']}; their interaction {_est(parts['interaction'])}, "
            f"{parts['interaction']['verdict']} (verdicts after Holm's adjustment).")


def _seed_caveat(table: pd.DataFrame) -> str:
    fam = table[(table["axis"] == "kl_sft_mean") & (table["seeds"] > 0)] if len(table) else table
    if fam.empty or fam["seeds"].min() >= COVERAGE_SEEDS:
        return ""
    k = int(fam["seeds"].min())
    if k < 2:
        return "Some cell has a single seed: no interval or test can be computed for comparisons that use it."
    return (f"With as few as {k} seeds per cell, fewer than the {COVERAGE_SEEDS} at which the Welch intervals' "
            "coverage is checked on simulated studies (tests/report/test_coverage.py), the intervals are wide and "
            "their coverage rests on fewer values per cell.")


def _est(row: pd.Series, nest: bool = True) -> str:
    open_, close = (" (", ")") if nest else (", ", "")
    if not np.isfinite(row.get("ci_low", np.nan)):
        return f"{signed(row['estimate'])}{open_}no interval: too few seeds{close}"
    return (f"{signed(row['estimate'])}{open_}Welch 95% CI {signed(row['ci_low'])} to {signed(row['ci_high'])}, "
            f"p = {row['p']:.2g}{close}")


def _row(table: pd.DataFrame, axis: str, contrast: str) -> pd.Series | None:
    if table.empty:
        return None
    hit = table[(table["axis"] == axis) & (table["contrast"] == contrast)]
    return None if hit.empty else hit.iloc[0]



# ----- a staleness study (report/staleness.py) -----

NOUKHOVITCH = ("Noukhovitch et al. (2024, Asynchronous RLHF) found online DPO robust to training on samples from "
               "older policies")


def staleness_lead(table: pd.DataFrame) -> str:
    """The staleness report's first line: the trend of reward at matched KL per doubling of the sampling interval,
    with its Holm-adjusted interval."""
    row = _row(table, "kl_sft_mean", "trend")
    if row is None or not np.isfinite(row["estimate"]):
        return "The staleness trend is not available: it needs two or more levels and the offline cell, with seeds."
    return (f"Online DPO's reward at matched KL (mean over {row['kl_low']:.3g}–{row['kl_high']:.3g} nats) changes by "
            f"{signed(row['estimate'])} per doubling of the sampling interval{_adjusted(row)}: {_trend_word(row)}.")


def _staleness_details(gold: pd.DataFrame, state: pd.DataFrame) -> str:
    """The gold judge's trend and the state shift's, for the summary."""
    text = ""
    g = _row(gold, "kl_sft_mean", "trend") if gold is not None else None
    if g is not None and np.isfinite(g["estimate"]):
        text += f"Scored by the gold judge the trend is {signed(g['estimate'])} per doubling{_adjusted(g)}, {_trend_word(g)}."
    s = state[state["cell"] == "trend"] if len(state) else state
    if len(s) and np.isfinite(s["estimate"].iloc[0]):
        r = s.iloc[0]
        text += (f" The state shift KL(d_θ ‖ d_μ) (each run's mean eval/state_kl) changes by {signed(r['estimate'])} "
                 f"nats per doubling (Welch 95% CI {signed(r['ci_low'])} to {signed(r['ci_high'])}).")
    return text.strip()


def staleness_summary(study: Study, table: pd.DataFrame, gold: pd.DataFrame, state: pd.DataFrame,
                      levels: list) -> list[str]:
    """Sentences for the top of a staleness report, in reading order."""
    lines = [_describe_cells(study, design=False)]
    row = _row(table, "kl_sft_mean", "trend")
    if row is None or not np.isfinite(row["estimate"]):
        return lines + [staleness_lead(table)]
    lines.append(_staleness_details(gold, state))
    per = []
    for lv in levels:
        r = _row(table, "kl_sft_mean", f"every{lv.every}")
        if r is not None and np.isfinite(r["estimate"]):
            per.append(f"every {lv.every} {signed(r['estimate'])} ({_adj_interval(r)}, {r['verdict']})")
    lines.append(f"Each level's mean gap to offline DPO over that range, Holm-adjusted with the trend: "
                 f"{'; '.join(per)}.")
    gper = []
    for lv in levels:
        r = _row(gold, "kl_sft_mean", f"every{lv.every}") if gold is not None else None
        if r is not None and np.isfinite(r["estimate"]):
            gper.append(f"every {lv.every} {signed(r['estimate'])} ({_adj_interval(r)}, {r['verdict']})")
    if gper:
        lines.append(f"The same gaps scored by the gold judge: {'; '.join(gper)}.")
    lines.append(_noukhovitch_sentence(row, levels))
    lines.append(_seed_caveat(table))
    lines.append(_unfinished_sentence(study))
    return [s for s in lines if s]


def _noukhovitch_sentence(row: pd.Series, levels: list) -> str:
    span = f"sample_every {levels[0].every}–{levels[-1].every}"
    if not np.isfinite(row["p_adjusted"]):
        return f"{NOUKHOVITCH}; with too few seeds for an interval, this study cannot say whether that reproduces."
    if row["verdict"] == "inconclusive":
        return (f"{NOUKHOVITCH}. Here no dependence of the matched-KL reward on staleness is resolved over {span}: "
                f"consistent with that robustness, and the adjusted interval bounds the trend to "
                f"{signed(row['adj_low'])} … {signed(row['adj_high'])} per doubling — an absence of evidence, not "
                f"evidence of no effect{_power_clause(row)}.")
    way = "falls" if row["estimate"] < 0 else "rises"
    return (f"{NOUKHOVITCH}. Here that does not reproduce: over {span} the matched-KL reward {way} with staleness "
            f"({signed(row['estimate'])} per doubling, {_adj_interval(row)}).")


def _trend_word(row: pd.Series) -> str:
    if not np.isfinite(row["p_adjusted"]):
        return "no interval (too few seeds)"
    if row["verdict"] == "inconclusive":
        return "no trend resolved, the adjusted interval includes 0"
    return f"reward {'falls' if row['estimate'] < 0 else 'rises'} with staleness"


def _adjusted(row: pd.Series) -> str:
    return f" ({_adj_interval(row)})" if np.isfinite(row["p_adjusted"]) else ""


def _adj_interval(row: pd.Series) -> str:
    return f"Holm-adjusted 95% interval {signed(row['adj_low'])} to {signed(row['adj_high'])}"
