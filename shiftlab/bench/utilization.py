"""How close the DPO step comes to the machine's limit: its achieved FLOP/s against a large matmul's.

FLOPs are counted from shapes (`flops.py`). The target is judged on the real tokens' FLOPs — padding computed is
not work done; the FLOPs of the layout the kernels actually run (packed, or padded for a model that cannot be
packed) are reported beside it. Matmul and step are measured alternately in each repeat, so a change in the
machine's load moves both. A profile of the step groups its CPU time by kind of operator: what is not a matrix
product is where the step falls short of the matmul rate.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from shiftlab.bench.flops import GPTShape, batch_flops, matmul_flops_per_second
from shiftlab.bench.report import Figure, Section, Target
from shiftlab.bench.step import build_step_setup
from shiftlab.bench.timing import summarize
from shiftlab.bench.workload import Workload, build_bench_model
from shiftlab.packing import can_pack, plan_packing

TARGETS = {"small": Target(">=", 0.75)}

# operator name -> kind, for the profile; anything unlisted counts as "other"
_KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"),
    "attention (SDPA)": ("aten::_scaled_dot_product",),
    "layer norm": ("aten::native_layer_norm",),
    "GELU": ("aten::gelu",),
    "log-softmax / gather": ("aten::_log_softmax", "aten::gather", "aten::scatter", "aten::log_softmax"),
    "copies, concatenation": ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::fill_", "aten::zero_"),
    "bias sums, adds, masks": ("aten::sum", "aten::add", "aten::mul", "aten::where", "aten::div", "aten::sub"),
    "optimizer (AdamW)": ("aten::_foreach", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt", "aten::_fused_adam"),
    "embedding": ("aten::embedding", "aten::index_select"),
}


def _kind(name: str) -> str:
    for kind, prefixes in _KINDS.items():
        if any(name.startswith(p) for p in prefixes):
            return kind
    return "other"


def profile_step(setup, batches, steps: int) -> list[tuple[str, float]]:
    """Share of the step's self CPU time by kind of operator, largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            setup.step(batches[i % len(batches)])
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[_kind(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


def measure_utilization(workload: Workload, size: str, batch_size: int, steps: int, repeats: int,
                        profile_steps: int) -> tuple[list[Figure], list[str]]:
    setup = build_step_setup(build_bench_model(size, workload.tokenizer))
    shape = GPTShape.from_config(setup.policy.config)
    batches = [workload.collator(workload.pairs[i : i + batch_size])
               for i in range(0, len(workload.pairs) - batch_size + 1, batch_size)]
    setup.step(batches[0])  # warmup
    # the training step runs the padded forward (packing is not wired into shiftlab.objectives yet); can_pack
    # only says whether it could
    packed = False
    could_pack = can_pack(setup.policy)
    peaks, rates, fractions, useful_fractions, cursor = [], [], [], [], 0
    for _ in range(repeats):
        peak = summarize(matmul_flops_per_second(repeats=3)).median
        executed = useful = seconds = 0.0
        for _ in range(steps):
            batch = batches[cursor % len(batches)]
            cursor += 1
            start = time.perf_counter()
            setup.step(batch)
            seconds += time.perf_counter() - start
            e, u = batch_flops(shape, batch.attention_mask, live_reference=True, packed=packed)
            executed, useful = executed + e, useful + u
        peaks.append(peak)
        rates.append(useful / seconds)
        fractions.append(executed / seconds / peak)
        useful_fractions.append(useful / seconds / peak)
    layout = "packed" if packed else "padded"
    figures = [
        Figure(f"{size} · large matmul (2048³)", "FLOP/s", summarize(peaks).scaled(1e-9), "GFLOP/s"),
        Figure(f"{size} · DPO step, live reference (real tokens)", "FLOP/s", summarize(rates).scaled(1e-9), "GFLOP/s"),
        Figure(f"{size} · step ÷ matmul (real-token FLOPs)", "fraction", summarize(useful_fractions), "", TARGETS.get(size)),
        Figure(f"{size} · step ÷ matmul ({layout} layout's FLOPs)", "fraction", summarize(fractions), ""),
    ]
    shares = profile_step(setup, batches, profile_steps)
    table = [f"Where a {size} step's CPU time goes (torch.profiler, self time, {profile_steps} steps):", "",
             "| operator kind | share |", "| --- | --- |"]
    table += [f"| {kind} | {share:.1%} |" for kind, share in shares]
    real = float(sum(b.attention_mask.sum() for b in batches))
    padded = sum(b.attention_mask.numel() for b in batches)
    packed_slots = sum(b.attention_mask.shape[1] * (1 + max(r for r, _ in plan_packing(
        b.attention_mask.sum(-1).tolist(), b.attention_mask.shape[1]))) for b in batches)
    notes = ["\n".join(table), f"{size}: of the positions a padded batch computes, {1 - real / padded:.0%} are padding; "
             f"packed, {1 - real / packed_slots:.0%} (this step runs the padded forward; packing {'would apply' if could_pack else 'does not apply'} to this model)."]
    return figures, notes


def run_utilization(workload: Workload, sizes: list[str], batch_size: int, steps: int, repeats: int,
                    profile_steps: int) -> Section:
    section = Section("limit", "2. Closeness to the machine's limit")
    section.notes.append(
        "FLOPs counted from the model's shapes (matrix products only: policy forward + backward ≈ 3 forwards on "
        "chosen + rejected, plus the reference forward), divided by the step's time, against a 2048×2048 float32 "
        f"`torch.matmul` on the same {torch.get_num_threads()} threads. The target is judged on the real tokens' "
        "FLOPs; the layout's FLOPs include the padding the kernels also compute."
    )
    for size in sizes:
        figures, notes = measure_utilization(workload, size, batch_size, steps, repeats, profile_steps)
        section.figures += figures
        section.notes += notes
    return section
