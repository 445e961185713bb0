"""train.mixed_precision: the step in float32, under bfloat16 autocast, or "auto" — bf16 only where it pays here.

"auto" is decided by a measurement, made once and then reused, so that the same config and seed keep giving the
same numbers on a machine. A short probe runs the run's own step (π_θ forward + backward and the gradient norm,
π_ref's forward) on a batch of the run's shape — its first pairs where it trains on a fixed set, synthetic rows
otherwise — in float32 and under bf16 autocast, interleaved, after one untimed call of each; bf16 is chosen iff

    fp32_s / bf16_s ≥ MIN_SPEEDUP   (medians of the probe's calls: clearly faster, not a near-tie)
    stat_diff ≤ STAT_TOLERANCE      (the step's statistics agree with float32's: see `stat_difference`)

and otherwise float32 ("no"). The verdict is written to `cache_dir/mixed_precision/<key>.json`, keyed by the
machine (device; CPU model, capability and bf16 flags, or GPU name; torch version; threads) and the step's shape
(the model's parameter shapes and dtypes, objective, rows, max length, layout), and every later run with that
key reuses it — whatever its cell or seed. A resumed run keeps the choice its run.json recorded. The first
decision is a measurement: on a busy machine it may come out otherwise than on a quiet one; delete the entry to
measure again.

Known answers skip the probe: weights that are not float32 (autocast has nothing to add), a CPU whose flags
show no bf16 instructions (AVX512_BF16, AMX), a GPU without bf16.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from shiftlab.config import MIXED_PRECISION
from shiftlab.data.batches import PreferenceBatch
from shiftlab.models.packing import can_pack
from shiftlab.training.objectives import Objective, PolicyGradientObjective, RolloutBatch

MIN_SPEEDUP = 1.1  # bf16 must be ≥ 10% faster: a near-tie keeps float32's numbers
STAT_TOLERANCE = 0.01  # |bf16 − fp32| ≤ 0.01·(1 + |fp32|) for every statistic of the step
PROBE_CALLS = 3  # timed calls per precision, after one untimed call each
PROBE_VERSION = 1  # part of the cache key: a changed probe or rule measures again
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# statistics that are counts of a discrete event (a margin's sign, a clipped ratio): a near-tie may flip them
DISCRETE_STATS = ("rewards/accuracies", "rl/clipped")


@dataclass(frozen=True)
class Measurement:
    fp32_s: float  # median seconds of a float32 probe call
    bf16_s: float  # median seconds of a bf16-autocast probe call
    stat_diff: float  # `stat_difference` of the two precisions' statistics


@dataclass(frozen=True)
class PrecisionChoice:
    """What the step runs in, and why; recorded in run.json as `mixed_precision`."""

    setting: str  # train.mixed_precision as configured
    chosen: str  # "no" or "bf16"
    reason: str
    fp32_s: float | None = None
    bf16_s: float | None = None
    stat_diff: float | None = None

    @property
    def bf16(self) -> bool:
        return self.chosen == "bf16"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def stat_difference(fp32: dict[str, float], bf16: dict[str, float]) -> float:
    """max over the step's statistics of |bf16 − fp32| / (1 + |fp32|): relative for large values (log-probs),
    absolute for small ones (rewards, the loss near log 2), so STAT_TOLERANCE reads as "1%, or 0.01"."""
    keys = [k for k in fp32 if k in bf16 and k not in DISCRETE_STATS]
    return max((abs(bf16[k] - fp32[k]) / (1.0 + abs(fp32[k])) for k in keys), default=0.0)


def decide(m: Measurement) -> tuple[str, str]:
    """auto's rule on a measurement: ("bf16" | "no", why)."""
    speedup = m.fp32_s / m.bf16_s if m.bf16_s > 0 else float("inf")
    if m.stat_diff > STAT_TOLERANCE:
        return "no", f"bf16 statistics differ from float32 by {m.stat_diff:.3g} > {STAT_TOLERANCE:g}"
    if speedup < MIN_SPEEDUP:
        return "no", f"bf16 step {speedup:.2f}× float32's speed (< {MIN_SPEEDUP:g}×)"
    return "bf16", f"bf16 step {speedup:.2f}× float32's speed, statistics within {STAT_TOLERANCE:g}"


