"""The study's throughput (every cell at β = 0.1 × 3 seeds, the speed issue's 15-run study): the same multirun one run after another (Hydra's basic launcher) and several at
once (`hydra/launcher=parallel`, joblib), wall time and runs per hour.

Each sweep starts from an empty cache of its own, so both include what a study's first runs wait for (π_sft,
trained once and shared; each seed's offline set). The serial sweep runs with a run's default threads (2), the
parallel one with cores ÷ runs at once (`threads_per_run`), each as a user would launch it. Needs the `parallel`
extra. `scripts/bench.py` times a 4-run slice of it (two cells × two seeds, the study's own
settings) by default — the 15 runs take about half an hour per sweep on 2 cores — and all 15
with `--full-study`; the ≤ 10-minute wall target is judged on the full study only.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shiftlab.bench.e2e import run_child
from shiftlab.bench.report import Figure, Section, Target
from shiftlab.bench.timing import summarize

# The speed issue's 15-run study (every cell at β = 0.1 × 3 seeds, the study's settings; the default study now
# also sweeps β and 5 seeds, conf/experiment/study.yaml); a 4-run slice of it (the bench's default); a 4-run tiny
# stand-in for smoke runs (`--quick`) whose figures mean nothing
DEFAULT_STUDY = ["+experiment=study", "mode=offline,trdpo,oaif,online,rl", "loss.beta=0.1", "seed=0,1,2"]
SLICE_STUDY = ["+experiment=study", "mode=offline,online", "loss.beta=0.1", "seed=0,1"]
QUICK_STUDY = ["debug=tiny", "mode=offline,online", "seed=0,1"]
STUDY_SWEEPS = {"full": DEFAULT_STUDY, "slice": SLICE_STUDY, "quick": QUICK_STUDY}
TARGETS = {
    "speedup": Target(">=", 1.5),  # parallel ÷ serial runs per hour on 2 cores (issue 14)
    "wall": Target("<=", 10.0),  # minutes for the 15-run default study under the parallel launcher, π_sft included
}


@dataclass(frozen=True)
class StudyRun:
    seconds: float
    runs: int  # run directories whose run.json says finished

    @property
    def runs_per_hour(self) -> float:
        return self.runs / (self.seconds / 3600) if self.seconds > 0 else float("nan")


def study_command(repo: Path, sweep: list[str], sweep_dir: Path, cache: Path, launcher: list[str]) -> list[str]:
    return [sys.executable, str(repo / "scripts" / "train.py"), "-m", *sweep, f"cache_dir={cache}",
            f"hydra.sweep.dir={sweep_dir}", "progress=false", *launcher]


def parallel_launcher(n_jobs: int) -> list[str]:
    """The overrides of the parallel sweep: joblib with n_jobs runs at once (-1: one per core)."""
    return ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={n_jobs}"]


def count_finished(sweep_dir: Path) -> int:
    finished = 0
    for meta in sweep_dir.glob("*/run.json"):
        finished += json.loads(meta.read_text(encoding="utf-8")).get("status") == "finished"
    return finished


def time_study(repo: Path, sweep: list[str], launcher: list[str], workdir: Path, timeout: float | None) -> StudyRun:
    """Run one sweep to completion from an empty cache; raises with the log's tail if it fails."""
    sweep_dir, cache, log = workdir / "sweep", workdir / "cache", workdir / "study.log"
    argv = study_command(repo, sweep, sweep_dir, cache, launcher)
    child = run_child(argv, repo, log, timeout)
    if child.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"`{' '.join(argv[1:])}` failed with status {child.returncode}:\n{tail}")
    return StudyRun(child.seconds, count_finished(sweep_dir))


def study_section(serial: list[StudyRun], parallel: list[StudyRun], n_jobs: int, sweep: str) -> Section:
    """Section 7 from measured sweeps of `sweep` (a key of STUDY_SWEEPS; pure: the figures and their targets)."""
    default_study = sweep == "full"
    section = Section("study", "7. The study serial and in parallel")
    runs = serial[0].runs if serial else 0
    label = f"hydra/launcher=parallel n_jobs={n_jobs}"
    section.figures += [
        Figure("study · serial", "wall time", summarize([r.seconds / 60 for r in serial]), "min"),
        Figure(f"study · {label}", "wall time", summarize([r.seconds / 60 for r in parallel]), "min",
               TARGETS["wall"] if default_study else None),
        Figure("study · serial", "runs/hour", summarize([r.runs_per_hour for r in serial])),
        Figure(f"study · {label}", "runs/hour", summarize([r.runs_per_hour for r in parallel])),
        Figure("study · parallel ÷ serial", "runs/hour", summarize(
            [p.runs_per_hour / s.runs_per_hour for s, p in zip(serial, parallel)]), "×", TARGETS["speedup"]),
    ]
    what = {"full": "the 15-run study", "slice": "a slice of the 15-run study",
            "quick": "a tiny stand-in (figures meaningless)"}[sweep] + " (`" + " ".join(STUDY_SWEEPS[sweep]) + "`)"
    section.notes.append(
        f"{runs} runs of {what}, each sweep from an empty cache (π_sft and the offline sets included). Serial: "
        f"Hydra's basic launcher, 2 threads per run; parallel: `{label}`, threads = cores ÷ runs at once. "
        "Threads change float summation order, so the two sweeps' numbers agree only to float rounding.")
    return section


def run_study_bench(repo: Path, repeats: int = 1, n_jobs: int = -1, sweep: str = "slice",
                    timeout: float | None = 3 * 3600) -> Section:
    """Time the study serial, then in parallel, `repeats` times each (alternating, so drifting load hits both)."""
    name, sweep = sweep, STUDY_SWEEPS[sweep]
    serial, parallel = [], []
    for _ in range(repeats):
        for launcher, out in (([], serial), (parallel_launcher(n_jobs), parallel)):
            with tempfile.TemporaryDirectory(prefix="shiftlab-bench-study-") as tmp:
                out.append(time_study(repo, sweep, launcher, Path(tmp), timeout))
    return study_section(serial, parallel, n_jobs, name)
