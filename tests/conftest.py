"""Shared fixtures. A tiny word-level tokenizer built in-process: tests never touch the hub."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
UNK = "<unk>"
TINY_CORPUS = [
    "the movie was great .",
    "the movie was awful !",
    "the film was good and the acting was fine .",
    "this film is bad , boring and too long .",
    "i loved it . i hated it . it was ok",
]


def build_tiny_tokenizer(corpus: list[str] = TINY_CORPUS) -> PreTrainedTokenizerFast:
    """Whitespace/punctuation word-level tokenizer; id 0 = <|endoftext|> (eos), id 1 = <unk>; no pad token."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=[EOS, UNK]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, unk_token=UNK)


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer per test, since some code (ensure_pad_token) sets its pad token in place."""
    return build_tiny_tokenizer()
