"""Synthetic run directories in the trainer's schema, with a known off-policy gap, for the report tests.

Reward follows one frontier in KL(π_θ‖π_sft) for every cell plus a per-cell offset once training has moved
(`gaps`), per-run noise (seed effect) and per-eval noise, so the true gap at matched KL is
`gaps["online"] - gaps["offline"]`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

CELLS = {  # cell -> (source, reference, final KL(π_θ‖π_sft) in nats)
    "offline": ("offline", "fixed", 9.0),
    "trdpo": ("offline", "hard", 8.0),
    "oaif": ("onpolicy", "fixed", 6.0),
    "online": ("onpolicy", "hard", 5.0),
    "rl": ("onpolicy", "fixed", 7.0),
}
BATCH, OFFLINE_LABELS, REFRESH_EVERY = 8, 1024, 20


def frontier(kl: np.ndarray) -> np.ndarray:
    """Reward every cell would reach at this KL without a gap."""
    return 0.1 + 0.5 * (1.0 - np.exp(-kl / 3.0))


def write_run(path: Path, cell: str, seed: int, gap: float = 0.0, *, steps: int = 100, eval_every: int = 25,
              last_step: int | None = None, status: str = "finished", truncate: bool = False,
              drop: tuple[str, ...] = (), config: dict | None = None, seed_sd: float = 0.03,
              eval_sd: float = 0.02, noise_seed: int = 0, beta: float | None = None) -> Path:
    """Write one run directory; `last_step` < `steps` imitates a run still going or killed. A `beta` other than
    the default 0.1 scales the final KL by 0.1/β (a larger β holds the policy closer to π_sft)."""
    entropy = [noise_seed, seed, sum(map(ord, cell))] + ([] if beta is None else [int(round(beta * 1e4))])
    rng = np.random.default_rng(entropy)
    source, reference, kl_end = CELLS[cell]
    kl_end *= 1.0 if beta is None else 0.1 / beta
    last = steps if last_step is None else last_step
    path.mkdir(parents=True, exist_ok=True)
    kl_scale = kl_end * (1.0 + 0.05 * rng.standard_normal())
    run_offset = seed_sd * rng.standard_normal()
    rows = []
    for step in range(last + 1):
        axes = _axes(step, source)
        if step % eval_every == 0 or step == steps:
            rows.append(axes | _eval_row(step / steps, kl_scale, gap + run_offset, eval_sd, rng, drop))
        if step < steps:
            rows.append(axes | _train_row(step, rng))
    with open(path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        if truncate:
            f.write(json.dumps(_axes(last, source) | {"loss": 0.5})[:25])  # killed mid-write
    refreshes = [s for s in range(REFRESH_EVERY, last + 1, REFRESH_EVERY)] if reference != "fixed" else []
    _write_jsonl(path / "events.jsonl", [{"step": s, "event": "refresh", "kind": reference} for s in refreshes])
    evals = [r for r in rows if "eval/reward" in r]
    _write_jsonl(path / "curves.jsonl", [c for r in evals for c in _curves(r)])
    _write_jsonl(path / "samples.jsonl", [{"step": r["step"], "prompt": "The film was",
                                           "response": " good" * (1 + r["step"] // 25),
                                           "reward": r["eval/reward"]} for r in evals])
    cfg = _config(cell, seed, steps, eval_every, source, reference, 0.1 if beta is None else beta) | (config or {})
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    meta = {"cell": cell, "source": source, "reference": reference, "seed": seed, "status": status,
            "steps": steps, "overrides": [f"mode={cell}", f"seed={seed}"]}
    if status != "running":
        meta["wall_time_s"] = round(60.0 + 10 * rng.random(), 1)
    (path / "run.json").write_text(json.dumps(meta))
    return path


def write_study(root: Path, gaps: dict[str, float] | None = None, seeds: int = 3,
                cells: tuple[str, ...] = ("offline", "trdpo", "oaif", "online"), betas: tuple[float, ...] = (),
                **kw) -> Path:
    """A Hydra-multirun-like sweep directory with numbered run directories (cells × seeds, × `betas` if given)."""
    gaps = {"offline": 0.0, "trdpo": 0.05, "oaif": 0.12, "online": 0.2, "rl": 0.25} if gaps is None else gaps
    root.mkdir(parents=True, exist_ok=True)
    i = 0
    for cell in cells:
        for seed in range(seeds):
            for beta in betas or (None,):
                write_run(root / str(i), cell, seed, gaps.get(cell, 0.0), beta=beta, **kw)
                i += 1
    return root


def _axes(step: int, source: str) -> dict:
    oracle = 2 * BATCH * step if source == "onpolicy" else OFFLINE_LABELS
    return {"step": step, "pairs_seen": BATCH * step, "oracle_calls": oracle,
            "policy_samples": 2 * BATCH * step if source == "onpolicy" else 0, "time": 0.5 * step}


def _eval_row(frac: float, kl_scale: float, offset: float, sd: float, rng, drop) -> dict:
    kl = kl_scale * frac ** 0.8 + (0.05 * abs(rng.standard_normal()) if frac > 0 else 0.0)
    reward = float(frontier(np.array(kl)) + (offset if frac > 0 else 0.0) + (sd * rng.standard_normal() if frac > 0 else 0.0))
    row = {"eval/reward": reward, "eval/reward_se": 0.01, "eval/kl_sft": kl, "eval/kl_sft_se": 0.1 + 0.02 * kl,
           "eval/kl_ref": kl * 0.4, "eval/kl_ref_se": 0.05, "eval/kl_ref_k1": kl * 0.4, "eval/kl_ref_k1_se": 0.2,
           "eval/kl_ref_k3": kl * 0.41, "eval/kl_ref_k3_se": 0.1, "eval/kl_sft_k1": kl, "eval/kl_sft_k3": kl,
           "eval/kl_ref_per_token": kl / 20, "eval/kl_sft_per_token": kl / 20, "eval/length": 20 + 5 * frac,
           "eval/kl_ref_on_data": 0.01 + 0.02 * frac, "eval/kl_ref_on_policy": 0.01 + 0.05 * frac,
           "eval/kl_shift_ratio": 1 + 1.5 * frac, "eval/state_kl": kl, "eval/state_kl_se": 0.1,
           "eval/ess": float(np.exp(-0.3 * kl)), "eval/c2st_acc": 0.5 + 0.04 * kl,
           "eval/c2st_acc_low": 0.45 + 0.04 * kl, "eval/c2st_acc_high": 0.55 + 0.04 * kl,
           "eval/c2st_tv_lb": max(0.0, 0.08 * kl), "eval/mmd2": 0.01 * kl, "eval/mmd_pvalue": float(np.exp(-kl)),
           "eval/js_ngram": 0.02 * kl, "eval/off_support": 0.01 * kl, "eval/world_logprob": -30 - kl}
    for name in drop:
        row[name] = None
    return row


def _train_row(step: int, rng) -> dict:
    margin = 2.0 * (1 - np.exp(-step / 30)) + 0.2 * rng.standard_normal()
    chosen = -20 - 0.05 * step + rng.standard_normal()
    return {"loss": float(np.log1p(np.exp(-margin))), "rewards/chosen": 0.1 * margin, "rewards/rejected": -0.9 * margin,
            "rewards/margins": float(margin), "rewards/accuracies": float(min(1.0, 0.5 + 0.005 * step)),
            "logps/chosen": float(chosen), "logps/rejected": float(chosen - margin * 5), "grad_norm": 1.0, "lr": 1e-5,
            "data/truncated": 0, "data/ties": 0, "data/staleness": 0.0, "time/train": 0.1}


def _curves(row: dict) -> list[dict]:
    t = list(range(1, 17))
    kl = row["eval/kl_sft"]
    value = [kl * (1 - np.exp(-ti / 5)) / (1 - np.exp(-16 / 5)) for ti in t]
    off = [row["eval/off_support"] * ti / 16 for ti in t]
    return [{"step": row["step"], "curve": "state_kl_depth", "t": t, "value": value, "stderr": [0.05] * 16},
            {"step": row["step"], "curve": "off_support_depth", "t": t, "value": off, "stderr": [0.01] * 16}]


def _config(cell, seed, steps, eval_every, source, reference, beta) -> dict:
    return {"seed": seed,
            "train": {"steps": steps, "eval_every": eval_every, "batch_size": BATCH},
            "loss": {"kind": "dpo", "beta": beta},
            "source": {"kind": source},
            "reference": {"kind": reference, "refresh_every": REFRESH_EVERY if reference != "fixed" else 0},
            "model": {"name": "tiny-gpt", "n_layer": 2, "n_embd": 64},
            "task": {"name": "reviews", "max_len": 32, "eval_prompts": 64}}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
