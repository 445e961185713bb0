"""What machine a benchmark ran on: the report is only meaningful next to these facts."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import torch


def cpu_model(cpuinfo: str | None = None) -> str:
    """The first "model name" of /proc/cpuinfo (Linux); platform.processor() elsewhere."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (a container's affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine() -> dict[str, str]:
    """CPU, cores, threads and the versions that decide the speed of every figure."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "cores": str(usable_cores()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "transformers": _version("transformers"),
        "trl": _version("trl"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # a busy machine slows every figure: the load at the start says whether it was quiet
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load),
    }
