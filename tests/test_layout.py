"""The package's layout is its data flow: folders by role, imports one way, each folder saying what it is for."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shiftlab"

# config → data → labels → models → stages → training → run dir → report, with the pure pieces below them all.
# A module may import its own folder and any folder of a lower rank; `report` reads run directories only.
RANK = {
    "cell": -1, "launch": -1,  # the study's cell from the config's parts: pure, below config (whose `cell` resolver names run dirs)
    "config": 0, "metrics": 0, "validation": 1, "functional": 1, "world": 1,
    "data": 2, "labels": 3, "models": 4, "stages": 5, "rundir": 5,
    "training": 6, "experiment": 7, "cli": 8, "bench": 8,
}
REPORT_MAY_IMPORT = {"report", "metrics", "config", "cell", "launch"}
MAX_LINES = 300
LONG_MODULE_NOTE = "Why this module is long:"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _folder(path: Path) -> str:
    """The top-level unit a module belongs to: its folder under shiftlab/, or its own name for a top-level module."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_folders(path: Path) -> set[str]:
    """shiftlab folders `path` imports, at module level or inside functions (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "shiftlab" else [f"shiftlab.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "shiftlab" and len(parts) > 1 and parts[1] != "__version__":
                found.add(parts[1])
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    folder = _folder(path)
    if folder == "__init__":
        return
    imported = _imported_folders(path) - {folder}
    if folder == "report":
        wrong = imported - REPORT_MAY_IMPORT
    else:
        assert folder in RANK, f"{folder} has no place in the layer order: add it to RANK"
        wrong = {f for f in imported if RANK.get(f, 99) >= RANK[folder]}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({folder}, rank {RANK.get(folder)}) imports {sorted(wrong)}"


def test_every_folder_says_what_it_is_for():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 8, f"{init.relative_to(PACKAGE)} needs a docstring saying what the folder is for"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_long_modules_say_why(path):
    text = path.read_text(encoding="utf-8")
    if len(text.splitlines()) > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert LONG_MODULE_NOTE in doc, f"{path.relative_to(PACKAGE)} has {len(text.splitlines())} lines and no '{LONG_MODULE_NOTE}'"


def test_tests_mirror_the_package():
    """Each folder of the package has a folder of tests of the same name."""
    tests = Path(__file__).resolve().parent
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert not {f for f in folders if not (tests / f).is_dir()}, "tests/<folder>/ missing for some package folders"


def test_the_readme_layout_tree_matches_the_folders():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    tree = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"([a-z_]+\.py)\b", tree))
    summarised = {"report", "bench", "world"}  # listed as folders, their modules in their own __init__ docstrings
    modules = {p.name for p in _modules() if p.name != "__init__.py" and _folder(p) not in summarised}
    scripts = {p.name for p in (PACKAGE.parent / "scripts").glob("*.py")}
    assert not modules - named, f"modules missing from README's Layout: {sorted(modules - named)}"
    assert not named - modules - scripts, f"README's Layout names modules that do not exist: {sorted(named - modules - scripts)}"
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert all(f"{f}/" in tree for f in folders), "every package folder appears in README's Layout"
