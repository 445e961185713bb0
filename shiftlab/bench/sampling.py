"""On-policy sampling speed: shiftlab's KV-cached sampler against `model.generate` with the KV cache.

Same model, same left-padded prompts, temperature 1 with no top-k / top-p, and the same number of new tokens per
row: neither side may stop early (shiftlab is given an end-of-text id no token has; `generate` none at all), so
both produce exactly rows × max_new_tokens tokens. The two alternate within each repeat.
"""

from __future__ import annotations

import time

import torch

from shiftlab.bench.report import Figure, Section, Target
from shiftlab.bench.timing import summarize
from shiftlab.bench.workload import Workload, build_bench_model
from shiftlab.data.batches import pad_left
from shiftlab.models.sampler import SamplerSettings, sample_completions

TARGET = Target(">=", 1.0)
NEVER = -1  # an end-of-text id no sampled token can equal


def run_sampling(workload: Workload, size: str, n_prompts: int, max_new_tokens: int, repeats: int) -> Section:
    from transformers import GenerationConfig

    tok = workload.tokenizer
    model = build_bench_model(size, tok).eval()
    prompts = tok([p.prompt for p in workload.pairs[:n_prompts]], add_special_tokens=False)["input_ids"]
    prompts = [p[-workload.max_prompt_length:] for p in prompts]
    ids, mask = pad_left(prompts, tok.pad_token_id)
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                              min_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=tok.pad_token_id,
                              use_cache=True)
    generator = torch.Generator().manual_seed(0)

    def ours() -> float:
        start = time.perf_counter()
        sample_completions(model, prompts, SamplerSettings(max_new_tokens, NEVER, tok.pad_token_id), k=1,
                           generator=generator)
        return time.perf_counter() - start

    @torch.no_grad()
    def theirs() -> float:
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        assert out.shape[1] == ids.shape[1] + max_new_tokens, "generate stopped early: lengths would differ"
        return time.perf_counter() - start

    ours(), theirs()  # warmup
    times: dict[str, list[float]] = {"shiftlab sampler": [], "model.generate": []}
    for r in range(repeats):
        order = [("shiftlab sampler", ours), ("model.generate", theirs)]
        for name, fn in order if r % 2 == 0 else reversed(order):
            times[name].append(fn())
    tokens = len(prompts) * max_new_tokens
    section = Section("sampling", "3. On-policy sampling")
    for name, seconds in times.items():
        section.figures.append(Figure(f"{size} · {name}", "tokens/s", summarize(seconds).inverted(tokens)))
    ratios = [g / s for s, g in zip(times["shiftlab sampler"], times["model.generate"])]
    section.figures.append(Figure(f"{size} · shiftlab ÷ generate", "speed-up", summarize(ratios), "×", TARGET))
    section.notes.append(f"{len(prompts)} prompts (≤ {workload.max_prompt_length} tokens, left-padded), "
                         f"{max_new_tokens} new tokens each, temperature 1, KV cache on both sides.")
    return section
