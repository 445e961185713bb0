"""LoRA adapters on π_θ (through `peft`), and π_ref as π_θ's own base weights with the adapters switched off.

With adapters, each adapted layer of π_θ computes with W + ΔW, ΔW = (alpha/r)·B·A (Hu et al. 2021, eq. 3), and
only A and B train. The frozen base W is itself a whole model, reached by switching the adapters off, so a
moving π_ref needs no second copy of the weights. A refresh moves W instead of copying π_θ into π_ref:

- soft, π_ref ← α·π_θ + (1−α)·π_ref (TR-DPO, Gorbatovski et al. 2024, eq. 4):  W ← W + α·ΔW,  B ← (1−α)·B.
  π_θ = (W + α·ΔW) + (1−α)·ΔW is the same function as before, and π_ref = W + α·ΔW = α·(W + ΔW) + (1−α)·W is
  the parameter mix of the full models. (Weights without an adapter are frozen, hence equal in π_θ and π_ref,
  and mixing them changes nothing.)
- hard, π_ref ← π_θ: the same with α = 1, i.e. W ← W + ΔW and B ← 0.

peft is imported only when adapters are asked for (model.lora.r > 0), so the rest of shiftlab runs without it.
"""

from __future__ import annotations

import copy
import sys
import warnings

import torch

from shiftlab.config import LoraConfig

ALL_LINEAR = "all-linear"  # peft's shorthand: every linear / Conv1D layer except the output head
PEFT_REQUIREMENT = "peft>=0.13"
_ADAPTER = "default"  # peft's name for the one adapter shiftlab adds


def import_peft():
    """peft, or an ImportError that says which setting needs it and how to install it."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            f"model.lora.r > 0 needs peft: pip install '{PEFT_REQUIREMENT}' (or pip install -e '.[lora]')"
        ) from err
    return peft


def has_adapters(model: torch.nn.Module) -> bool:
    """Whether `model` is a peft model; a model can only be one if peft was imported, so this never imports it."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def add_adapters(model: torch.nn.Module, cfg: LoraConfig, seed: int) -> torch.nn.Module:
    """Wrap `model` (in place, as peft does) with LoRA adapters: the base weights frozen, only A and B trainable.

    B starts at zero, so the wrapped model computes exactly what `model` did. A's random initialisation draws
    from a generator seeded with `seed`, without touching the global one: a run draws the same pairs and samples
    with and without adapters.
    """
    peft = import_peft()
    targets = ALL_LINEAR if list(cfg.target_modules) == [ALL_LINEAR] else list(cfg.target_modules)
    config = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        # GPT-2's Conv1D stores its weight as (in, out); told so, peft lays ΔW out the same way (no warning)
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in model.modules()),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # transformers 5 rename, harmless
        try:
            adapted = peft.get_peft_model(model, config)
        except ValueError as err:  # e.g. no module matched
            raise ValueError(f"model.lora.target_modules={list(cfg.target_modules)}: {err}") from err
    _check_mergeable(adapted, cfg)
    return adapted


def _check_mergeable(model: torch.nn.Module, cfg: LoraConfig) -> None:
    """A refresh adds ΔW into each adapted weight: that is only right for linear layers whose weight no other
    module shares (adapting a tied output head would move the input embedding too)."""
    peft = sys.modules["peft"]
    shared = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        shared[id(p)] = shared.get(id(p), 0) + 1
    for name, layer in lora_layers(model):
        if not isinstance(layer, peft.tuners.lora.Linear):
            raise ValueError(f"model.lora.target_modules={list(cfg.target_modules)}: {name} is a "
                             f"{type(layer).__name__}; shiftlab merges adapters of linear layers only")
        if shared[id(layer.get_base_layer().weight)] > 1:
            raise ValueError(f"model.lora.target_modules={list(cfg.target_modules)}: {name}'s weight is tied to "
                             "another module's, so merging its adapter would change both")


def lora_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The adapted layers of a peft model, by module name."""
    peft = import_peft()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]


@torch.no_grad()
def merge_adapters(model: torch.nn.Module, alpha: float) -> None:
    """W ← W + α·ΔW and B ← (1−α)·B on every adapted layer: π_θ is unchanged, its base moves α of the way to it.

    α = 1 is a hard refresh (B becomes exactly 0). ΔW comes from peft's `get_delta_weight`, which already lays it
    out like W ((out, in) for nn.Linear, (in, out) for GPT-2's Conv1D); it is formed in B's dtype (float32 for a
    bfloat16 base) and rounded once, into W's dtype, when added.
    """
    for _, layer in lora_layers(model):
        for name in layer.active_adapters:
            weight = layer.get_base_layer().weight
            weight.add_(layer.get_delta_weight(name).to(weight.dtype), alpha=alpha)
            layer.lora_B[name].weight.mul_(1.0 - alpha)


class AdapterDisabledReference(torch.nn.Module):
    """π_ref as a view: the forward pass of π_θ with its adapters switched off, i.e. of its base weights.

    π_θ is kept outside the module tree, so `.eval()`, `.to()` and `.state_dict()` of the reference never reach
    π_θ (its base weights are saved with π_θ). `parameters()` yields π_ref's parameters, which are π_θ's frozen
    base weights: callers read their device, and freezing them again is a no-op; the adapters are never among
    them. The view's train/eval mode is applied to π_θ for the duration of its forward pass only.
    """

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        if not has_adapters(policy):
            raise TypeError(f"AdapterDisabledReference needs a peft model, got {type(policy).__name__}")
        self.__dict__["policy"] = policy  # not a submodule (see the class docstring)

    @property
    def config(self):
        return self.policy.config

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        adapter = self.policy.base_model.prefix  # "lora_": every adapter tensor's name holds it
        for name, p in self.policy.named_parameters(prefix, recurse, remove_duplicate):
            if adapter not in name:
                yield name, p

    @torch.no_grad()  # π_ref is a constant of every objective
    def forward(self, *args, **kwargs):
        was_training = self.policy.training
        self.policy.train(self.training)
        try:
            # peft switches requires_grad of the adapters off and back on here; π_θ's graph, built before this
            # call, still accumulates into them, since they require grad again by the time backward runs
            with self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


def export_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model a `policy/` directory should hold: `model` itself, or for a peft model a merged copy (W + ΔW,
    adapters removed) that `AutoModelForCausalLM.from_pretrained` loads without peft. The copy leaves the
    training model untouched."""
    if not has_adapters(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
