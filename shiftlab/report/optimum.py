"""The optimum frontier in the report: what the KL-regularised objective's own optimum reaches at each KL(π‖π_sft),
read from the runs' `optimum.jsonl` (written by shiftlab/stages/optimum.py), and each cell's shortfall from it.

A run's `optimum.jsonl` holds one row per β of π*_β ∝ π_sft·exp(r/β), estimated by self-normalised importance
sampling on N π_sft samples per eval prompt: beta, kl (KL(π*_β‖π_sft), nats, mean over prompts), reward (E_{π*_β}[r],
mean over prompts), gold_reward (only with a gold judge: the proxy optimum scored by gold), ess (ESS/N of the
weights), reliable (ESS/N ≥ 0.1 and KL ≤ ½·log N, the range checked against exact enumeration), samples (N),
prompts, log_n, reliable_kl, key (the draw: runs with the same seed share one), sft (π_sft's cache key). Beyond
`reliable_kl` the estimate under-states the optimum (its KL saturates at log N), so nothing here reads past it.

Stable API (what build/stats may call):
    load_optimum(study_or_run_dirs) -> DataFrame   kl, reward, reward_se, gold_reward, ess, reliable, draws, sft;
                                                    averaged over the distinct draws of one π_sft, on a common KL grid
    optimum_at(optimum, kl, column="reward")        the optimum's reward (or gold_reward) at given KLs, NaN where not
                                                    reliable (past reliable_kl) or beyond the estimate's range
    shortfall(frontier, optimum, kl_grid)           optimum − each cell's reward at matched KL: cell, kl, optimum,
                                                    reward, shortfall (the same for gold when both have it)
    fit_overoptimisation(kl, gain)                  Rafailov et al. 2024's law R(d) = d(α − b·log d), d = √KL
    fit_cells(evals, column)                        that law per cell, on each run's gain over its step-0 reward
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab.report.load import ReportError, Study, find_run_dirs, read_jsonl

OPTIMUM_FILE = "optimum.jsonl"
COLUMNS = ["sft", "kl", "reward", "reward_se", "gold_reward", "ess", "reliable", "draws"]


def _draws(source: Study | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Every row of every run's optimum.jsonl, one copy per draw (runs of one seed share a draw)."""
    dirs = [Path(p) for p in source.runs["path"]] if isinstance(source, Study) else find_run_dirs(list(source))
    frames = [pd.DataFrame(read_jsonl(d / OPTIMUM_FILE)[0]) for d in dirs]
    frames = [f for f in frames if len(f) and {"key", "kl", "reward"} <= set(f.columns)]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(subset=["key", "beta"]).reset_index(drop=True)


def load_optimum(source: Study | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The optimum frontier of each π_sft (one in a study): the distinct draws' reward-vs-KL curves, interpolated onto
    the union of their KL points up to the smallest largest KL, and averaged; `reward_se` across draws (NaN for one),
    `reliable` up to the smallest reliable_kl of the draws. Empty (with COLUMNS) when no run wrote optimum.jsonl."""
    rows = _draws(source)
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    if "sft" not in rows:
        rows["sft"] = "unknown"
    if "gold_reward" not in rows:
        rows["gold_reward"] = np.nan
    out = []
    for sft, group in rows.groupby("sft", sort=True):
        curves = [d.sort_values("kl") for _, d in group.groupby("key", sort=True)]
        top = min(float(c["kl"].max()) for c in curves)
        grid = np.unique(np.concatenate([c["kl"].to_numpy(float) for c in curves]))
        grid = grid[grid <= top]
        values = {col: np.stack([np.interp(grid, c["kl"].to_numpy(float), c[col].to_numpy(float)) for c in curves])
                  for col in ("reward", "gold_reward", "ess")}  # (draws, K); an absent gold stays NaN
        trusted = min(float(c["kl"][c["reliable"].astype(bool)].max()) if c["reliable"].any() else 0.0 for c in curves)
        n = len(curves)
        out.append(pd.DataFrame({
            "sft": sft, "kl": grid, "reward": values["reward"].mean(0),
            "reward_se": values["reward"].std(0, ddof=1) / np.sqrt(n) if n > 1 else np.nan,
            "gold_reward": values["gold_reward"].mean(0), "ess": values["ess"].mean(0),
            "reliable": grid <= trusted, "draws": n,
        }))
    return pd.concat(out, ignore_index=True)[COLUMNS]


def _one_sft(optimum: pd.DataFrame) -> pd.DataFrame:
    if optimum["sft"].nunique() > 1:
        models = sorted(optimum["sft"].unique())
        raise ReportError(f"optimum.jsonl of {len(models)} different π_sft models ({models}): the runs do not share "
                          "one optimum; report them separately")
    return optimum.sort_values("kl")


def reliable_kl(optimum: pd.DataFrame) -> float:
    """The KL (nats) up to which the optimum is read; NaN without one."""
    if optimum.empty:
        return float("nan")
    ok = _one_sft(optimum)
    return float(ok["kl"][ok["reliable"].astype(bool)].max()) if ok["reliable"].any() else float("nan")


def optimum_at(optimum: pd.DataFrame, kl: Sequence[float] | np.ndarray, column: str = "reward") -> np.ndarray:
    """The optimum's `column` at each KL, linearly interpolated; NaN past the reliable KL (or with no optimum)."""
    kl = np.asarray(kl, dtype=float)
    if optimum.empty or optimum[column].isna().all():
        return np.full(kl.shape, np.nan)
    ok = _one_sft(optimum)
    ok = ok[ok["reliable"].astype(bool)]
    if ok.empty:
        return np.full(kl.shape, np.nan)
    x, y = ok["kl"].to_numpy(float), ok[column].to_numpy(float)
    return np.where((kl >= x.min()) & (kl <= x.max()), np.interp(kl, x, y), np.nan)


def shortfall(frontier: pd.DataFrame, optimum: pd.DataFrame, kl_grid: Sequence[float]) -> pd.DataFrame:
    """How far each cell's frontier falls short of the optimum at matched KL.

    frontier: long format with columns cell, kl, reward (optionally gold_reward), e.g. frontier.csv; a cell's reward at
    a grid KL is interpolated within its own KL range (NaN outside). Returns one row per (cell, kl): cell, kl, optimum,
    reward, shortfall = optimum − reward (≥ 0 up to estimation error: no policy beats the optimum at its KL), and
    gold_optimum, gold_reward, gold_shortfall where both sides have gold (the proxy's optimum scored by gold: not
    the best gold any policy can reach, so this one may be negative).
    """
    missing = {"cell", "kl", "reward"} - set(frontier.columns)
    if missing:
        raise ReportError(f"shortfall: the frontier has no column(s) {sorted(missing)} (expected cell, kl, reward)")
    grid = np.asarray(sorted(kl_grid), dtype=float)
    best = optimum_at(optimum, grid) if not optimum.empty else np.full(grid.shape, np.nan)
    with_gold = "gold_reward" in frontier and not optimum.empty and optimum["gold_reward"].notna().any()
    best_gold = optimum_at(optimum, grid, "gold_reward") if with_gold else None
    out = []
    for cell, d in frontier.groupby("cell", sort=False):
        d = d.dropna(subset=["kl", "reward"]).sort_values("kl")
        row = {"cell": cell, "kl": grid, "optimum": best, "reward": _within(d, "reward", grid)}
        row["shortfall"] = row["optimum"] - row["reward"]
        if with_gold:
            row |= {"gold_optimum": best_gold, "gold_reward": _within(d, "gold_reward", grid)}
            row["gold_shortfall"] = row["gold_optimum"] - row["gold_reward"]
        out.append(pd.DataFrame(row))
    columns = ["cell", "kl", "optimum", "reward", "shortfall"]
    columns += ["gold_optimum", "gold_reward", "gold_shortfall"] if with_gold else []
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns)


