"""Tokenizer and causal-LM construction: a tiny GPT-2 trained from scratch, or any Hugging Face causal LM."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from shiftlab.config import ModelConfig
from shiftlab.data.batches import ensure_pad_token
from shiftlab.models.lora import export_model

EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the corpus: lossless on any text, small enough for a ~1M-parameter model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=None
    )


def build_model(cfg: ModelConfig, vocab_size: int, eos_token_id: int) -> GPT2LMHeadModel:
    """A GPT-2 from a config, with dropout off: DPO compares log-probs of two forward passes, which dropout would decorrelate."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_pytorch_tanh",  # the fused kernel: same function as GPT-2's gelu_new, several times faster on CPU
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    return GPT2LMHeadModel(config)


def resolve_dtype(name: str) -> torch.dtype:
    """model.dtype -> a torch dtype; "auto" is bfloat16 on a GPU that supports it, else float32 (CPU bf16 is slow)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def prepare_for_training(model, cfg: ModelConfig):
    """Dropout off (as `build_model`) and the memory options of model.*; a model loaded from the SFT cache gets
    them again, since neither is saved with the weights."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if cfg.gradient_checkpointing:
        # non-reentrant checkpointing works with inputs that need no grad and with frozen parts of the model;
        # transformers 5 renamed the method, older releases only have gradient_checkpointing_enable
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def is_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on, under either transformers name."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def load_pretrained(name_or_path: str, cfg: ModelConfig):
    """Load a causal LM and its tokenizer with `from_pretrained` (a local directory or a hub id).

    Remote code runs only with model.trust_remote_code=true; weights load in model.dtype (log-probs are computed
    in float32 whatever it is, see `shiftlab.functional.losses.token_logps`).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=resolve_dtype(cfg.dtype), trust_remote_code=cfg.trust_remote_code
        )
    except OSError as err:
        raise FileNotFoundError(
            f"model.name_or_path={name_or_path!r}: could not load a causal LM and tokenizer "
            f"(expected a local directory written by save_pretrained, or a reachable hub id): {err}"
        ) from err
    return prepare_for_training(model, cfg), ensure_pad_token(tokenizer, f"model.name_or_path={name_or_path!r}")


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An independent, gradient-free copy (π_ref or a behaviour snapshot): later steps on π_θ never reach it."""
    clone = copy.deepcopy(model)
    clone.eval()
    clone.requires_grad_(False)
    return clone


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, directory: Path) -> None:
    """Hugging Face format, so `AutoModelForCausalLM.from_pretrained(directory)` loads it (a model with LoRA
    adapters is saved merged, from a copy: see `shiftlab.models.lora.export_model`)."""
    directory.mkdir(parents=True, exist_ok=True)
    export_model(model).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
