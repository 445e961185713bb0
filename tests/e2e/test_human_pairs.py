"""Human preference data end to end: an HH-format file (written here), a tiny model, and no oracle — the eval rows
score the held-out pairs by the implicit reward and carry no oracle column; a reward-model oracle still works."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from local_hub import hh_rows, save_tiny_classifier, write_jsonl
from tiny import compose_config

from shiftlab.experiment.lifecycle import run
from shiftlab.report.cli import main_report

HELDOUT = ["eval/heldout/rewards/accuracies", "eval/heldout/rewards/margins", "eval/heldout/loss"]
N_ROWS, N_EVAL = 80, 16  # debug=tiny holds out task.n_eval_prompts=16 prompts, each with its one pair


@pytest.fixture(scope="module")
def hh_file(tmp_path_factory):
    # chosen "i think <topic> is great and helpful ." vs rejected "<topic> is awful , go away .": systematically apart
    return write_jsonl(tmp_path_factory.mktemp("data") / "hh.jsonl", hh_rows(N_ROWS))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _run(run_dir, cache, hh_file, *overrides):
    args = [f"cache_dir={cache}", "task=hh", f"task.dataset.path={hh_file}", "task.dataset.eval_split=null", *overrides]
    return run(compose_config(args), run_dir, args)


def _evals(run_dir) -> pd.DataFrame:
    df = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    return df.dropna(subset=["eval/kl_ref"]).set_index("step")


@pytest.fixture(scope="module")
def no_oracle_run(tmp_path_factory, cache, hh_file):
    return _run(tmp_path_factory.mktemp("runs") / "none", cache, hh_file, "oracle=none")


@pytest.mark.slow
def test_without_an_oracle_eval_rows_score_the_heldout_pairs_and_carry_no_reward(no_oracle_run):
    evals = _evals(no_oracle_run)
    assert evals.index.tolist() == [0, 2, 4]
    assert evals[HELDOUT + [f"{c}_se" for c in HELDOUT]].notna().all().all()
    assert not [c for c in evals.columns if c.startswith(("eval/reward", "eval/gold"))]  # left out, not filled
    samples = [json.loads(line) for line in (no_oracle_run / "samples.jsonl").read_text().splitlines()]
    assert samples and all("reward" not in s for s in samples)
    event = next(json.loads(e) for e in (no_oracle_run / "events.jsonl").read_text().splitlines() if '"heldout_pairs"' in e)
    assert event["pairs"] == event["available"] == N_EVAL  # every pair of the held-out prompts, none trained on


@pytest.mark.slow
def test_heldout_accuracy_is_zero_at_the_tie_and_rises_with_training(no_oracle_run):
    evals = _evals(no_oracle_run)
    start, end = evals.loc[0], evals.loc[4]
    # step 0: π_θ = π_ref, so every implicit reward is 0 and every pair ties; TRL's strict > counts a tie as wrong
    assert start["eval/heldout/rewards/accuracies"] == 0.0 and start["eval/heldout/rewards/margins"] == 0.0
    assert start["eval/heldout/loss"] == pytest.approx(math.log(2))
    # the human choice is learnable from the training pairs, so pairs never trained on are ranked right too
    assert end["eval/heldout/rewards/accuracies"] >= 0.75
    assert end["eval/heldout/rewards/margins"] > 2 * end["eval/heldout/rewards/margins_se"] > 0
    assert end["eval/heldout/loss"] < math.log(2)


@pytest.mark.slow
def test_the_report_builds_from_a_run_without_eval_reward(no_oracle_run, tmp_path):
    assert main_report([str(no_oracle_run), f"out={tmp_path}", "name=hh", "n_boot=100"]) == 0
    assert (tmp_path / "hh" / "report.md").read_text().startswith("# shiftlab report")


@pytest.mark.slow
def test_a_reward_model_oracle_still_scores_samples_beside_the_heldout_pairs(tmp_path, cache, hh_file):
    model = save_tiny_classifier(tmp_path / "rm", labels=None)  # one output: a reward model, scored by its logit
    run_dir = _run(tmp_path / "rm_run", cache, hh_file, "oracle=hf_classifier", f"oracle.model={model}",
                   "oracle.label=null", "train.steps=2")
    evals = _evals(run_dir)
    assert evals[["eval/reward", "eval/reward_se", *HELDOUT]].notna().all().all()
