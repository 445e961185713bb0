"""Stand-ins for the Hugging Face hub, built in-process: tiny checkpoints saved with `save_pretrained` and small data
files in the real formats. Tests load them by path, so nothing is ever downloaded."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
)

from shiftlab.models.build import train_tokenizer  # noqa: E402

TOPICS = ["the movie", "a recipe for bread", "my garden", "the weather", "a good book", "learning python",
          "the train home", "a birthday gift", "my old car", "the best coffee", "a quiet weekend", "the city park"]


def hh_dialogue(turns: list[tuple[str, str]]) -> str:
    """The HH-RLHF layout: "\\n\\nHuman: ...\\n\\nAssistant: ..." turns, each reply after a space."""
    return "".join(f"\n\nHuman: {human}\n\nAssistant: {assistant}" for human, assistant in turns)


def hh_rows(n: int) -> list[dict]:
    """n well-formed HH rows with distinct prompts; every third is a two-turn dialogue."""
    rows = []
    for i in range(n):
        topic = f"{TOPICS[i % len(TOPICS)]} number {i}"
        history = [(f"tell me about {topic}", f"sure , {topic} is fine .")] if i % 3 == 0 else []
        question = f"what do you think of {topic} ?"
        rows.append({
            "chosen": hh_dialogue(history + [(question, f"i think {topic} is great and helpful .")]),
            "rejected": hh_dialogue(history + [(question, f"{topic} is awful , go away .")]),
        })
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def build_tokenizer(texts: list[str]):
    """A byte-level BPE (lossless on any text) with eos = pad = <|endoftext|>."""
    return train_tokenizer(texts + [row["chosen"] + row["rejected"] for row in hh_rows(12)], vocab_size=320)


def save_tiny_causal_lm(directory: Path, arch: str = "gpt2", texts: list[str] = ("the movie was great .",)) -> Path:
    """A ~50k-parameter GPT-2 or GPT-NeoX (Pythia's architecture) with its tokenizer, as from_pretrained reads them."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(list(texts))
    eos = tokenizer.eos_token_id
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                            resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, bos_token_id=eos, eos_token_id=eos)
        model = GPT2LMHeadModel(config)
    else:
        config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128, bos_token_id=eos, eos_token_id=eos)
        model = GPTNeoXForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_classifier(directory: Path, labels: list[str] | None = ("NEGATIVE", "POSITIVE")) -> Path:
    """A one-layer BERT sequence classifier; labels=None gives a one-output reward model."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(["the movie was great .", "the movie was awful ."])
    n = 1 if labels is None else len(labels)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=n,
                        pad_token_id=tokenizer.pad_token_id)
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
