"""π_sft (shiftlab.stages.sft): trained once, cached, and loaded back with the model config's dtype and checkpointing."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from local_hub import save_tiny_causal_lm
from tiny import compose_config

from shiftlab.models.build import is_checkpointing
from shiftlab.stages.sft import build_sft
from shiftlab.stages.task import build_task

TEXTS = ["the movie was great .", "the film was awful !"]


class _Bar:
    def update(self, n=1): ...

    def set_postfix(self, *args, **kwargs): ...


def test_sft_cache_reapplies_dtype_and_checkpointing(tmp_path):
    model_dir = save_tiny_causal_lm(tmp_path / "gpt2", texts=TEXTS)
    cfg = compose_config([f"model.name_or_path={model_dir}", "model.gradient_checkpointing=true", "sft.steps=2", "task.n_texts=200"])
    task = build_task(cfg.task)
    first = build_sft(cfg, task, tmp_path / "cache", lambda total, desc: nullcontext(_Bar()))
    again = build_sft(cfg, task, tmp_path / "cache", lambda total, desc: nullcontext(_Bar()))
    assert not first[3] and again[3]
    assert is_checkpointing(first[0]) and is_checkpointing(again[0])
    assert all(m.p == 0.0 for m in again[0].modules() if isinstance(m, torch.nn.Dropout))
