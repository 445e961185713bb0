"""The benchmark suite: its options, the order of the sections, and the report it writes."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shiftlab.bench.machine import describe_machine
from shiftlab.bench.report import Section, summary_table, write_report
from shiftlab.bench.workload import MODEL_SIZES, build_workload

# `--quick`: the tests' tiny runs (conf/debug/tiny.yaml), so every code path runs in well under a minute; the
# figures mean nothing.
QUICK_E2E_OVERRIDES = ["debug=tiny"]


@dataclass
class BenchOptions:
    out: Path = Path("reports/bench")
    repo: Path = Path(".")
    threads: int = 2
    sizes: list[str] = field(default_factory=lambda: ["tiny", "small"])
    batch_size: int = 32  # pairs per step: the default source.batch_size
    n_pairs: int = 512
    steps: int = 5  # timed steps per block
    repeats: int = 5
    warmup: int = 2
    sample_prompts: int = 128  # the default eval set: 128 prompts, one sample each
    max_new_tokens: int = 48
    scaling_lengths: list[int] = field(default_factory=lambda: [16, 32, 64])
    scaling_batches: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    e2e_modes: list[str] = field(default_factory=lambda: ["offline", "online"])
    e2e_repeats: int = 1
    e2e_overrides: list[str] = field(default_factory=list)
    skip_trl: bool = False
    skip_e2e: bool = False
    study: str = "slice"  # a key of bench.study.STUDY_SWEEPS, or "" to skip the study section
    study_jobs: int = -1  # runs at once under the parallel launcher (-1: one per core)
    command: str = "python scripts/bench.py"

    @classmethod
    def quick(cls, **changes) -> BenchOptions:
        base = cls(sizes=["tiny"], batch_size=4, n_pairs=32, steps=1, repeats=1, warmup=0, sample_prompts=8,
                   max_new_tokens=4, scaling_lengths=[8, 16], scaling_batches=[2, 4], e2e_modes=["offline"],
                   e2e_overrides=QUICK_E2E_OVERRIDES, study="quick")
        for key, value in changes.items():
            setattr(base, key, value)
        return base


def run_bench(opts: BenchOptions, log=print) -> tuple[Path, Path]:
    from shiftlab.bench.e2e import run_end_to_end
    from shiftlab.bench.precision import run_precision
    from shiftlab.bench.sampling import run_sampling
    from shiftlab.bench.scaling import run_scaling
    from shiftlab.bench.study import run_study_bench
    from shiftlab.bench.trl_compare import run_trl_comparison
    from shiftlab.bench.utilization import run_utilization
    from shiftlab.experiment.setup import quiet_libraries

    unknown = [s for s in opts.sizes if s not in MODEL_SIZES]
    if unknown:
        raise ValueError(f"unknown model sizes {unknown}; choose from {sorted(MODEL_SIZES)}")
    quiet_libraries()  # as a run does: transformers' notices (e.g. on packed rows without a 2-D mask) are noise here
    torch.set_num_threads(opts.threads)
    machine = describe_machine()
    started = time.perf_counter()
    workload = build_workload(opts.n_pairs)
    sections: list[Section] = []

    def stage(name: str, fn):
        log(f"[bench] {name} …")
        t = time.perf_counter()
        result = fn()
        log(f"[bench] {name} done in {time.perf_counter() - t:.0f} s")
        return result

    if not opts.skip_trl:
        sections.append(stage("throughput against TRL", lambda: run_trl_comparison(
            workload, opts.sizes, opts.batch_size, opts.steps, opts.repeats, opts.warmup, opts.threads)))
    sections.append(stage("closeness to the limit", lambda: run_utilization(
        workload, opts.sizes, opts.batch_size, opts.steps, opts.repeats, profile_steps=max(1, opts.steps))))
    sections.append(stage("bf16 against float32", lambda: run_precision(
        workload, opts.sizes, opts.batch_size, opts.steps, opts.repeats, opts.warmup)))
    sections.append(stage("sampling", lambda: run_sampling(
        workload, opts.sizes[0], opts.sample_prompts, opts.max_new_tokens, opts.repeats)))
    if not opts.skip_e2e:
        share, e2e = stage("end-to-end runs", lambda: run_end_to_end(
            opts.repo, opts.e2e_modes, opts.e2e_repeats, opts.e2e_overrides))
        sections += [share, e2e]
    if opts.study:
        sections.append(stage("the study serial and in parallel", lambda: run_study_bench(
            opts.repo, n_jobs=opts.study_jobs, sweep=opts.study)))
    sections.append(stage("scaling", lambda: run_scaling(
        workload.tokenizer, opts.sizes[0], opts.scaling_lengths, opts.scaling_batches, opts.batch_size,
        opts.scaling_lengths[-1], opts.repeats)))
    sections.sort(key=lambda s: s.title)  # numbered titles: the order
    header = [
        f"`{opts.command}` — {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {time.perf_counter() - started:.0f} s "
        f"in all. Every figure is the median over repeats (n) with min and max; targets are judged on the median.",
        "",
        "## Targets",
        "",
        summary_table(sections),
    ]
    if opts.skip_trl or opts.skip_e2e or not opts.study:
        skipped = [name for name, flag in (("TRL comparison", opts.skip_trl), ("end-to-end runs", opts.skip_e2e),
                                           ("the study section", not opts.study)) if flag]
        header += ["", f"Skipped in this run: {', '.join(skipped)}."]
    return write_report(opts.out, machine, sections, header)
