"""Benchmarks: FLOP counts against a hand count and torch's own counter, timing statistics, precomputed reference
log-probs against the live forward, the precomputed step against the trainer's, the report files, and a quick
smoke run of `scripts/bench.py`."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2LMHeadModel

from shiftlab.bench.e2e import eval_share, run_child
from shiftlab.bench.flops import GPTShape, attention_flops, batch_flops, dpo_step_flops, forward_flops
from shiftlab.bench.machine import cpu_model
from shiftlab.bench.report import Figure, Section, Target, render_markdown, write_csv
from shiftlab.bench.step import build_step_setup, run_step
from shiftlab.bench.timing import Stat, summarize, time_calls
from shiftlab.data.batches import PreferenceCollator
from shiftlab.data.pairs import PreferencePair
from shiftlab.training.loop import optimizer_step
from shiftlab.training.objectives import PreferenceObjective
from shiftlab.training.precompute import attach_reference_logps, precompute_reference_logps, reference_logps

REPO = Path(__file__).resolve().parents[2]
PAIRS = [
    PreferencePair("the movie was", " great .", " awful !"),
    PreferencePair("the film", " was good and the acting was fine .", " is bad , boring and too long ."),
    PreferencePair("i", " loved it .", " hated it . it was ok"),
    PreferencePair("this film is", " good .", " bad , boring and too long ."),
]


def tiny_gpt2(vocab: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh",
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config)


# --------------------------------------------------------------------------- FLOPs


def test_forward_flops_by_hand():
    # one layer, d=2, f=8, V=5, one row of 3 tokens:
    #   q,k,v 2·3·2·6 = 72; out proj 2·3·2·2 = 24; scores 2·3·3·2 = 36; ·values 36; MLP 2·3·2·8·2 = 192
    #   LM head 2·3·2·5 = 60  ->  420
    shape = GPTShape(n_layer=1, d_model=2, d_ff=8, vocab=5)
    assert forward_flops(shape, [3]) == 420
    assert forward_flops(shape, [3, 3]) == 840
    assert forward_flops(shape, [3], lm_head_positions=1) == 420 - 40
    assert dpo_step_flops(shape, [3]) == 4 * 420  # policy fwd + bwd (2×) + reference fwd
    assert dpo_step_flops(shape, [3], live_reference=False) == 3 * 420


def test_forward_flops_match_torch_flop_counter():
    model = tiny_gpt2(vocab=40)
    shape = GPTShape.from_config(model.config)
    assert shape == GPTShape(2, 16, 64, 40)
    ids = torch.randint(40, (3, 10))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    # torch's counter has no formula for the CPU flash-attention kernel, so it sees only the other products
    attention = 3 * shape.n_layer * attention_flops(shape, 10)
    assert counter.get_total_flops() == forward_flops(shape, [10, 10, 10]) - attention


def test_batch_flops_counts_padding_as_executed_only():
    shape = GPTShape(n_layer=1, d_model=2, d_ff=8, vocab=5)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    executed, useful = batch_flops(shape, mask)
    assert executed == dpo_step_flops(shape, [3, 3])
    assert useful == dpo_step_flops(shape, [3, 2]) < executed
    three = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])  # packed: [3] and [2, 1] fill two rows of 3
    assert batch_flops(shape, three, packed=True)[0] == dpo_step_flops(shape, [3, 3]) < batch_flops(shape, three)[0]


# --------------------------------------------------------------------------- timing, machine, report


def test_summarize_and_invert():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    rate = summarize([0.5, 0.25, 1.0]).inverted(32)  # seconds per step -> pairs per second
    assert (rate.median, rate.min, rate.max) == (64.0, 32.0, 128.0)
    assert Stat(1.0, 0.5, 2.0, 3).scaled(1e3) == Stat(1000.0, 500.0, 2000.0, 3)
    with pytest.raises(ValueError):
        summarize([])


def test_time_calls_runs_warmup_untimed():
    calls = []
    times = time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_cpu_model_reads_cpuinfo():
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t: avx2\n") == "AMD EPYC 9B14"


def test_report_files(tmp_path):
    section = Section("trl", "1. Throughput", [
        Figure("tiny · shiftlab", "pairs/s", Stat(100.0, 90.0, 110.0, 5)),
        Figure("tiny · ratio", "speed-up", Stat(2.5, 2.0, 3.0, 5), "×", Target(">=", 2.0)),
        Figure("tiny · share", "eval share", Stat(0.2, 0.2, 0.2, 1), "", Target("<=", 0.15)),
    ], ["a note"])
    md = render_markdown({"cpu": "test"}, [section], ["header"])
    assert "| tiny · ratio | speed-up (×) | 2.5 | 2 | 3 | 5 | ≥ 2 — **met** |" in md
    assert "**not met**" in md and "a note" in md
    write_csv(tmp_path / "b.csv", [section])
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [r["met"] for r in rows] == ["", "true", "false"]
    assert rows[1]["target"] == ">=2" and float(rows[1]["median"]) == 2.5


def test_ratios_are_against_trls_faster_setting_paired_per_repeat():
    from shiftlab.bench.trl_compare import ratios_against_fastest

    per_step = {"ours": [1.0, 2.0, 1.0], "TRL a": [3.0, 3.0, 9.0], "TRL b": [4.0, 2.0, 2.0]}  # medians 3 and 2
    fastest, ratios = ratios_against_fastest(per_step, ("ours",), ["TRL a", "TRL b"])
    assert fastest == "TRL b" and ratios == {"ours": [4.0, 1.0, 2.0]}


def test_interleave_mirrors_the_order_each_repeat():
    from shiftlab.bench.timing import interleave

    order = []
    runners = {name: (lambda steps, name=name: order.append(name) or [1.0] * steps) for name in "ABC"}
    out = interleave(runners, steps=2, repeats=2, warmup=1)
    assert order == list("ABC") + list("ABC") + list("CBA") and out == {n: [1.0, 1.0] for n in "ABC"}


# --------------------------------------------------------------------------- precomputed reference log-probs


def test_precomputed_reference_logps_equal_the_live_forward(tiny_tokenizer):
    collator = PreferenceCollator(tiny_tokenizer, max_length=24, max_prompt_length=8)
    ref = tiny_gpt2(len(tiny_tokenizer)).eval()
    table = precompute_reference_logps(ref, collator, PAIRS, batch_size=3)  # other batches, other padding
    assert table.shape == (len(PAIRS), 2)
    batch = collator(PAIRS)
    live = reference_logps(ref, batch)
    torch.testing.assert_close(torch.cat([table[:, 0], table[:, 1]]), live, atol=1e-5, rtol=1e-6)
    rows = [2, 0]
    sub = attach_reference_logps(collator([PAIRS[i] for i in rows]), table, rows)
    torch.testing.assert_close(sub.ref_logps, torch.tensor([table[2, 0], table[0, 0], table[2, 1], table[0, 1]]))
    assert sub.to("cpu").ref_logps is not None
    with pytest.raises(ValueError):
        attach_reference_logps(batch, table, [0])


def test_precomputed_step_moves_the_weights_like_the_trainer(tiny_tokenizer):
    collator = PreferenceCollator(tiny_tokenizer, max_length=24, max_prompt_length=8)
    live = build_step_setup(tiny_gpt2(len(tiny_tokenizer)))
    pre = build_step_setup(copy.deepcopy(live.policy))
    table = precompute_reference_logps(pre.ref, collator, PAIRS)
    for rows in ([0, 1], [2, 3], [3, 0]):
        batch = collator([PAIRS[i] for i in rows])
        a = optimizer_step(live.policy, live.ref, batch, PreferenceObjective(live.loss_cfg), live.optim_cfg,
                           live.optimizer, live.scheduler)
        b = run_step(pre.policy, pre.ref, attach_reference_logps(batch, table, rows), pre.loss_cfg, pre.optim_cfg,
                     pre.optimizer, pre.scheduler)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for p, q in zip(live.policy.parameters(), pre.policy.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- end-to-end helpers


def test_eval_share_from_metrics(tmp_path):
    # the loop starts when the first evaluation does (time 12 − 2 = 10 s after start: π_sft was built before)
    rows = [{"step": 0, "time": 12.0, "time/eval": 2.0},
            {"step": 0, "time": 20.0, "time/train": 4.0, "time/sample": 3.0, "time/label": 1.0},
            {"step": 1, "time": 22.0, "time/train": 2.0}, {"step": 2, "time": 40.0, "time/eval": 1.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = eval_share(path)
    assert out["work_share"] == pytest.approx(3.0 / 10.0) and out["time/train"] == 6.0
    assert out["loop_wall"] == pytest.approx(30.0) and out["share"] == pytest.approx(3.0 / 30.0)


def test_run_child_reports_the_childs_own_peak_memory(tmp_path):
    held = bytearray(600_000_000)  # this process resident at 0.6 GB more: a forked child would inherit the mark
    held[::4096] = b"x" * len(held[::4096])
    child = run_child([sys.executable, "-c", "b = bytearray(150_000_000); b[::4096] = b'x' * len(b[::4096])"],
                      tmp_path, tmp_path / "log.txt")
    assert child.returncode == 0 and 0.15e9 <= child.peak_rss_bytes < 0.45e9
    del held
    failed = run_child([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, tmp_path / "log.txt")
    assert failed.returncode == 3


# --------------------------------------------------------------------------- the script


@pytest.mark.slow
def test_bench_script_quick_run_writes_the_report(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--skip-e2e", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "bench.md").read_text()
    for title in ("## Machine", "2. Closeness to the machine's limit", "3. On-policy sampling", "6. Scaling",
                  "8. bf16 against float32"):
        assert title in md
    sections = {row["section"] for row in csv.DictReader((out / "bench.csv").open())}
    assert {"limit", "sampling", "scaling", "precision"} <= sections
    assert "tiny · packed step ÷ matmul (real-token FLOPs)" in md  # train.packing=true beside the default step
    for row in ("tiny · bf16 autocast ÷ fp32", "tiny · bf16 weights ÷ fp32", "large matmul (2048³) · bfloat16"):
        assert f"| {row} |" in md
    if "trl" in sections:
        assert "tiny · live reference · shiftlab default ÷ TRL" in md and "precomputed reference · shiftlab padded ÷ TRL" in md
        assert "live reference · TRL bf16=False |" in md and "live reference · TRL bf16=True |" in md
        assert "TRL's faster setting here: **TRL bf16=" in md


@pytest.mark.slow
def test_end_to_end_section_on_a_tiny_run():
    from shiftlab.bench.e2e import run_end_to_end
    from shiftlab.bench.suite import QUICK_E2E_OVERRIDES

    share, e2e = run_end_to_end(REPO, ["offline"], 1, QUICK_E2E_OVERRIDES)
    assert [f.metric for f in e2e.figures] == ["wall time", "peak RSS"]
    assert 0 < e2e.figures[1].stat.median < 2 and share.figures[0].stat.median > 0
    assert any("sampler.py:sample_completions" in note for note in share.notes)  # the evaluation's profile
