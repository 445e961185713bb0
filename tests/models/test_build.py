"""Pretrained causal LMs by path: dtype, gradient checkpointing, dropout off, the SFT cache, and a full run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from local_hub import save_tiny_causal_lm
from tiny import compose_config
from transformers import AutoModelForCausalLM

from shiftlab.config import ModelConfig
from shiftlab.experiment.lifecycle import run
from shiftlab.functional.losses import sequence_logps
from shiftlab.models.build import is_checkpointing, load_pretrained, resolve_dtype

TEXTS = ["the movie was great .", "the film was awful !"]


@pytest.fixture(scope="module", params=["gpt2", "gpt_neox"])
def model_dir(request, tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp(request.param), arch=request.param, texts=TEXTS)


def _batch(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    mask[:, 0] = False  # position 0 is "prompt"
    return enc["input_ids"], enc["attention_mask"], mask


def _grads(model, tokenizer) -> dict[str, torch.Tensor]:
    ids, attention, mask = _batch(tokenizer)
    model.train()
    model.zero_grad()
    sequence_logps(model(input_ids=ids, attention_mask=attention).logits, ids, mask).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(model_dir):
    plain, tokenizer = load_pretrained(str(model_dir), ModelConfig(name_or_path=str(model_dir)))
    checkpointed, _ = load_pretrained(str(model_dir), ModelConfig(name_or_path=str(model_dir), gradient_checkpointing=True))
    assert is_checkpointing(checkpointed) and not is_checkpointing(plain)
    expected, actual = _grads(plain, tokenizer), _grads(checkpointed, tokenizer)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_pretrained_dropout_is_switched_off(model_dir):
    model, _ = load_pretrained(str(model_dir), ModelConfig(name_or_path=str(model_dir)))
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(m.p == 0.0 for m in dropouts)
    ids, attention, _ = _batch(load_pretrained(str(model_dir), ModelConfig())[1])
    model.train()
    torch.testing.assert_close(model(input_ids=ids, attention_mask=attention).logits,
                               model(input_ids=ids, attention_mask=attention).logits)  # train mode is deterministic


def test_bfloat16_weights_with_float32_log_probs(model_dir):
    model, tokenizer = load_pretrained(str(model_dir), ModelConfig(name_or_path=str(model_dir), dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids, attention, mask = _batch(tokenizer)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits
    assert logits.dtype == torch.bfloat16
    assert sequence_logps(logits, ids, mask).dtype == torch.float32


def test_auto_dtype_is_float32_without_a_bf16_gpu():
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    assert resolve_dtype("auto") == expected and resolve_dtype("float16") == torch.float16


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.name_or_path=.*could not load a causal LM"):
        load_pretrained(str(tmp_path / "nothing"), ModelConfig())


@pytest.mark.parametrize("option,hub_id", [("gpt2", "gpt2"), ("pythia-160m", "EleutherAI/pythia-160m"),
                                           ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B")])
def test_real_model_configs_name_hub_checkpoints(option, hub_id):
    model = compose_config([f"model={option}"], tiny=False).model
    assert model.name_or_path == hub_id and model.dtype == "auto" and model.trust_remote_code is False


@pytest.mark.slow
def test_run_with_a_pretrained_checkpoint_trains_and_writes_metrics(tmp_path):
    model_dir = save_tiny_causal_lm(tmp_path / "gpt2", texts=TEXTS)
    cfg = compose_config([f"cache_dir={tmp_path / 'cache'}", f"model.name_or_path={model_dir}", "model.gradient_checkpointing=true",
                          "sft.steps=3", "sft.lr=1e-3"])
    run_dir = run(cfg, tmp_path / "run")
    metrics = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    assert metrics["loss"].notna().sum() == 4 and metrics["loss"].dropna().map(pd.notna).all()
    assert metrics["eval/reward"].notna().sum() == 3 and "eval/off_support" in metrics.columns  # grammar task
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    policy = AutoModelForCausalLM.from_pretrained(run_dir / "policy")
    assert policy.config.n_embd == 32  # the tiny checkpoint, fine-tuned, not a model built from model.n_embd


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_dtype_is_bfloat16_on_a_bf16_gpu(tmp_path):
    model_dir = save_tiny_causal_lm(tmp_path / "gpt2", texts=TEXTS)
    model, _ = load_pretrained(str(model_dir), ModelConfig(name_or_path=str(model_dir), dtype="auto"))
    assert next(model.parameters()).dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def _dpo_step(mixed_precision: bool):
    from transformers import GPT2Config, GPT2LMHeadModel

    from shiftlab.config import LossConfig, OptimConfig
    from shiftlab.data.batches import PreferenceBatch
    from shiftlab.training.loop import build_optimizer, optimizer_step
    from shiftlab.training.objectives import PreferenceObjective
    from shiftlab.training.ranks import Processes

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=16, n_positions=8, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    policy, ref = GPT2LMHeadModel(config), GPT2LMHeadModel(config).eval()
    ids = torch.randint(1, 16, (8, 8), generator=torch.Generator().manual_seed(1))
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 4:] = True
    optim_cfg = OptimConfig(lr=1e-3, warmup_steps=1)
    optimizer, scheduler = build_optimizer(policy, optim_cfg)
    stats = optimizer_step(policy, ref, PreferenceBatch(ids, torch.ones_like(ids), loss_mask, 4, 0),
                           PreferenceObjective(LossConfig()), optim_cfg, optimizer, scheduler, Processes(), mixed_precision)
    return stats, policy


def test_bf16_autocast_step_keeps_float32_master_weights():
    full, full_policy = _dpo_step(mixed_precision=False)
    mixed, mixed_policy = _dpo_step(mixed_precision=True)
    assert all(p.dtype == torch.float32 for p in mixed_policy.parameters())
    assert all(torch.isfinite(torch.tensor(v)) for v in mixed.values())
    # bfloat16 matmuls keep ~3 significant digits: the log-probs move, but not far
    assert mixed["logps/chosen"] != full["logps/chosen"]
    assert abs(mixed["logps/chosen"] - full["logps/chosen"]) < 0.02 * abs(full["logps/chosen"])
    assert abs(mixed["loss"] - full["loss"]) < 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_run_on_the_gpu_with_bf16_autocast(tmp_path, mode):
    cfg = compose_config([f"cache_dir={tmp_path / 'cache'}", f"mode={mode}", "train.device=cuda",
                          "train.mixed_precision=bf16"])
    run_dir = run(cfg, tmp_path / "run")
    metrics = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert metrics["loss"].dropna().map(pd.notna).all() and metrics["eval/kl_sft"].notna().any()
