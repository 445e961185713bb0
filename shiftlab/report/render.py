"""Write a report (sections of text, figures and tables) as self-contained HTML and as Markdown.

The HTML embeds every figure as a base64 PNG and loads nothing from the network; the Markdown links the
PNG files written beside it. Each figure is also written as SVG for papers and slides.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

DPI = 110


@dataclass
class Plot:
    """A figure of the report: its files' stem, the figure, a caption saying what to look at, and the CSV files
    (beside the report) that hold the numbers drawn."""

    stem: str
    figure: Figure
    caption: str
    data: tuple[str, ...] = ()


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    figures: list[Plot] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    links: list[tuple[str, str]] = field(default_factory=list)  # (file beside the report, what it holds)
    figures_first: bool = False  # the lead section shows its figure before its tables


def write_figure(fig: Figure, out_dir: Path, stem: str) -> bytes:
    """Save `fig` as `<stem>.png` and `<stem>.svg` in `out_dir`; return the PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    png = buf.getvalue()
    (out_dir / f"{stem}.png").write_bytes(png)
    # no date and a fixed salt for the SVG's element ids: the same study rebuilds byte-identical files, so a
    # committed report's diff shows only what changed
    with matplotlib.rc_context({"svg.hashsalt": stem}):
        fig.savefig(out_dir / f"{stem}.svg", format="svg", metadata={"Date": None})
    return png


