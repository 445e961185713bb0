"""bf16 against float32 on this machine: the DPO step in float32, under bf16 autocast with float32 master weights
(`train.mixed_precision=bf16`) and with the weights themselves in bf16 (`model.dtype=bfloat16`), by model size;
and a 2048² matmul in each dtype, the ceiling bf16 could reach.

The three steps start from the same initial weights and run the same batches in the run's default layout
(packed rows, live reference), in alternating blocks (ABC then CBA) so that a change in the machine's load slows
all alike; each repeat gives one pairs/second per step and one paired ratio per bf16 variant. The statistics of
the first step (the same batch, the same weights) are compared with float32's as `train.mixed_precision=auto`
compares them (`shiftlab.training.precision.stat_difference`), and auto's rule is applied to the medians.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from shiftlab.bench.flops import matmul_flops_per_second
from shiftlab.bench.report import Figure, Section
from shiftlab.bench.step import StepSetup, build_step_setup
from shiftlab.bench.timing import Stat, interleave, summarize
from shiftlab.bench.workload import Workload, build_bench_model
from shiftlab.training.precision import MIN_SPEEDUP, STAT_TOLERANCE, Measurement, decide, stat_difference

FP32, AUTOCAST, WEIGHTS = "float32", "bf16 autocast", "bf16 weights"


def _blocks(setup: StepSetup, batches: list) -> Callable[[int], list[float]]:
    """A runner for `interleave`: `steps` timed steps on the next batches in turn."""
    cursor = [0]

    def block(steps: int) -> list[float]:
        out = []
        for _ in range(steps):
            batch = batches[cursor[0] % len(batches)]
            cursor[0] += 1
            start = time.perf_counter()
            setup.step(batch)
            out.append(time.perf_counter() - start)
        return out

    return block


def measure_precisions(workload: Workload, size: str, batch_size: int, steps: int, repeats: int, warmup: int,
                       packing: bool = True) -> tuple[list[Figure], list[str]]:
    model = build_bench_model(size, workload.tokenizer)
    setups = {
        FP32: build_step_setup(copy.deepcopy(model), packing=packing),
        AUTOCAST: build_step_setup(copy.deepcopy(model), packing=packing, mixed_precision=True),
        WEIGHTS: build_step_setup(copy.deepcopy(model).to(torch.bfloat16), packing=packing),
    }
    batches = [workload.collator(workload.pairs[i : i + batch_size])
               for i in range(0, len(workload.pairs) - batch_size + 1, batch_size)]
    first = {name: setup.step(batches[0]) for name, setup in setups.items()}  # same weights, same batch
    per_step = interleave({name: _blocks(setup, batches[1:] or batches) for name, setup in setups.items()},
                          steps, repeats, warmup)
    figures = [Figure(f"{size} · {name} step", "pairs/s", summarize(per_step[name]).inverted(batch_size))
               for name in setups]
    notes = []
    for name in (AUTOCAST, WEIGHTS):
        ratios = [f / b for f, b in zip(per_step[FP32], per_step[name])]
        figures.append(Figure(f"{size} · {name} ÷ fp32", "speed-up", summarize(ratios), "×"))
        diff = stat_difference(first[FP32], first[name])
        figures.append(Figure(f"{size} · {name} − fp32, step statistics", "stat diff", Stat(diff, diff, diff, 1)))
    fp32_s, bf16_s = (summarize(per_step[n]).median for n in (FP32, AUTOCAST))
    chosen, why = decide(Measurement(fp32_s, bf16_s, stat_difference(first[FP32], first[AUTOCAST])))
    notes.append(f"{size}: `train.mixed_precision=auto`'s rule on these medians picks **{chosen}** ({why}).")
    return figures, notes


def run_precision(workload: Workload, sizes: list[str], batch_size: int, steps: int, repeats: int,
                  warmup: int) -> Section:
    section = Section("precision", "8. bf16 against float32")
    peaks: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}
    for _ in range(repeats):  # in turn, so both see the same load
        for dtype in peaks:
            peaks[dtype].append(summarize(matmul_flops_per_second(repeats=3, dtype=dtype)).median)
    section.figures += [Figure(f"large matmul (2048³) · {str(dtype).removeprefix('torch.')}", "FLOP/s",
                               summarize(rates).scaled(1e-9), "GFLOP/s") for dtype, rates in peaks.items()]
    ratios = [b / f for f, b in zip(peaks[torch.float32], peaks[torch.bfloat16])]
    section.figures.append(Figure("large matmul · bfloat16 ÷ float32", "speed-up", summarize(ratios), "×"))
    for size in sizes:
        figures, notes = measure_precisions(workload, size, batch_size, steps, repeats, warmup)
        section.figures += figures
        section.notes += notes
    section.notes.insert(0, (
        f"The DPO step (batch {batch_size} pairs, packed rows, live reference, AdamW) in float32; under bf16 autocast "
        "with float32 weights, gradients and AdamW state (`train.mixed_precision=bf16`); and with bf16 weights, "
        "gradients and AdamW state (`model.dtype=bfloat16`). Log-probabilities are summed in float32 in all three. "
        f"{steps} timed steps per block, {repeats} alternating blocks after {warmup} warmup steps each, from the same "
        "initial weights. `÷ fp32` is float32's step time over the variant's (> 1: bf16 faster), paired per repeat. "
        "The stat diff is max |bf16 − fp32| / (1 + |fp32|) over the first step's loss, rewards, log-probs and "
        f"gradient norm. `train.mixed_precision=auto` (the default) picks bf16 autocast only at ≥ {MIN_SPEEDUP:g}× "
        f"with a stat diff ≤ {STAT_TOLERANCE:g}, measured by its own short probe once per machine and model shape."))
    return section
