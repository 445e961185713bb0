"""LoRA through peft: π_ref as π_θ's base with the adapters off, refresh by merging, checkpoints, saved policies.

The merge tests run on GPT-2 (Conv1D, weights stored (in, out)) and GPT-NeoX (Pythia: nn.Linear, (out, in)), and
check the LoRA refresh against the brute-force definition: the parameter mix of two full models.
"""

from __future__ import annotations

import copy
import json
import sys

import pandas as pd
import pytest
import torch
from tiny import compose_config
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from shiftlab.config import LoraConfig, ReferenceConfig, ReferenceKind
from shiftlab.models.build import frozen_copy, save_model
from shiftlab.models.lora import (
    AdapterDisabledReference,
    add_adapters,
    export_model,
    import_peft,
    lora_layers,
    parameter_counts,
)
from shiftlab.models.sampler import SamplerSettings, _cache_argument, sample_completions
from shiftlab.rundir.checkpoint import read_checkpoint, write_checkpoint
from shiftlab.training.reference import (
    FixedReference,
    MergeRefresh,
    build_policy_and_reference,
    copy_parameters,
    mix_parameters,
)
from shiftlab.validation import ConfigError

pytest.importorskip("peft")

VOCAB = 20
IDS = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])  # (B, T)
LORA = LoraConfig(r=4, alpha=8.0)


def base_model(arch: str = "gpt2") -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                         bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(cfg).eval()
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0)
    return GPTNeoXForCausalLM(cfg).eval()


