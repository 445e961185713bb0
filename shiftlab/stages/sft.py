"""Supervised fine-tuning of π_sft on the task corpus: each text is one row starting at position 0, ending with
end-of-text, so π_sft learns where reviews stop (stopping is part of every sequence probability later)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shiftlab.config import SFTConfig, ShiftlabConfig
from shiftlab.data.batches import ensure_pad_token, pad_right
from shiftlab.data.order import EpochOrder
from shiftlab.models.build import build_model, load_pretrained, prepare_for_training, resolve_dtype, train_tokenizer
from shiftlab.stages.cache import cache_entry, fingerprint, local_stamp
from shiftlab.stages.task import Task


def encode_corpus(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids + end-of-text per text, cut to max_length (a cut text loses its end-of-text: it did not end)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [(row + [tokenizer.eos_token_id])[:max_length] for row in ids if row]


def _batch(rows: Sequence[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seq = pad_right([[] for _ in rows], rows, pad_token_id)  # every text position is a label position
    labels = seq.input_ids.masked_fill(~seq.loss_mask, -100)  # pad == eos here: mask by position, not by id
    return seq.input_ids, seq.attention_mask, labels


def cosine_with_warmup(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_sft(model, tokenizer, texts: Sequence[str], cfg: SFTConfig, max_length: int, seed: int, progress=None) -> list[dict]:
    """Train in place; returns the loss curve as rows {sft_step, sft/loss}."""
    rows = encode_corpus(tokenizer, texts, max_length)
    if not rows:
        raise ValueError("the SFT corpus is empty after tokenization")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, max(cfg.warmup_steps, 1), cfg.steps)
    )
    order = EpochOrder(rng, len(rows))
    curve = []
    model.train()
    for step in range(cfg.steps):
        picked = order.take(cfg.batch_size)
        input_ids, attention_mask, labels = _batch([rows[i] for i in picked], tokenizer.pad_token_id)
        device = next(model.parameters()).device
        loss = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = loss.item()
        curve.append({"sft_step": step, "sft/loss": value})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{value:.3f}", refresh=False)
    model.eval()
    return curve





def sft_fingerprint(cfg: ShiftlabConfig) -> str:
    stamps = [local_stamp(p) for p in (cfg.task.corpus_dir, cfg.task.dataset.path, cfg.task.preferences_path, cfg.model.name_or_path)]
    # model.lora shapes π_θ, not π_sft: a LoRA run shares the cached π_sft (and the cache keys from before it existed)
    model = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(cfg.model) if f.name != "lora"}
    return fingerprint(cfg.task, model, cfg.sft, cfg.train.max_length, stamps)


def build_sft(cfg: ShiftlabConfig, task: Task, cache_dir: Path, progress_factory, device: torch.device | str = "cpu") -> tuple[Any, Any, list[dict], bool]:
    """π_sft and its tokenizer, on `device`: loaded from the cache when present, else trained there and cached.

    Returns (model, tokenizer, loss curve rows, reused?).
    """
    final = cache_dir / "sft" / sft_fingerprint(cfg)
    dtype = resolve_dtype(cfg.model.dtype)
    # concurrent runs (a parallel study): one trains π_sft, the others wait for it and load it (stages.cache)
    with cache_entry(final, "config.json", "π_sft") as tmp:
        if tmp is None:
            remote = cfg.model.trust_remote_code
            model = AutoModelForCausalLM.from_pretrained(final, dtype=dtype, trust_remote_code=remote)
            tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(final, trust_remote_code=remote))
            curve = [json.loads(line) for line in (final / "sft.jsonl").read_text().splitlines() if line]
            return prepare_for_training(model, cfg.model).to(device).eval(), tokenizer, curve, True
        torch.manual_seed(cfg.task.seed)
        if cfg.model.name_or_path is None:
            tokenizer = train_tokenizer(task.corpus, cfg.model.vocab_size)
            model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id).to(dtype)
            prepare_for_training(model, cfg.model)
        else:
            model, tokenizer = load_pretrained(cfg.model.name_or_path, cfg.model)
        model.to(device)
        with progress_factory(total=cfg.sft.steps, desc="SFT π_sft") as bar:
            curve = train_sft(model, tokenizer, task.corpus, cfg.sft, cfg.train.max_length, cfg.task.seed, bar)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "sft.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    return model.eval(), tokenizer, curve, False