def _cpuinfo(key: str, cpuinfo: str | None = None) -> str | None:
    """The first `key` line's value of /proc/cpuinfo; None where there is none (not Linux)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_bf16_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's bf16 instruction flags; None where the flags cannot be read."""
    flags = _cpuinfo("flags", cpuinfo)
    return None if flags is None else set(flags.split()) & set(CPU_BF16_FLAGS)


def known_answer(policy: torch.nn.Module, device: torch.device) -> str | None:
    """Why bf16 cannot pay without measuring it, or None when only a measurement can tell."""
    dtypes = {p.dtype for p in policy.parameters()}
    if dtypes != {torch.float32}:
        return f"weights are {', '.join(sorted(str(d).removeprefix('torch.') for d in dtypes))}, not float32"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags is not None and not flags:
            return f"this CPU has no bf16 instructions ({' or '.join(CPU_BF16_FLAGS)})"
    elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(device)} has no bf16"
    return None


def machine_identity(device: torch.device) -> dict:
    out = {"device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out |= {"gpu": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability(device))}
    else:
        out |= {"cpu": _cpuinfo("model name") or platform.processor(), "capability": torch.backends.cpu.get_cpu_capability(),
                "bf16_flags": sorted(cpu_bf16_flags() or [])}
    return out


class StepProbe:
    """The run's step as the probe drives it: π_θ, π_ref (always run live: one verdict serves a run that reads
    precomputed log π_ref too), the run's objective in its layout, and a batch of the run's shape.

    `batch`: rows of the run's own data where it has them before training (a fixed pair set), else None for
    synthetic rows (`synthetic_batch`). The cache key holds the shape — rows, max_length, layout, objective, the
    parameters — and not the data or the reference's schedule, so every cell that trains this model at this batch
    shape shares one verdict: the cells of a study never differ in precision.

    It leaves no trace: the weights are never stepped, gradients are dropped, π_θ's train/eval mode and the global
    torch generators are restored, and synthetic rows are drawn from a generator of their own."""

    def __init__(self, policy: torch.nn.Module, ref: torch.nn.Module, objective: Objective, *, rows: int,
                 max_length: int, max_prompt_length: int, device: torch.device, batch=None):
        self.policy, self.ref, self.objective, self.device = policy, ref, objective, device
        if batch is None:
            batch = synthetic_batch(objective, rows, max_length, max_prompt_length,
                                    policy.get_input_embeddings().num_embeddings)
        self.batch = batch if getattr(batch, "ref_logps", None) is None else dataclasses.replace(batch, ref_logps=None)
        self.shape = {
            "objective": type(objective).__name__, "rows": rows, "max_length": max_length,
            "packed": bool(getattr(objective, "packing", False) and can_pack(policy)),
            "parameters": [[list(p.shape), str(p.dtype), p.requires_grad] for p in policy.parameters()],
            # transformers 5 renamed is_gradient_checkpointing (the old name warns)
            "gradient_checkpointing": bool(getattr(policy, "is_activation_checkpointing", False)),
        }

    def key(self) -> tuple[str, dict]:
        parts = {"probe": PROBE_VERSION, "rule": [MIN_SPEEDUP, STAT_TOLERANCE], "machine": machine_identity(self.device),
                 "step": self.shape}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16], parts

    def call(self, bf16: bool) -> dict[str, float]:
        """One forward + backward of the objective and the gradient norm: the step without the optimizer."""
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        for p in trainable:
            p.grad = None
        batch = self.batch.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            losses, stats = self.objective.losses(self.policy, self.ref, batch)
        losses.mean().backward()
        out = {k: float(v.float().mean()) for k, v in stats.items()}
        out["grad_norm"] = float(torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None]))
        return out

    def measure(self, calls: int = PROBE_CALLS) -> Measurement:
        with _no_trace(self.policy, self.device):
            fp32, bf16 = self.call(False), self.call(True)  # untimed: warm-up, and the statistics compared
            seconds: dict[bool, list[float]] = {False: [], True: []}
            for i in range(calls):
                for mixed in ((False, True) if i % 2 == 0 else (True, False)):
                    start = time.perf_counter()
                    self.call(mixed)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    seconds[mixed].append(time.perf_counter() - start)
        return Measurement(statistics.median(seconds[False]), statistics.median(seconds[True]),
                           stat_difference(fp32, bf16))


