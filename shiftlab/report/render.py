"""Write a report (sections of text, figures and tables) as self-contained HTML and as Markdown.

The HTML embeds every figure as a base64 PNG and loads nothing from the network; the Markdown links the
PNG files written beside it. Each figure is also written as SVG for papers and slides.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

DPI = 110


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    figures: list[tuple[str, Figure, str]] = field(default_factory=list)  # (file stem, figure, caption)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)


def write_figure(fig: Figure, out_dir: Path, stem: str) -> bytes:
    """Save `fig` as `<stem>.png` and `<stem>.svg` in `out_dir`; return the PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    png = buf.getvalue()
    (out_dir / f"{stem}.png").write_bytes(png)
    fig.savefig(out_dir / f"{stem}.svg", format="svg")
    return png


def write_report(out_dir: Path, title: str, summary: list[str], sections: list[Section],
                 subtitle: str = "") -> tuple[Path, Path]:
    """Write `report.html` and `report.md` (and the figures) into `out_dir`; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {stem: write_figure(fig, out_dir, stem) for s in sections for stem, fig, _ in s.figures}
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(render_html(title, subtitle, summary, sections, pngs), encoding="utf-8")
    md_path.write_text(render_markdown(title, subtitle, summary, sections), encoding="utf-8")
    return html_path, md_path


def render_html(title: str, subtitle: str, summary: list[str], sections: list[Section],
                pngs: dict[str, bytes]) -> str:
    esc = html.escape
    toc = "".join(f'<li><a href="#s{i}">{esc(s.title)}</a></li>' for i, s in enumerate(sections))
    body = [f"<h1>{esc(title)}</h1>", f'<p class="sub">{esc(subtitle)}</p>' if subtitle else "",
            '<div class="summary"><h2>Summary</h2>' + "".join(f"<p>{esc(s)}</p>" for s in summary) + "</div>",
            f'<nav><b>Contents</b><ol>{toc}</ol></nav>']
    for i, s in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{esc(s.title)}</h2>')
        body += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
        if s.bullets:
            body.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in s.bullets) + "</ul>")
        for caption, table in s.tables:
            body.append(f'<div class="tblwrap"><p class="cap">{esc(caption)}</p>'
                        + table.to_html(index=False, escape=True, border=0, classes="tbl", na_rep="—") + "</div>")
        for stem, _, caption in s.figures:
            data = base64.b64encode(pngs[stem]).decode("ascii")
            body.append(f'<figure><img alt="{esc(stem)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")
        body.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>\n")


def render_markdown(title: str, subtitle: str, summary: list[str], sections: list[Section]) -> str:
    out = [f"# {title}", ""] + ([f"*{subtitle}*", ""] if subtitle else []) + ["## Summary", ""]
    out += [line for s in summary for line in (s, "")]
    for s in sections:
        out += [f"## {s.title}", ""]
        out += [line for p in s.paragraphs for line in (p, "")]
        out += [f"- {b}" for b in s.bullets] + ([""] if s.bullets else [])
        for caption, table in s.tables:
            out += [f"**{caption}**", "", markdown_table(table), ""]
        for stem, _, caption in s.figures:
            out += [f"![{stem}]({stem}.png)", "", f"*{caption}* ([SVG]({stem}.svg))", ""]
    return "\n".join(out)


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
.sub{color:#5b6475;margin:0 0 16px;font-size:13px;word-break:break-all}
.summary{background:#eef4fb;border-left:4px solid #3b7dd8;padding:4px 18px;margin:12px 0 20px}
.summary h2{border:0;margin-top:10px}
nav{font-size:14px}nav ol{margin:4px 0;columns:2}
figure{margin:16px 0;text-align:center}figure img{max-width:100%;height:auto}
figcaption{font-size:13px;color:#4a5263;text-align:left;margin-top:4px}
.tblwrap{overflow-x:auto;margin:12px 0}.cap{font-weight:600;margin:4px 0}
table.tbl{border-collapse:collapse;font-size:12.5px;width:100%}
.tbl th{background:#f0f2f5;text-align:left;padding:5px 8px;border-bottom:2px solid #d5d9e0;white-space:nowrap}
.tbl td{padding:4px 8px;border-bottom:1px solid #e8eaee;vertical-align:top}
.tbl tr:nth-child(even) td{background:#fafbfc}
ul{padding-left:22px}li{margin:2px 0}
"""
