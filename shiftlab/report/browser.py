"""Check a report in a real browser: render it in headless Chromium at a desktop and a phone width, fail on script
errors, console errors, images that do not load, broken local links and in-page anchors, and a page wider than the
window; write screenshots (the first screen and the whole page at each width).

Needs a Chromium binary (Debian: `apt-get install chromium`) and nothing else: no Python package beyond the
standard library. The report is never modified: a copy with a small recording script at the start of <head> (and a
<base> pointing at the report's folder, so relative files resolve as they would beside it) is loaded from a
temporary folder. One Chromium run loads that copy in an iframe per width and dumps the page's DOM, into which the
script wrote what it saw; further runs take the screenshots.

Why this module is long: a third of it is that recording script (JavaScript, kept here so the check is one file
with no package data); the rest is the Chromium runs, the result types and the entry point of
scripts/check_report.py.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from shiftlab.report.load import ReportError

WIDTHS = (1400, 420)  # desktop, phone
FIRST_SCREEN = {1400: 1000, 420: 900}  # window height of the first-screen screenshot
MAX_SHOT_HEIGHT = 16000  # the whole-page screenshot is cut there
TIMEOUT_S = 120  # per Chromium run
VIRTUAL_TIME_MS = 10000
ENV_VAR = "SHIFTLAB_CHROMIUM"
NAMES = ("chromium", "chromium-browser", "google-chrome")
RESULT_ID = "shiftlab-check"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--mute-audio", "--allow-file-access-from-files",
         "--hide-scrollbars",  # as on a phone: the layout width is the window width
         f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--enable-logging=stderr", "--v=0"]


class BrowserCheckError(ReportError):
    """The check could not run (no Chromium, Chromium failed or timed out, no such report)."""


class ChromiumNotFound(BrowserCheckError):
    pass


@dataclass
class View:
    """What the page looked like at one window width (CSS pixels)."""

    width: int
    page_height: int
    overflow: bool  # the page is wider than the window: it scrolls sideways
    overflowing: list[str] = field(default_factory=list)  # the elements sticking out past the right edge
    first_figure_top: int | None = None  # how far down the first figure starts
    images: list[dict] = field(default_factory=list)  # alt, natural and shown width of each <img>
    wide_tables: list[str] = field(default_factory=list)  # tables that scroll inside their box

    def figure_scales(self) -> list[float]:
        return [i["shown_width"] / i["natural_width"] for i in self.images if i["natural_width"]]


@dataclass
class BrowserCheck:
    html: Path
    errors: list[str]  # script errors, console errors, resources that failed, broken links and anchors
    warnings: list[str]  # console warnings (reported, not failing)
    images_loaded: int
    images_failed: list[str]
    views: list[View]
    screenshots: list[Path]

    @property
    def overflow(self) -> bool:
        return any(v.overflow for v in self.views)

    @property
    def problems(self) -> list[str]:
        out = list(self.errors) + [f"image did not load: {s}" for s in self.images_failed]
        for v in self.views:
            if v.overflow:
                out.append(f"page wider than the window at {v.width} px"
                           + (f": {'; '.join(v.overflowing)}" if v.overflowing else ""))
        return out

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium() -> str:
    """The Chromium binary: $SHIFTLAB_CHROMIUM if set, else the first of NAMES on PATH."""
    env = os.environ.get(ENV_VAR)
    if env:
        found = shutil.which(env)
        if found is None:
            raise ChromiumNotFound(f"{ENV_VAR}={env} is not an executable")
        return found
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFound(f"Chromium not found: looked for ${ENV_VAR} and for {', '.join(NAMES)} on PATH; "
                           f"install it (Debian: apt-get install chromium) or set {ENV_VAR} to its path")


def check_report(html_path: str | Path, out_dir: str | Path | None = None, widths: tuple[int, ...] = WIDTHS,
                 screenshots: bool = True, timeout: float = TIMEOUT_S) -> BrowserCheck:
    """Render `html_path` in headless Chromium at each of `widths`; write `<stem>-<width>.png` (first screen) and
    `<stem>-<width>-full.png` (whole page, cut at MAX_SHOT_HEIGHT px) into `out_dir` (default: `screenshots/`
    beside the report)."""
    src = Path(html_path)
    if not src.is_file():
        raise BrowserCheckError(f"no such report file: {src}")
    src = src.resolve()
    chromium = find_chromium()
    out = Path(out_dir) if out_dir is not None else src.parent / "screenshots"
    with tempfile.TemporaryDirectory(prefix="shiftlab-browser-") as tmp:
        work = Path(tmp)
        copy = work / src.name
        page = src.read_text(encoding="utf-8", errors="replace")
        copy.write_text(instrument(page, src.parent), encoding="utf-8-sig")  # the BOM fixes the encoding
        harness = work / "shiftlab-harness.html"
        harness.write_text(_harness(copy.name, widths), encoding="utf-8")
        dom, stderr = _run(chromium, work, [f"--window-size={max(widths) + 100},1000", "--dump-dom",
                                            harness.as_uri()], timeout)
        result = _parse(dom, widths)
        errors = _errors(result, stderr, copy.as_uri(), src, widths)
        views = [_view(w, result["views"][str(w)]) for w in widths if str(w) in result["views"]]
        shots = _screenshots(chromium, work, copy, src.stem, out, views, timeout) if screenshots else []
    first = result["views"].get(str(max(widths)), {})
    failed = list(dict.fromkeys(s for v in result["views"].values() for s in v.get("failed_images", [])))
    warnings = _dedupe([w for v in result["views"].values() for w in v.get("warnings", [])])
    return BrowserCheck(html=src, errors=errors, warnings=warnings,
                        images_loaded=first.get("images_loaded", 0), images_failed=failed, views=views,
                        screenshots=shots)


def instrument(page: str, base_dir: Path) -> str:
    """`page` with the recording script (and a <base> at `base_dir` unless it has one) at the start of <head>."""
    base = "" if re.search(r"<base\b", page, re.IGNORECASE) else f'<base href="{html.escape(base_dir.as_uri())}/">'
    # on one line, so that the line numbers in error messages are the report's own
    head = base + "<script>" + " ".join(line.strip() for line in _RECORDER.splitlines()) + "</script>"
    for pattern in (r"<head\b[^>]*>", r"<html\b[^>]*>", r"<!doctype[^>]*>"):
        m = re.search(pattern, page, re.IGNORECASE)
        if m:
            inject = head if pattern.startswith("<head") else f"<head>{head}</head>"
            return page[:m.end()] + inject + page[m.end():]
    return head + page


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, read from its header."""
    data = path.read_bytes()[:24]
    if len(data) < 24 or not data.startswith(PNG_MAGIC):
        raise ValueError(f"not a PNG file: {path}")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _run(chromium: str, work: Path, args: list[str], timeout: float) -> tuple[str, str]:
    profile = tempfile.mkdtemp(prefix="profile-", dir=work)  # a fresh profile for every run
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            cwd=work, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the browser and its renderers: the session this call started
        proc.communicate()
        raise BrowserCheckError(f"Chromium did not finish within {timeout:g} s ({chromium} {' '.join(args)})") from None
    if proc.returncode != 0:
        tail = "\n".join(line for line in stderr.splitlines() if "dbus" not in line)[-1500:]
        raise BrowserCheckError(f"Chromium exited with status {proc.returncode}: {chromium} {' '.join(args)}\n{tail}")
    return stdout, stderr