def as_if_trained(policy: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every B (zero at init) random values, so ΔW ≠ 0 and the adapters change the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(policy):
            b = layer.lora_B["default"].weight
            b.copy_(torch.randn(b.shape, generator=g) * 0.5)
    return policy


def adapted(arch: str = "gpt2", trained: bool = True) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(π_sft, π_θ = a copy of π_sft with adapters)."""
    sft = base_model(arch)
    policy = add_adapters(copy.deepcopy(sft), LORA, seed=0)
    return sft, (as_if_trained(policy) if trained else policy)


@torch.no_grad()
def logits(model: torch.nn.Module) -> torch.Tensor:
    return model(input_ids=IDS).logits  # (B, T, V)


def full_model(policy: torch.nn.Module, sft: torch.nn.Module, with_delta: bool) -> torch.nn.Module:
    """Brute force: a plain copy of π_sft's architecture holding π_θ's base weights, plus ΔW = s·B·A when asked,
    computed from A and B directly (not with peft's get_delta_weight)."""
    model = copy.deepcopy(sft)
    plain = dict(model.named_modules())
    with torch.no_grad():
        for name, layer in lora_layers(policy):
            target = plain[name.removeprefix("base_model.model.")]
            target.weight.copy_(layer.get_base_layer().weight)
            if with_delta:
                a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, in), (out, r)
                delta = (LORA.alpha / LORA.r) * (b @ a)  # (out, in)
                target.weight.add_(delta.T if type(target).__name__ == "Conv1D" else delta)  # Conv1D: (in, out)
    return model


# --- adapters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_adapters_start_as_the_base_model_and_only_they_train(arch):
    sft, policy = adapted(arch, trained=False)
    assert torch.equal(logits(policy), logits(sft))  # B = 0 at init
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    n_trainable, n_total = parameter_counts(policy)
    assert n_trainable == sum(p.numel() for n, p in policy.named_parameters() if "lora_" in n)
    assert n_total - n_trainable == sum(p.numel() for p in sft.parameters())  # the base, once (tied head included)


def test_adapter_initialisation_is_seeded_and_leaves_the_global_generator_alone():
    bases = [base_model() for _ in range(3)]
    torch.manual_seed(5)
    a = add_adapters(bases[0], LORA, seed=7)
    drawn_after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn_after, torch.rand(3))  # the global generator did not move: the run draws the same
    b, c = add_adapters(bases[1], LORA, seed=7), add_adapters(bases[2], LORA, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(not torch.equal(sa[k], sc[k]) for k in sa if "lora_A" in k)


@pytest.mark.parametrize(
    "targets,message",
    [(["lm_head"], "tied to another module's"), (["wte"], "linear layers only"), (["nothing"], "not found")],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # peft's own warnings about the layers refused here
def test_adapters_a_refresh_could_not_merge_are_refused_naming_the_key(targets, message):
    with pytest.raises(ValueError, match=rf"model.lora.target_modules=.*{message}"):
        add_adapters(base_model(), LoraConfig(r=4, target_modules=targets), seed=0)


def test_only_adapter_parameters_receive_gradients_with_the_reference_run_in_between():
    _, policy = adapted()
    ref = AdapterDisabledReference(policy)
    policy.train()
    out = policy(input_ids=IDS).logits.logsumexp(-1).sum()  # π_θ's graph first, as in the DPO step
    ref_out = ref(input_ids=IDS).logits  # peft switches the adapters' requires_grad off and on in here
    assert not ref_out.requires_grad
    out.backward()
    for name, p in policy.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert p.grad is None, name
    assert any(p.grad.abs().sum() > 0 for n, p in policy.named_parameters() if "lora_B" in n)


# --- π_ref as a view -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_reference_is_the_base_model_exactly_without_a_copy(arch):
    sft, policy = adapted(arch)
    ref = AdapterDisabledReference(policy)
    assert torch.equal(logits(ref), logits(sft))  # same weights, same kernels: bit for bit
    assert not torch.allclose(logits(policy), logits(sft), atol=1e-3)  # the adapters do change π_θ
    assert ref.state_dict() == {}  # no weights of its own: π_θ's checkpoint carries them
    base = {id(p) for n, p in policy.named_parameters() if "lora_" not in n}
    assert {id(p) for p in ref.parameters()} == base  # π_ref's parameters are π_θ's base tensors themselves


def test_what_callers_do_to_the_reference_never_reaches_the_policy():
    _, policy = adapted()
    policy.train()
    ref = AdapterDisabledReference(policy)
    ref.eval().requires_grad_(False)
    assert policy.training and all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)
    seen = []
    hook = policy.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    logits(ref)
    hook.remove()
    assert seen == [False] and policy.training  # the view's eval mode, for its own forward pass only


# --- refresh by merging --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_hard_refresh_merges_the_adapters_leaving_the_policy_unchanged(arch):
    sft = base_model(arch)
    policy, schedule = build_policy_and_reference(sft, LORA, ReferenceConfig(kind=ReferenceKind.hard, refresh_every=2), 0)
    as_if_trained(policy)
    before = logits(policy)
    brute = logits(full_model(policy, sft, with_delta=True))  # π_θ as one full model
    assert schedule.after_step(policy, 1) is None
    assert schedule.after_step(policy, 2) == {"event": "refresh", "kind": "hard"}
    torch.testing.assert_close(logits(policy), before, atol=1e-5, rtol=0)  # π_θ: the same function
    torch.testing.assert_close(logits(schedule.ref), logits(policy), atol=1e-5, rtol=0)  # π_ref = π_θ
    torch.testing.assert_close(logits(schedule.ref), brute, atol=1e-5, rtol=0)
    assert all(torch.equal(layer.lora_B["default"].weight, torch.zeros_like(layer.lora_B["default"].weight))
               for _, layer in lora_layers(policy))
    assert torch.equal(logits(sft), logits(base_model(arch)))  # π_sft untouched


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_soft_refresh_is_the_trdpo_parameter_mix_of_the_full_models(arch):
    sft, alpha = base_model(arch), 0.3
    soft = ReferenceConfig(kind=ReferenceKind.soft, refresh_every=1, alpha=alpha)
    policy, schedule = build_policy_and_reference(sft, LORA, soft, seed=0)
    as_if_trained(policy)
    for round_ in range(2):  # a second refresh starts from a moved base
        theta, ref = full_model(policy, sft, with_delta=True), full_model(policy, sft, with_delta=False)
        mix_parameters(theta, ref, alpha)  # the definition: π_ref ← α·π_θ + (1−α)·π_ref, parameter by parameter
        before, old_b = logits(policy), [layer.lora_B["default"].weight.clone() for _, layer in lora_layers(policy)]
        assert schedule.after_step(policy, round_ + 1) == {"event": "refresh", "kind": "soft", "alpha": alpha}
        torch.testing.assert_close(logits(policy), before, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits(schedule.ref), logits(ref), atol=1e-5, rtol=0)
        assert all(torch.equal(layer.lora_B["default"].weight, b * (1 - alpha)) for (_, layer), b in zip(lora_layers(policy), old_b))
        as_if_trained(policy, seed=round_ + 2)  # training moves the adapters between refreshes


def test_schedules_hold_no_copy_of_the_reference():
    sft = base_model()
    _, fixed = build_policy_and_reference(sft, LORA, ReferenceConfig(kind=ReferenceKind.fixed), seed=0)
    assert isinstance(fixed, FixedReference) and fixed.ref is sft  # the base under a fixed π_ref is π_sft
    for kind in (ReferenceKind.hard, ReferenceKind.soft):
        policy, schedule = build_policy_and_reference(sft, LORA, ReferenceConfig(kind=kind), seed=0)
        assert isinstance(schedule, MergeRefresh) and schedule.ref.policy is policy and schedule.state_dict() == {}
        with pytest.raises(ValueError, match="another model"):
            schedule.after_step(copy.deepcopy(policy), 40)


# --- checkpoints, snapshots, saving, sampling ----------------------------------------------------------------


def test_checkpoint_round_trip_restores_policy_and_reference_exactly(tmp_path):
    sft, soft = base_model(), ReferenceConfig(kind=ReferenceKind.soft, refresh_every=1, alpha=0.5)
    policy, schedule = build_policy_and_reference(sft, LORA, soft, seed=0)
    as_if_trained(policy)
    schedule.after_step(policy, 1)  # the base now differs from π_sft: only the policy's state holds it
    as_if_trained(policy, seed=9)
    saved = write_checkpoint(tmp_path, 1, {"policy": policy.state_dict(), "reference": schedule.state_dict()}, keep_last=1)
    state = read_checkpoint(saved)
    fresh, restored = build_policy_and_reference(sft, LORA, soft, seed=1)  # rebuilt from the config, as a resume does
    fresh.load_state_dict(state["policy"])
    restored.load_state_dict(state["reference"])
    assert torch.equal(logits(fresh), logits(policy)) and torch.equal(logits(restored.ref), logits(schedule.ref))


def test_behaviour_snapshot_copies_a_peft_policy():
    _, policy = adapted()
    snapshot = frozen_copy(policy)
    assert torch.equal(logits(snapshot), logits(policy)) and not any(p.requires_grad for p in snapshot.parameters())
    assert all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)
    as_if_trained(policy, seed=4)
    assert not torch.equal(logits(snapshot), logits(policy))
    copy_parameters(policy, snapshot)
    assert torch.equal(logits(snapshot), logits(policy))


