"""train.mixed_precision (shiftlab.training.precision): the bf16 step agrees with float32 on the tiny model within
the stated tolerance; auto's rule on injected timings; the verdict cached per machine and shape and reused; known
answers without a probe; a probe that leaves no trace."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from shiftlab.bench.workload import build_workload
from shiftlab.config import LossConfig, ModelConfig, OptimConfig
from shiftlab.models.build import build_model, frozen_copy
from shiftlab.training import precision
from shiftlab.training.loop import build_optimizer, optimizer_step
from shiftlab.training.objectives import build_objective
from shiftlab.training.precision import (
    MIN_SPEEDUP,
    STAT_TOLERANCE,
    Measurement,
    StepProbe,
    choose_precision,
    cpu_bf16_flags,
    decide,
    stat_difference,
)
from shiftlab.training.precompute import attach_reference_logps

TINY = ModelConfig(vocab_size=1024, n_layer=4, n_head=4, n_embd=128, n_positions=64)  # conf/model/tiny.yaml
CPU = torch.device("cpu")
STEP_STATS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm")


@pytest.fixture(scope="module")
def workload():
    return build_workload(64)


def tiny_policy(workload, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(TINY, len(workload.tokenizer), workload.tokenizer.eos_token_id)


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_bf16_step_statistics_agree_with_float32_on_the_tiny_model(workload, packing):
    policy = tiny_policy(workload)
    ref = frozen_copy(policy)
    objective = build_objective(LossConfig(), packing)
    optim_cfg = OptimConfig(lr=1e-3, warmup_steps=1)
    batches = [workload.collator(workload.pairs[i : i + 16]) for i in range(0, 64, 16)]
    optimizer, scheduler = build_optimizer(policy, optim_cfg)
    for batch in batches[:3]:  # π_θ moves away from π_ref, so the rewards are not all zero
        optimizer_step(policy, ref, batch, objective, optim_cfg, optimizer, scheduler)
    stats = {}
    for mixed in (False, True):
        moved = copy.deepcopy(policy)
        stats[mixed] = optimizer_step(moved, ref, batches[3], objective, optim_cfg, *build_optimizer(moved, optim_cfg),
                                      mixed_precision=mixed)
    fp32, bf16 = stats[False], stats[True]
    assert abs(fp32["rewards/margins"]) > 0.01 and bf16["logps/chosen"] != fp32["logps/chosen"]  # bf16 really ran
    for key in STEP_STATS:
        assert abs(bf16[key] - fp32[key]) <= STAT_TOLERANCE * (1 + abs(fp32[key])), key
    assert stat_difference(fp32, bf16) <= STAT_TOLERANCE


def test_stat_difference_is_relative_for_large_values_and_absolute_for_small_ones():
    assert stat_difference({"logps/chosen": -99.0}, {"logps/chosen": -100.0}) == pytest.approx(0.01)
    assert stat_difference({"rewards/chosen": 0.0}, {"rewards/chosen": 0.005}) == pytest.approx(0.005)
    assert stat_difference({"rewards/accuracies": 0.0, "loss": 0.7}, {"rewards/accuracies": 1.0, "loss": 0.7}) == 0.0


@pytest.mark.parametrize("fp32_s,bf16_s,diff,chosen", [
    (1.0, 0.5, 0.001, "bf16"),  # faster and agreeing
    (1.0, 1.0 / MIN_SPEEDUP, 0.0, "bf16"),  # just fast enough
    (1.0, 0.95, 0.0, "no"),  # a near-tie keeps float32
    (1.0, 2.0, 0.0, "no"),  # slower
    (1.0, 0.5, 2 * STAT_TOLERANCE, "no"),  # faster but disagreeing
])
def test_auto_rule_on_injected_timings(fp32_s, bf16_s, diff, chosen):
    got, why = decide(Measurement(fp32_s, bf16_s, diff))
    assert got == chosen and why


def test_cpu_bf16_flags_from_cpuinfo():
    assert cpu_bf16_flags("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n") == {"avx512_bf16"}
    assert cpu_bf16_flags("flags\t: fpu avx2 amx_tile amx_bf16\n") == {"amx_bf16"}
    assert cpu_bf16_flags("flags\t: fpu avx2 avx512f\n") == set()
    assert cpu_bf16_flags("processor\t: 0\n") is None  # unknown: only a measurement can tell


def _probe_factory(workload, rows: int = 8, calls: list | None = None):
    policy = tiny_policy(workload)
    ref = frozen_copy(policy)

    def probe() -> StepProbe:
        if calls is not None:
            calls.append("probe")
        return StepProbe(policy, ref, build_objective(LossConfig(), True), rows=rows, max_length=32,
                         max_prompt_length=8, device=CPU)

    return policy, probe


def test_auto_verdict_is_cached_per_machine_and_shape_and_reused(workload, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda cpuinfo=None: {"avx512_bf16"})  # a bf16 CPU anywhere
    measured = []

    def fast_bf16(step):
        measured.append(step.shape["rows"])
        return Measurement(1.0, 0.5, 0.001)

    policy, probe = _probe_factory(workload)
    first = choose_precision("auto", probe, policy, CPU, tmp_path, measure=fast_bf16)
    assert first.bf16 and (first.fp32_s, first.bf16_s) == (1.0, 0.5) and "measured now" in first.reason
    again = choose_precision("auto", probe, policy, CPU, tmp_path, measure=lambda step: pytest.fail("measured twice"))
    assert again.chosen == "bf16" and again.fp32_s == 1.0 and "reused from" in again.reason
    entry = next((tmp_path / "mixed_precision").glob("*.json"))
    key = json.loads(entry.read_text())["key"]
    assert key["machine"]["threads"] == torch.get_num_threads() and key["step"]["rows"] == 8
    other_shape = choose_precision("auto", _probe_factory(workload, rows=4)[1], policy, CPU, tmp_path, measure=fast_bf16)
    assert other_shape.bf16 and measured == [8, 4]  # another shape, another key: measured again
    entry.write_text("{not json")  # a damaged entry is measured again, not trusted
    assert choose_precision("auto", probe, policy, CPU, tmp_path, measure=fast_bf16).bf16 and measured == [8, 4, 8]


def test_known_answers_and_fixed_settings_skip_the_probe(workload, monkeypatch):
    calls: list = []
    policy, probe = _probe_factory(workload, calls=calls)
    assert choose_precision("no", probe, policy, CPU, None).chosen == "no"
    assert choose_precision("bf16", probe, policy, CPU, None).chosen == "bf16"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda cpuinfo=None: set())
    no_bf16_cpu = choose_precision("auto", probe, policy, CPU, None)
    assert no_bf16_cpu.chosen == "no" and "no bf16 instructions" in no_bf16_cpu.reason
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda cpuinfo=None: {"amx_bf16"})
    bf16_weights = choose_precision("auto", probe, copy.deepcopy(policy).to(torch.bfloat16), CPU, None)
    assert bf16_weights.chosen == "no" and "bfloat16" in bf16_weights.reason
    recorded = {"setting": "auto", "chosen": "bf16", "reason": "bf16 step 1.3×", "fp32_s": 1.0, "bf16_s": 0.7}
    resumed = choose_precision("auto", probe, policy, CPU, None, recorded=recorded)  # a resume keeps its choice
    assert resumed.bf16 and resumed.fp32_s == 1.0 and "as chosen when the run started" in resumed.reason
    assert calls == []
    with pytest.raises(ValueError):
        choose_precision("fp16", probe, policy, CPU, None)


@pytest.mark.parametrize("own_rows", [False, True], ids=["synthetic", "own pairs"])
def test_the_probe_measures_the_step_and_leaves_no_trace(workload, own_rows):
    policy = tiny_policy(workload).eval()
    ref = frozen_copy(policy)
    weights = [p.detach().clone() for p in policy.parameters()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    own = attach_reference_logps(workload.collator(workload.pairs[:4]), torch.zeros(4, 2), range(4)) if own_rows else None
    step = StepProbe(policy, ref, build_objective(LossConfig(), False), rows=8, max_length=32, max_prompt_length=8,
                     device=CPU, batch=own)
    assert step.batch.ref_logps is None  # π_ref runs live in the probe, precomputed table or not
    assert step.batch.input_ids.shape[0] == 8 and (step.batch.input_ids.shape[1] == 32) != own_rows
    m = step.measure(calls=1)
    assert m.fp32_s > 0 and m.bf16_s > 0 and 0 < m.stat_diff <= STAT_TOLERANCE
    assert all(torch.equal(a, b) for a, b in zip(weights, policy.parameters()))
    assert all(p.grad is None for p in policy.parameters()) and not policy.training
    assert torch.equal(torch.get_rng_state(), rng)


def test_auto_is_the_default_and_smoke_runs_pin_float32():
    from tiny import compose_config

    assert compose_config([], tiny=False).train.mixed_precision == "auto"
    assert compose_config([]).train.mixed_precision == "no"  # debug=tiny: no measurement behind a smoke run's numbers
    assert compose_config(["train.mixed_precision=auto"]).train.mixed_precision == "auto"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_measures_on_the_gpu(workload, tmp_path):
    cuda = torch.device("cuda")
    policy = tiny_policy(workload).to(cuda)
    ref = frozen_copy(policy)

    def probe() -> StepProbe:
        return StepProbe(policy, ref, build_objective(LossConfig(), True), rows=64, max_length=64, max_prompt_length=16,
                         device=cuda)

    choice = choose_precision("auto", probe, policy, cuda, tmp_path)
    assert choice.chosen in ("no", "bf16") and choice.fp32_s > 0 and choice.stat_diff <= STAT_TOLERANCE, choice
    assert json.loads(next((tmp_path / "mixed_precision").glob("*.json")).read_text())["key"]["machine"]["gpu"]