def _parse(dom: str, widths: tuple[int, ...]) -> dict:
    m = re.search(rf'<pre id="{RESULT_ID}"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    if m is None:
        raise BrowserCheckError("the check page did not report back: Chromium's dumped DOM has no result")
    result = json.loads(html.unescape(m.group(1)))
    missing = [str(w) for w in widths if str(w) not in result["views"]]
    if missing:
        result.setdefault("errors", []).append(
            f"the report did not finish loading within {VIRTUAL_TIME_MS / 1000:g} s (virtual time) at width "
            f"{', '.join(missing)} px (its recording script never ran to the end)")
    return result


_CONSOLE = re.compile(r':CONSOLE[:(]\d+\)?\]\s*"(?P<msg>.*)", source: (?P<src>.*?) \((?P<line>\d+)\)\s*$')


def _errors(result: dict, stderr: str, copy_uri: str, src: Path, widths: tuple[int, ...]) -> list[str]:
    """The page's errors: what the recording script saw at every width, the links that point at missing files,
    and uncaught errors Chromium logged that the script missed (e.g. before it ran)."""
    errors = list(result.get("errors", []))
    for w in widths:
        view = result["views"].get(str(w), {})
        errors += view.get("errors", [])
    for href in dict.fromkeys(h for v in result["views"].values() for h in v.get("links", [])):
        if _missing_target(href, src.parent):
            errors.append(f"broken link: {href} (no such file beside {src.name})")
    for line in stderr.splitlines():
        m = _CONSOLE.search(line)
        if m and m["msg"].startswith("Uncaught") and not any(m["msg"] in e for e in errors):
            errors.append(f"{m['msg']} ({m['src']}:{m['line']})")
    return [e.replace(copy_uri, str(src)) for e in _dedupe(errors)]


def _missing_target(href: str, base: Path) -> bool:
    """Whether a relative link (or a file: URL) names a file that does not exist; other URLs are not checked."""
    href = href.strip()
    if href.startswith("file:"):
        path = unquote(re.sub(r"^file://[^/]*", "", href).split("#")[0].split("?")[0])
    elif re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//|#)", href) or not href:
        return False
    else:
        path = unquote(href.split("#")[0].split("?")[0])
    return bool(path) and not (base / path).exists()


def _view(width: int, v: dict) -> View:
    return View(width=width, page_height=int(v["height"]), overflow=bool(v["overflow"]),
                overflowing=v.get("overflowing", []), first_figure_top=v.get("first_figure_top"),
                images=v.get("images", []), wide_tables=v.get("wide_tables", []))


def _screenshots(chromium: str, work: Path, copy: Path, stem: str, out: Path, views: list[View],
                 timeout: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    for v in views:
        first = FIRST_SCREEN.get(v.width, 1000)
        sizes = [(out / f"{stem}-{v.width}.png", first)]
        if v.page_height > first:
            sizes.append((out / f"{stem}-{v.width}-full.png", min(v.page_height, MAX_SHOT_HEIGHT)))
        for path, height in sizes:
            path.unlink(missing_ok=True)
            _run(chromium, work, [f"--window-size={v.width},{height}", f"--screenshot={path}", copy.as_uri()],
                 timeout)
            if not path.is_file() or not path.read_bytes()[:8] == PNG_MAGIC:
                raise BrowserCheckError(f"Chromium wrote no screenshot at {path}")
            shots.append(path)
    return shots


def summarize(r: BrowserCheck) -> list[str]:
    """A few lines for the terminal: images, errors, overflow, layout notes, where the screenshots went."""
    lines = [f"{r.html}: {r.images_loaded} image(s) loaded, {len(r.images_failed)} failed; "
             f"{len(r.errors)} error(s); {'overflows sideways' if r.overflow else 'no horizontal overflow'}"]
    for v in r.views:
        scales = v.figure_scales()
        lines.append(f"  at {v.width} px: page {v.page_height} px tall"
                     + (f", first figure {v.first_figure_top} px down" if v.first_figure_top is not None else "")
                     + (f", figures shown at {min(scales):.0%}–{max(scales):.0%} of their size" if scales else "")
                     + (f", {len(v.wide_tables)} table(s) scroll sideways in their box" if v.wide_tables else ""))
    lines += [f"  warning: {w}" for w in r.warnings]
    lines += [f"  PROBLEM: {p}" for p in r.problems]
    lines += [f"  screenshot: {p}" for p in r.screenshots]
    return lines


def main(argv: list[str]) -> int:
    """`scripts/check_report.py`: 0 when the page has no problem, 1 when it has, 2 when it cannot be checked."""
    parser = argparse.ArgumentParser(prog="python scripts/check_report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("html", help="the report, e.g. reports/<name>/report.html")
    parser.add_argument("--out", default=None, help="folder for the screenshots (default: screenshots/ beside it)")
    parser.add_argument("--no-screenshots", action="store_true", help="check only")
    args = parser.parse_args(argv)
    try:
        result = check_report(args.html, args.out, screenshots=not args.no_screenshots)
    except BrowserCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summarize(result)))
    return 0 if result.ok else 1


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _harness(page: str, widths: tuple[int, ...]) -> str:
    """A page holding the report once per width, in an iframe of that width; it collects what each reports."""
    frames = "".join(f'<iframe name="shiftlab-{w}" src="{html.escape(page)}" '
                     f'style="display:block;width:{w}px;height:{FIRST_SCREEN.get(w, 1000)}px;border:0"></iframe>'
                     for w in widths)
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><script>'
            "var got={views:{}};addEventListener('message',function(e){if(!e.data||!e.data.shiftlab)return;"
            "var r=e.data.shiftlab;got.views[r.name.replace('shiftlab-','')]=r;"
            f"document.getElementById('{RESULT_ID}').textContent=JSON.stringify(got)}});"
            f'</script></head><body><pre id="{RESULT_ID}">{{"views":{{}}}}</pre>{frames}</body></html>')


