"""Guards: non-finite gradients, empty samples in evaluation and on-policy rounds, range and size checks at start-up."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny import compose_config
from tiny_models import EOS, onpolicy_pairs, tiny_model
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.config import EvalConfig, LossConfig, OptimConfig
from shiftlab.data.batches import PreferenceBatch, PreferenceCollator
from shiftlab.data.pairs import PreferenceDataError, PreferencePair
from shiftlab.experiment.lifecycle import run
from shiftlab.labels.pairing import Labeller
from shiftlab.models.sampler import SamplerSettings
from shiftlab.rundir.runlog import RunLog
from shiftlab.training.evaluation import Evaluator
from shiftlab.training.loop import NonFiniteError, build_optimizer, optimizer_step
from shiftlab.training.objectives import PreferenceObjective
from shiftlab.training.sources import OfflinePairs, Prompts
from shiftlab.validation import ConfigError
from shiftlab.world import ReviewGrammar


def test_infinite_gradient_is_caught_before_the_weights_move():
    policy, ref = tiny_model(0).train(), tiny_model(0)
    ids = torch.tensor([[3, 4, 5, 0], [3, 4, 6, 0]])
    batch = PreferenceBatch(ids, torch.ones_like(ids), torch.tensor([[0, 0, 1, 1]] * 2, dtype=torch.bool), 1, 0)
    optim_cfg = OptimConfig()
    optimizer, scheduler = build_optimizer(policy, optim_cfg)
    before = [p.detach().clone() for p in policy.parameters()]
    next(policy.parameters()).register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteError, match="grad_norm is"):
        optimizer_step(policy, ref, batch, PreferenceObjective(LossConfig()), optim_cfg, optimizer, scheduler)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


# --- empty samples --------------------------------------------------------------------------------------------


def _eos_share(model, eos: int, share: float):
    """Make the model end every response at each position with probability `share` (1: only empty samples)."""

    def hook(module, inputs, logits):
        logits = logits.clone()
        others = torch.cat([logits[..., :eos], logits[..., eos + 1 :]], dim=-1).logsumexp(-1)
        logits[..., eos] = 1e4 if share >= 1 else others + float(np.log(share / (1 - share)))
        return logits

    model.lm_head.register_forward_hook(hook)
    return model


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_empty_evaluation_samples_are_counted_and_divergences_survive(tmp_path, tiny_tokenizer, share):
    torch.manual_seed(0)
    sft = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    policy = _eos_share(copy.deepcopy(sft), tiny_tokenizer.eos_token_id, share)
    texts = ["the movie was", "the film", "this film is", "i loved it", "the acting was", "it was", "i hated", "the"] * 2
    ids = tiny_tokenizer(texts, add_special_tokens=False)["input_ids"]
    pairs = [PreferencePair(t, " great .", " awful !") for t in texts[:8]]
    collator = PreferenceCollator(tiny_tokenizer, 16, 8)
    source = OfflinePairs(pairs, collator, batch_size=4, seed=0, behaviour=sft, probe_size=8)
    evaluator = Evaluator(
        EvalConfig(n_prompts=16, n_samples_logged=2, probe_pairs=8, mmd_permutations=20), Prompts(ids, texts),
        SamplerSettings.from_tokenizer(tiny_tokenizer, max_new_tokens=6),
        Labeller(tiny_tokenizer.decode, lambda t: np.array([len(x) for x in t], float)),
        sft=sft, source=source, grammar=ReviewGrammar(), seed=0, log=RunLog(tmp_path, {}),
    )
    metrics = evaluator(policy, sft, 0)
    empty = metrics["eval/empty_responses"]
    assert empty == 1.0 if share == 1 else 0 < empty < 1
    for key in ("eval/kl_sft", "eval/kl_sft_k3", "eval/state_kl", "eval/ess", "eval/mmd2", "eval/c2st_acc", "eval/js_ngram"):
        assert np.isfinite(metrics[key]), key
    assert not any(np.isinf(v) for v in metrics.values())


def test_onpolicy_round_of_empty_samples_is_counted_and_the_step_skipped():
    source = onpolicy_pairs(lambda texts: np.arange(len(texts), dtype=float))
    data = source.next_batch(_eos_share(tiny_model(0), EOS, 1.0), 0)
    assert data.batch is None and source.probe() is None
    assert [e["count"] for e in data.events if e["event"] == "empty_responses"] == [9, 9, 9]  # 1 + max_resample tries
    assert data.events[-1]["event"] == "step_skipped"


# --- validation at start-up -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [("loss.beta=nan", "`loss.beta` must be a finite number, got nan"),
     ("optim.lr=inf", "`optim.lr` must be a finite number, got inf"),
     ("loss.beta=-0.1", "`loss.beta` must be > 0, got -0.1"),
     ("reference.alpha=0", "`reference.alpha` must be in (0, 1], got 0.0"),
     ("reference.refresh_every=0", "`reference.refresh_every` must be ≥ 1, got 0"),
     ("source.k=1", "`source.k` must be ≥ 2 (a pair needs two completions), got 1"),
     ("train.max_new_tokens=0", "`train.max_new_tokens` must be ≥ 1, got 0"),
     ("optim.grad_clip=0", "`optim.grad_clip` must be > 0, got 0.0"),
     ("checkpoint.every=-1", "`checkpoint.every` must be ≥ 0, got -1"),
     ("checkpoint.keep_last=0", "`checkpoint.keep_last` must be ≥ 1, got 0"),
     ("eval.n_prompts=17", "`eval.n_prompts` must be ≤ task.n_eval_prompts=16 (the held-out prompts there are), got 17")],
)
def test_each_range_error_names_its_key(override, message):
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert message in str(err.value)


def test_bad_sizes_and_bad_data_fail_before_any_training(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config([f"cache_dir={cache}", "mode=online", "source.prompts_per_round=100000"])
    with pytest.raises(ConfigError, match=r"`source.prompts_per_round` must be ≤ the task's \d+ training prompts"):
        run(cfg, tmp_path / "a")
    cfg = compose_config([f"cache_dir={cache}", "preferences.n_prompts=100000"])
    with pytest.raises(ConfigError, match=r"`preferences.n_prompts` must be ≤ the task's \d+ training prompts"):
        run(cfg, tmp_path / "b")
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"prompt": "a", "chosen": " b", "rejected": " c"}\n{"prompt": "a", "chosen": " b"}\n')
    with pytest.raises(PreferenceDataError, match=r"prefs.jsonl:2: missing required field \"rejected\""):
        run(compose_config([f"cache_dir={cache}", f"task.preferences_path={prefs}"]), tmp_path / "c")
    assert not cache.exists()  # π_sft was never trained
