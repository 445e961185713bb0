"""shiftlab's DPO step against TRL's `DPOTrainer`, side by side in one process.

Each comparison pairs matching modes: a live reference model against TRL's live `ref_model`, and precomputed
reference log-probs (`reference.precompute_logps=true`) against TRL's `precompute_ref_log_probs=True`. shiftlab
runs twice in each: its default step (packed, in the precision `train.mixed_precision=auto` picks here) and the
padded float32 step (`train.packing=false train.mixed_precision=no`). TRL's own packing for DPO,
`padding_free`, is disabled in TRL 1.16 (`DPOTrainer` warns and falls back to padding), so TRL's rows are padded.

Same model (same initial weights), same pairs (tokenized to the same ids), same batch size, sequence lengths,
β and AdamW; shiftlab in float32. TRL runs twice, `bf16=False` (float32) and `bf16=True` (its default: bf16
autocast, which may pay on a CPU with bf16 instructions), both without gradient checkpointing (its default is on),
reporting, logging or saving, without dataloader workers, and with its default fused AdamW; every `… ÷ TRL` ratio
is against the faster of the two on this machine, measured in the same blocks. All are timed from
"batch ready" to "optimizer stepped": TRL between its `on_step_begin` and `on_step_end` callbacks (its batches
are collated before the first), shiftlab around the trainer's `optimizer_step` on pre-collated batches. Setup — model
building, TRL's dataset tokenization, either side's reference precompute — is timed separately and left out.

The runners take turns in blocks (ABCD then DCBA), so that a machine whose load changes during the benchmark slows
all alike; each repeat gives one pairs/second per runner and one paired ratio per shiftlab runner.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings

import numpy as np
import torch

from shiftlab.bench.report import Figure, Section, Target
from shiftlab.bench.step import build_step_setup
from shiftlab.bench.timing import interleave, summarize
from shiftlab.bench.workload import Workload, build_bench_model
from shiftlab.training.objectives import build_objective
from shiftlab.training.precision import StepProbe, choose_precision
from shiftlab.training.precompute import attach_reference_logps, precompute_reference_logps

TARGET_RATIO = Target(">=", 2.0)  # judged on the default step only (issue 14)
DEFAULT, PADDED = "shiftlab default", "shiftlab padded"
TRL_SETTINGS = {False: "TRL bf16=False", True: "TRL bf16=True"}  # DPOConfig.bf16 -> the runner's name


class ShiftlabRunner:
    def __init__(self, workload: Workload, size: str, batch_size: int, precompute: bool, seed: int = 0,
                 packing: bool = False, mixed_precision: bool = False):
        self.setup = build_step_setup(build_bench_model(size, workload.tokenizer, seed), packing=packing,
                                      mixed_precision=mixed_precision)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(workload.pairs)).tolist()
        groups = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        start = time.perf_counter()
        table = (precompute_reference_logps(self.setup.ref, workload.collator, workload.pairs, packing=packing)
                 if precompute else None)
        self.setup_seconds = time.perf_counter() - start
        self.batches = []
        for rows in groups:
            batch = workload.collator([workload.pairs[i] for i in rows])
            self.batches.append(attach_reference_logps(batch, table, rows) if precompute else batch)
        self._next = 0

    def block(self, steps: int) -> list[float]:
        out = []
        for _ in range(steps):
            batch = self.batches[self._next % len(self.batches)]
            self._next += 1
            start = time.perf_counter()
            self.setup.step(batch)
            out.append(time.perf_counter() - start)
        return out


class TrlRunner:
    def __init__(self, workload: Workload, size: str, batch_size: int, precompute: bool, seed: int = 0,
                 bf16: bool = False):
        from datasets import Dataset, disable_progress_bars
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback
        from trl import DPOConfig, DPOTrainer

        disable_progress_bars()
        model = build_bench_model(size, workload.tokenizer, seed)
        ref = None if precompute else copy.deepcopy(model)
        rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in workload.pairs]
        self._dir = tempfile.TemporaryDirectory(prefix="shiftlab-bench-trl-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames gradient_checkpointing; same option
            args = DPOConfig(
                output_dir=self._dir.name, per_device_train_batch_size=batch_size, max_steps=1, learning_rate=5e-5,
                beta=0.1, max_length=workload.max_length, bf16=bf16, fp16=False, use_cpu=True,
                gradient_checkpointing=False, report_to=[], logging_strategy="no", save_strategy="no",
                eval_strategy="no", dataloader_num_workers=0, precompute_ref_log_probs=precompute, disable_tqdm=True,
                seed=seed, warmup_steps=0, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
            )
        clock = self.clock = _StepClock(TrainerCallback)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notices about options we set explicitly
            self.trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                                      processing_class=copy.deepcopy(workload.tokenizer), callbacks=[clock])
        self.setup_seconds = time.perf_counter() - start
        for callback in (PrinterCallback, ProgressCallback):  # each train() call would print its summary
            self.trainer.remove_callback(callback)

    def tokens_per_pair(self) -> float:
        """Tokens of a pair's two rows as TRL tokenized them (its chosen/rejected ids end with end-of-text)."""
        ds = self.trainer.train_dataset
        total = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))
        return total / len(ds)

    def block(self, steps: int) -> list[float]:
        self.trainer.args.max_steps = steps
        self.clock.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer.train()
        return self.clock.durations()


