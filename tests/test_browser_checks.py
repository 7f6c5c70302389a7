"""The browser test's checks catch planted problems (no browser needed)."""

from pathlib import Path

import browser_checks as checks

REPO = Path(__file__).resolve().parents[1]


def test_raw_tex_is_caught_in_visible_text():
    assert checks.raw_tex(r"The ratio $\frac{a}{b}$ is small.")
    assert checks.raw_tex(r"where $x_i$ is the input")
    assert checks.raw_tex("$$ K = X X^T $$")
    assert checks.raw_tex(r"\begin{aligned} a &= b \end{aligned}")
    assert checks.raw_tex(r"CKA is \operatorname{HSIC} normalised")
    assert checks.raw_tex(r"shown as \(e^{i\pi}+1=0\) when MathJax is missing")


def test_prose_with_dollars_and_underscores_is_not_tex():
    assert checks.raw_tex("It costs $5 and $10, n_train = 500, width x2, {a, b}.") == []
    assert checks.raw_tex("Accuracy 91.2% (seed 0); see results/cpu/01_training.json") == []


def test_raw_tex_report_names_the_kind_and_shows_the_text():
    (hit, *_) = checks.raw_tex(r"before $\frac{a}{b}$ after")
    assert hit.startswith("inline math $...$: ") and r"$\frac{a}{b}$" in hit  # the whole formula, not its command
    (hit, *_) = checks.raw_tex(r"plain \alpha here")
    assert hit.startswith("TeX command: ") and r"\alpha" in hit


def test_cdn_and_foreign_urls_are_flagged_and_book_files_are_not(tmp_path):
    html = tmp_path / "_build" / "html"
    html.mkdir(parents=True)
    book_file = (html / "_static" / "mathjax" / "tex-mml-chtml.js").as_uri()
    urls = [
        (html / "book" / "intro.html").as_uri(),
        book_file,
        "data:image/svg+xml;base64,AAAA",
        "blob:file:///0f1e",
        "about:blank",
        "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",
        "http://unpkg.com/thebe@0.8.2/lib/index.js",
        "file://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js",   # //cdn... on file://
        (tmp_path / "elsewhere.js").as_uri(),   # a local file outside the build
        "http://127.0.0.1:8000/book/intro.html",
        "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",   # reported once
    ]
    flagged = checks.external_requests(urls, html)
    assert flagged == [
        "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",
        "http://unpkg.com/thebe@0.8.2/lib/index.js",
        "file://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js",
        (tmp_path / "elsewhere.js").as_uri(),
        "http://127.0.0.1:8000/book/intro.html",
    ]
    assert checks.external_requests(urls[-2:-1], html, local_origins=["http://127.0.0.1:8000/"]) == []
    assert checks.external_requests([book_file, (html / "a b.html").as_uri()], html) == []


def test_severe_console_entries_are_errors_and_the_rest_is_not():
    log = [{"level": "INFO", "message": "[PST]: Changed to auto mode"},
           {"level": "WARNING", "message": "strict mode: use allowUnionTypes"},
           {"level": "SEVERE", "message": "intro.html 61:12 Uncaught SyntaxError: Identifier 'X' has already been declared"},
           {"level": "SEVERE", "message": "file:///x.woff2 - Failed to load resource: net::ERR_FILE_NOT_FOUND"}]
    assert len(checks.severe_console(log)) == 2


def test_widgets_that_did_not_render_are_flagged():
    ok = {"model_id": "a", "rendered": True, "error": False, "visible": True, "width": 600, "height": 32}
    hidden = {**ok, "model_id": "h", "visible": False, "height": 0}   # inside a collapsed output: fine
    assert checks.empty_widgets([ok, hidden]) == []
    assert checks.empty_widgets([]) == []
    bad = [{**ok, "model_id": "b", "rendered": False}, {**ok, "model_id": "c", "height": 0},
           {**ok, "model_id": "d", "error": True, "text": "Error creating widget"}]
    assert [w.split(":")[0] for w in checks.empty_widgets(bad)] == ["model b", "model c", "model d"]


def test_pages_come_from_the_toc_root_first(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n  - caption: A\n    chapters:\n"
                   "      - file: book/01_a\n        sections:\n          - file: book/01_b.md\n")
    assert checks.toc_pages(toc) == ["book/intro.html", "book/01_a.html", "book/01_b.html"]
    assert checks.toc_pages(REPO / "_toc.yml")[0] == "book/intro.html"


def test_book_pages_skip_assets_and_redirects(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_a\n")
    html = tmp_path / "html"
    for page in ["book/intro.html", "book/01_a.html", "search.html", "_static/x.html", "jupyter_execute/y.html"]:
        (html / page).parent.mkdir(parents=True, exist_ok=True)
        (html / page).write_text("<html><body>x</body></html>")
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    assert checks.book_pages(html, toc) == ["book/intro.html", "book/01_a.html", "search.html"]


def test_raw_reprs_are_found_and_formatted_numbers_pass():
    bad = "{'acc_a': 0.5994999999999999, 'acc_b': 0.5705} and np.float64(0.009) and array([1, 2])"
    kinds = [found.split(":")[0] for found in checks.raw_reprs(bad)]
    assert kinds == ["unformatted float", "NumPy scalar repr", "array repr", "dict repr"]
    good = "test accuracy 0.600 ± 0.004; one batch of 500: 0.361218857250; p = 3.2e-05; {glue:text}`x`"
    assert checks.raw_reprs(good) == []


def test_hidden_but_tall_widgets_and_overflowing_code():
    widgets = [{"model_id": "a", "hidden": True, "height": 88}, {"model_id": "b", "hidden": True, "height": 0},
               {"model_id": "c", "hidden": False, "height": 32}]
    assert checks.hidden_but_tall(widgets) == ["model a: hidden content still 88 px tall"]
    blocks = [{"text": "x = 1", "scroll_width": 300, "client_width": 700},
              {"text": "y = " + "1" * 200, "scroll_width": 1400, "client_width": 700}]
    assert len(checks.overflowing_code(blocks)) == 1 and "1400 px of code in 700 px" in checks.overflowing_code(blocks)[0]