def write_report(out_dir: Path, title: str, summary: list[str], sections: list[Section],
                 subtitle: str = "", lead: Section | None = None) -> tuple[Path, Path]:
    """Write `report.html` and `report.md` (and the figures) into `out_dir`; return both paths. `lead`, when
    given, comes first (the finding: a sentence and its figure), before the summary and the contents."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = ([lead] if lead else []) + sections
    pngs = {f.stem: write_figure(f.figure, out_dir, f.stem) for s in ordered for f in s.figures}
    numbers = figure_numbers(ordered)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(render_html(title, subtitle, summary, sections, pngs, numbers, lead), encoding="utf-8")
    md_path.write_text(render_markdown(title, subtitle, summary, sections, numbers, lead), encoding="utf-8")
    return html_path, md_path


def figure_numbers(sections: list[Section]) -> dict[str, int]:
    """Figure stem → its number, in reading order."""
    stems = [f.stem for s in sections for f in s.figures]
    return {stem: k for k, stem in enumerate(stems, start=1)}


def render_html(title: str, subtitle: str, summary: list[str], sections: list[Section],
                pngs: dict[str, bytes], numbers: dict[str, int] | None = None, lead: Section | None = None) -> str:
    esc = html.escape
    numbers = numbers or figure_numbers(([lead] if lead else []) + sections)
    toc = "".join(f'<li><a href="#s{i}">{esc(s.title)}</a></li>' for i, s in enumerate(sections))
    body = [f"<h1>{esc(title)}</h1>", f'<p class="sub">{esc(subtitle)}</p>' if subtitle else ""]
    if lead:
        body.append('<section class="lead">' + "".join(_html_section_body(lead, pngs, numbers)) + "</section>")
    body += ['<details class="summary" open><summary><h2>Summary</h2></summary>'
             + "".join(f"<p>{esc(s)}</p>" for s in summary) + "</details>",
             f'<nav><b>Contents</b><ol>{toc}</ol></nav>']
    for i, s in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{esc(s.title)}</h2>')
        body += _html_section_body(s, pngs, numbers)
        body.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>\n")


def _html_section_body(s: Section, pngs: dict[str, bytes], numbers: dict[str, int]) -> list[str]:
    esc = html.escape
    parts = [f"<p>{esc(p)}</p>" for p in s.paragraphs]
    if s.bullets:
        parts.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in s.bullets) + "</ul>")
    tables = [f'<div class="tblwrap"><p class="cap">{esc(caption)}</p>{_html_table(table)}</div>'
              for caption, table in s.tables]
    figures = []
    for f in s.figures:
        data = base64.b64encode(pngs[f.stem]).decode("ascii")
        files = [f'<a href="{esc(f.stem)}.png">PNG</a>', f'<a href="{esc(f.stem)}.svg">SVG</a>']
        files += [f'<a href="{esc(name)}">{esc(name)}</a>' for name in f.data]
        # several panels stay legible on a phone only at a width of their own, scrolled sideways
        hint = '<span class="hint">(scroll sideways for all panels)</span> '
        wide = " wide" if len(f.figure.axes) > 1 and f.figure.get_figwidth() > 9 else ""
        figures.append(f'<figure class="fig{wide}"><div class="imgwrap"><img alt="Figure {numbers[f.stem]}: '
                       f'{esc(f.stem)}" src="data:image/png;base64,{data}"></div><figcaption><b>Figure '
                       f"{numbers[f.stem]}.</b> {hint if wide else ''}"
                       f"{esc(f.caption)} <span class=\"files\">"
                       f"({' · '.join(files)})</span></figcaption></figure>")
    parts += figures + tables if s.figures_first else tables + figures
    if s.links:
        parts.append("<ul>" + "".join(f'<li><a href="{esc(name)}">{esc(name)}</a>: {esc(what)}</li>'
                                      for name, what in s.links) + "</ul>")
    return parts


# digits with signs, intervals, ± and units of a few letters ("1.2 min", "[−0.1, +0.2]", "3 / 5", "1e-05")
_NUMERIC = re.compile(r"[\d\s\[\]()+\-\u2212±.,:%×/<>—–\u00a0e]*\d[\d\s\[\]()+\-\u2212±.,:%×/<>—–\u00a0e]*"
                      r"(?:\u00a0?(?:min|nats|s|%))?")


def is_numeric_column(values: pd.Series) -> bool:
    """A column of numbers (estimates, intervals, counts; '—' for missing): right-aligned in the HTML."""
    text = [str(v).strip() for v in values if str(v).strip() not in ("—", "", "nan", "None", "?")]
    return bool(text) and all(_NUMERIC.fullmatch(v) for v in text)


def _html_table(table: pd.DataFrame) -> str:
    esc = html.escape
    num = [is_numeric_column(table[c]) for c in table.columns]
    head = "".join(f'<th class="{"num" if n else "txt"}">{esc(str(c))}</th>' for c, n in zip(table.columns, num))
    rows = []
    for row in table.itertuples(index=False):
        cells = []
        for v, n in zip(row, num):
            text = "—" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
            cls = "num" if n else ("long" if len(text) > 60 else "txt")
            cells.append(f'<td class="{cls}">{esc(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="tbl"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_markdown(title: str, subtitle: str, summary: list[str], sections: list[Section],
                    numbers: dict[str, int] | None = None, lead: Section | None = None) -> str:
    numbers = numbers or figure_numbers(([lead] if lead else []) + sections)
    out = [f"# {title}", ""] + ([f"*{subtitle}*", ""] if subtitle else [])
    if lead:
        out += _markdown_section_body(lead, numbers)
    out += ["## Summary", ""] + [line for s in summary for line in (s, "")]
    for s in sections:
        out += [f"## {s.title}", ""] + _markdown_section_body(s, numbers)
    return "\n".join(out)


def _markdown_section_body(s: Section, numbers: dict[str, int]) -> list[str]:
    out = [line for p in s.paragraphs for line in (p, "")]
    out += [f"- {b}" for b in s.bullets] + ([""] if s.bullets else [])
    tables = [line for caption, table in s.tables for line in (f"**{caption}**", "", markdown_table(table), "")]
    figures = []
    for f in s.figures:
        files = [f"[SVG]({f.stem}.svg)"] + [f"[{name}]({name})" for name in f.data]
        figures += [f"![Figure {numbers[f.stem]}: {f.stem}]({f.stem}.png)", "",
                    f"**Figure {numbers[f.stem]}.** {f.caption} ({' · '.join(files)})", ""]
    out += figures + tables if s.figures_first else tables + figures
    out += [f"- [{name}]({name}): {what}" for name, what in s.links] + ([""] if s.links else [])
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    if df.empty:
        return "_(empty)_"

    def cell(v) -> str:
        return "—" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


CSS = """
body{margin:0;background:#f6f7f9;color:#1d2330;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:26px;margin:8px 0 2px}h2{font-size:20px;margin:32px 0 8px;border-bottom:1px solid #e3e6eb;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px;font-size:13px;overflow-wrap:anywhere}
.lead{margin:8px 0 16px}.lead>p:first-child{font-size:17px;font-weight:600}
.summary{background:#eef4fb;border-left:4px solid #3b7dd8;padding:4px 18px;margin:12px 0 20px}
.summary>summary{cursor:pointer;list-style-position:outside}.summary>summary h2{display:inline;border:0;margin:0}
nav{font-size:14px}nav ol{margin:4px 0;columns:2}
figure{margin:16px 0}.imgwrap{overflow-x:auto;text-align:center}.imgwrap img{max-width:100%;height:auto}
figcaption{font-size:13px;color:#4a5263;margin-top:4px}.files{white-space:nowrap}.hint{display:none}
.tblwrap{overflow-x:auto;margin:12px 0}.cap{font-weight:600;margin:4px 0}
table.tbl{border-collapse:collapse;font-size:12.5px}
.tbl th{background:#f0f2f5;padding:5px 8px;border-bottom:2px solid #d5d9e0;white-space:nowrap;vertical-align:bottom}
.tbl td{padding:4px 8px;border-bottom:1px solid #e8eaee;vertical-align:top}
.tbl .num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}.tbl .txt{text-align:left}
.tbl td.long{min-width:22em;max-width:48em}
.tbl tr:nth-child(even) td{background:#fafbfc}
ul{padding-left:22px}li{margin:2px 0}a{color:#1f5fbf}
@media (max-width:640px){
 body{font-size:14px}main{padding:12px 12px 40px}h1{font-size:21px}h2{font-size:17px}
 nav ol{columns:1}.summary{padding:2px 10px}
 .wide .imgwrap img{max-width:none;width:720px}.hint{display:inline;font-style:italic}
 .tblwrap{background:linear-gradient(to left,rgba(0,0,0,.12),rgba(0,0,0,0) 10px) right/10px 100% no-repeat}
 .tbl td.txt{white-space:nowrap}.tbl td.long{min-width:16em}
}
"""
