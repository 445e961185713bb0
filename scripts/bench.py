"""Benchmarks: `python scripts/bench.py` writes reports/bench/bench.md and bench.csv (see README, "Benchmarks")."""

import os

# Nothing in a benchmark may touch the network: TRL, transformers and datasets all run from in-process objects.
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE"):
    os.environ.setdefault(_key, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from shiftlab.bench.suite import BenchOptions, run_bench  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> BenchOptions:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny smoke run of every section (figures meaningless)")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "bench", help="directory for bench.md and bench.csv")
    p.add_argument("--repeats", type=int, help="repeats per figure (default 5)")
    p.add_argument("--steps", type=int, help="timed steps per repeat (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--sizes", help="comma-separated model sizes (default tiny,small)")
    p.add_argument("--skip-trl", action="store_true", help="leave out the TRL comparison")
    p.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end runs (and so the eval share)")
    p.add_argument("--skip-study", action="store_true", help="leave out the study serial vs parallel (minutes)")
    p.add_argument("--full-study", action="store_true",
                   help="time the full 15-run default study (about an hour for both sweeps) instead of a 4-run slice")
    p.add_argument("--e2e-repeats", type=int, help="runs per mode (default 1: each takes minutes)")
    args = p.parse_args(argv)
    opts = BenchOptions.quick() if args.quick else BenchOptions()
    opts.out, opts.repo, opts.threads = args.out, REPO, args.threads
    opts.skip_trl, opts.skip_e2e = args.skip_trl, args.skip_e2e
    if args.skip_study:
        opts.study = ""
    elif args.full_study:
        opts.study = "full"
    opts.command = "python scripts/bench.py" + (" " + " ".join(argv) if argv else "")
    for key in ("repeats", "steps", "e2e_repeats"):
        if getattr(args, key) is not None:
            if getattr(args, key) < 1:
                p.error(f"--{key.replace('_', '-')} must be >= 1")
            setattr(opts, key, getattr(args, key))
    if args.sizes:
        opts.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    return opts


def main(argv: list[str]) -> None:
    opts = parse_args(argv)
    md, table = run_bench(opts, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"[bench] wrote {md} and {table}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
