"""The optimum frontier of the run's objective: N π_sft samples per eval prompt, scored by the oracle, cached, and
turned into the KL-regularised optimum π*_β ∝ π_sft·exp(r/β) over a β grid (shiftlab.functional.optimum).

One entry per (task, π_sft, oracle, N, sampler settings, eval prompts, seed) under `<cache_dir>/optimum/`: the cells
of a study that share a seed share one draw; each seed draws its own, so the report can average independent
draws. The sampler is the run's (`SamplerSettings`: temperature 1, the run's max_new_tokens) on the evaluator's
prompts (the first `eval.n_prompts` eval prompts, cut like the evaluator's), with a generator of its own
(seed + 20,000), so no other draw of the run moves. The proxy rewards are cached with the response texts; a gold
judge, when the task has one, scores them once into an entry of its own (keyed by the draw and the judge's name,
`<entry>/gold-<name>/`), since grammar parsing of P·N texts costs more than sampling them.

`optimum.jsonl` in the run directory, one row per β of the grid (β descending, so KL rises):
    beta, kl, reward, gold_reward (only with a gold judge), ess, reliable,
    samples (N), prompts (P), log_n, reliable_kl, key (the cache entry: one draw), sft (π_sft's cache key)
with kl = KL(π*_β‖π_sft) in nats (mean over prompts), reward = E_{π*_β}[r] (mean over prompts), gold_reward = the
gold judge's mean under the same π*_β (the proxy's optimum, scored by gold), ess = ESS/N of the weights (mean over
prompts), reliable = the point lies in the leading run of trusted points (ESS/N ≥ 0.1 and KL ≤ ½·log N: where the
estimate matches exact enumeration, tests/functional/test_optimum.py). The SNIS KL never exceeds log N.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from shiftlab.config import ShiftlabConfig
from shiftlab.data.batches import encode_prompts
from shiftlab.functional.optimum import default_beta_grid, estimate_optimum, optimum_frontier
from shiftlab.labels.pairing import Labeller
from shiftlab.models.sampler import SamplerSettings, sample_completions
from shiftlab.stages.cache import cache_entry, fingerprint
from shiftlab.stages.sft import sft_fingerprint
from shiftlab.stages.task import Task

OPTIMUM_FILE = "optimum.jsonl"
SEED_OFFSET = 20_000  # the evaluator draws with seed + 10,000, the offline set with seed
CHUNK_PROMPTS = 16  # prompts per sampling call (×N rows): bounds memory, drives the progress bar

class GoldJudge(Protocol):
    """A second judge of whole texts (shiftlab.labels.gold.GrammarGold): `score(texts, n_prompt_words)` -> (T,) floats,
    the first n_prompt_words[i] words of text i being its prompt (no credit); `name` keys its cached scores."""

    name: str

    def score(self, texts: Sequence[str], n_prompt_words: Sequence[int]) -> np.ndarray: ...


@dataclass
class OptimumSamples:
    """N π_sft samples for each of P eval prompts with their oracle rewards, prompt-major (row = p·N + j)."""

    prompts: list[str]  # (P,)
    responses: list[str]  # (P·N,)
    rewards: np.ndarray  # (P, N)
    key: str  # the cache entry
    cached: bool


@dataclass
class Optimum:
    rows: list[dict]  # optimum.jsonl, one per β
    info: dict  # the `optimum` event: sizes, reliable_kl, cached, seconds


def optimum_key(cfg: ShiftlabConfig, prompts: Sequence[str]) -> str:
    return fingerprint(sft_fingerprint(cfg), cfg.oracle, cfg.eval.optimum_samples, cfg.seed, cfg.train.max_new_tokens,
                       cfg.train.max_prompt_length, list(prompts))


def sample_optimum_rewards(cfg: ShiftlabConfig, task: Task, sft, tokenizer, cache_dir: Path,
                           progress_factory) -> OptimumSamples:
    """The cached draw: `eval.optimum_samples` completions of π_sft per eval prompt, scored by the task's oracle."""
    n = cfg.eval.optimum_samples
    prompts = task.eval_prompts[: cfg.eval.n_prompts]
    key = optimum_key(cfg, prompts)
    final = cache_dir / "optimum" / key
    with cache_entry(final, "rewards.npy", "the optimum's π_sft samples") as tmp:
        if tmp is None:
            responses = json.loads((final / "responses.json").read_text(encoding="utf-8"))
            return OptimumSamples(prompts, responses, np.load(final / "rewards.npy"), key, True)
        ids = encode_prompts(tokenizer, prompts, cfg.train.max_prompt_length)
        sampler = SamplerSettings.from_tokenizer(tokenizer, cfg.train.max_new_tokens)
        labeller = Labeller(tokenizer.decode, task.oracle)
        generator = torch.Generator().manual_seed(cfg.seed + SEED_OFFSET)
        responses, rewards = [], []
        with progress_factory(total=len(prompts), desc=f"optimum: {n} π_sft samples per eval prompt") as bar:
            for start in range(0, len(prompts), CHUNK_PROMPTS):
                chunk = slice(start, start + CHUNK_PROMPTS)
                labelled = labeller(sample_completions(sft, ids[chunk], sampler, k=n, generator=generator),
                                    prompts[chunk], n)
                responses += labelled.response_texts
                rewards.append(labelled.rewards.reshape(-1, n))
                bar.update(len(ids[chunk]))
        table = np.concatenate(rewards).astype(np.float64)
        (tmp / "responses.json").write_text(json.dumps(responses), encoding="utf-8")
        np.save(tmp / "rewards.npy", table)  # the marker: written last
    return OptimumSamples(prompts, responses, table, key, False)


