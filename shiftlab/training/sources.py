"""Where preference pairs come from: the only thing, with the π_ref schedule, that differs between modes.

- `OfflinePairs`: a fixed preference set (built once from π_sft, or a user file), shuffled each epoch.
- `OnPolicyPairs`: every `sample_every` steps, k completions per prompt from the *current* π_θ at temperature 1,
  labelled by the oracle, paired by the shared rule; the round's pairs serve the steps until the next round.

Both hand the trainer a `StepData` and offer a `probe()`: a fixed slice of the current training data plus the
behaviour policy μ that generated it, on which the evaluator measures where DPO looks. Both save everything a later
`next_batch` depends on in `state_dict()`, so a run resumed from a checkpoint draws the very same pairs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from shiftlab.config import PairsConfig, SourceConfig
from shiftlab.data.batches import PreferenceBatch, PreferenceCollator, pad_right
from shiftlab.data.order import EpochOrder
from shiftlab.data.pairs import PreferencePair
from shiftlab.labels.pairing import LabelledRound, Labeller, PairIndex, label_generator, merge_rounds, pair_round
from shiftlab.models.build import frozen_copy
from shiftlab.models.sampler import SamplerSettings, sample_completions
from shiftlab.rundir.checkpoint import CheckpointError
from shiftlab.training.precompute import attach_reference_logps
from shiftlab.training.ranks import SINGLE, Processes
from shiftlab.training.reference import copy_parameters


@dataclass(frozen=True)
class Prompts:
    """A fixed prompt set (training or evaluation): token ids for the sampler, texts for the oracle, row for row."""

    ids: list[list[int]]
    texts: list[str]

    def head(self, n: int) -> Prompts:
        return Prompts(self.ids[:n], self.texts[:n])


@dataclass
class StepData:
    batch: PreferenceBatch | None  # None: no usable pair this step (every pair tied); the step is skipped
    counts: dict[str, int] = field(default_factory=dict)  # budget increments: oracle_calls, policy_samples
    stats: dict[str, float] = field(default_factory=dict)  # logged with the training row
    events: list[dict] = field(default_factory=list)


@dataclass
class Probe:
    batch: PreferenceBatch
    behaviour: torch.nn.Module | None  # μ, the policy that generated the batch; None when unknown (human data)


class PairSource(Protocol):
    def next_batch(self, policy: torch.nn.Module, step: int) -> StepData: ...

    def probe(self) -> Probe | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class OfflinePairs:
    def __init__(
        self,
        pairs: Sequence[PreferencePair],
        collator: PreferenceCollator,
        batch_size: int,
        seed: int,
        behaviour: torch.nn.Module | None,
        probe_size: int,
        ref_logps: torch.Tensor | None = None,
    ):
        """`ref_logps`: an (N, 2) table of log π_ref(chosen), log π_ref(rejected) for a fixed π_ref
        (shiftlab.training.precompute); each batch then carries its rows, and the step skips π_ref's forward. Not saved in
        checkpoints: it is rebuilt from the config, bit for bit."""
        if not pairs:
            raise ValueError("the offline preference set is empty: nothing to train on")
        if ref_logps is not None and tuple(ref_logps.shape) != (len(pairs), 2):
            raise ValueError(f"ref_logps must be ({len(pairs)}, 2), one row per pair; got {tuple(ref_logps.shape)}")
        self.pairs = list(pairs)
        self.collator = collator
        self.ref_logps = ref_logps
        self.batch_size = min(batch_size, len(self.pairs))
        self.rng = np.random.default_rng(seed)
        self.behaviour = behaviour
        self.order = EpochOrder(self.rng, len(self.pairs))
        probe_rows = np.random.default_rng(seed + 1).permutation(len(self.pairs))[:probe_size]
        self._probe = Probe(self.collator([self.pairs[i] for i in probe_rows]), behaviour)
        self._fingerprint: str | None = None
        # labelled before training starts, so the cumulative count is the whole set's from step 0 (a user file's too,
        # where it carries rewards that disagree with its order)
        self.flipped = sum(
            p.reward_chosen is not None and p.reward_rejected is not None and p.reward_chosen < p.reward_rejected
            for p in self.pairs
        )

    def fingerprint(self) -> str:
        """A hash of the pairs: a checkpoint's epoch order only means something for the same set, in the same order."""
        if self._fingerprint is None:
            blob = json.dumps([(p.prompt, p.chosen, p.rejected) for p in self.pairs]).encode()
            self._fingerprint = hashlib.sha256(blob).hexdigest()[:16]
        return self._fingerprint

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": list(self.order.pending), "pairs": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        if state["pairs"] != self.fingerprint():
            raise CheckpointError(
                "the offline preference set differs from the one the checkpoint was trained on "
                "(was the cache or task.preferences_path changed?); the run cannot be continued exactly"
            )
        self.rng.bit_generator.state = state["rng"]
        self.order.pending = list(state["order"])

    def next_batch(self, policy: torch.nn.Module, step: int) -> StepData:
        rows = self.order.take(self.batch_size)
        batch = self.collator([self.pairs[i] for i in rows])
        if self.ref_logps is not None:
            batch = attach_reference_logps(batch, self.ref_logps, rows)
        return StepData(batch, stats={"data/truncated": batch.n_truncated, "data/flipped": self.flipped})

    def probe(self) -> Probe:
        return self._probe


