"""Benchmark results and their two renderings: `bench.md` for people, `bench.csv` for tools.

Every figure is a median over repeats with its min and max; a target, where the issue sets one, is judged on the
median (the typical run, not the luckiest one).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from shiftlab.bench.timing import Stat

CSV_COLUMNS = ("section", "name", "metric", "median", "min", "max", "n", "unit", "target", "met")


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    value: float

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.value if self.op == ">=" else value <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.value:g}"


@dataclass(frozen=True)
class Figure:
    name: str  # what was measured, e.g. "tiny · live reference · shiftlab"
    metric: str  # e.g. "pairs/s"
    stat: Stat
    unit: str = ""
    target: Target | None = None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.stat.median)


@dataclass
class Section:
    key: str  # csv "section" column
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # markdown paragraphs or tables, rendered after the figures


def _number(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if x == 0 or 0.01 <= abs(x) < 1e5:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:.3g}"


def _verdict(figure: Figure) -> str:
    if figure.target is None:
        return ""
    return f"{figure.target} — {'**met**' if figure.met else '**not met**'}"


def render_markdown(machine: dict[str, str], sections: list[Section], header: list[str]) -> str:
    lines = ["# shiftlab benchmarks", "", *header, "", "## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in machine.items()]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        if section.figures:
            lines += ["| measured | metric | median | min | max | n | target |", "| --- | --- | --- | --- | --- | --- | --- |"]
            for f in section.figures:
                unit = f" ({f.unit})" if f.unit else ""
                lines.append(
                    f"| {f.name} | {f.metric}{unit} | {_number(f.stat.median)} | {_number(f.stat.min)} | "
                    f"{_number(f.stat.max)} | {f.stat.n} | {_verdict(f)} |"
                )
        for note in section.notes:
            lines += ["", note]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, sections: list[Section]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for section in sections:
            for fig in section.figures:
                s = fig.stat
                met = "" if fig.met is None else str(fig.met).lower()
                writer.writerow([section.key, fig.name, fig.metric, s.median, s.min, s.max, s.n, fig.unit,
                                 "" if fig.target is None else f"{fig.target.op}{fig.target.value:g}", met])


def write_report(directory: Path, machine: dict[str, str], sections: list[Section], header: list[str]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, table = directory / "bench.md", directory / "bench.csv"
    md.write_text(render_markdown(machine, sections, header), encoding="utf-8")
    write_csv(table, sections)
    return md, table


def summary_table(sections: list[Section]) -> str:
    """Every targeted figure in one table: the first thing a reader checks."""
    rows = ["| section | measured | metric | median | target |", "| --- | --- | --- | --- | --- |"]
    for section in sections:
        for f in section.figures:
            if f.target is not None:
                rows.append(f"| {section.title} | {f.name} | {f.metric} | {_number(f.stat.median)} | {_verdict(f)} |")
    return "\n".join(rows)
