"""Benchmarks (`python scripts/bench.py`): throughput against TRL, closeness to the CPU's limit, bf16 against
float32, sampling, eval overhead, end-to-end runs and scaling. Each module measures one thing and returns
`Section`s for `report`.

    machine.py      what machine ran it (CPU model, cores, threads, library versions)
    timing.py       median / min / max over repeats after warmup
    flops.py        FLOPs of a GPT-2 forward and of a DPO step, from shapes; a large matmul's FLOP/s
    workload.py     the shared preference pairs, tokenizer and model sizes
    step.py         shiftlab's DPO step as the benchmarks drive it (live or precomputed reference)
    trl_compare.py  shiftlab against TRL's DPOTrainer, interleaved in one process
    utilization.py  achieved FLOP/s of the step against the matmul's, with the profile of where time goes
    precision.py    the step in float32, under bf16 autocast and with bf16 weights; the matmul in both dtypes
    sampling.py     shiftlab's sampler against `model.generate`
    e2e.py          `scripts/train.py` runs in a subprocess: wall time, peak memory, eval share
    evalprofile.py  where one evaluation's time goes (cProfile on the cache an end-to-end run left)
    scaling.py      step time against sequence length and batch size
    report.py       Sections -> bench.md + bench.csv
    suite.py        the options and the order of everything above
"""