def _StepClock(base):  # noqa: N802 - builds a TrainerCallback subclass without importing transformers at module load
    class StepClock(base):
        def reset(self):
            self.begins, self.ends = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def durations(self) -> list[float]:
            return [end - begin for begin, end in zip(self.begins, self.ends)]

    clock = StepClock()
    clock.reset()
    return clock


def ratios_against_fastest(per_step: dict[str, list[float]], ours: tuple[str, ...],
                           theirs: list[str]) -> tuple[str, dict[str, list[float]]]:
    """The fastest of `theirs` on the median seconds per step, and each of `ours`' speed-ups over it, paired per
    repeat (its seconds ÷ ours in the same repeat)."""
    fastest = min(theirs, key=lambda name: summarize(per_step[name]).median)
    return fastest, {name: [t / s for s, t in zip(per_step[name], per_step[fastest])] for name in ours}


def default_precision(workload: Workload, size: str, batch_size: int) -> tuple[bool, str]:
    """What `train.mixed_precision=auto` picks for the packed step of this model and batch on this machine: the
    run's own rule (`choose_precision`), measured here without a cache (a bench measures afresh)."""
    setup = build_step_setup(build_bench_model(size, workload.tokenizer, 0), packing=True)
    batch = workload.collator(workload.pairs[:batch_size])
    objective = build_objective(setup.loss_cfg, True)
    device = torch.device("cpu")
    probe = lambda: StepProbe(setup.policy, setup.ref, objective, rows=2 * batch_size,  # noqa: E731
                              max_length=workload.max_length, max_prompt_length=workload.max_prompt_length,
                              device=device, batch=batch)
    choice = choose_precision("auto", probe, setup.policy, device, cache_dir=None)
    return choice.bf16, choice.reason