def _within(d: pd.DataFrame, column: str, grid: np.ndarray) -> np.ndarray:
    d = d.dropna(subset=[column])
    if d.empty:
        return np.full(grid.shape, np.nan)
    x, y = d["kl"].to_numpy(float), d[column].to_numpy(float)
    return np.where((grid >= x.min()) & (grid <= x.max()), np.interp(grid, x, y), np.nan)


# --------------------------------------------------------------------------- over-optimisation law


def fit_overoptimisation(kl: Sequence[float] | np.ndarray, gain: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares (α, b) of R(d) = d·(α − b·log d), d = √KL (Gao et al. 2023's RL form, fitted to direct alignment
    by Rafailov et al. 2024). `gain` is reward minus the reward at KL 0, so R(0) = 0. The law is linear in (α, b):
    R = α·d − b·d·log d, solved directly. Its peak is at d* = exp(α/b − 1) for b > 0."""
    kl, gain = np.asarray(kl, dtype=float), np.asarray(gain, dtype=float)
    keep = np.isfinite(kl) & np.isfinite(gain) & (kl > 0)
    if keep.sum() < 2:
        raise ReportError(f"the over-optimisation law needs ≥ 2 points with KL > 0, got {int(keep.sum())}")
    d = np.sqrt(kl[keep])
    design = np.stack([d, -d * np.log(d)], axis=1)  # (n, 2)
    (alpha, b), *_ = np.linalg.lstsq(design, gain[keep], rcond=None)
    return float(alpha), float(b)


def overoptimisation_law(kl: Sequence[float] | np.ndarray, alpha: float, b: float) -> np.ndarray:
    d = np.sqrt(np.asarray(kl, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, d * (alpha - b * np.log(d)), 0.0)


def fit_cells(evals: pd.DataFrame, column: str = "eval/reward") -> pd.DataFrame:
    """The law per cell, on all its runs' evaluations: gain = `column` − that run's step-0 value, against eval/kl_sft.
    Returns cell, alpha, b, peak_kl (d*², NaN unless b > 0), max_kl (the largest KL the cell reached), points, rmse."""
    cols = ["cell", "alpha", "b", "peak_kl", "max_kl", "points", "rmse"]
    need = {"run", "cell", "step", "eval/kl_sft", column}
    if evals.empty or need - set(evals.columns):
        return pd.DataFrame(columns=cols)
    ev = evals.dropna(subset=["eval/kl_sft", column]).sort_values(["run", "step"])
    start = ev.groupby("run")[column].transform("first")
    ev = ev.assign(gain=ev[column] - start)
    out = []
    for cell, d in ev.groupby("cell", sort=False):
        try:
            alpha, b = fit_overoptimisation(d["eval/kl_sft"], d["gain"])
        except ReportError:
            continue
        fitted = overoptimisation_law(d["eval/kl_sft"], alpha, b)
        peak = float(np.exp(2 * (alpha / b - 1))) if b > 0 else float("nan")
        out.append({"cell": cell, "alpha": alpha, "b": b, "peak_kl": peak, "max_kl": float(d["eval/kl_sft"].max()),
                    "points": len(d), "rmse": float(np.sqrt(np.mean((d["gain"].to_numpy(float) - fitted) ** 2)))})
    return pd.DataFrame(out, columns=cols)
