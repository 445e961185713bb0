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
from shiftlab.models.packing import can_pack, plan_packing

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


LAYOUTS = {False: "padded", True: "packed"}  # train.packing -> the layout the step's forwards run on


def measure_utilization(workload: Workload, size: str, batch_size: int, steps: int, repeats: int,
                        profile_steps: int) -> tuple[list[Figure], list[str]]:
    """The default (padded) step and the packed one (`train.packing=true`), from the same initial weights,
    measured in turn within each repeat against the same matmul figure."""
    setups = {packing: build_step_setup(build_bench_model(size, workload.tokenizer), packing=packing) for packing in LAYOUTS}
    shape = GPTShape.from_config(setups[False].policy.config)
    batches = [workload.collator(workload.pairs[i : i + batch_size])
               for i in range(0, len(workload.pairs) - batch_size + 1, batch_size)]
    # can_pack: whether the packed step really packs this model (else it takes the padded forward)
    packs = {packing: packing and can_pack(setup.policy) for packing, setup in setups.items()}
    for setup in setups.values():
        setup.step(batches[0])  # warmup
    peaks, cursor = [], 0
    rates, fractions, useful_fractions = ({p: [] for p in LAYOUTS} for _ in range(3))
    for _ in range(repeats):
        peak = summarize(matmul_flops_per_second(repeats=3)).median
        peaks.append(peak)
        for packing, setup in setups.items():
            executed = useful = seconds = 0.0
            for i in range(steps):
                batch = batches[(cursor + i) % len(batches)]
                start = time.perf_counter()
                setup.step(batch)
                seconds += time.perf_counter() - start
                e, u = batch_flops(shape, batch.attention_mask, live_reference=True, packed=packs[packing])
                executed, useful = executed + e, useful + u
            rates[packing].append(useful / seconds)
            fractions[packing].append(executed / seconds / peak)
            useful_fractions[packing].append(useful / seconds / peak)
        cursor += steps
    figures = [Figure(f"{size} · large matmul (2048³)", "FLOP/s", summarize(peaks).scaled(1e-9), "GFLOP/s")]
    for packing, layout in LAYOUTS.items():
        step = f"{size} · {layout} step"
        figures += [
            Figure(f"{step}, live reference (real tokens)", "FLOP/s", summarize(rates[packing]).scaled(1e-9), "GFLOP/s"),
            Figure(f"{step} ÷ matmul (real-token FLOPs)", "fraction", summarize(useful_fractions[packing]), "",
                   TARGETS.get(size) if packs[packing] else None),  # the target is on the default (packed) step
            Figure(f"{step} ÷ matmul (executed FLOPs, {'packed' if packs[packing] else 'padded'} rows)", "fraction",
                   summarize(fractions[packing]), ""),
        ]
    notes = []
    for packing, layout in LAYOUTS.items():
        shares = profile_step(setups[packing], batches, profile_steps)
        table = [f"Where a {size} {layout} step's CPU time goes (torch.profiler, self time, {profile_steps} steps):", "",
                 "| operator kind | share |", "| --- | --- |"]
        notes.append("\n".join(table + [f"| {kind} | {share:.1%} |" for kind, share in shares]))
    real = float(sum(b.attention_mask.sum() for b in batches))
    padded = sum(b.attention_mask.numel() for b in batches)
    packed_slots = sum(b.attention_mask.shape[1] * (1 + max(r for r, _ in plan_packing(
        b.attention_mask.sum(-1).tolist(), b.attention_mask.shape[1]))) for b in batches)
    notes.append(f"{size}: of the positions a padded batch computes, {1 - real / padded:.0%} are padding; packed, "
                 f"{1 - real / packed_slots:.0%}" + ("" if packs[True] else " (this model cannot be packed: its "
                 "packed step ran the padded forward)") + ".")
    return figures, notes


def run_utilization(workload: Workload, sizes: list[str], batch_size: int, steps: int, repeats: int,
                    profile_steps: int) -> Section:
    section = Section("limit", "2. Closeness to the machine's limit")
    section.notes.append(
        "FLOPs counted from the model's shapes (matrix products only: policy forward + backward ≈ 3 forwards on "
        "chosen + rejected, plus the reference forward), divided by the step's time, against a 2048×2048 float32 "
        f"`torch.matmul` on the same {torch.get_num_threads()} threads. The target is judged on the real tokens' "
        "FLOPs; the executed FLOPs include the padding the kernels also compute. Two steps: a run's default "
        "(padded rows) and `train.packing=true` (packed rows), measured in turn in each repeat."
    )
    for size in sizes:
        figures, notes = measure_utilization(workload, size, batch_size, steps, repeats, profile_steps)
        section.figures += figures
        section.notes += notes
    return section