def compare_size(workload: Workload, size: str, precompute: bool, batch_size: int, steps: int, repeats: int,
                 warmup: int, threads: int) -> tuple[list[Figure], list[str]]:
    torch.set_num_threads(threads)
    mode = "precomputed reference" if precompute else "live reference"
    ours = ShiftlabRunner(workload, size, batch_size, precompute)
    bf16, why = default_precision(workload, size, batch_size)
    packed = ShiftlabRunner(workload, size, batch_size, precompute, packing=True, mixed_precision=bf16)
    trls = {name: TrlRunner(workload, size, batch_size, precompute, bf16=bf16) for bf16, name in TRL_SETTINGS.items()}
    theirs = trls[TRL_SETTINGS[False]]
    torch.set_num_threads(threads)
    runners = {DEFAULT: packed.block, PADDED: ours.block, **{name: t.block for name, t in trls.items()}}
    per_step = interleave(runners, steps, repeats, warmup)
    figures = []
    for name, seconds in per_step.items():
        figures.append(Figure(f"{size} · {mode} · {name}", "pairs/s", summarize(seconds).inverted(batch_size)))
    fastest, ratios = ratios_against_fastest(per_step, (DEFAULT, PADDED), list(trls))
    for name, paired in ratios.items():
        figures.append(Figure(f"{size} · {mode} · {name} ÷ TRL", "speed-up", summarize(paired), "×",
                              TARGET_RATIO if name == DEFAULT else None))
    rates = {name: batch_size / summarize(per_step[name]).median for name in trls}
    ours_tokens = float(sum(b.attention_mask.sum() for b in ours.batches)) / sum(b.n_pairs for b in ours.batches)
    note = (f"{size}, {mode}: the default step here is packed in {'bf16 autocast' if bf16 else 'float32'} "
            f"(`train.mixed_precision=auto`: {why}). Setup, not counted in the steps: default "
            f"{packed.setup_seconds:.1f} s, padded {ours.setup_seconds:.1f} s"
            f"{' (reference precompute)' if precompute else ''}, TRL "
            + " / ".join(f"{t.setup_seconds:.1f}" for t in trls.values()) + " s (bf16=False / True; dataset preparation"
            f"{' and reference precompute' if precompute else ''}). Tokens per pair (both rows): shiftlab "
            f"{ours_tokens:.1f} over the batches it ran, TRL {theirs.tokens_per_pair():.1f} over the whole set. "
            f"TRL's faster setting here: **{fastest}** ("
            + ", ".join(f"{name} {rate:.1f} pairs/s" for name, rate in rates.items()) + "); the `÷ TRL` rows are "
            "against it.")
    return figures, [note]


def run_trl_comparison(workload: Workload, sizes: list[str], batch_size: int, steps: int, repeats: int, warmup: int,
                       threads: int) -> Section:
    section = Section("trl", "1. DPO step throughput against TRL's DPOTrainer")
    try:
        import trl
    except ImportError:
        section.notes.append("TRL is not installed (`pip install -e \".[bench]\"`): comparison skipped.")
        return section
    for size in sizes:
        for precompute in (False, True):
            figures, notes = compare_size(workload, size, precompute, batch_size, steps, repeats, warmup, threads)
            section.figures += figures
            section.notes += notes
    section.notes.insert(0, (
        f"TRL {trl.__version__}; batch {batch_size} pairs, {steps} timed steps per block, {repeats} alternating "
        f"blocks per side after {warmup} warmup steps each. All see the same token ids (checked: tokens per pair "
        f"below). `{DEFAULT}` is a run's default step: packed rows (`train.packing` auto, on for GPT-2: rows laid end "
        "to end, position ids restarting per sequence, no compute on padding) in the precision "
        "`train.mixed_precision=auto` picks for this model on this machine (named per comparison below); "
        f"`{PADDED}` is the same step on padded rows in float32 (`train.packing=false "
        "train.mixed_precision=no`); their log-probs agree to float rounding. The ≥ 2× target is judged on the "
        "default step. TRL runs twice, `bf16=False` and "
        "`bf16=True` (bf16 autocast), without gradient checkpointing, and computes on padded rows in both: "
        "`padding_free=True` is disabled for DPO in this release (DPOTrainer warns and falls back to padding). "
        "Every `÷ TRL` ratio is against TRL's faster setting in the same blocks (named per comparison below). The "
        "precomputed rows are shiftlab's `reference.precompute_logps=true` against TRL's "
        "`precompute_ref_log_probs=True`."))
    return section
