"""Scored rollouts for the on-policy RL reference point (mode=rl): the same sampler, oracle, budgets and behaviour
snapshot as on-policy DPO pairs, but every completion is kept, with its RLOO advantage.

The KL penalty is always to π_sft (the objective DPO is derived from), never to a refreshed π_ref: the source holds
π_sft itself and computes log π_sft(y|x) when the round is sampled.
"""

from __future__ import annotations

import numpy as np
import torch

from shiftlab.data.batches import completions_to_batch
from shiftlab.functional.losses import sequence_logps
from shiftlab.functional.policy_gradient import kl_penalised_rewards, rloo_advantages
from shiftlab.training.objectives import RolloutBatch
from shiftlab.training.sources import OnPolicyPairs, Probe, StepData


class OnPolicyRollouts(OnPolicyPairs):
    """Every `sample_every` steps: k completions for each of `prompts_per_round` prompts from the current π_θ.

    Each step trains on the whole round (with sample_every > 1, the round serves several PPO-style inner epochs).
    """

    def __init__(self, *args, sft_model: torch.nn.Module, beta_rl: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.sft, self.beta_rl = sft_model, beta_rl
        self._round: RolloutBatch | None = None

    def next_batch(self, policy: torch.nn.Module, step: int) -> StepData:
        data = StepData(batch=None)
        if self.round_step < 0 or step - self.round_step >= self.cfg.sample_every:
            self._sample_rollouts(policy, step, data)
        data.batch = self._round
        data.stats |= {"data/staleness": float(step - self.round_step), "data/truncated": 0}
        return data

    def _sample_rollouts(self, policy: torch.nn.Module, step: int, data: StepData) -> None:
        prompts = self.rng.choice(len(self.prompts.ids), size=self.cfg.prompts_per_round, replace=False)
        labelled, seconds = self._label(policy, prompts, step, attempt=0)
        n = len(labelled.completions)
        data.counts |= {"policy_samples": n, "oracle_calls": n}
        data.stats |= seconds
        empty = sum(len(r) == 0 for r in labelled.completions.response_ids)
        if empty:
            data.events.append({"event": "empty_responses", "count": empty})
        self._round = self._score(labelled)
        if not bool(self._round.advantages.any()):
            data.events.append({"event": "all_rewards_tied", "rollouts": n})  # a zero gradient, not a crash
        self.round_step = step
        data.events.append({"event": "sampling_round", "behaviour": f"policy@step{step}", "rollouts": n})
        self._snapshot(policy)

    @torch.no_grad()
    def _score(self, labelled) -> RolloutBatch:
        c = labelled.completions
        seq = completions_to_batch(c, self.sampler.eos_token_id, self.sampler.pad_token_id)
        self.sft.eval()
        seq = seq.to(next(self.sft.parameters()).device)
        sft_logits = self.sft(input_ids=seq.input_ids, attention_mask=seq.attention_mask).logits
        sft_logps = sequence_logps(sft_logits, seq.input_ids, seq.loss_mask).cpu()
        seq = seq.to("cpu")
        rewards = torch.as_tensor(labelled.rewards, dtype=torch.float32)
        penalised = kl_penalised_rewards(rewards, c.logps, sft_logps, self.beta_rl)
        return RolloutBatch(
            seq.input_ids, seq.attention_mask, seq.loss_mask,
            advantages=rloo_advantages(penalised, self.cfg.k), behaviour_logps=c.logps.float(),
            rewards=rewards, kl_penalty=c.logps.float() - sft_logps,
        )

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["round"] = None if self._round is None else {
            f: getattr(self._round, f) for f in RolloutBatch.__dataclass_fields__
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._round = None if state["round"] is None else RolloutBatch(**state["round"])

    def probe(self) -> Probe | None:
        """The current round's rollouts (μ = the snapshot that sampled them); None before the first round."""
        if self._round is None:
            return None
        rows = torch.as_tensor(np.arange(min(self.probe_size, len(self._round))))
        return Probe(self._round.select(rows), self.behaviour)