# Runs first in the report's <head>: records errors from then on; once the page and its images have loaded,
# measures the layout and posts the lot to the harness (or, loaded alone, writes it into a hidden <pre>).
_RECORDER = r"""
(function(){
  var R = {errors: [], warnings: []};
  function clip(s){ s = String(s); return s.length > 160 ? s.slice(0, 160) + '...' : s; }
  window.addEventListener('error', function(e){
    var t = e.target;
    if (t && t !== window && t.tagName) {
      if (t.tagName === 'IMG') return;  /* counted by the image check once the page has loaded */
      R.errors.push('failed to load <' + t.tagName.toLowerCase() + '> ' + clip(t.getAttribute('src') || t.getAttribute('href') || ''));
    } else {
      R.errors.push((/^Uncaught/.test(e.message) ? '' : 'Uncaught ') + e.message + ' (' + e.filename + ':' + e.lineno + ')');
    }
  }, true);
  window.addEventListener('unhandledrejection', function(e){ R.errors.push('Uncaught (in promise) ' + clip(e.reason && e.reason.stack ? String(e.reason) : e.reason)); });
  ['error', 'warn'].forEach(function(level){
    var orig = console[level];
    console[level] = function(){
      var msg = Array.prototype.map.call(arguments, function(a){
        if (typeof a === 'string') return a;
        if (a instanceof Error) return a.message;
        try { return JSON.stringify(a); } catch (x) { return String(a); }
      }).join(' ');
      (level === 'error' ? R.errors : R.warnings).push('console.' + level + ': ' + clip(msg));
      return orig.apply(console, arguments);
    };
  });
  function describe(el){
    var s = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (typeof el.className === 'string' && el.className ? '.' + el.className.trim().split(/\s+/).join('.') : '');
    var text = (el.textContent || el.getAttribute('alt') || '').replace(/\s+/g, ' ').trim();
    return s + (text ? ' "' + clip(text).slice(0, 40) + '"' : '');
  }
  function clipped(el){  /* inside a box that scrolls or clips sideways */
    for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== 'visible') return true;
    }
    return false;
  }
  function measure(){
    var de = document.documentElement, cw = de.clientWidth, r = {};
    r.height = Math.max(de.scrollHeight, document.body ? document.body.scrollHeight : 0);
    r.overflow = de.scrollWidth > cw;
    r.overflowing = [];
    if (r.overflow) {
      var all = document.body.getElementsByTagName('*'), out = new Set(), wide = new Set();
      for (var i = 0; i < all.length; i++) {
        var el = all[i];
        if (el.id === 'shiftlab-check' || clipped(el)) continue;
        var b = el.getBoundingClientRect();
        if (b.right > cw + 1) out.add(el);
        else if (b.left + el.scrollWidth > cw + 1 && getComputedStyle(el).overflowX === 'visible') wide.add(el);
      }
      out.forEach(function(el){  /* the outermost boxes past the edge */
        if (!out.has(el.parentElement)) r.overflowing.push(describe(el) + ' (' + Math.round(el.getBoundingClientRect().width) + ' px wide)');
      });
      wide.forEach(function(el){  /* the innermost boxes whose text runs past the edge */
        for (var c = el.firstElementChild; c; c = c.nextElementSibling) if (wide.has(c) || out.has(c)) return;
        r.overflowing.push(describe(el) + ' (its text runs ' + Math.round(el.getBoundingClientRect().left + el.scrollWidth - cw) + ' px past the edge)');
      });
      r.overflowing = r.overflowing.slice(0, 12);
    }
    var fig = document.querySelector('figure, img');
    r.first_figure_top = fig ? Math.round(fig.getBoundingClientRect().top + window.scrollY) : null;
    r.images = []; r.failed_images = []; r.images_loaded = 0;
    Array.prototype.forEach.call(document.images, function(img){
      var ok = img.complete && img.naturalWidth > 0;
      if (ok) r.images_loaded++; else r.failed_images.push(clip(img.getAttribute('src') || '(no src)') + (img.alt ? ' (alt "' + img.alt + '")' : ''));
      r.images.push({alt: img.alt, natural_width: img.naturalWidth, natural_height: img.naturalHeight, shown_width: Math.round(img.getBoundingClientRect().width)});
    });
    r.wide_tables = [];
    Array.prototype.forEach.call(document.querySelectorAll('table'), function(t, i){
      var box = t.parentElement;
      if (box && box.scrollWidth > box.clientWidth + 1) r.wide_tables.push('table ' + (i + 1) + ' (' + describe(t.previousElementSibling || t).slice(0, 60) + '): ' + t.scrollWidth + ' px in a ' + box.clientWidth + ' px box');
    });
    r.links = [];
    Array.prototype.forEach.call(document.querySelectorAll('a[href]'), function(a){
      var h = a.getAttribute('href');
      if (h.charAt(0) === '#') {
        if (h.length > 1 && !document.getElementById(decodeURIComponent(h.slice(1))) && !document.getElementsByName(decodeURIComponent(h.slice(1))).length) R.errors.push('broken anchor: ' + h + ' (no element with that id)');
      } else r.links.push(h);
    });
    r.errors = R.errors; r.warnings = R.warnings; r.name = window.name;
    return r;
  }
  function finish(){
    var r = measure();
    if (window.parent !== window) { window.parent.postMessage({shiftlab: r}, '*'); return; }
    var pre = document.createElement('pre');
    pre.id = 'shiftlab-check'; pre.style.display = 'none'; pre.textContent = JSON.stringify({views: {alone: r}});
    document.body.appendChild(pre);
  }
  window.addEventListener('load', function(){
    var pending = Array.prototype.filter.call(document.images, function(i){ return !i.complete; }).map(function(i){
      return new Promise(function(res){ i.addEventListener('load', res); i.addEventListener('error', res); });
    });
    Promise.race([Promise.all(pending), new Promise(function(res){ setTimeout(res, 5000); })]).then(function(){
      setTimeout(finish, 250);  /* late errors (unhandled rejections, first timers) are recorded too */
    });
  });
})();
"""
