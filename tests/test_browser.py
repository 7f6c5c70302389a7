"""The built book in a browser: every page offline, math typeset, widgets drawn, no JavaScript errors.

Builds the book at the smoke profile into a temporary folder (or takes `$WIDEDEEP_BOOK_HTML`, a built
`_build/html`, as `make browser-test` does after `make book`), opens every page from `file://` in
headless Debian Chromium driven by Selenium through the system chromedriver, and checks each page:

(a) nothing is requested from outside the book (no CDN; Chrome's network log);
(b) no raw TeX in the visible text once MathJax has finished, and no MathJax error boxes;
(c) every embedded widget view has rendered, non-empty content;
(d) no SEVERE console entry (uncaught errors, console.error, failed resource loads);
(e) printed values are formatted (no raw Python reprs), finished progress bars take no space, and no
    code line runs past the page's edge.

It also reruns Chapter 1 as `make chapter` does (papermill, then one page with the book's own config)
and checks that page the same way. Screenshots of the introduction and of Chapter 2 go to
`_build/screenshots/`. Without chromium and chromedriver the module is skipped, unless `$WIDEDEEP_REQUIRE_BROWSER` is set (CI), where it fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import browser_checks as checks

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
TOC = REPO / "_toc.yml"
SCREENSHOT_DIR = REPO / "_build" / "screenshots"
SCREENSHOT_PAGES = {"book/intro.html": "intro.png", "book/02_cka.html": "02_cka.png"}
PAGES = checks.toc_pages(TOC) + ["genindex.html", "search.html"]
BUILD_TIMEOUT_S = 3600   # the smoke book at 2 cores takes minutes; a hung kernel should not hang CI
RENDER_TIMEOUT_S = 30    # per page, for MathJax and the widget manager to finish

# Visible text outside code blocks and typeset math (innerText-like: elements not rendered are left out).
VISIBLE_TEXT_JS = """
const skip = 'pre, code, kbd, samp, script, style, noscript, textarea, template, mjx-container, svg';
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const parts = [];
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const el = node.parentElement;
  if (!el || el.closest(skip) || !el.checkVisibility()) continue;
  if (node.data.trim()) parts.push(node.data);
}
return parts.join('\\n');
"""

# What the cells printed and displayed (outputs only, not the code), and the widths of every code and
# printed-output block.
OUTPUT_TEXT_JS = """
return [...document.querySelectorAll('.cell_output')].map(e => e.innerText).join('\\n');
"""
CODE_BLOCKS_JS = """
return [...document.querySelectorAll('.cell_input pre, .cell_output pre')].map(p => ({
  text: p.innerText.split('\\n').reduce((a, b) => b.length > a.length ? b : a, ''),
  scroll_width: p.scrollWidth, client_width: p.clientWidth}));
"""

# Wait for MathJax's first typesetting pass, when the page loads MathJax; reports what it rendered.
MATHJAX_JS = """
const done = arguments[arguments.length - 1];
const timeoutMs = arguments[0];
const report = (status) => done({status: status,
  containers: document.querySelectorAll('mjx-container').length,
  errors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent)});
