"""Full-page screenshots of every page of a built book in headless Chromium, to look at it as a reader does.

    python tools/screenshots.py _build/html _build/screenshots            # every page of the toc
    python tools/screenshots.py runs/chapters/_build/_page/X/html shots   # any folder of HTML pages

Uses Debian's chromium and chromedriver (never a downloaded browser), with every host name
unresolvable so the pages render as they do offline. Waits for MathJax and the widget manager
before each capture. Prints one line per page: the PNG written and the page's height.
"""

from __future__ import annotations

import base64
import shutil
import sys
import tempfile
import time
from pathlib import Path

WAIT_JS = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
(function poll() {
  const mj = window.MathJax;
  const math = !document.querySelector('script[src*="mathjax"]') || (mj && mj.startup && mj.startup.promise);
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const drawn = views.every(s => s.previousElementSibling && s.previousElementSibling.querySelector('.lm-Widget'));
  if ((math && drawn) || Date.now() - t0 > 20000) {
    (mj && mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve()).then(() => done(true));
  } else { setTimeout(poll, 100); }
})();
"""


def browser():
    """A headless Chromium driven through the system chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=1280,900", "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={tempfile.mkdtemp(prefix='widedeep-shots-')}"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


def full_page(driver, path: Path, width: int = 1280, max_height: int = 16384) -> int:
    """Capture the whole page (the viewport made as tall as the page); return its height."""
    height = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    for _ in range(3):
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": int(min(height, max_height)), "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.3)
        settled = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
        if abs(settled - height) < 2:
            break
        height = settled
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return int(height)


def pages(html: Path) -> list[Path]:
    """The book's pages (book/*.html and index) or, for another folder, every .html file in it."""
    found = sorted((html / "book").glob("*.html")) if (html / "book").is_dir() else sorted(html.rglob("*.html"))
    return [p for p in found if p.name not in ("genindex.html", "search.html")]


def main(html: str, out: str) -> None:
    driver = browser()
    driver.set_script_timeout(30)
    try:
        for page in pages(Path(html).resolve()):
            driver.get(page.as_uri())
            driver.execute_async_script(WAIT_JS)
            target = Path(out) / f"{page.stem}.png"
            print(f"{target}: {full_page(driver, target)} px tall")
    finally:
        driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3])
