"""Data parallelism across processes, as the training loop sees it.

`accelerate launch --multi_gpu --num_processes N scripts/train.py ...` (or `torchrun --nproc_per_node N`) starts
N copies of the run. Each holds the whole π_θ and draws the same *global* batch from identically seeded
sources; `Processes.shard` gives each rank a contiguous slice of it. Every rank's loss is its slice's sum
divided by the global batch size, so the all-reduced (summed) gradient is exactly the one-process gradient of
the global mean — whatever the slices' sizes, an empty one included. On-policy rounds are sharded the same way:
each rank samples and labels its slice of the round's prompts, then every rank receives the whole round.

Only rank 0 evaluates, writes the run log and writes checkpoints; the others train and wait for it at the next
collective. A single process (the default, and every test but the launcher's) never imports accelerate or
touches torch.distributed.

DDP's semantics — identical replicas, summed gradients, one optimizer step each — are kept with one flattened
all-reduce per optimizer step instead of DDP's bucketed overlap with backward: simpler, exact with gradient
accumulation and uneven slices, and enough for the model sizes shiftlab targets. Sharded optimizers (FSDP,
DeepSpeed) are refused with a clear message: π_ref copies, behaviour snapshots and sampling here assume every
rank holds the full parameters.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


class DistributedSetupError(RuntimeError):
    """The launcher asked for a parallelism shiftlab does not implement."""


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def launched_world_size() -> int:
    """Processes the launcher started (1 when run as a plain `python scripts/train.py`)."""
    return _env_int("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", default=1)


def resolve_device(name: str) -> torch.device:
    """train.device: "auto" is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> tuple[int, int]:
        """[lo, hi): this rank's contiguous share of n units; shares differ in size by at most one."""
        return (self.rank * n) // self.world_size, ((self.rank + 1) * n) // self.world_size

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace each gradient by its sum over ranks (a rank whose slice was empty contributes zeros)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads])  # one collective per step, in float32
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(parameters, grads):
            size = g.numel()
            p.grad = flat[offset : offset + size].view_as(g).to(g.dtype)
            offset += size

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Sum a dict of floats over ranks; keys missing on a rank (an empty slice) count as 0."""
        if not self.distributed:
            return dict(values)
        merged: dict[str, float] = {}
        for part in self.gather(values):
            for key, value in part.items():
                merged[key] = merged.get(key, 0.0) + value
        return merged

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self, wait: bool) -> None:
        """Leave the process group. `wait`: first meet the other ranks (rank 0 finishes last: it evaluates and saves),
        so no rank tears its communication threads down while another still uses them — an exit without this
        aborted a rank now and then ("terminate called without an active exception")."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it fills the π_sft and preference-set caches); the others then read them."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


SINGLE = Processes()


def connect(device: str = "auto") -> Processes:
    """The processes of this run, from the launcher's environment; a plain run is one process on `device`."""
    if launched_world_size() <= 1:
        return Processes(device=resolve_device(device))
    for flag, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(flag, "").lower() in ("1", "true"):
            raise DistributedSetupError(
                f"the accelerate config asks for {name}; shiftlab runs data-parallel with full replicas only "
                "(accelerate launch --multi_gpu, or an accelerate config with distributed_type MULTI_GPU / MULTI_CPU)"
            )
    from accelerate import PartialState

    # On a machine without CUDA the processes talk over gloo on the CPU; accelerate only picks that when told.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes <= 1:
        raise DistributedSetupError(
            f"the launcher set WORLD_SIZE={launched_world_size()} but accelerate found one process; "
            "launch with `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`"
        )
    return Processes(rank=state.process_index, world_size=state.num_processes, device=state.device)