if (!document.querySelector('script[src*="mathjax"]')) { report('no MathJax on this page'); return; }
const t0 = Date.now();
(function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => report('typeset'), (e) => report('MathJax failed: ' + e));
  } else if (Date.now() - t0 > timeoutMs) {
    report('MathJax did not start within ' + timeoutMs + ' ms');
  } else {
    setTimeout(poll, 50);
  }
})();
"""

# Every widget view the page embeds, once the widget manager has drawn them (or the time is up).
WIDGETS_JS = """
const done = arguments[arguments.length - 1];
const timeoutMs = arguments[0];
const t0 = Date.now();
function report() {
  return [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')].map(s => {
    let id = '?';
    try { id = JSON.parse(s.textContent).model_id; } catch (e) {}
    const area = s.previousElementSibling;
    const isArea = !!area && area.classList.contains('widget-subarea');
    const box = isArea ? area.getBoundingClientRect() : {width: 0, height: 0};
    return {model_id: id,
            rendered: isArea && !!area.querySelector('.jupyter-widgets, .lm-Widget'),
            error: isArea && !!area.querySelector('.jupyter-widgets-error-widget, .widget-error'),
            visible: isArea && area.checkVisibility(),
            hidden: isArea && !!area.firstElementChild &&
                    getComputedStyle(area.firstElementChild).visibility === 'hidden',
            width: box.width, height: box.height,
            text: isArea ? area.innerText.trim().slice(0, 120) : ''};
  });
}
(function poll() {
  const views = report();
  if (views.every(v => v.rendered && (!v.visible || v.height > 0)) || Date.now() - t0 > timeoutMs) {
    document.fonts.ready.then(() => done(views));   // fonts the widgets asked for have loaded or failed
  } else {
    setTimeout(poll, 100);
  }
})();
"""


def _browser_binaries() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def binaries():
    found = _browser_binaries()
    if found is None:
        message = ("headless browser test needs Debian's chromium and chromium-driver "
                   "(`make setup` installs them: apt-get install chromium chromium-driver)")
        if os.environ.get("WIDEDEEP_REQUIRE_BROWSER"):
            pytest.fail(message + "; WIDEDEEP_REQUIRE_BROWSER is set, so this is a failure, not a skip")
        pytest.skip(message)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed in this environment (it is pinned in requirements.txt)")
    return found


@pytest.fixture(scope="module")
def book_html(binaries, tmp_path_factory) -> Path:
    """The built book's HTML folder: `$WIDEDEEP_BOOK_HTML`, or a fresh smoke build in a temporary folder."""
    given = os.environ.get("WIDEDEEP_BOOK_HTML")
    if given:
        html = Path(given).resolve()
        if not (html / PAGES[0]).exists():
            pytest.fail(f"WIDEDEEP_BOOK_HTML={given} has no {PAGES[0]}; build the book first (make book)")
        return html
    out = tmp_path_factory.mktemp("book")   # outside the repository, so pytest never collects it
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(REPO), "--path-output", str(out),
           "--all", "-W", "--keep-going"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "WIDEDEEP_PROFILE": "smoke"}, cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    print(f"smoke book built in {time.perf_counter() - start:.0f} s into {out}")
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def driver(binaries):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = binaries
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile_dir = tempfile.mkdtemp(prefix="widedeep-chromium-")
    for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--hide-scrollbars", "--window-size=1280,900",
                # no name resolves: a page reaching for a CDN fails at once instead of waiting on a closed network
                "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile_dir}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # An explicit chromedriver: Selenium Manager never runs, so nothing is downloaded.
    browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    browser.set_page_load_timeout(120)
    browser.set_script_timeout(RENDER_TIMEOUT_S + 10)
    yield browser
    browser.quit()
    shutil.rmtree(profile_dir, ignore_errors=True)


def _requested_urls(performance_log) -> list[str]:
    urls = []
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def _full_page_screenshot(browser, path: Path, width: int = 1280, max_height: int = 16384) -> None:
    """The whole page, not only the window: the viewport is made as tall as the page, then captured.

    (`captureBeyondViewport` instead paints long pages shifted and half blank in this Chromium.)
    """
    height = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    for _ in range(3):   # a taller viewport can change the layout (100vh sidebars); settle on a height
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": int(min(height, max_height)), "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.3)
        settled = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
        if abs(settled - height) < 2:
            break
        height = settled
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def look(driver, path: Path) -> dict:
    """Open one page from file://, wait for math and widgets, and return what the browser saw."""
    driver.get("about:blank")
    driver.get_log("performance"), driver.get_log("browser")   # drop what earlier pages left
    start = time.perf_counter()
    driver.get(path.as_uri())
    mathjax = driver.execute_async_script(MATHJAX_JS, RENDER_TIMEOUT_S * 1000)
    widgets = driver.execute_async_script(WIDGETS_JS, RENDER_TIMEOUT_S * 1000)
    time.sleep(0.3)   # late font and image loads reach the logs
    return {
        "urls": _requested_urls(driver.get_log("performance")),
        # resources the page points at, fetched or not (preconnect, lazy images)
        "referenced": driver.execute_script(
            "return [...document.querySelectorAll('script[src], link[href], img[src], iframe[src], "
            "source[src], video[src], audio[src], embed[src], object[data]')]"
            ".map(e => e.src || e.href || e.data).filter(u => u && !u.startsWith('javascript:'));"),
        "text": driver.execute_script(VISIBLE_TEXT_JS),
        "outputs": driver.execute_script(OUTPUT_TEXT_JS),
        "code": driver.execute_script(CODE_BLOCKS_JS),
        "mathjax": mathjax,
        "widgets": widgets,
        "console": driver.get_log("browser"),
        "seconds": time.perf_counter() - start,
    }


@pytest.fixture(scope="module")
def visit(book_html, driver):
    """Open a page once, wait for math and widgets, and keep what the browser saw."""
    seen = {}

    def _visit(page: str) -> dict:
        if page in seen:
            return seen[page]
        path = book_html / page
        if not path.exists():
            pytest.fail(f"{page} is in the book but was not built ({path} is missing)")
        seen[page] = look(driver, path)
        if page in SCREENSHOT_PAGES:
            _full_page_screenshot(driver, SCREENSHOT_DIR / SCREENSHOT_PAGES[page])
        return seen[page]

    return _visit


