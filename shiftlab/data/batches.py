"""Token batches: the one right-padder, pairs tokenized into a `PreferenceBatch`, sampled completions as rows.

Truncation rule (the only one; see `truncate_pair`): a sequence is ``prompt_ids + response_ids + [eos]``.
(1) The prompt keeps its *last* ``max_prompt_length`` tokens (the words next to the response matter most).
(2) The response (with its eos) is then cut on the right so the total fits ``max_length``; a cut response
did not end, so its eos is dropped. A pair counts in ``n_truncated`` if anything in either row was cut.
Because ``max_prompt_length < max_length``, the prompt keeps >= 1 token and the response >= 1 token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from shiftlab.data.pairs import PreferencePair


def ensure_pad_token(tokenizer, owner: str = "tokenizer"):
    """Give a tokenizer without a pad token the eos token as pad (in place) and return it. Padding is
    always excluded by `attention_mask`/`loss_mask`, never by comparing ids, so pad == eos is safe.
    `owner` names where the tokenizer came from in the error (e.g. "model.name_or_path='gpt2'")."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{owner}: the tokenizer has neither a pad_token nor an eos_token; set tokenizer.eos_token first")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class PreferenceBatch:
    """Rows [0, B) are the chosen responses, rows [B, 2B) the rejected ones (same prompt order), so one
    forward pass serves both. Right-padded with pad_token_id to T = longest row (<= max_length).

    ``loss_mask[i, t]`` is True iff ``input_ids[i, t]`` is a response token or the appended eos, i.e. a
    *label position*: the logit predicting it sits at t - 1 (use ``logits[:, :-1]``, ``input_ids[:, 1:]``,
    ``loss_mask[:, 1:]``). Prompt and padding are False; position 0 is always prompt.
    """

    input_ids: torch.Tensor  # (2B, T) long
    attention_mask: torch.Tensor  # (2B, T) long
    loss_mask: torch.Tensor  # (2B, T) bool
    n_pairs: int  # B
    n_truncated: int  # pairs where the prompt or either response was cut
    # (2B,) float32 log π_ref of each row (chosen then rejected), precomputed once when π_ref is fixed
    # (shiftlab.training.precompute); None: the trainer runs the reference forward itself.
    ref_logps: torch.Tensor | None = None

    @property
    def chosen_slice(self) -> slice:
        return slice(0, self.n_pairs)

    @property
    def rejected_slice(self) -> slice:
        return slice(self.n_pairs, 2 * self.n_pairs)

    def to(self, device: torch.device | str) -> PreferenceBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            loss_mask=self.loss_mask.to(device),
            ref_logps=None if self.ref_logps is None else self.ref_logps.to(device),
        )


def truncate_pair(
    prompt_ids: Sequence[int], response_ids: Sequence[int], eos_token_id: int, max_length: int, max_prompt_length: int
) -> tuple[list[int], list[int], bool]:
    """Apply the module's truncation rule. Returns (prompt_ids, response_ids incl. eos unless cut, was_cut)."""
    prompt = list(prompt_ids)[-max_prompt_length:]
    response = [*response_ids, eos_token_id]
    room = max_length - len(prompt)  # >= 1 since max_prompt_length < max_length
    cut = len(prompt) < len(prompt_ids) or len(response) > room
    return prompt, response[:room], cut


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class PreferenceCollator:
    """``Sequence[PreferencePair] -> PreferenceBatch``; see the module docstring for the truncation rule."""

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int):
        _check_int("max_length", max_length, 2)
        _check_int("max_prompt_length", max_prompt_length, 1)
        if max_prompt_length >= max_length:
            raise ValueError(
                f"max_prompt_length ({max_prompt_length}) must be < max_length ({max_length}) "
                "so that every response keeps at least one token"
            )
        self.tokenizer = ensure_pad_token(tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has no eos_token_id; responses end with eos, so one is required")
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def __call__(self, pairs: Sequence[PreferencePair]) -> PreferenceBatch:
        pairs = list(pairs)
        if not pairs:
            raise ValueError("cannot collate an empty list of preference pairs")
        n = len(pairs)
        prompts = self._encode([p.prompt for p in pairs])
        for i, ids in enumerate(prompts):
            if not ids:
                raise ValueError(f"pair {i}: prompt {pairs[i].prompt!r} tokenizes to zero tokens")
        responses = self._encode([p.chosen for p in pairs] + [p.rejected for p in pairs])
        rows, truncated = [], [False] * n
        for r, response_ids in enumerate(responses):
            prompt, response, cut = truncate_pair(
                prompts[r % n], response_ids, self.tokenizer.eos_token_id, self.max_length, self.max_prompt_length
            )
            rows.append((prompt, response))
            truncated[r % n] |= cut
        seq = pad_right([p for p, _ in rows], [s for _, s in rows], self.tokenizer.pad_token_id)
        return PreferenceBatch(seq.input_ids, seq.attention_mask, seq.loss_mask, n_pairs=n, n_truncated=sum(truncated))




@dataclass
class Completions:
    """k completions per prompt, flattened prompt-major: row i belongs to prompt i // k."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # without the end-of-text token
    ended: list[bool]  # True when the sampler emitted end-of-text (it is part of the response's probability)
    logps: torch.Tensor  # (N,) log π(response incl. end-of-text | prompt) under the sampling policy

    def __len__(self) -> int:
        return len(self.response_ids)


@dataclass
class SequenceBatch:
    """Right-padded prompt+response(+eos) rows; `loss_mask` marks response label positions (eos included)."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    loss_mask: torch.Tensor  # (B, T) bool

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device))


def pad_right(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_token_id: int
) -> SequenceBatch:
    """The one right-padder: row i is prompt_i + response_i (a response carries its eos if it ended), padded on the
    right with pad_token_id to the longest row. Padding is excluded by the masks, never by comparing ids."""
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    loss_mask = torch.zeros((len(lengths), width), dtype=torch.bool)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        n_prompt, n_total = len(prompt), len(prompt) + len(response)
        input_ids[row, :n_total] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention_mask[row, :n_total] = 1
        loss_mask[row, n_prompt:n_total] = True
    return SequenceBatch(input_ids, attention_mask, loss_mask)


def pad_left(prompt_ids: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left, so every row's next token is generated at the same position: (ids, mask)."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, prompt in enumerate(prompt_ids):
        if len(prompt) == 0:
            raise ValueError(f"prompt {row} is empty: a completion needs at least one prompt token to condition on")
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def completions_to_batch(completions: Completions, eos_token_id: int, pad_token_id: int) -> SequenceBatch:
    responses = [r + [eos_token_id] if ended else r for r, ended in zip(completions.response_ids, completions.ended)]
    return pad_right(completions.prompt_ids, responses, pad_token_id)




def encode_prompts(tokenizer, prompts: list[str], max_prompt_length: int) -> list[list[int]]:
    """Prompt ids, keeping the last max_prompt_length tokens (the collator's truncation rule)."""
    return [ids[-max_prompt_length:] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
