"""The task (shiftlab.stages.task): its prompts, texts and oracle built from the config."""

from __future__ import annotations

from tiny import compose_config


def test_the_task_uses_the_configured_oracle(tmp_path):
    from shiftlab.stages.task import build_task

    cfg = compose_config(["oracle=function", "oracle.function=test_oracles:word_count"])
    task = build_task(cfg.task, cfg.oracle)
    assert task.oracle(["a b c"]).tolist() == [3.0]