@contextlib.contextmanager
def _no_trace(policy: torch.nn.Module, device: torch.device) -> Iterator[None]:
    was_training = policy.training
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    policy.train()
    try:
        yield
    finally:
        for p in policy.parameters():
            p.grad = None
        policy.train(was_training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def synthetic_batch(objective: Objective, rows: int, max_length: int, max_prompt_length: int, vocab: int,
                    seed: int = 0):
    """`rows` right-padded rows of random tokens, prompts of 2..max_prompt_length tokens and rows of a length
    uniform between prompt + 1 and max_length: preference pairs, or rollouts for RLOO. A stand-in for a run that
    holds no pairs before training (on-policy pairs are sampled as it trains), whose real rows may be shorter."""
    g = torch.Generator().manual_seed(seed)
    rows = max(2, rows - rows % 2)
    prompt = torch.randint(2, max(3, max_prompt_length + 1), (rows,), generator=g).clamp(max=max_length - 1)
    lengths = prompt + 1 + (torch.rand(rows, generator=g) * (max_length - prompt)).long().clamp(max=max_length - 1 - prompt)
    positions = torch.arange(max_length)
    attention_mask = (positions < lengths[:, None]).long()
    loss_mask = (positions >= prompt[:, None]) & attention_mask.bool()
    input_ids = torch.randint(1, vocab, (rows, max_length), generator=g) * attention_mask
    if isinstance(objective, PolicyGradientObjective):
        zeros = torch.zeros(rows)
        return RolloutBatch(input_ids, attention_mask, loss_mask, torch.randn(rows, generator=g), zeros, zeros, zeros)
    return PreferenceBatch(input_ids, attention_mask, loss_mask, rows // 2, 0)


def choose_precision(setting: str, probe: Callable[[], StepProbe], policy: torch.nn.Module, device: torch.device,
                     cache_dir: Path | None, recorded: dict | None = None,
                     measure: Callable[[StepProbe], Measurement] | None = None) -> PrecisionChoice:
    """train.mixed_precision resolved: "no" and "bf16" as set; "auto" by the module's rule (docstring above).

    `probe` builds the StepProbe (only when a measurement is needed); `recorded` is the choice a resumed run's
    run.json holds; `measure` is injectable for tests."""
    if setting not in MIXED_PRECISION:
        raise ValueError(f"train.mixed_precision must be one of {MIXED_PRECISION}, got {setting!r}")
    if setting != "auto":
        return PrecisionChoice(setting, setting, f"train.mixed_precision={setting}")
    if recorded and recorded.get("setting") == "auto" and recorded.get("chosen") in ("no", "bf16"):
        return PrecisionChoice(**(recorded | {"reason": f"as chosen when the run started: {recorded.get('reason', '')}"}))
    known = known_answer(policy, device)
    if known is not None:
        return PrecisionChoice("auto", "no", known)
    measure = measure or (lambda probe_: probe_.measure())
    step = probe()
    key, parts = step.key()
    if cache_dir is None:
        return _from_measurement(measure(step), "")
    folder = Path(cache_dir).expanduser() / "mixed_precision"
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / f"{key}.json"
    with _locked(folder / f"{key}.lock"):  # concurrent runs: one measures, the others read its verdict
        cached = _read_entry(entry)
        if cached is not None:
            return _from_measurement(cached[1], f"; measured {cached[0]}, reused from {entry}")
        # the load says whether the machine was quiet: a verdict measured on a busy one may deserve a re-measure
        when = f"{time.strftime('%Y-%m-%d %H:%M:%S')} at load {os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.2f}"
        m = measure(step)
        tmp = entry.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"measured_at": when, "measurement": asdict(m), "key": parts}, indent=1),
                       encoding="utf-8")
        os.replace(tmp, entry)
    return _from_measurement(m, f"; measured now, {when}, cached in {entry}")


def _read_entry(entry: Path) -> tuple[str, Measurement] | None:
    """(when measured, the measurement) of a cache entry; None if there is none or it cannot be read (measure again)."""
    try:
        cached = json.loads(entry.read_text(encoding="utf-8"))
        return str(cached["measured_at"]), Measurement(**cached["measurement"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _from_measurement(m: Measurement, where: str) -> PrecisionChoice:
    chosen, why = decide(m)
    return PrecisionChoice("auto", chosen, why + where, round(m.fp32_s, 6), round(m.bf16_s, 6), float(f"{m.stat_diff:.3g}"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (two runs may then both measure; each writes its file atomically)
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
