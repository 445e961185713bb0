"""Plain sentences derived from the gap table: what the numbers say, with their uncertainty. No claims
are written here that the numbers do not make."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shiftlab.metrics import direction
from shiftlab.report.load import Study
from shiftlab.report.stats import (
    KL_SFT,
    MAIN_CELLS,
    REWARD,
    kl_limiting_run,
    min_permutation_p,
)

AXIS_PHRASE = {KL_SFT: "matched KL(π_θ‖π_sft) = {at:.3g} nats (the largest KL every compared run reached)",
               "step": "the last step every compared run reached ({at:.0f})",
               "oracle_calls": "a matched labelling budget of {at:.0f} oracle calls"}


def write_summary(study: Study, table: pd.DataFrame) -> list[str]:
    """Sentences for the top of the report, in reading order."""
    lines = [_describe_cells(study)]
    better = "higher" if direction(REWARD) != "lower" else "lower"
    row = _row(table, KL_SFT, "total")
    if row is None or _unavailable(row):
        why = "" if row is None else f" ({row['note'].removeprefix('not available: ')})"
        lines.append(f"The off-policy gap (online − offline) at matched KL is not available{why}.")
    else:
        lines.append(_gap_sentence(row, better) + _limit_sentence(study))
        lines.append(_decomposition_sentence(table))
    for axis in ("step", "oracle_calls"):
        r = _row(table, axis, "total")
        if r is not None and not _unavailable(r):
            lines.append(f"At {AXIS_PHRASE[axis].format(at=r['at'])} the gap is {_est(r)}.")
        elif r is not None:
            lines.append(f"Matched on {axis}, the gap is {r['note']}.")
    r = _row(table, KL_SFT, "rl")
    if r is not None and not _unavailable(r):
        lines.append(f"At matched KL(π_θ‖π_sft) = {r['at']:.3g} nats (rl and offline runs only), the RL "
                     f"reference point's reward minus offline DPO's is {_est(r)}.")
    lines.append(_seed_caveat(study))
    unfinished = (study.runs["status"] != "finished").sum()
    if unfinished:
        lines.append(f"{unfinished} of {len(study.runs)} runs are not marked finished; the estimates use the "
                     "evaluations logged so far (see Data notes).")
    return [s for s in lines if s]


def _describe_cells(study: Study) -> str:
    counts = study.runs.groupby("cell").size()
    present = ", ".join(f"{c} ({counts[c]} run{'s' if counts[c] != 1 else ''})" for c in study.cells)
    missing = [c for c in MAIN_CELLS if c not in counts.index]
    n = len(study.runs)
    text = f"The study has {n} run{'s' if n != 1 else ''}. Cells present: {present}."
    if missing:
        text += f" Missing: {', '.join(missing)} — comparisons that need them are marked not available."
    return text


def _gap_sentence(row: pd.Series, better: str) -> str:
    est = row["estimate"]
    side = "higher" if est > 0 else "lower"
    text = (f"At {AXIS_PHRASE[KL_SFT].format(at=row['at'])}, online DPO's eval reward is {abs(est):.3f} {side} "
            f"than offline DPO's ({_intervals(row)}; {row['seeds'].replace(', ', ' vs ')} seeds).")
    boot, welch = _excludes_zero(row, "ci"), _excludes_zero(row, "welch")
    if boot and welch:
        text += f" Both intervals exclude 0: on this evidence online DPO does {'better' if side == better else 'worse'}."
    elif boot or welch:
        which = "bootstrap" if boot else "Welch"
        text += f" Only the {which} interval excludes 0: treat the difference as suggestive, not established."
    else:
        text += " Both intervals include 0: these seeds do not separate online from offline DPO."
    return text


def _limit_sentence(study: Study) -> str:
    run = kl_limiting_run(study.evals, [c for c in MAIN_CELLS if c in study.cells])
    status = study.runs.set_index("run")["status"].get(run, "unknown")
    if status == "finished":
        return ""
    return (f" The matched KL is capped by run {run}, which has status {status}: the comparison will move to a "
            "larger KL as it progresses.")


def _decomposition_sentence(table: pd.DataFrame) -> str:
    parts = {k: _row(table, KL_SFT, k) for k in ("sampling", "refresh", "interaction")}
    if any(r is None or _unavailable(r) for r in parts.values()):
        return ("The split into an on-policy-sampling part and a reference-refresh part needs all four cells "
                "(offline, trdpo, oaif, online); it is not available here.")
    total = _row(table, KL_SFT, "total")["estimate"]
    text = (f"On-policy sampling alone (oaif − offline) accounts for {_est(parts['sampling'])}; refreshing the "
            f"reference alone (trdpo − offline) for {_est(parts['refresh'])}; their interaction is "
            f"{_est(parts['interaction'])}.")
    if abs(total) > 0:
        share = {k: r["estimate"] / total for k, r in parts.items()}
        top = max(share, key=lambda k: abs(parts[k]["estimate"]))
        name = {"sampling": "on-policy sampling", "refresh": "the reference refresh", "interaction": "the interaction"}
        text += (f" The largest part is {name[top]} ({share[top]:.0%} of the total gap"
                 + ("" if _excludes_zero(parts[top], "ci") else ", though its interval includes 0") + ").")
    return text


def _seed_caveat(study: Study) -> str:
    n = study.runs.groupby("cell").size()
    if n.empty or n.min() >= 5:
        return ""
    k = int(n.min())
    if k < 2:
        return "Some cell has a single run: no interval or test can be computed for comparisons that use it."
    return (f"With as few as {k} seeds per cell the evidence is thin: the percentile bootstrap interval resamples only "
            f"{k} values per cell and is too narrow at this size, so the Welch t interval is shown beside it; an exact "
            f"permutation test of {k} vs {k} seeds cannot give p below {min_permutation_p(k, k):.2g}.")


def _est(row: pd.Series) -> str:
    return f"{row['estimate']:+.3f} ({_intervals(row)})"


def _intervals(row: pd.Series) -> str:
    parts = []
    if np.isfinite(row.get("ci_low", np.nan)):
        parts.append(f"95% bootstrap CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}")
    if np.isfinite(row.get("welch_low", np.nan)):
        parts.append(f"Welch {row['welch_low']:+.3f} to {row['welch_high']:+.3f}, p = {row['p_welch']:.2g}")
    return "; ".join(parts) if parts else "no interval: too few seeds"


def _excludes_zero(row: pd.Series, kind: str) -> bool:
    lo, hi = row.get(f"{kind}_low", np.nan), row.get(f"{kind}_high", np.nan)
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


def _row(table: pd.DataFrame, axis: str, contrast: str) -> pd.Series | None:
    hit = table[(table["axis"] == axis) & (table["contrast"] == contrast)]
    return None if hit.empty else hit.iloc[0]


def _unavailable(row: pd.Series) -> bool:
    return str(row["note"]).startswith("not available")
