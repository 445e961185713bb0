"""The methods and configuration tables say what was run, from the runs' own configs."""

from __future__ import annotations

from synthetic_runs import write_study

from shiftlab.report import load_study
from shiftlab.report.methods import build_config_table, methods_section


def test_the_configuration_table_lists_what_varies_and_what_the_oracle_is(tmp_path):
    root = write_study(tmp_path / "sweep", cells=("offline", "online"), seeds=2, betas=(0.1, 0.3),
                       config={"oracle": {"kind": "vader"}, "optim": {"lr": 0.001}})
    table = build_config_table(load_study([root])).set_index("setting")["value"]
    assert table["β (KL coefficient)"] == "0.1, 0.3"
    assert table["seeds"] == "0, 1"
    assert table["learning rate"] == "0.001"
    assert "[−1, 1]" in table["oracle vader: what it scores"]


def test_the_methods_name_each_metric_with_its_estimator():
    s = methods_section("How the gap is computed.")
    assert s.paragraphs[0] == "How the gap is computed."
    reward = next(b for b in s.bullets if b.startswith("eval/reward —"))
    assert "estimator:" in reward
    assert any(b.startswith("eval/state_kl —") for b in s.bullets)
