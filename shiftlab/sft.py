"""Supervised fine-tuning of π_sft on the task corpus: each text is one row starting at position 0, ending with
end-of-text, so π_sft learns where reviews stop (stopping is part of every sequence probability later)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from shiftlab.config import SFTConfig


def encode_corpus(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids + end-of-text per text, cut to max_length (a cut text loses its end-of-text: it did not end)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [(row + [tokenizer.eos_token_id])[:max_length] for row in ids if row]


def _batch(rows: Sequence[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)  # pad == eos here: mask by position, not by id
    return input_ids, attention_mask, labels


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
    order: list[int] = []
    curve = []
    model.train()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += rng.permutation(len(rows)).tolist()
        picked, order = order[: cfg.batch_size], order[cfg.batch_size :]
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
