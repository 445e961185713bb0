"""The metric vocabulary is documented once: docs/METRICS.md is generated from shiftlab/metrics.py."""

from pathlib import Path

from shiftlab.metrics import METRICS, direction, render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "METRICS.md"


def test_generated_doc_is_up_to_date():
    assert DOC.read_text() == render_markdown(), "run: python -m shiftlab.metrics > docs/METRICS.md"


def test_trl_names_and_directions():
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert name in METRICS
    assert direction("eval/reward") == "higher"
    assert direction("eval/reward_se") == "neutral"
    assert direction("eval/c2st_acc_low") == "lower"
    assert direction("not/a/metric") == "neutral"
