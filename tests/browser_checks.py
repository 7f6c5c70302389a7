"""What the browser test of the built book looks for, as plain functions (unit-tested without a browser).

`tests/test_browser.py` drives headless Chromium over every page and hands what it saw (the URLs the page
requested, its visible text, its console log) to these checks; `tests/test_browser_checks.py` plants
problems in made-up inputs to show that each check catches them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

# Schemes that never leave the page: inline data, object URLs, blank or srcdoc frames.
_INLINE_SCHEMES = {"data", "blob", "about", "javascript"}

# Raw TeX in a page's visible text (code blocks and typeset math are left out before this is run).
RAW_TEX_PATTERNS = {
    # a whole delimited formula is one match when its closing delimiter is near, else the delimiter alone
    "display math $$...$$": re.compile(r"\$\$[^$]{0,500}?\$\$|\$\$"),
    "\\begin{...} environment": re.compile(r"\\begin\s*\{"),
    "math in \\( \\) or \\[ \\]": re.compile(r"\\\((?s:.){0,300}?\\\)|\\\[(?s:.){0,500}?\\\]|\\[()\[\]]"),
    "TeX command": re.compile(r"\\[A-Za-z]{2,}"),
    # $...$ with TeX inside (a backslash, ^, _ or a brace); "costs $5 and $10" is not math.
    "inline math $...$": re.compile(r"(?<![\\$])\$(?=\S)[^$\n]{0,200}?[\\^_{}][^$\n]{0,200}?(?<=\S)\$(?!\$)"),
}


def toc_pages(toc_file: str | Path) -> list[str]:
    """The HTML pages (relative to the HTML root) of every file in a Jupyter Book `_toc.yml`, root first."""
    toc = yaml.safe_load(Path(toc_file).read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key))
    return [f"{Path(f).with_suffix('')}.html" for f in files]


def book_pages(html_dir: str | Path, toc_file: str | Path) -> list[str]:
    """The pages to check: the toc's pages, then every other page of the build except redirects.

    Assets (`_static/`, `_images/`, `_sources/`) and executed notebooks (`jupyter_execute/`) are not pages.
    """
    html_dir = Path(html_dir)
    pages = toc_pages(toc_file)
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if any(part.startswith("_") or part == "jupyter_execute" for part in rel.parts[:-1]):
            continue
        if rel.as_posix() not in pages and not is_redirect(path):
            pages.append(rel.as_posix())
    return pages


def is_redirect(page: str | Path) -> bool:
    """A page that only forwards to another (Jupyter Book's root `index.html`)."""
    head = Path(page).read_text(encoding="utf-8", errors="replace")[:2000].lower()
    return "http-equiv=\"refresh\"" in head and "<body" not in head


def external_requests(urls, html_dir: str | Path, local_origins=()) -> list[str]:
    """The URLs, among those a page requested, that lie outside the book.

    Allowed: `file://` URLs inside `html_dir` (no host), URLs starting with one of `local_origins` (such as
    `http://127.0.0.1:8000/`), and inline schemes (`data:`, `blob:`, `about:`). Everything else is
    returned once each, in order: http(s) to any other host, a protocol-relative URL that became
    `file://cdn.../...`, a local file outside the build, browser-internal pages.
    """
    root = Path(html_dir).resolve()
    offenders = []
    for url in urls:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in _INLINE_SCHEMES:
            continue
        if any(url.startswith(origin) for origin in local_origins):
            continue
        if scheme == "file" and parts.netloc in ("", "localhost"):
            path = Path(unquote(parts.path)).resolve()
            if path == root or root in path.parents:
                continue
        if url not in offenders:
            offenders.append(url)
    return offenders


def raw_tex(text: str, context: int = 30) -> list[str]:
    """Places where `text` shows TeX source, in reading order: 'kind: ...snippet...'.

    A match overlapping an earlier one (`\\frac` inside a `$...$` already reported) is not repeated.
    """
    matches = sorted((m.start(), -m.end(), kind) for kind, pattern in RAW_TEX_PATTERNS.items()
                     for m in pattern.finditer(text))
    found, covered = [], -1
    for start, neg_end, kind in matches:
        if start < covered:
            continue
        covered = -neg_end
        snippet = text[max(0, start - context):covered + context].replace("\n", " ")
        found.append(f"{kind}: ...{snippet}...")
    return found


def severe_console(entries) -> list[str]:
    """Console entries at level SEVERE (uncaught JavaScript errors, console.error, failed resource loads)."""
    return [e.get("message", str(e)) for e in entries if e.get("level") == "SEVERE"]


def empty_widgets(widgets) -> list[str]:
    """Widget views that did not render, from the browser's per-view report.

    Each report is a dict: `model_id`, `rendered` (a `.widget-subarea` holding a widget element was
    inserted for the view), `error` (the manager rendered an error view), `visible` (the area is not
    inside a collapsed or hidden element) and `height`/`width` of the area in pixels. A visible area of
    zero size is empty too.
    """
    empty = []
    for w in widgets:
        what = f"model {w.get('model_id', '?')}"
        if not w.get("rendered"):
            empty.append(f"{what}: nothing rendered")
        elif w.get("error"):
            empty.append(f"{what}: the widget manager shows an error: {w.get('text', '')!r}")
        elif w.get("visible") and (w.get("height", 0) <= 0 or w.get("width", 0) <= 0):
            empty.append(f"{what}: rendered with zero size")
    return empty


# Python reprs where a reader expects formatted numbers: a float printed with all its digits
# (0.5994999999999999), NumPy scalar reprs, array reprs and dict reprs with quoted keys.
RAW_REPR_PATTERNS = {
    "unformatted float": re.compile(r"(?<![\w.])\d+\.\d{13,}(?![\d])"),
    "NumPy scalar repr": re.compile(r"\bnp\.(?:float|int|bool_?)\d*\("),
    "array repr": re.compile(r"\barray\(\["),
    "dict repr": re.compile(r"\{'[^'\n]{1,60}': "),
}


def raw_reprs(text: str, context: int = 30) -> list[str]:
    """Places where a page's text (outputs included, code cells left out) shows a raw Python repr."""
    found = []
    for kind, pattern in RAW_REPR_PATTERNS.items():
        for m in pattern.finditer(text):
            found.append(f"{kind}: ...{text[max(0, m.start() - context):m.end() + context]}...".replace("\n", " "))
    return found


def hidden_but_tall(widgets, max_height: float = 1.0) -> list[str]:
    """Widget views whose content is hidden (a finished tqdm bar) yet whose area still takes up height.

    Each report has `hidden` (the view's root element has visibility: hidden) and the area's `height`.
    """
    return [f"model {w.get('model_id', '?')}: hidden content still {w.get('height', 0):.0f} px tall"
            for w in widgets if w.get("hidden") and w.get("height", 0) > max_height]


def overflowing_code(blocks, tolerance: float = 1.0) -> list[str]:
    """Code blocks wider than their box (a reader must scroll sideways): reports with scroll/client widths."""
    return [f"{b.get('text', '')[:80]!r}: {b['scroll_width']:.0f} px of code in {b['client_width']:.0f} px"
            for b in blocks if b["scroll_width"] > b["client_width"] + tolerance]
