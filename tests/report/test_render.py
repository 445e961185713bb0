"""The page: the finding first, numbered figures with their files, numbers right-aligned with true minus signs."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from shiftlab.report.render import (
    Plot,
    Section,
    is_numeric_column,
    render_html,
    render_markdown,
    write_figure,
    write_report,
)
from shiftlab.report.tables import signed


def _figure(width: float = 6.0, panels: int = 1) -> Figure:
    fig = Figure(figsize=(width, 3))
    for ax in fig.subplots(1, panels, squeeze=False).ravel():
        ax.plot([0, 1], [0, 1])
    return fig


def test_the_same_figure_writes_the_same_bytes_twice(tmp_path):
    (a := tmp_path / "a").mkdir(), (b := tmp_path / "b").mkdir()
    pngs = [write_figure(_figure(), d, "frontier") for d in (a, b)]
    assert pngs[0] == pngs[1]
    assert (a / "frontier.svg").read_bytes() == (b / "frontier.svg").read_bytes()  # no date, no random ids
    assert b"<dc:date>" not in (a / "frontier.svg").read_bytes()


def test_numeric_columns_are_told_from_text():
    assert is_numeric_column(pd.Series(["+0.031", "[−0.022, +0.084]", "—"]))
    assert is_numeric_column(pd.Series(["1.2\u00a0min", "12\u00a0/\u00a0200"]))
    assert not is_numeric_column(pd.Series(["offline", "3"]))
    assert not is_numeric_column(pd.Series(["online 5, offline 5"]))


def test_signed_numbers_use_a_true_minus():
    assert signed(-0.0312) == "\u22120.031" and signed(0.5) == "+0.500" and signed(float("nan")) == "—"


def test_the_lead_comes_before_the_summary_and_figures_are_numbered_in_reading_order(tmp_path):
    lead = Section("Finding", paragraphs=["The verdict."], figures=[Plot("frontier", _figure(), "Look here.",
                                                                         ("frontier.csv",))], figures_first=True)
    body = [Section("More", tables=[("numbers", pd.DataFrame({"cell": ["a"], "gap": ["\u22120.100"]}))],
                    figures=[Plot("wide_one", _figure(11, panels=3), "Panels.")])]
    html_path, md_path = write_report(tmp_path, "t", ["A summary line."], body, lead=lead)
    page = html_path.read_text()
    assert page.index("The verdict.") < page.index("Figure 1.") < page.index("A summary line.") < page.index("Figure 2.")
    assert '<a href="frontier.svg">SVG</a>' in page and '<a href="frontier.csv">frontier.csv</a>' in page
    assert '<td class="num">\u22120.100</td>' in page and '<td class="txt">a</td>' in page
    # several panels scroll sideways on a phone (with a hint); a single panel fits the width
    assert 'class="fig wide"' in page and 'class="fig"' in page and 'class="hint"' in page
    md = md_path.read_text()
    assert md.index("The verdict.") < md.index("## Summary") and "**Figure 2.** Panels." in md
    assert (tmp_path / "wide_one.png").is_file() and (tmp_path / "frontier.svg").is_file()


def test_section_links_list_the_data_files():
    s = Section("Data files", links=[("gap.csv", "the contrasts")])
    assert '<a href="gap.csv">gap.csv</a>: the contrasts' in render_html("t", "", [], [s], {})
    assert "- [gap.csv](gap.csv): the contrasts" in render_markdown("t", "", [], [s])


def test_the_lead_sentence_gives_the_verdict_with_its_adjusted_interval():
    from shiftlab.report.summary import lead_sentence

    row = {"axis": "kl_sft_mean", "contrast": "total", "estimate": -0.02, "kl_low": 0.0, "kl_high": 8.0,
           "p_adjusted": 0.4, "adj_low": -0.09, "adj_high": 0.05, "verdict": "inconclusive",
           "seeds_by_cell": "online 5, offline 5", "note": ""}
    text = lead_sentence(pd.DataFrame([row]))
    assert "\u22120.020" in text and "\u22120.090 to +0.050" in text and "inconclusive" in text
    assert "seeds: online 5, offline 5" in text
    better = lead_sentence(pd.DataFrame([row | {"estimate": 0.1, "adj_low": 0.02, "adj_high": 0.18,
                                                "verdict": "better", "p_adjusted": 0.01}]))
    assert better.endswith("online DPO does better than offline DPO at matched KL.")


def test_the_lead_sentence_adds_the_gold_judges_verdict():
    from shiftlab.report.summary import lead_sentence

    row = {"axis": "kl_sft_mean", "contrast": "total", "estimate": 0.1, "kl_low": 0.0, "kl_high": 8.0,
           "p_adjusted": 0.01, "adj_low": 0.02, "adj_high": 0.18, "verdict": "better",
           "seeds_by_cell": "online 3, offline 3", "note": ""}
    gold = pd.DataFrame([row | {"estimate": -0.01, "adj_low": -0.06, "adj_high": 0.04, "verdict": "inconclusive",
                                "p_adjusted": 0.44}])
    text = lead_sentence(pd.DataFrame([row]), gold)
    assert "does better than offline DPO" in text
    assert text.endswith("the same gap is \u22120.010 (Holm-adjusted 95% interval \u22120.060 to +0.040): inconclusive.")
