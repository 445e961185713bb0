"""End-to-end runs of `scripts/train.py` in a subprocess: wall time, peak resident memory, and the eval schedule's
share of training time read back from the run's own `metrics.jsonl`.

Each run gets a fresh cache directory, so its wall time includes everything a first run does (tokenizer, π_sft,
the offline preference set): the time a new user waits. Peak memory is the run's own maximum resident set,
measured so that none of this process's memory is counted (see `run_child`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shiftlab.bench.report import Figure, Section, Target
from shiftlab.bench.timing import summarize

TARGETS = {
    "wall": {"offline": Target("<=", 5.0), "online": Target("<=", 10.0)},  # minutes
    "rss": Target("<=", 2.0),  # GB
    "eval_share": Target("<=", 0.10),  # of the training loop's wall time (issue 14: "≤ 10% of a run's wall time")
}
WORK_COLUMNS = ("time/train", "time/sample", "time/label")


@dataclass
class ChildRun:
    seconds: float
    peak_rss_bytes: int
    returncode: int


# A process forked from this one inherits its resident pages until it execs, and Linux carries that high-water
# mark into the new program's ru_maxrss: a run started directly from a bench process that has loaded TRL and two
# models reported the bench's 1.9 GB, not its own 1.1 GB. A bare interpreter in between starts the run from a
# ~10 MB image and reports the run's own peak (its RUSAGE_CHILDREN) through a file.
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def run_child(argv: list[str], cwd: Path, log_path: Path, timeout: float | None = None) -> ChildRun:
    """Run a command to completion; its wall time and its own peak RSS (Linux reports ru_maxrss in KiB)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, log_path.open("wb") as log:
        peak_file = Path(tmp) / "maxrss"
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(peak_file), *argv], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the launcher and the run
            returncode = proc.wait()
        peak_kib = int(peak_file.read_text()) if peak_file.is_file() else 0
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return ChildRun(time.perf_counter() - start, peak_kib * scale, returncode)


def eval_share(metrics_path: Path) -> dict[str, float]:
    """A run's evaluation cost from its metrics rows: `share` = Σ time/eval ÷ the training loop's wall time (from
    the start of the first evaluation to the last row: π_sft and the offline set already built, as in every run
    of a study after the first), and `work_share` = Σ time/eval ÷ Σ (time/train + time/sample + time/label)."""
    sums = dict.fromkeys(("time/eval", *WORK_COLUMNS), 0.0)
    loop_start, loop_end = None, None
    with metrics_path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                for key in sums:
                    value = row.get(key)
                    if isinstance(value, (int, float)):
                        sums[key] += value
                if isinstance(row.get("time"), (int, float)):
                    if loop_start is None and isinstance(row.get("time/eval"), (int, float)):
                        loop_start = row["time"] - row["time/eval"]  # the row is written when its evaluation ends
                    loop_end = row["time"]
    work = sum(sums[k] for k in WORK_COLUMNS)
    loop = (loop_end - loop_start) if loop_start is not None and loop_end is not None else float("nan")
    return sums | {"loop_wall": loop, "share": sums["time/eval"] / loop if loop > 0 else float("nan"),
                   "work_share": sums["time/eval"] / work if work > 0 else float("nan")}


def run_mode(repo: Path, mode: str, overrides: list[str], workdir: Path, timeout: float | None) -> tuple[ChildRun, dict, Path]:
    run_dir, cache = workdir / f"run_{mode}", workdir / f"cache_{mode}"
    argv = [sys.executable, str(repo / "scripts" / "train.py"), f"mode={mode}", f"cache_dir={cache}",
            f"hydra.run.dir={run_dir}", "progress=false", *overrides]
    child = run_child(argv, repo, workdir / f"{mode}.log", timeout)
    if child.returncode != 0:
        tail = (workdir / f"{mode}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"`{' '.join(argv[1:])}` failed with status {child.returncode}:\n{tail}")
    return child, eval_share(run_dir / "metrics.jsonl"), run_dir


def run_end_to_end(repo: Path, modes: list[str], repeats: int, overrides: list[str], timeout: float | None = 1800) -> tuple[Section, Section]:
    """Section 4 (eval share) and section 5 (wall time, peak memory) from the same runs."""
    share_section = Section("eval", "4. Eval and divergence overhead")
    e2e_section = Section("e2e", "5. End-to-end runs")
    note = f" with overrides {' '.join(overrides)}" if overrides else " at default settings"
    share_section.notes.append(
        f"eval share: Σ time/eval ÷ the training loop's wall time (first evaluation to last row; π_sft and the "
        f"offline set already built) of each run{note}; eval ÷ work: Σ time/eval ÷ Σ (time/train + time/sample "
        "+ time/label).")
    e2e_section.notes.append(f"`python scripts/train.py mode=…`{note}, each from an empty cache (π_sft trained, "
                             "the offline set built): a first run's whole wait. Peak memory is the run's maximum RSS.")
    for mode in modes:
        walls, rss, shares, work_shares, sums = [], [], [], [], []
        for repeat in range(repeats):
            with tempfile.TemporaryDirectory(prefix="shiftlab-bench-e2e-") as tmp:
                child, share, _ = run_mode(repo, mode, overrides, Path(tmp), timeout)
                if repeat == 0:  # the run's cache is still there: profile one evaluation on it
                    share_section.notes.append(_eval_profile_note(repo, mode, overrides, Path(tmp)))
            walls.append(child.seconds / 60)
            rss.append(child.peak_rss_bytes / 1e9)
            shares.append(share["share"])
            work_shares.append(share["work_share"])
            sums.append(share)
        e2e_section.figures.append(Figure(f"mode={mode}", "wall time", summarize(walls), "min", TARGETS["wall"].get(mode)))
        e2e_section.figures.append(Figure(f"mode={mode}", "peak RSS", summarize(rss), "GB", TARGETS["rss"]))
        share_section.figures.append(Figure(f"mode={mode}", "eval share", summarize(shares), "", TARGETS["eval_share"]))
        share_section.figures.append(Figure(f"mode={mode}", "eval ÷ work", summarize(work_shares), ""))
        last = sums[-1]
        share_section.notes.append(f"mode={mode} (last run): loop wall {last['loop_wall']:.1f} s, " + ", ".join(
            f"Σ {k} {v:.1f} s" for k, v in last.items() if k not in ("share", "work_share", "loop_wall")))
    return share_section, e2e_section


def _eval_profile_note(repo: Path, mode: str, overrides: list[str], workdir: Path) -> str:
    from shiftlab.bench.evalprofile import profile_evaluation, render_profile

    cache = workdir / f"cache_{mode}"
    try:
        seconds, rows = profile_evaluation(repo, [f"mode={mode}", f"cache_dir={cache}", "progress=false", *overrides], workdir)
    except Exception as err:  # a profile is a diagnosis: its failure must not lose the measured figures
        return f"mode={mode}: the evaluation profile failed ({type(err).__name__}: {err})."
    return render_profile(mode, seconds, rows)
