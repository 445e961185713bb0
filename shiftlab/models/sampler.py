"""Sampling completions from a causal LM with a KV cache (`SamplerSettings`: the three sampling sites share one).

Samples are π's own: temperature 1, no top-k / top-p (a tempered sample is a sample of another distribution,
and every KL in the run log is an expectation under π_θ's own samples).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from shiftlab.data.batches import Completions, pad_left


@dataclass(frozen=True)
class SamplerSettings:
    """What every sampling site (the offline set, on-policy rounds, evaluation) draws with, besides its prompts,
    its k and its generator: a response stops at `eos_token_id` or after `max_new_tokens` tokens."""

    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer, max_new_tokens: int) -> SamplerSettings:
        return cls(max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)


@torch.no_grad()
def sample_completions(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    settings: SamplerSettings,
    *,
    k: int,
    generator: torch.Generator,
    batch_size: int = 256,
) -> Completions:
    """Draw k completions per prompt at temperature 1, in chunks of `batch_size` rows."""
    rows = [list(p) for p in prompt_ids for _ in range(k)]
    out = Completions(prompt_ids=[], response_ids=[], ended=[], logps=torch.empty(0))
    chunk_logps = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        responses, ended, logps = _sample_chunk(
            model, chunk, settings.max_new_tokens, settings.eos_token_id, settings.pad_token_id, generator
        )
        out.prompt_ids.extend(chunk)
        out.response_ids.extend(responses)
        out.ended.extend(ended)
        chunk_logps.append(logps)
    out.logps = torch.cat(chunk_logps) if chunk_logps else torch.empty(0)
    return out


def _sample_chunk(model, prompts, max_new_tokens, eos_token_id, pad_token_id, generator):
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, mask = pad_left(prompts, pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    n = ids.shape[0]
    # Left padding shifts where each prompt starts; positions count real tokens only.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_arg = _cache_argument(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, next_logits = _returned_cache(out), out.logits[:, -1]
    next_position = positions[:, -1] + 1
    tokens = torch.full((n, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    ended = torch.zeros(n, dtype=torch.bool, device=device)
    logps = torch.zeros(n, dtype=torch.float32, device=device)
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    for t in range(max_new_tokens):
        log_probs = torch.log_softmax(next_logits.float(), dim=-1)  # (n, V)
        token = _draw(log_probs.exp(), generator)  # (n,)
        token = torch.where(alive, token, torch.full_like(token, pad_token_id))
        logps += torch.where(alive, log_probs.gather(-1, token[:, None]).squeeze(-1), torch.zeros_like(logps))
        tokens[:, t] = token
        just_ended = alive & (token == eos_token_id)
        lengths += (alive & ~just_ended).long()
        ended |= just_ended
        alive &= ~just_ended
        if not alive.any() or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, alive.long()[:, None]], dim=-1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_position[:, None],
            use_cache=True,
            **{cache_arg: cache},
        )
        cache, next_logits = _returned_cache(out), out.logits[:, -1]
        next_position = next_position + 1
    model.train(was_training)
    responses = [tokens[i, : lengths[i]].tolist() for i in range(n)]
    return responses, ended.tolist(), logps.cpu()


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row. A generator lives on one device: a CPU generator (checkpointed with the run) draws on
    the CPU even when the model runs on a GPU, so the same seed gives the same tokens on either."""
    if generator is None or generator.device == probs.device:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(-1).to(probs.device)


def _cache_argument(model: torch.nn.Module) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; accept both so older releases keep working. A peft
    wrapper's forward takes **kwargs and hands them on, so the model it wraps is the one to ask."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _returned_cache(out):
    return out.cache if hasattr(out, "cache") else out.past_key_values
