"""Display tables (pandas DataFrames of strings) for the report: runs, gap estimates, data gaps, samples."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from shiftlab.metrics import METRICS, direction
from shiftlab.report.load import Study

DIVERGENCES = ("eval/kl_ref", "eval/kl_sft", "eval/kl_ref_k1", "eval/kl_ref_k3", "eval/kl_sft_k1",
               "eval/kl_sft_k3", "eval/kl_ref_on_data", "eval/kl_ref_on_policy", "eval/kl_shift_ratio",
               "eval/state_kl", "eval/ess", "eval/c2st_acc", "eval/c2st_tv_lb", "eval/mmd2", "eval/mmd_pvalue",
               "eval/js_ngram", "eval/off_support", "eval/world_logprob")
AXIS_HOW = {"step": " (each run's last evaluation at or before the last step all compared runs reached, averaged "
                    "over the seed's runs; not matched on KL)",
            "oracle_calls": " (each run's last evaluation within the labelling budget all compared runs reached, "
                            "averaged over the seed's runs)"}
MEAN_CAPTION = ("Mean gap over the common KL(π_θ‖π_sft) range (area between the frontiers ÷ range): the claims. "
                "Welch t over seeds; Holm-adjusted over the contrasts in this table; verdict from the adjusted p")
CURVE_CAPTION = ("Gap curve on the fixed KL grid (nats), at the points inside each contrast's common range: estimate "
                 "[pointwise Welch 95% CI], not adjusted for multiplicity")
SKIP_DIFF = ("seed",)  # shown in its own column


def build_run_table(study: Study) -> pd.DataFrame:
    """One row per run: config differences from the most common value, progress and final metrics."""
    common = _common_config(study.configs)
    last_eval = study.evals.sort_values("step").groupby("run").tail(1).set_index("run") if len(study.evals) else None
    rows = []
    for r in study.runs.itertuples():
        cfg = study.configs.get(r.run, {})
        diffs = [f"{k}={v}" for k, v in cfg.items() if k not in SKIP_DIFF and k in common and repr(v) != common[k]]
        diffs += [f"{k}=<unset>" for k in common if k not in cfg and cfg and k not in SKIP_DIFF]
        ev = last_eval.loc[r.run] if last_eval is not None and r.run in last_eval.index else pd.Series(dtype=float)
        rows.append({
            "run": r.run, "cell": r.cell, "seed": r.seed, "status": r.status,
            "step": f"{_int(r.last_step)}\u00a0/\u00a0{_int(r.steps)}",
            "wall time": "—" if pd.isna(r.wall_time_s) else f"{r.wall_time_s / 60:.1f}\u00a0min",
            "config differences": ", ".join(diffs) or "—",
            "eval step": _int(ev.get("step", np.nan)),
            "reward": _pm(ev, "eval/reward"), "KL sft": _pm(ev, "eval/kl_sft"), "KL ref": _pm(ev, "eval/kl_ref"),
        })
    return pd.DataFrame(rows)


def describe_run_time(study: Study) -> str:
    """How long the study's runs took, per cell and in all (Σ of each run's wall time from run.json)."""
    t = study.runs.dropna(subset=["wall_time_s"])
    if t.empty:
        return "No run recorded its wall time."
    per_cell = "; ".join(f"{c} {g.sum() / 60:.1f} min over {len(g)} run{'s' * (len(g) > 1)} (median "
                         f"{g.median() / 60:.1f})" for c, g in t.groupby("cell", sort=False)["wall_time_s"])
    return (f"Run time: {t['wall_time_s'].sum() / 3600:.2f} h in all over {len(t)} runs (Σ of each run's wall time, "
            f"one after another; a sweep's own wall time adds what its first runs wait for: π_sft, each seed's offline "
            f"set and optimum draw): {per_cell}.{describe_span(study.runs)}")


def describe_span(runs: pd.DataFrame) -> str:
    """The study's wall-clock span, first run's start to last run's finish (run.json's UTC times), as a sentence
    starting with a space; empty unless every run recorded both (runs older than the fields, or still going)."""
    if runs.empty or any(c not in runs for c in ("started_at", "finished_at")):
        return ""
    start = pd.to_datetime(runs["started_at"], utc=True, errors="coerce")
    end = pd.to_datetime(runs["finished_at"], utc=True, errors="coerce")
    if start.isna().any() or end.isna().any():
        return ""
    first, last = start.min(), end.max()
    hours = (last - first).total_seconds() / 3600
    took = f"{hours * 60:.0f} min" if hours < 2 else f"{hours:.2f} h"
    return (f" Wall clock: {took} from the first run's start ({first:%Y-%m-%d %H:%M}) to the last run's finish "
            f"({last:%Y-%m-%d %H:%M} UTC), with whatever ran in parallel or waited between.")


def format_gap_tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The gap table for reading, as (caption, table) pairs: the mean gap (the claims), the gap curve on the KL
    grid (one column per grid point), and the matched-step / matched-label rows; 'not available: why' where a
    row has no estimate."""
    if table.empty:
        return []
    out = []
    mean = table[table["axis"] == "kl_sft_mean"]
    if len(mean):
        rows = []
        for r in mean.itertuples():
            row = {"comparison": r.comparison, "contrast": r.formula,
                   "KL range": "—" if not np.isfinite(r.kl_low) else f"{r.kl_low:.3g}–{r.kl_high:.3g}"}
            if not np.isfinite(r.estimate):
                rows.append(row | {"mean gap": r.note, "seeds": r.seeds_by_cell})
                continue
            rows.append(row | {"mean gap": signed(r.estimate), "95% CI (Welch)": _ci(r.ci_low, r.ci_high),
                               "p": _p(r.p), "p (Holm)": _p(r.p_adjusted),
                               "Holm-adjusted CI": _ci(r.adj_low, r.adj_high), "verdict": r.verdict,
                               "seeds": r.seeds_by_cell, "seeds for power 0.8": _needed(r.seeds_needed)})
        out.append((MEAN_CAPTION, pd.DataFrame(rows)))
    curve = table[table["axis"] == "kl_sft"]
    if len(curve):
        rows = []
        for _, d in curve.groupby("contrast", sort=False):
            row = {"comparison": d["comparison"].iloc[0], "contrast": d["formula"].iloc[0]}
            for r in d.itertuples():
                if np.isfinite(r.at):
                    row[f"KL = {r.at:g}"] = f"{signed(r.estimate)} {_ci(r.ci_low, r.ci_high)}"
                else:
                    row["note"] = r.note
            rows.append(row)
        frame = pd.DataFrame(rows)
        grid = sorted((c for c in frame.columns if c.startswith("KL = ")), key=lambda c: float(c.split()[-1]))
        frame = frame[["comparison", "contrast", *grid, *(["note"] if "note" in frame.columns else [])]]
        out.append((CURVE_CAPTION, frame.fillna("—")))
    for axis in ("step", "oracle_calls"):
        group = table[table["axis"] == axis]
        if group.empty:
            continue
        rows = []
        for r in group.itertuples():
            row = {"comparison": r.comparison, "contrast": r.formula, "at": "—" if not np.isfinite(r.at) else f"{r.at:.0f}"}
            if not np.isfinite(r.estimate):
                rows.append(row | {"estimate": r.note, "seeds": r.seeds_by_cell})
            else:
                rows.append(row | {"estimate": signed(r.estimate), "95% CI (Welch)": _ci(r.ci_low, r.ci_high),
                                   "p": _p(r.p), "seeds": r.seeds_by_cell})
        out.append((f"Matched on {axis}{AXIS_HOW[axis]}", pd.DataFrame(rows)))
    return out


