"""Threads per run under a Hydra launcher: runs at once × torch threads = cores (`${threads_per_run:2}` in
conf/train.yaml, registered by `shiftlab.config.register_configs`). Free of torch, beside config.py, which imports it."""

from __future__ import annotations

from typing import Any


def threads_per_run(alone: int) -> int:
    """`threads: ${threads_per_run:2}` (conf/train.yaml): torch threads for one run of the launcher in use, read
    from Hydra's config of this job; `alone` outside a Hydra app (the compose API) and under Hydra's basic launcher."""
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else None
    return launcher_threads(launcher, int(alone), _cores())


def launcher_threads(launcher: Any, alone: int, cores: int) -> int:
    """Threads per run so that runs at once × threads = cores:
    - joblib (`hydra.launcher.n_jobs` runs at once on this machine; −1 all cores, −2 all but one, as joblib reads
      it): cores // runs, at least 1 (more runs than cores is allowed, one thread each);
    - submitit (`hydra.launcher.cpus_per_task` CPUs reserved per run): that many;
    - otherwise (one run after another): `alone`."""
    n_jobs = launcher.get("n_jobs", "absent") if launcher is not None else "absent"
    cpus = launcher.get("cpus_per_task") if launcher is not None else None
    if n_jobs != "absent":
        if n_jobs is None:
            return max(1, cores)  # joblib runs one job at a time
        if not isinstance(n_jobs, int) or n_jobs == 0:
            raise ValueError(f"hydra.launcher.n_jobs must be a non-zero integer (-1: one run per core), got {n_jobs!r}")
        runs = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return max(1, cores // runs)
    if cpus is not None:
        if not isinstance(cpus, int) or cpus < 1:
            raise ValueError(f"hydra.launcher.cpus_per_task must be an integer ≥ 1, got {cpus!r}")
        return cpus
    return alone


def _cores() -> int:
    """The cores as joblib counts them (CPU affinity and cgroup quotas) when it is installed, else the affinity."""
    try:
        from joblib import cpu_count
    except ImportError:
        import os

        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpu_count()
