"""How π_ref moves: the only place it does; and π_θ and π_ref built together, in one place
(`build_policy_and_reference`).

- `FixedReference`: π_ref = π_sft for the whole run (standard DPO). No copy is made.
- `HardRefresh`: every `refresh_every` steps π_ref ← π_θ.
- `SoftRefresh`: every `refresh_every` steps π_ref ← α·π_θ + (1−α)·π_ref, parameter by parameter
  (TR-DPO, Gorbatovski et al. 2024, eq. 4).
π_sft is kept apart in every schedule, so KL(π_θ‖π_sft) is always measurable. A schedule that owns its π_ref
saves it in `state_dict()`: after a refresh it is a model no other file holds.

When π_θ carries LoRA adapters (model.lora.r > 0), a refreshed π_ref is π_θ's own frozen base, seen with the
adapters off, and a refresh merges (α of) the adapters into that base (`MergeRefresh`, see shiftlab/models/lora.py):
no copy of π_ref is held, and the checkpoint of π_θ carries it. A fixed π_ref stays π_sft itself.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch

from shiftlab.config import LoraConfig, ReferenceConfig, ReferenceKind
from shiftlab.models.build import frozen_copy
from shiftlab.models.lora import AdapterDisabledReference, add_adapters, merge_adapters


class ReferenceSchedule(Protocol):
    ref: torch.nn.Module

    def after_step(self, policy: torch.nn.Module, steps_done: int) -> dict | None:
        """Called after each optimizer step; returns an event dict when π_ref moved."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class FixedReference:
    def __init__(self, sft: torch.nn.Module):
        self.ref = sft

    def after_step(self, policy: torch.nn.Module, steps_done: int) -> dict | None:
        return None

    def state_dict(self) -> dict:
        return {}  # π_sft is rebuilt (or loaded from the cache) by every run; nothing of its own to save

    def load_state_dict(self, state: dict) -> None:
        pass


class _OwnedReference:
    """A schedule holding its own copy of π_ref, which a checkpoint must carry."""

    ref: torch.nn.Module

    def state_dict(self) -> dict:
        return {"ref": self.ref.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.ref.load_state_dict(state["ref"])


class HardRefresh(_OwnedReference):
    def __init__(self, sft: torch.nn.Module, refresh_every: int):
        self.ref = frozen_copy(sft)  # its own parameters: a refresh must never write into π_sft
        self.refresh_every = refresh_every

    def after_step(self, policy: torch.nn.Module, steps_done: int) -> dict | None:
        if steps_done % self.refresh_every:
            return None
        copy_parameters(policy, self.ref)
        return {"event": "refresh", "kind": "hard"}


class SoftRefresh(_OwnedReference):
    def __init__(self, sft: torch.nn.Module, refresh_every: int, alpha: float):
        self.ref = frozen_copy(sft)
        self.refresh_every = refresh_every
        self.alpha = alpha

    def after_step(self, policy: torch.nn.Module, steps_done: int) -> dict | None:
        if steps_done % self.refresh_every:
            return None
        mix_parameters(policy, self.ref, self.alpha)
        return {"event": "refresh", "kind": "soft", "alpha": self.alpha}


class MergeRefresh:
    """π_ref = π_θ's base with its adapters off; every `refresh_every` steps W ← W + α·ΔW and B ← (1−α)·B, which
    leaves π_θ as it was and gives π_ref ← α·π_θ + (1−α)·π_ref exactly (α = 1: the hard refresh)."""

    def __init__(self, policy: torch.nn.Module, refresh_every: int, alpha: float, kind: ReferenceKind):
        self.ref = AdapterDisabledReference(policy)
        self.refresh_every, self.alpha = refresh_every, alpha
        self.moved = {"event": "refresh", "kind": kind.value} | ({"alpha": alpha} if kind is ReferenceKind.soft else {})

    def after_step(self, policy: torch.nn.Module, steps_done: int) -> dict | None:
        if steps_done % self.refresh_every:
            return None
        if policy is not self.ref.policy:
            raise ValueError("MergeRefresh moves the base of the π_θ it was built with; it was given another model")
        merge_adapters(policy, self.alpha)
        return dict(self.moved)

    def state_dict(self) -> dict:
        return {}  # π_ref's weights are π_θ's base weights, which the policy's own checkpoint holds

    def load_state_dict(self, state: dict) -> None:
        pass


@torch.no_grad()
def copy_parameters(source: torch.nn.Module, target: torch.nn.Module) -> None:
    for dst, src in _paired_tensors(source, target):
        dst.copy_(src)


@torch.no_grad()
def mix_parameters(source: torch.nn.Module, target: torch.nn.Module, alpha: float) -> None:
    """target ← α·source + (1−α)·target on every floating-point tensor (buffers included)."""
    for dst, src in _paired_tensors(source, target):
        if dst.is_floating_point():
            dst.mul_(1 - alpha).add_(src, alpha=alpha)
        else:
            dst.copy_(src)


def _paired_tensors(source: torch.nn.Module, target: torch.nn.Module):
    """Parameters and buffers, each shared tensor once (tied embeddings must not be mixed twice)."""
    src = list(source.parameters()) + list(source.buffers())
    dst = list(target.parameters()) + list(target.buffers())
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst)):
        raise ValueError("π_ref and π_θ have different architectures; a refresh needs identical parameter shapes")
    return zip(dst, src)


def build_policy_and_reference(
    sft: torch.nn.Module, lora: LoraConfig, cfg: ReferenceConfig, seed: int
) -> tuple[torch.nn.Module, ReferenceSchedule]:
    """π_θ and the schedule of its π_ref, from π_sft and the config: the one place either is built.

    π_θ is a copy of π_sft with every weight trainable, or (model.lora.r > 0) a frozen copy with LoRA adapters
    that train, their initialisation drawn from `seed` alone (the global generators do not move). π_ref:

    - fixed: π_sft itself, with adapters too (π_θ's base is then a copy of π_sft that nothing writes); being π_sft,
      it shares π_sft's evaluation forward passes and its precomputed log-probs;
    - hard / soft with adapters: π_θ's base with the adapters off, moved by merging them (`MergeRefresh`);
    - hard / soft without: a copy of π_sft of its own, which a refresh overwrites or mixes into.
    """
    policy = copy.deepcopy(sft)
    policy = add_adapters(policy, lora, seed) if lora.r > 0 else policy.requires_grad_(True)
    policy.train()
    if cfg.kind is ReferenceKind.fixed:
        return policy, FixedReference(sft)
    if lora.r > 0:
        alpha = 1.0 if cfg.kind is ReferenceKind.hard else cfg.alpha
        return policy, MergeRefresh(policy, cfg.refresh_every, alpha, cfg.kind)
    if cfg.kind is ReferenceKind.hard:
        return policy, HardRefresh(sft, cfg.refresh_every)
    return policy, SoftRefresh(sft, cfg.refresh_every, cfg.alpha)