def test_saved_policy_is_merged_and_loads_without_peft_leaving_training_untouched(tmp_path, tiny_tokenizer):
    _, policy = adapted()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    save_model(policy, tiny_tokenizer, tmp_path / "policy")
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())
    assert lora_layers(policy)  # still adapted
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert type(loaded) is GPT2LMHeadModel and not any("lora" in k for k in loaded.state_dict())
    torch.testing.assert_close(logits(loaded.eval()), logits(policy), atol=1e-5, rtol=0)
    assert export_model(loaded) is loaded  # a plain model is saved as it is


def test_sampling_from_a_peft_policy_passes_the_cache_under_its_current_name():
    sft, policy = adapted(trained=False)
    assert _cache_argument(policy) == _cache_argument(sft)
    sampler = SamplerSettings(max_new_tokens=6, eos_token_id=0, pad_token_id=0)
    a = sample_completions(policy, [[3, 4], [5]], sampler, k=2, generator=torch.Generator().manual_seed(0))
    b = sample_completions(sft, [[3, 4], [5]], sampler, k=2, generator=torch.Generator().manual_seed(0))
    assert a.response_ids == b.response_ids and torch.equal(a.logps, b.logps)  # B = 0: the same distribution


# --- config --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,key",
    [("model.lora.r=-1", "model.lora.r"), ("model.lora.alpha=0", "model.lora.alpha"),
     ("model.lora.dropout=1.0", "model.lora.dropout"), ("model.lora.target_modules=[]", "model.lora.target_modules")],
)
def test_bad_lora_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"`{key}`"):
        compose_config(["model.lora.r=8", override], tiny=False)


def test_lora_runs_share_the_cached_sft_model():
    from shiftlab.stages.sft import sft_fingerprint

    assert sft_fingerprint(compose_config([])) == sft_fingerprint(compose_config(["model.lora.r=8", "model.lora.alpha=4"]))


def test_lora_preset_composes():
    lora = compose_config(["+experiment=lora", "mode=online"], tiny=False).model.lora
    assert lora.r == 16 and lora.target_modules == ["all-linear"]


def test_missing_peft_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "peft" else object())
    with pytest.raises(ConfigError, match=r"`model.lora.r`.*pip install 'peft>=0.13'"):
        compose_config(["model.lora.r=8"], tiny=False)
    monkeypatch.setitem(sys.modules, "peft", None)  # what an absent package looks like to `import`
    with pytest.raises(ImportError, match=r"model.lora.r > 0 needs peft: pip install"):
        import_peft()


# --- whole runs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


FAST = ["model.lora.r=4", "sft.steps=5", "train.max_new_tokens=8", "eval.divergences=false", "eval.n_prompts=8"]


@pytest.mark.parametrize("overrides,kind", [(["mode=trdpo", "reference=soft"], "soft"), (["mode=online"], "hard")])
def test_lora_runs_refresh_by_merging(tmp_path, cache, overrides, kind):
    from shiftlab.experiment.lifecycle import run

    run_dir = run(compose_config([f"cache_dir={cache}", *FAST, *overrides]), tmp_path / "run")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "refresh" and e["kind"] == kind] == [2, 4]
    evals = pd.read_json(run_dir / "metrics.jsonl", lines=True).dropna(subset=["eval/kl_ref"])
    kl_ref, kl_sft = evals["eval/kl_ref"].to_numpy(), evals["eval/kl_sft"].to_numpy()  # at steps 0, 2, 4
    assert kl_ref[0] == pytest.approx(0.0, abs=1e-6) and (kl_sft[1:] > 0).all()
    if kind == "hard":  # evaluated right after each refresh: π_ref = π_θ
        assert kl_ref == pytest.approx(0.0, abs=1e-6)
    else:  # π_ref halfway between its last self and π_θ, all the while away from π_sft
        assert (kl_ref[1:] > 0).all() and (kl_ref[1:] < kl_sft[1:]).all()
    policy = AutoModelForCausalLM.from_pretrained(run_dir / "policy")
    assert not any("lora" in k for k in policy.state_dict())