def score_gold(samples: OptimumSamples, gold: GoldJudge, cache_dir: Path) -> np.ndarray:
    """(P, N) gold scores of the draw's texts, cached beside it."""
    n = samples.rewards.shape[1]
    final = cache_dir / "optimum" / samples.key / f"gold-{gold.name}"
    with cache_entry(final, "gold.npy", "the optimum's gold scores") as tmp:
        if tmp is None:
            return np.load(final / "gold.npy")
        texts = [samples.prompts[row // n] + r for row, r in enumerate(samples.responses)]
        words = [len(samples.prompts[row // n].split()) for row in range(len(samples.responses))]
        scores = np.asarray(gold.score(texts, words), dtype=np.float64).reshape(samples.rewards.shape)
        np.save(tmp / "gold.npy", scores)
    return scores


def optimum_rows(samples: OptimumSamples, gold_scores: np.ndarray | None = None) -> tuple[list[dict], float]:
    """optimum.jsonl's rows (module docstring) and the KL up to which they are trusted; `gold_scores` (P, N)."""
    rewards = torch.as_tensor(samples.rewards, dtype=torch.float64)  # (P, N)
    n = rewards.shape[1]
    other = None if gold_scores is None else torch.as_tensor(gold_scores, dtype=torch.float64)
    curve = estimate_optimum(rewards, default_beta_grid(rewards), other)
    _, _, _, upto = optimum_frontier(curve, n)
    # KL rises monotonically along the (descending) β grid, so the trusted points are those up to `upto`
    reliable = (curve.kl <= upto).tolist()
    rows = []
    for i in range(len(curve.beta)):
        row = {"beta": float(curve.beta[i]), "kl": float(curve.kl[i]), "reward": float(curve.reward[i])}
        if other is not None:
            row["gold_reward"] = float(curve.other[i])
        row |= {"ess": float(curve.ess[i]), "reliable": reliable[i], "samples": n, "prompts": rewards.shape[0],
                "log_n": math.log(n), "reliable_kl": upto, "key": samples.key}
        rows.append(row)
    return rows, upto


def build_optimum(cfg: ShiftlabConfig, task: Task, sft, tokenizer, cache_dir: Path, progress_factory,
                  gold: GoldJudge | None = None) -> Optimum | None:
    """The optimum frontier of this run's task and π_sft, or None when it is off (`eval.optimum_samples=0`) or the task
    has no oracle to score π_sft's samples with (`oracle.kind=none`)."""
    if cfg.eval.optimum_samples == 0 or task.oracle is None:
        return None
    start = time.perf_counter()
    samples = sample_optimum_rewards(cfg, task, sft, tokenizer, cache_dir, progress_factory)
    rows, upto = optimum_rows(samples, None if gold is None else score_gold(samples, gold, cache_dir))
    sft_key = sft_fingerprint(cfg)
    rows = [row | {"sft": sft_key} for row in rows]
    info = {"samples": cfg.eval.optimum_samples, "prompts": len(samples.prompts), "reliable_kl": round(upto, 4),
            "log_n": round(math.log(cfg.eval.optimum_samples), 4), "cached": samples.cached, "gold": gold is not None,
            "time/optimum": round(time.perf_counter() - start, 3)}
    return Optimum(rows, info)