class OnPolicyPairs:
    def __init__(
        self,
        prompts: Prompts,
        cfg: SourceConfig,
        sampler: SamplerSettings,
        labeller: Labeller,
        *,
        seed: int,
        probe_size: int,
        template: torch.nn.Module | None = None,
        processes: Processes = SINGLE,
        rule: PairsConfig | None = None,
    ):
        """`cfg`: the round's k, prompts_per_round, sample_every, batch_size and max_resample.
        `rule`: the pairing rule (`pairs.*`) shared with the offline set (default: best-vs-worst, deterministic labels).
        `template`: a model of π_θ's architecture (π_θ itself), copied to hold a restored behaviour snapshot.
        `processes`: data-parallel ranks; each samples and labels its share of every round's prompts."""
        if cfg.prompts_per_round > len(prompts.ids):
            raise ValueError(
                f"source.prompts_per_round={cfg.prompts_per_round} but the task has only {len(prompts.ids)} training prompts"
            )
        self.prompts, self.cfg, self.sampler, self.labeller = prompts, cfg, sampler, labeller
        self.rule = rule if rule is not None else PairsConfig()
        self.rng = np.random.default_rng(seed)  # the round's prompts and its epoch order, one stream
        self.generator = torch.Generator().manual_seed(seed)
        self.order = EpochOrder(self.rng)
        self.probe_size, self.template = probe_size, template
        self.processes, self.seed = processes, seed
        self.behaviour: torch.nn.Module | None = None  # μ: the snapshot of π_θ that sampled the latest round
        self.round_step = -1
        self._pairs: list[tuple[list[int], list[int], list[int]]] = []
        self.ties_total = 0
        self.flipped_total = 0

    def next_batch(self, policy: torch.nn.Module, step: int) -> StepData:
        data = StepData(batch=None)
        if self.round_step < 0 or step - self.round_step >= self.cfg.sample_every:
            self._sample_round(policy, step, data)
        if not self._pairs:
            data.events.append({"event": "step_skipped", "reason": "no usable pair in the current round"})
            return data
        rows = self.order.take(self.cfg.batch_size)
        data.batch = self._to_batch([self._pairs[i] for i in rows])
        data.stats |= {"data/staleness": float(step - self.round_step), "data/truncated": 0, "data/ties": self.ties_total,
                       "data/flipped": self.flipped_total}
        return data

    def _sample_round(self, policy: torch.nn.Module, step: int, data: StepData) -> None:
        for attempt in range(self.cfg.max_resample + 1):
            prompts = self.rng.choice(len(self.prompts.ids), size=self.cfg.prompts_per_round, replace=False)
            labelled, seconds = self._label(policy, prompts, step, attempt)
            # sampled labels: a stream per (step, attempt), so every rank, and a resumed run, draws the same order
            rule, label_rng = self.rule, label_generator(self.seed, "onpolicy", step, attempt)
            pairs, dropped = pair_round(labelled, rule.pairing, rule.labels, rule.temperature, label_rng)
            data.counts["policy_samples"] = data.counts.get("policy_samples", 0) + len(labelled.completions)
            data.counts["oracle_calls"] = data.counts.get("oracle_calls", 0) + len(labelled.completions)
            for key, value in seconds.items():
                data.stats[key] = data.stats.get(key, 0.0) + value
            self.ties_total += dropped["ties"]
            self.flipped_total += dropped["flipped"]
            if dropped["empty_responses"]:
                data.events.append({"event": "empty_responses", "count": dropped["empty_responses"]})
            if pairs:
                break
            data.events.append({"event": "all_pairs_tied", "attempt": attempt, **dropped})
        self.round_step = step
        data.events.append({"event": "sampling_round", "behaviour": f"policy@step{step}", "pairs": len(pairs)})
        self._pairs = [self._pair_ids(labelled, pair) for pair in pairs]
        self.order.restart(len(self._pairs))
        self._snapshot(policy)

    def _label(self, policy: torch.nn.Module, prompts: np.ndarray, step: int, attempt: int) -> tuple[LabelledRound, dict[str, float]]:
        """Sample k completions per prompt from π_θ and score them; under data parallelism each rank takes its
        share of the prompts and every rank gets the whole round back, in prompt order."""
        start = time.perf_counter()
        lo, hi = self.processes.shard(len(prompts))
        mine = prompts[lo:hi]
        completions = sample_completions(
            policy, [self.prompts.ids[i] for i in mine], self.sampler, k=self.cfg.k,
            generator=self._round_generator(step, attempt),
        )
        sampled = time.perf_counter()
        labelled = self.labeller(completions, [self.prompts.texts[i] for i in mine], self.cfg.k)
        labelled = merge_rounds(self.processes.gather(labelled)) if self.processes.distributed else labelled
        return labelled, {"time/sample": sampled - start, "time/label": time.perf_counter() - sampled}

    def _round_generator(self, step: int, attempt: int) -> torch.Generator:
        """One process draws from its own continuing generator. Ranks draw from a generator seeded by
        (seed, step, attempt, rank): distinct streams that a resumed run recreates without saving them."""
        if not self.processes.distributed:
            return self.generator
        key = np.random.SeedSequence([self.seed, step, attempt, self.processes.rank]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(key))

    def _pair_ids(self, labelled: LabelledRound, pair: PairIndex) -> tuple[list[int], list[int], list[int]]:
        c = labelled.completions

        def with_eos(row: int) -> list[int]:
            return c.response_ids[row] + [self.sampler.eos_token_id] if c.ended[row] else list(c.response_ids[row])

        return c.prompt_ids[pair.chosen], with_eos(pair.chosen), with_eos(pair.rejected)

    def _to_batch(self, pairs: Sequence[tuple[list[int], list[int], list[int]]]) -> PreferenceBatch:
        # Token ids are kept as sampled: re-tokenizing decoded text could change them, and μ's log-probs
        # (ESS, depth curves) must be those of the sequences actually drawn.
        prompts = [p for p, _, _ in pairs] * 2
        responses = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
        seq = pad_right(prompts, responses, self.sampler.pad_token_id)
        return PreferenceBatch(seq.input_ids, seq.attention_mask, seq.loss_mask, n_pairs=len(pairs), n_truncated=0)

    def _snapshot(self, policy: torch.nn.Module) -> None:
        if self.behaviour is None:
            self.behaviour = frozen_copy(policy)
        else:
            copy_parameters(policy, self.behaviour)

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "round_step": self.round_step,
            "order": list(self.order.pending),
            "pairs": [list(map(list, pair)) for pair in self._pairs],  # token ids as sampled
            "ties_total": self.ties_total,
            "flipped_total": self.flipped_total,
            "behaviour": None if self.behaviour is None else self.behaviour.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.round_step, self.ties_total = state["round_step"], state["ties_total"]
        self.flipped_total = state.get("flipped_total", 0)  # absent from checkpoints before sampled labels: none flipped
        self._pairs = [tuple(map(list, pair)) for pair in state["pairs"]]
        self.order.restart(len(self._pairs))
        self.order.pending = list(state["order"])
        if state["behaviour"] is None:
            self.behaviour = None
            return
        if self.behaviour is None:
            if self.template is None:
                raise CheckpointError("OnPolicyPairs needs a `template` model to restore its behaviour snapshot")
            self.behaviour = frozen_copy(self.template)
        self.behaviour.load_state_dict(state["behaviour"])

    def probe(self) -> Probe | None:
        """The current round's pairs; None before the first round (at step 0 π_θ = μ, so nothing is shifted)."""
        pairs = self._pairs[: self.probe_size]
        return Probe(self._to_batch(pairs), self.behaviour) if pairs else None
