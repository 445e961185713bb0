"""Comparing two run directories exactly: the run log's files (time columns aside) and the final policy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

LOGS = ("metrics", "events", "curves", "samples", "sft")


def run_frame(path: Path, name: str) -> pd.DataFrame:
    rows = [json.loads(line) for line in (path / f"{name}.jsonl").read_text().splitlines()]
    if name == "events":
        # whether π_sft / the preference set came from the cache is a fact about the cache, not about the run
        rows = [{k: v for k, v in r.items() if k != "cached"} for r in rows if r["event"] not in ("sft_cached", "sft_trained")]
    df = pd.DataFrame(rows)
    return df.drop(columns=[c for c in df.columns if c == "time" or c.startswith("time/")])


def assert_same_run(expected: Path, actual: Path) -> None:
    for name in LOGS:
        # exact: pandas' default rtol=1e-5 would pass a resume whose forward differs in the last float digits
        pd.testing.assert_frame_equal(run_frame(expected, name), run_frame(actual, name), check_exact=True, obj=f"{name}.jsonl")
    a, b = load_file(expected / "policy" / "model.safetensors"), load_file(actual / "policy" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "final policies differ"
    meta = json.loads((actual / "run.json").read_text())
    assert meta["status"] == "finished" and meta["steps_done"] == meta["steps"]


def mark_failed(run_dir: Path) -> None:
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps(meta | {"status": "failed"}))