@pytest.fixture(scope="module")
def chapter_page(binaries, tmp_path_factory) -> Path:
    """The page `make chapter` renders, for Chapter 1 at the smoke profile with one model (ResNet-8, seed 7).

    Built in a copy of the book's sources with its own empty run store (`$WIDEDEEP_ROOT`), so the model
    trains every time and its finished progress bar is on the page.
    """
    root = tmp_path_factory.mktemp("chapter-root")
    for name in ("book", "tools"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    (root / "_vendor").symlink_to((REPO / "_vendor").resolve())
    env = {**os.environ, "WIDEDEEP_ROOT": str(root)}
    code = ("from widedeep import cli; cli.main(['chapter', '01_training', '--profile', 'smoke', "
            "'-p', 'widths', '[1]', '-p', 'depths', '[8]', '-p', 'seeds', '[7]'])")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"`widedeep chapter 01_training` failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    page = proc.stdout.rsplit("page: ", 1)[-1].strip().splitlines()[0]
    return Path(page)


def test_the_rerun_chapter_page_renders_offline_with_the_book_s_config(chapter_page, driver):
    seen = look(driver, chapter_page)
    html = chapter_page.parent
    assert not checks.external_requests(seen["urls"], html) and not checks.external_requests(seen["referenced"], html)
    assert any("_static/widedeep.css" in url for url in seen["referenced"]), "the book's own CSS is missing"
    assert any("html-manager/embed-amd.js" in url for url in seen["referenced"]), "the vendored widget manager"
    assert seen["widgets"], "the rerun trained a model: its progress bars should be on the page"
    assert not checks.empty_widgets(seen["widgets"])
    # the grid's bar stays (models 1/1); models train without bars of their own since issue 14's grid
    assert not all(w["hidden"] for w in seen["widgets"]), "the finished grid bar should stay visible"
    assert not checks.hidden_but_tall(seen["widgets"])
    assert not checks.raw_reprs(seen["outputs"]) and not checks.overflowing_code(seen["code"])
    assert not checks.severe_console(seen["console"])


def test_the_toc_pages_were_built(book_html):
    missing = [p for p in checks.book_pages(book_html, TOC) if not (book_html / p).exists()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"
    extra = [p for p in checks.book_pages(book_html, TOC) if p not in PAGES]
    assert not extra, f"built pages this test does not open (add them to PAGES): {extra}"


@pytest.mark.parametrize("page", PAGES)
def test_nothing_is_fetched_from_outside_the_book(page, visit, book_html):
    seen = visit(page)
    fetched = checks.external_requests(seen["urls"], book_html)
    referenced = checks.external_requests(seen["referenced"], book_html)
    assert not fetched and not referenced, (
        f"{page} reaches outside the book:\n  requested: {fetched}\n  referenced by the page: {referenced}")


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_tex_is_visible(page, visit):
    seen = visit(page)
    mathjax = seen["mathjax"]
    problems = checks.raw_tex(seen["text"])
    if mathjax["status"] not in ("typeset", "no MathJax on this page"):
        problems.append(mathjax["status"])
    problems += [f"MathJax error box: {e}" for e in mathjax["errors"]]
    shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
    assert not problems, f"{page} shows TeX source ({mathjax['containers']} formulas typeset):\n  " + \
        "\n  ".join(shown)


@pytest.mark.parametrize("page", PAGES)
def test_every_widget_has_rendered(page, visit):
    # A page without widgets passes; the check matters for every page that embeds one.
    empty = checks.empty_widgets(visit(page)["widgets"])
    assert not empty, f"{page} has widgets that did not render:\n  " + "\n  ".join(empty)


@pytest.mark.parametrize("page", PAGES)
def test_no_javascript_errors(page, visit):
    severe = checks.severe_console(visit(page)["console"])
    assert not severe, f"{page} logs errors in the browser console:\n  " + "\n  ".join(severe)


@pytest.mark.parametrize("page", PAGES)
def test_printed_values_are_formatted(page, visit):
    reprs = checks.raw_reprs(visit(page)["outputs"])
    assert not reprs, f"{page} shows raw Python reprs in its outputs:\n  " + "\n  ".join(reprs[:12])


@pytest.mark.parametrize("page", PAGES)
def test_finished_progress_bars_take_no_space(page, visit):
    tall = checks.hidden_but_tall(visit(page)["widgets"])
    assert not tall, f"{page} keeps empty bands under finished progress bars:\n  " + "\n  ".join(tall)


@pytest.mark.parametrize("page", PAGES)
def test_code_fits_the_page(page, visit):
    wide = checks.overflowing_code(visit(page)["code"])
    assert not wide, f"{page} has code or printed lines that run past the page's edge:\n  " + "\n  ".join(wide)


def test_screenshots_of_the_introduction_and_a_chapter(visit):
    for page, name in SCREENSHOT_PAGES.items():
        visit(page)
        png = SCREENSHOT_DIR / name
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width >= 800 and height >= 600, f"{png} is {width}x{height} px"
