"""The stage cache (shiftlab.stages.cache) under concurrent runs: one process builds an entry, the others wait for
it and read it, whatever the timing; a failed build leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from contextlib import nullcontext
from pathlib import Path

import pytest
from tiny import compose_config

from shiftlab.stages.cache import build_dir, cache_entry, publish

PROCESSES = 3


class _Bar:
    def update(self, n=1): ...

    def set_postfix(self, *args, **kwargs): ...


def _progress(total, desc):
    return nullcontext(_Bar())


def _build_at_once(cache: str, barrier, results) -> None:
    """One process of a study that needs π_sft and the offline set (run in a fresh spawned interpreter)."""
    import torch

    from shiftlab.stages.preference_set import build_preference_set
    from shiftlab.stages.sft import build_sft
    from shiftlab.stages.task import build_task

    torch.set_num_threads(1)
    cfg = compose_config([f"cache_dir={cache}"])
    task = build_task(cfg.task, cfg.oracle)
    barrier.wait()  # every process asks for the same two missing entries at the same moment
    sft, tokenizer, _, reused = build_sft(cfg, task, Path(cache), _progress)
    prefs = build_preference_set(cfg, task, sft, tokenizer, Path(cache), _progress)
    weights = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in sft.state_dict().values())).hexdigest()
    pairs = hashlib.sha256(json.dumps([vars(p) for p in prefs.pairs], sort_keys=True).encode()).hexdigest()
    results.put((reused, prefs.info["cached"], weights, pairs))


@pytest.mark.slow
def test_concurrent_builds_of_one_entry_train_once_and_the_others_read_it(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that has already started torch's threads
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_build_at_once, args=(str(tmp_path), barrier, results)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    try:
        got = [results.get(timeout=300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    sft_reused, prefs_cached = sorted(r[0] for r in got), sorted(r[1] for r in got)
    assert sft_reused == [False] + [True] * (PROCESSES - 1), "exactly one process trains π_sft"
    assert prefs_cached == [False] + [True] * (PROCESSES - 1), "exactly one process builds the offline set"
    assert len({r[2] for r in got}) == 1 and len({r[3] for r in got}) == 1, "every process holds the same entries"
    for stage in ("sft", "preferences"):
        left = sorted(p.name for p in (tmp_path / stage).iterdir())
        assert len(left) == 2 and left[1] == left[0] + ".lock", left  # one entry and its lock file, no build dirs


def test_a_failed_build_publishes_nothing_and_the_next_run_builds(tmp_path):
    final = tmp_path / "sft" / "key"
    with pytest.raises(RuntimeError), cache_entry(final, "done", "π_sft") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed mid-build")
    assert not final.exists() and not build_dir(final).exists()
    with cache_entry(final, "done", "π_sft") as tmp:
        (tmp / "done").write_text("ok")
    with cache_entry(final, "done", "π_sft") as tmp:
        assert tmp is None  # built: read it
    assert (final / "done").read_text() == "ok"


def test_a_stale_build_dir_of_a_killed_run_is_cleared(tmp_path):
    final = tmp_path / "preferences" / "key"
    stale = final.with_name(final.name + ".tmp-otherhost-123")
    stale.mkdir(parents=True)
    with cache_entry(final, "pairs.jsonl", "the offline set") as tmp:
        (tmp / "pairs.jsonl").write_text("")
    assert not stale.exists() and (final / "pairs.jsonl").exists()


def test_publish_keeps_the_entry_another_run_published_first(tmp_path):
    final, mine = tmp_path / "key", tmp_path / "key.tmp-mine"
    final.mkdir()
    (final / "theirs").write_text("1")
    mine.mkdir()
    (mine / "mine").write_text("2")
    publish(mine, final)
    assert (final / "theirs").exists() and not (final / "mine").exists() and not mine.exists()


def test_a_filesystem_without_flock_warns_and_still_publishes_whole_entries(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    final = tmp_path / "sft" / "key"
    with cache_entry(final, "done", "π_sft") as tmp:
        (tmp / "done").write_text("ok")
    assert (final / "done").read_text() == "ok" and not build_dir(final).exists()
    assert "cannot lock" in capsys.readouterr().err
