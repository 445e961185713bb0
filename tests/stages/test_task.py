"""The task (shiftlab.stages.task): its prompts, texts and oracle built from the config."""

from __future__ import annotations

from tiny import compose_config

from shiftlab.stages.task import build_task


def word_count(texts):
    return [float(len(t.split())) for t in texts]


def test_the_task_uses_the_configured_oracle():
    cfg = compose_config(["oracle=function", "oracle.function=test_task:word_count"])
    task = build_task(cfg.task, cfg.oracle)
    assert task.oracle(["a b c"]).tolist() == [3.0]


def test_the_embedded_task_is_seeded_and_holds_its_grammar():
    cfg = compose_config()
    task = build_task(cfg.task, cfg.oracle)
    assert len(task.eval_prompts) == cfg.task.n_eval_prompts and task.grammar is not None
    assert task.user_pairs is None and task.corpus
    again = build_task(cfg.task, cfg.oracle)
    assert (again.train_prompts, again.eval_prompts) == (task.train_prompts, task.eval_prompts)  # seeded by task.seed
