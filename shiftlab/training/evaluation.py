"""Evaluation on a schedule: π_θ's own samples on fixed held-out prompts, scored by the oracle, and every KL and
state-divergence metric of the vocabulary (shiftlab/metrics.py) computed on them.

Each evaluation reseeds its sampler identically (common random numbers), so differences between evaluations
come from the policy, not from the draw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from shiftlab.config import EvalConfig
from shiftlab.data.batches import SequenceBatch, completions_to_batch
from shiftlab.functional import divergence as dv
from shiftlab.functional.losses import sequence_logps
from shiftlab.functional.text_quality import text_quality
from shiftlab.labels.gold import GrammarGold, gold_metrics
from shiftlab.labels.pairing import Labeller
from shiftlab.models.sampler import SamplerSettings, sample_completions
from shiftlab.rundir.runlog import RunLog
from shiftlab.training.sources import PairSource, Probe, Prompts
from shiftlab.training.state_shift import StateShift


class Forwards:
    """Logits of each (model, batch) pair, computed once per evaluation: in offline mode π_ref, π_sft and the
    behaviour policy μ are one model, and its forward pass serves all three. π_sft's last hidden states are kept
    for state features."""

    def __init__(self, sft: torch.nn.Module):
        self.sft = sft
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._token_kl: dict[tuple[int, int, int], torch.Tensor] = {}

    def logits(self, model: torch.nn.Module, batch: SequenceBatch) -> torch.Tensor:
        return self._run(model, batch)[0]

    def sft_hidden(self, batch: SequenceBatch) -> torch.Tensor:
        return self._run(self.sft, batch)[1]

    def token_kl(self, p: torch.nn.Module, q: torch.nn.Module, batch: SequenceBatch) -> torch.Tensor:
        """(B, T-1) exact per-token KL(p‖q) on the batch's response positions (`response_token_kl`), once per
        pair of models: offline, KL to π_ref, to π_sft and to μ is one computation."""
        key = (id(p), id(q), id(batch))
        if key not in self._token_kl:
            self._token_kl[key] = dv.response_token_kl(self.logits(p, batch), self.logits(q, batch), batch.loss_mask)
        return self._token_kl[key]

    @torch.no_grad()
    def _run(self, model: torch.nn.Module, batch: SequenceBatch):
        key = (id(model), id(batch))
        if key not in self._cache:
            hidden = model is self.sft
            model.eval()
            device = next(model.parameters()).device
            out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                        output_hidden_states=hidden)
            # the metrics are computed on the CPU, beside the batches' masks (a no-op when the model runs there)
            self._cache[key] = (out.logits.float().cpu(), out.hidden_states[-1].float().cpu() if hidden else None)
        return self._cache[key]


def _with_stderr(prefix: str, values: torch.Tensor) -> dict[str, float]:
    mean, se = dv.mean_and_stderr(values)
    return {prefix: mean, f"{prefix}_se": se}


def kl_metrics(name: str, token_kl, logits_q, logp_p, batch: SequenceBatch, lengths: torch.Tensor) -> dict[str, float]:
    """Exact per-token KL (`token_kl` (B, T-1), summed: `sequence_exact_kl`), k1 and k3 of KL(π_θ‖q) on the same
    samples, with standard errors."""
    exact = token_kl.sum(-1)
    logp_q = sequence_logps(logits_q, batch.input_ids, batch.loss_mask)
    out = _with_stderr(f"eval/{name}", exact)
    out |= _with_stderr(f"eval/{name}_k1", dv.k1(logp_p, logp_q))
    out |= _with_stderr(f"eval/{name}_k3", dv.k3(logp_p, logp_q))
    out[f"eval/{name}_per_token"] = float((exact / lengths.clamp(min=1)).mean())
    return out


def _masked_mean_token_kl(token_kl, loss_mask) -> float:
    return float(token_kl.sum() / loss_mask[:, 1:].sum().clamp(min=1))


class Evaluator:
    def __init__(
        self,
        cfg: EvalConfig,
        prompts: Prompts,
        sampler: SamplerSettings,
        labeller: Labeller,
        *,
        sft: torch.nn.Module,
        source: PairSource,
        grammar=None,  # a grammar with exact `logprob` / `prefix_logprobs`, or None for corpora without one
        gold: GrammarGold | None = None,  # the gold judge (labels.gold), or None where a task has no gold
        heldout: Callable[[torch.nn.Module, torch.nn.Module], dict[str, float]] | None = None,  # training.heldout
        seed: int,
        log: RunLog,
    ):
        """`prompts`: the first `cfg.n_prompts` are sampled once each, at every evaluation."""
        self.cfg, self.prompts, self.sampler, self.labeller = cfg, prompts.head(cfg.n_prompts), sampler, labeller
        self.sft, self.source, self.grammar, self.gold = sft, source, grammar, gold
        self.seed, self.log, self.heldout = seed, log, heldout
        self.state_shift = StateShift(self.prompts.ids, sampler, sft=sft, seed=seed, n_permutations=cfg.mmd_permutations)

    def __call__(self, policy: torch.nn.Module, ref: torch.nn.Module, step: int) -> dict[str, float]:
        start = time.perf_counter()
        completions = sample_completions(
            policy, self.prompts.ids, self.sampler, k=1, generator=torch.Generator().manual_seed(self.seed)
        )
        labelled = self.labeller(completions, self.prompts.texts, k=1)
        responses = labelled.response_texts
        texts = [p + r for p, r in zip(self.prompts.texts, responses)]
        # no oracle (oracle.kind=none): the reward columns are left out, not filled
        rewards = None if labelled.rewards is None else torch.as_tensor(labelled.rewards, dtype=torch.float64)
        batch = completions_to_batch(completions, self.sampler.eos_token_id, self.sampler.pad_token_id)
        lengths = batch.loss_mask.sum(-1).float()

        fw = Forwards(self.sft)
        logits, logits_ref, logits_sft = fw.logits(policy, batch), fw.logits(ref, batch), fw.logits(self.sft, batch)
        logp = sequence_logps(logits, batch.input_ids, batch.loss_mask)
        metrics = {} if rewards is None else _with_stderr("eval/reward", rewards)
        if self.heldout is not None:
            metrics |= self.heldout(policy, ref)
        metrics["eval/length"] = float(lengths.mean())
        metrics["eval/empty_responses"] = float(np.mean([len(r) == 0 for r in completions.response_ids]))
        metrics |= {f"eval/{k}": v for k, v in text_quality([r.split() for r in responses]).items()}
        if self.gold is not None:
            metrics |= gold_metrics(self.gold, texts, [len(p.split()) for p in self.prompts.texts])
        metrics |= kl_metrics("kl_ref", fw.token_kl(policy, ref, batch), logits_ref, logp, batch, lengths)
        metrics |= kl_metrics("kl_sft", fw.token_kl(policy, self.sft, batch), logits_sft, logp, batch, lengths)
        metrics["eval/kl_ref_on_policy"] = _masked_mean_token_kl(fw.token_kl(policy, ref, batch), batch.loss_mask)
        if self.cfg.divergences:
            probe = self.source.probe()
            if probe is not None:
                metrics |= self._data_metrics(fw, policy, ref, probe, batch, step)
                on_data, on_policy = metrics["eval/kl_ref_on_data"], metrics["eval/kl_ref_on_policy"]
                metrics["eval/kl_shift_ratio"] = on_policy / on_data if on_data > 0 else float("nan")
            if self.grammar is not None:
                metrics |= self._world_metrics(texts, [len(p.split()) for p in self.prompts.texts], step)
        self.log.samples(step, [
            {"prompt": p, "response": r} | ({} if rewards is None else {"reward": float(rewards[i])})
            for i, (p, r) in enumerate(list(zip(self.prompts.texts, responses))[: self.cfg.n_samples_logged])
        ])
        metrics["time/eval"] = time.perf_counter() - start
        return metrics

    def _data_metrics(self, fw: Forwards, policy, ref, probe: Probe, batch: SequenceBatch, step: int) -> dict[str, float]:
        """Where DPO looks (training-pair states, d_D) against where π_θ goes (its own states, d_θ)."""
        data = SequenceBatch(probe.batch.input_ids, probe.batch.attention_mask, probe.batch.loss_mask)
        out = {"eval/kl_ref_on_data": _masked_mean_token_kl(fw.token_kl(policy, ref, data), data.loss_mask)}
        if probe.behaviour is not None:
            out |= self._behaviour_metrics(fw, policy, probe.behaviour, batch, data, step)
        return out | self._two_sample_metrics(fw, probe, data, batch)

    def _behaviour_metrics(self, fw: Forwards, policy, behaviour, batch: SequenceBatch, data: SequenceBatch, step: int):
        """With μ known: the state KL by depth on π_θ's samples, and the ESS of the training responses."""
        token_kl = fw.token_kl(policy, behaviour, batch)
        step_kl = dv.steps_from_token_kl(token_kl, batch.loss_mask, max_len=self.sampler.max_new_tokens)
        curve, curve_se = dv.depth_kl_curve(step_kl), dv.depth_kl_curve_stderr(step_kl)
        self.log.curve(step, "state_kl_depth", list(range(1, len(curve) + 1)), curve.tolist(), curve_se.tolist())
        log_w = sequence_logps(fw.logits(policy, data), data.input_ids, data.loss_mask) - sequence_logps(
            fw.logits(behaviour, data), data.input_ids, data.loss_mask
        )
        return {
            "eval/state_kl": float(curve[-1]),
            "eval/state_kl_se": float(curve_se[-1]),
            "eval/ess": dv.effective_sample_size(log_w),
        }

    def _two_sample_metrics(self, fw: Forwards, probe: Probe, data: SequenceBatch, batch: SequenceBatch) -> dict[str, float]:
        """Behaviour-agnostic (shiftlab.training.state_shift): training-pair states and, with μ known, μ's
        unselected samples against π_θ's, on frozen π_sft features, each beside its null."""
        return self.state_shift(fw.sft_hidden, probe, data, batch)

    def _world_metrics(self, texts: Sequence[str], len_prompt_words: Sequence[int], step: int) -> dict[str, float]:
        """Off-support rate made exact: the world's grammar scores every sample and every prefix of it."""
        full = np.array([self.grammar.logprob(t) for t in texts])
        supported = np.isfinite(full)
        depth = max(1, max(len(t.split()) - n for t, n in zip(texts, len_prompt_words)))
        off = np.zeros((len(texts), depth))
        for i, (text, n_prompt) in enumerate(zip(texts, len_prompt_words)):
            prefix = np.asarray(self.grammar.prefix_logprobs(text))[n_prompt:]  # after each response word
            unsupported = ~np.isfinite(prefix)
            off[i, : len(unsupported)] = unsupported
            off[i, len(unsupported):] = not supported[i]  # ended: the whole text decides
        curve = off.mean(0)
        curve_se = off.std(0, ddof=1) / np.sqrt(len(texts)) if len(texts) > 1 else np.zeros_like(curve)
        self.log.curve(step, "off_support_depth", list(range(1, depth + 1)), curve.tolist(), curve_se.tolist())
        return {
            "eval/off_support": float(1 - supported.mean()),
            "eval/world_logprob": float(full[supported].mean()) if supported.any() else float("nan"),
        }