GOLD_CAPTION = ("The same mean gaps scored by the gold judge (eval/gold_reward: the world's grammar, which the oracle "
                "that labelled the pairs is not) over the same KL ranges; Holm-adjusted within these rows (gold_gap.csv)")


def format_gold_table(gold: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The gold judge's mean-gap rows as one (caption, table) pair; nothing without a gold reward."""
    if gold.empty:
        return []
    mean = [t for caption, t in format_gap_tables(gold[gold["axis"] == "kl_sft_mean"]) if caption == MEAN_CAPTION]
    return [(GOLD_CAPTION, mean[0])] if mean else []


def missing_metrics(study: Study, names: tuple[str, ...] = DIVERGENCES) -> list[str]:
    """Sentences naming the divergence columns that some or all runs did not log (absent or null)."""
    if len(study.evals) == 0:
        return ["no run has an evaluation row yet"]
    have = study.evals.groupby("run").agg(lambda s: s.notna().any())
    notes, runs = [], [r for r in study.runs["run"] if r in have.index]  # runs without evals: one note below
    absent = []
    for name in names:
        logged = set(have.index[have[name]]) if name in have.columns else set()
        lacking = [r for r in runs if r not in logged]
        if len(lacking) == len(runs):
            absent.append(name)
        elif lacking:
            notes.append(f"{name} is missing in run{'s' * (len(lacking) > 1)} {', '.join(lacking)}")
    if absent:
        notes.insert(0, f"not logged by any run: {', '.join(absent)}")
    no_eval = [r for r in study.runs["run"] if r not in have.index]
    if no_eval:
        notes.append(f"no evaluation rows yet in run{'s' * (len(no_eval) > 1)} {', '.join(no_eval)}")
    return notes


def build_glossary(names: list[str]) -> pd.DataFrame:
    """Meaning and direction of the metrics shown, from the metric vocabulary."""
    rows = [{"metric": n, "meaning": METRICS[n].meaning, "better": direction(n)} for n in names if n in METRICS]
    return pd.DataFrame(rows)


SAMPLES_TEXT = ("Each prompt first as π_sft answers it (the step-0 evaluation, where π_θ = π_sft), then as each cell's "
                "runs answer it at their last evaluation, one row per seed (runs at the study's middle β). One sample "
                "each at temperature 1, so a row shows what a policy tends to write, not its best; reward is the "
                "oracle's score of that sample.")


def build_samples_table(study: Study, prompts: int = 2, seeds: int = 3) -> pd.DataFrame:
    """The same eval prompts answered by π_sft and by each cell's runs (up to `seeds` seeds) at their last
    evaluation, full text."""
    s = study.samples
    if s.empty or "response" not in s.columns or "prompt" not in s.columns:
        return pd.DataFrame()
    shown = _runs_at_middle_beta(study)
    last = s[s["step"] == s.groupby("run")["step"].transform("max")]
    first = s[s["step"] == 0]
    rows = []
    for prompt in list(dict.fromkeys(first["prompt"] if len(first) else last["prompt"]))[:prompts]:
        sft = first[first["prompt"] == prompt].head(1)
        for r in sft.itertuples():
            rows.append(_sample_row(prompt, "π_sft", "step 0", r))
        for cell in study.cells:
            runs = study.runs[(study.runs["cell"] == cell) & study.runs["run"].isin(shown)]
            for run in runs.sort_values("seed", key=_seed_key)["run"].head(seeds):
                hit = last[(last["run"] == run) & (last["prompt"] == prompt)].head(1)
                for r in hit.itertuples():
                    seed = study.runs.set_index("run").at[run, "seed"]
                    rows.append(_sample_row(prompt, cell, f"seed {seed}, step {_int(r.step)}", r))
    return pd.DataFrame(rows)


def format_shortfall(short: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, one column per KL grid point where the optimum is estimated: optimum − frontier."""
    d = short.dropna(subset=["optimum"])
    if d.empty:
        return pd.DataFrame({"note": ["the optimum is not reliable at any point of the KL grid"]})
    best = d.groupby("kl")["optimum"].first()
    rows = [{"": "optimum π*_β (reward)", **{f"KL = {k:g}": f"{v:.3f}" for k, v in best.items()}}]
    for cell, g in d.groupby("cell", sort=False):
        rows.append({"": f"{cell}: shortfall", **{f"KL = {r.kl:g}": "—" if not np.isfinite(r.shortfall)
                                                  else signed(r.shortfall) for r in g.itertuples()}})
    return pd.DataFrame(rows)


def format_law(proxy: pd.DataFrame, gold: pd.DataFrame | None = None, cells: list[str] | None = None) -> pd.DataFrame:
    """The over-optimisation law's fits (report/optimum.py: fit_cells) per cell in `cells` order, the gold judge's
    beside the oracle's where given."""
    rows = []
    for name, fits in (("oracle (proxy)", proxy), ("gold judge", gold)):
        if fits is None:
            continue
        if cells is not None:
            fits = fits.set_index("cell").reindex([c for c in cells if c in set(fits["cell"])]).reset_index()
        for r in fits.itertuples():
            peak = "no peak (b ≤ 0)" if not np.isfinite(r.peak_kl) else (
                "> 10⁴" if r.peak_kl > 1e4 else f"{r.peak_kl:.3g}")
            rows.append({"cell": r.cell, "reward": name, "α": f"{r.alpha:.3f}", "b": signed(r.b),
                         "peak KL [nats]": peak, "KL reached [nats]": f"{r.max_kl:.3g}", "RMSE": f"{r.rmse:.3f}",
                         "evaluations": _int(r.points)})
    return pd.DataFrame(rows, columns=["cell", "reward", "α", "b", "peak KL [nats]", "KL reached [nats]", "RMSE",
                                       "evaluations"])


def format_level_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-cell means with intervals (report/staleness.py: level_frontier_means, state_shift_table) for reading;
    a 'trend' row is the slope per doubling of sample_every."""
    rows = []
    for r in frame.itertuples():
        rows.append({"cell": "trend per doubling of sample_every" if r.cell == "trend" else r.cell,
                     "sample_every": "—" if not np.isfinite(r.every) else f"{r.every:.0f}",
                     "estimate": signed(r.estimate), "95% CI": _ci(r.ci_low, r.ci_high), "seeds": _int(r.seeds)})
    return pd.DataFrame(rows, columns=["cell", "sample_every", "estimate", "95% CI", "seeds"])


def signed(x: float, digits: int = 3) -> str:
    """`x` with an explicit sign, the minus a true minus (−) so that columns of mixed signs line up."""
    return "—" if not np.isfinite(x) else f"{x:+.{digits}f}".replace("-", "\u2212")


def _sample_row(prompt: str, who: str, when: str, r) -> dict:
    return {"prompt": prompt, "policy": who, "run": when, "response": str(getattr(r, "response", "")).strip(),
            "reward": f"{getattr(r, 'reward', np.nan):.3f}"}


def _runs_at_middle_beta(study: Study) -> set[str]:
    betas = {r: study.configs.get(r, {}).get("loss.beta") for r in study.runs["run"]}
    values = sorted({b for b in betas.values() if isinstance(b, (int, float))})
    if not values:
        return set(study.runs["run"])
    middle = values[len(values) // 2]
    return {r for r, b in betas.items() if b == middle or not isinstance(b, (int, float))}


def _seed_key(seeds: pd.Series) -> pd.Series:
    return pd.to_numeric(seeds, errors="coerce")


def _common_config(configs: dict[str, dict]) -> dict[str, str]:
    counts: dict[str, Counter] = {}
    for cfg in configs.values():
        for k, v in cfg.items():
            counts.setdefault(k, Counter())[repr(v)] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


def _pm(ev: pd.Series, name: str) -> str:
    v, se = ev.get(name, np.nan), ev.get(f"{name}_se", np.nan)
    if pd.isna(v):
        return "—"
    return f"{v:.3f}" + ("" if pd.isna(se) else f"\u00a0±\u00a0{se:.3f}")


def _ci(lo: float, hi: float) -> str:
    return "—" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{signed(lo)}, {signed(hi)}]"


def _needed(n: float) -> str:
    return "—" if not np.isfinite(n) else ("> 1000" if n > 1000 else f"{n:.0f}")


def _p(p: float) -> str:
    return "—" if not np.isfinite(p) else f"{p:.2g}"


def _int(v) -> str:
    return "?" if v is None or pd.isna(v) else str(int(v))


def _clip(text, width: int) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
