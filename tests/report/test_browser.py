"""The report in a real browser (shiftlab/report/browser.py): headless Chromium at 1400 and 420 px.

Skipped, with the reason printed, where no Chromium is installed (CI); the missing-Chromium error is tested
everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
from synthetic_runs import write_study

from shiftlab.report import browser
from shiftlab.report.browser import BrowserCheckError, ChromiumNotFound, check_report, find_chromium, png_size
from shiftlab.report.build import build_report
from shiftlab.report.options import ReportConfig

PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
         "WjR9awAAAABJRU5ErkJggg==")


def _chromium() -> str:
    try:
        return find_chromium()
    except ChromiumNotFound as e:
        print(f"skipping the browser check: {e}")
        pytest.skip(f"chromium not found ({e})")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    _chromium()
    root = write_study(tmp_path_factory.mktemp("runs") / "sweep", cells=("offline", "online"), seeds=2)
    html, _ = build_report([str(root)], ReportConfig(out=str(tmp_path_factory.mktemp("reports")), name="b"))
    return html


def _page(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "page.html"
    path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>{body}'
                    "</body></html>", encoding="utf-8")
    return path


def test_report_renders_without_problems_at_both_widths(report_html, tmp_path):
    shots = tmp_path / "shots"
    result = check_report(report_html, shots)
    assert result.errors == [] and result.images_failed == [], result.problems
    assert result.images_loaded == report_html.read_text().count("<img") > 0
    assert not result.overflow and result.ok, result.problems
    assert [v.width for v in result.views] == [1400, 420]
    assert {p.name for p in result.screenshots} >= {"report-1400.png", "report-420.png", "report-1400-full.png",
                                                     "report-420-full.png"}
    for path in result.screenshots:
        assert path.parent == shots and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    narrow = next(v for v in result.views if v.width == 420)
    assert png_size(shots / "report-420.png") == (420, 900)
    assert png_size(shots / "report-420-full.png") == (420, min(narrow.page_height, browser.MAX_SHOT_HEIGHT))
    assert len(narrow.images) == result.images_loaded and narrow.page_height > 900


def test_broken_image_fails_the_check(tmp_path):
    _chromium()
    result = check_report(_page(tmp_path, f'<img alt="gone" src="missing.png"><img alt="ok" src="{PIXEL}">'),
                          screenshots=False)
    assert result.images_loaded == 1 and result.images_failed == ['missing.png (alt "gone")']
    assert not result.ok and any("missing.png" in p for p in result.problems)


def test_throwing_script_and_console_error_fail_the_check(tmp_path):
    _chromium()
    page = _page(tmp_path, '<p>x</p><script>\nnotDefinedAnywhere();</script><script>console.error("bad thing")'
                           '</script><script>console.warn("just a warning")</script>')
    result = check_report(page, screenshots=False)
    assert any("notDefinedAnywhere is not defined" in e and f"{page}:2" in e for e in result.errors), result.errors
    assert "console.error: bad thing" in result.errors
    assert result.warnings == ["console.warn: just a warning"] and not result.ok
    assert sum("notDefinedAnywhere" in e for e in result.errors) == 1  # the page's and Chromium's log: once


def test_broken_link_anchor_and_overflow_are_problems(tmp_path):
    _chromium()
    (tmp_path / "there.md").write_text("x")
    page = _page(tmp_path, '<a href="there.md">ok</a><a href="gone.md">no</a><a href="#s9">no</a><a id="s1"></a>'
                           '<a href="#s1">ok</a><a href="https://example.org/x">not checked</a>'
                           '<div style="width:600px">wide</div>')
    result = check_report(page, screenshots=False)
    assert result.errors == ["broken anchor: #s9 (no element with that id)",
                             "broken link: gone.md (no such file beside page.html)"]
    assert result.overflow and [v.overflow for v in result.views] == [False, True]
    assert any("at 420 px" in p and "div" in p for p in result.problems)


def test_check_script_exit_status(tmp_path, capsys):
    assert browser.main([str(tmp_path / "nope.html")]) == 2
    assert f"no such report file: {tmp_path / 'nope.html'}" in capsys.readouterr().err
    _chromium()
    assert browser.main([str(_page(tmp_path, "<p>fine</p>")), "--out", str(tmp_path / "s")]) == 0
    assert "0 error(s)" in capsys.readouterr().out and (tmp_path / "s" / "page-420.png").is_file()
    assert browser.main([str(_page(tmp_path, "<script>throw new Error('x')</script>")), "--no-screenshots"]) == 1
    assert "PROBLEM: Uncaught Error: x" in capsys.readouterr().out


def test_missing_chromium_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(browser.ENV_VAR, raising=False)
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(ChromiumNotFound, match=r"looked for \$SHIFTLAB_CHROMIUM and for chromium, "
                                               r"chromium-browser, google-chrome on PATH.*apt-get install chromium"):
        find_chromium()
    page = _page(tmp_path, "<p>x</p>")
    with pytest.raises(BrowserCheckError, match="Chromium not found"):
        check_report(page)
    assert browser.main([str(page)]) == 2 and "Chromium not found" in capsys.readouterr().err
    monkeypatch.setenv(browser.ENV_VAR, "/no/such/chrome")
    with pytest.raises(ChromiumNotFound, match="SHIFTLAB_CHROMIUM=/no/such/chrome is not an executable"):
        find_chromium()


def test_chromium_that_hangs_or_fails_is_a_clear_error(tmp_path, monkeypatch):
    page = _page(tmp_path, "<p>x</p>")
    fake = tmp_path / "fake-chromium"
    monkeypatch.setenv(browser.ENV_VAR, str(fake))
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(30)'\n")
    fake.chmod(0o755)
    with pytest.raises(BrowserCheckError, match="Chromium did not finish within 1 s"):
        check_report(page, timeout=1)
    fake.write_text("#!/bin/sh\necho 'something broke' >&2\nexit 3\n")
    with pytest.raises(BrowserCheckError, match="(?s)exited with status 3.*something broke"):
        check_report(page)
