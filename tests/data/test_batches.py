"""Token batches (shiftlab.data.batches): the collator's masks, row order and truncation rule, the pad token."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab.data.batches import PreferenceBatch, PreferenceCollator, ensure_pad_token, truncate_pair
from shiftlab.data.pairs import (
    PreferencePair,
)

EOS = "<|endoftext|>"  # the eos of the `tiny_tokenizer` fixture (tests/conftest.py)
VALID = {"prompt": "the movie was", "chosen": " great .", "rejected": " awful !"}


def test_ensure_pad_token(tiny_tokenizer):
    bare = copy.deepcopy(tiny_tokenizer)
    assert tiny_tokenizer.pad_token is None
    assert ensure_pad_token(tiny_tokenizer) is tiny_tokenizer
    assert tiny_tokenizer.pad_token == EOS and tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id
    tiny_tokenizer.pad_token = "<unk>"
    assert ensure_pad_token(tiny_tokenizer).pad_token == "<unk>"  # an existing pad token is kept
    bare.eos_token = None
    with pytest.raises(ValueError, match="neither a pad_token nor an eos_token"):
        ensure_pad_token(bare)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_collator_masks_and_row_order(tiny_tokenizer):
    tok = tiny_tokenizer
    pairs = [
        PreferencePair("the movie was", " great .", " awful !"),
        PreferencePair("i loved it", " . the acting was fine .", " bad"),
    ]
    batch = PreferenceCollator(tok, max_length=32, max_prompt_length=16)(pairs)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert pad == eos  # the tokenizer had no pad token; padding is excluded by the masks, not by id
    expected = [  # chosen rows first, then rejected rows, in pair order
        (ids(tok, "the movie was"), ids(tok, "great .")),
        (ids(tok, "i loved it"), ids(tok, ". the acting was fine .")),
        (ids(tok, "the movie was"), ids(tok, "awful !")),
        (ids(tok, "i loved it"), ids(tok, "bad")),
    ]
    width = max(len(p) + len(r) + 1 for p, r in expected)
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.loss_mask.shape == (4, width)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == torch.long and batch.loss_mask.dtype == torch.bool
    assert (batch.n_pairs, batch.n_truncated) == (2, 0)
    for r, (prompt, response) in enumerate(expected):
        n_pad = width - len(prompt) - len(response) - 1
        assert batch.input_ids[r].tolist() == prompt + response + [eos] + [pad] * n_pad
        assert batch.attention_mask[r].tolist() == [1] * (width - n_pad) + [0] * n_pad
        assert batch.loss_mask[r].tolist() == [False] * len(prompt) + [True] * (len(response) + 1) + [False] * n_pad
    assert not batch.loss_mask[:, 0].any()
    assert batch.chosen_slice == slice(0, 2) and batch.rejected_slice == slice(2, 4)
    moved = batch.to("cpu")
    assert isinstance(moved, PreferenceBatch) and torch.equal(moved.loss_mask, batch.loss_mask)


def test_truncation_rule(tiny_tokenizer):
    tok = tiny_tokenizer
    eos = tok.eos_token_id
    collate = PreferenceCollator(tok, max_length=6, max_prompt_length=3)
    pairs = [
        PreferencePair("the film was good and the", " acting was fine .", " bad"),  # prompt cut; chosen cut
        PreferencePair("the movie was", " great .", " awful ! it was bad"),  # only rejected cut
        PreferencePair("the movie", " was great .", " was ok"),  # fits exactly: eos kept
        PreferencePair("the movie was", " great . i", " ok"),  # response fills the room: eos dropped
    ]
    batch = collate(pairs)
    rows = [batch.input_ids[r][batch.attention_mask[r].bool()].tolist() for r in range(8)]
    assert rows[0] == ids(tok, "good and the acting was fine")  # last 3 prompt tokens; response cut on the right
    assert rows[4] == ids(tok, "good and the bad") + [eos]
    assert rows[1] == ids(tok, "the movie was great .") + [eos]
    assert rows[5] == ids(tok, "the movie was awful ! it")
    assert rows[2] == ids(tok, "the movie was great .") + [eos]
    assert rows[3] == ids(tok, "the movie was great . i")
    assert batch.loss_mask[0].tolist() == [False] * 3 + [True] * 3
    assert batch.loss_mask[3].tolist() == [False] * 3 + [True] * 3
    assert batch.input_ids.shape == (8, 6) and batch.n_truncated == 3  # pairs 0, 1 and 3


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    response=st.lists(st.integers(1, 50), max_size=20),
    max_length=st.integers(2, 30),
    data=st.data(),
)
def test_property_truncate_pair(prompt, response, max_length, data):
    max_prompt_length = data.draw(st.integers(1, max_length - 1))
    kept_prompt, kept_response, cut = truncate_pair(prompt, response, 0, max_length, max_prompt_length)
    full = response + [0]
    assert 1 <= len(kept_prompt) <= max_prompt_length and prompt[len(prompt) - len(kept_prompt) :] == kept_prompt
    assert len(kept_response) >= 1 and full[: len(kept_response)] == kept_response
    assert len(kept_prompt) + len(kept_response) <= max_length
    assert cut == (kept_prompt != prompt or kept_response != full)
    assert not cut or len(kept_prompt) + len(kept_response) == max_length or kept_response == full


def test_collator_argument_validation(tiny_tokenizer):
    with pytest.raises(ValueError, match=r"max_prompt_length \(8\) must be < max_length \(8\)"):
        PreferenceCollator(tiny_tokenizer, max_length=8, max_prompt_length=8)
    for kwargs, name in [
        ({"max_length": 1, "max_prompt_length": 1}, "max_length"),
        ({"max_length": 8.0, "max_prompt_length": 2}, "max_length"),
        ({"max_length": 8, "max_prompt_length": 0}, "max_prompt_length"),
        ({"max_length": 8, "max_prompt_length": True}, "max_prompt_length"),
    ]:
        with pytest.raises(ValueError, match=f"^{name} must be an integer"):
            PreferenceCollator(tiny_tokenizer, **kwargs)
    collate = PreferenceCollator(tiny_tokenizer, max_length=8, max_prompt_length=4)
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="pair 1: prompt ' ' tokenizes to zero tokens"):
        collate([PreferencePair(**VALID), PreferencePair(" ", " a", " b")])
