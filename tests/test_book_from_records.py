"""The published cpu book from its committed records alone, as a fresh clone's `make book` builds it.

Every page runs at the cpu profile with an empty run store (conftest.py), so no checkpoint is read, against a
copy of `results/cpu/` (the profile's `results_dir` overridden, which the protocol hash leaves out). Each page
must glue every key its prose names (`jupyter-book build -W` fails on a missing one, and a profile that cuts a
section, as the cpu protocol cuts Chapter 3's short arm, must still say something), and the results it writes
must equal the committed ones apart from provenance (`tools/compare_results.py`).
"""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

import browser_checks
from widedeep import pipeline, profiles, protocol, records

ROOT = profiles.repo_root()
COMMITTED = ROOT / "results" / "cpu"
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.md"))
PAGES = CHAPTERS + ["intro", "protocol"]   # these two read the committed results and the profile themselves
GLUED_IN_PROSE = re.compile(r"\{glue:text\}`([^`:]+)(?::[^`]*)?`")   # `key` or `key:.3f`
# From records no cell needs more than about a minute here (Chapter 3's whole page: 34 s); a page that starts
# training (a record missing) fails at this bound instead of running for hours.
CELL_TIMEOUT_S = 600

spec = importlib.util.spec_from_file_location("compare_results", ROOT / "tools" / "compare_results.py")
compare_results = importlib.util.module_from_spec(spec)   # a tool script, not a package
spec.loader.exec_module(compare_results)


def shown_text(notebook: nbformat.NotebookNode) -> str:
    """Everything a page shows of its outputs as text: printed streams, and plain or Markdown displays (glued
    values included: `{glue:text}` renders their plain text in the prose)."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts += [data.get("text/markdown", "")] if "text/markdown" in data else [data.get("text/plain", "")]
    return "\n".join(parts)


def glued_keys(notebook: nbformat.NotebookNode) -> set[str]:
    """The keys myst-nb's `glue` recorded in an executed notebook's outputs."""
    return {output["metadata"]["scrapbook"]["name"] for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if "scrapbook" in output.get("metadata", {})}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The committed cpu records without the chapters' results (each page must write its own again), and the
    folder the pages are executed into."""
    if not (COMMITTED / "runs").is_dir():
        pytest.fail("results/cpu/runs is missing: the cpu profile's records must be committed (make records)")
    profile = profiles.load_profile("cpu")
    unrecorded = sorted({c.name for runs in pipeline.chapter_runs(profile).values() for c in runs
                         if not records.has_training_record(profile, c)})
    assert not unrecorded, f"runs without a committed training record would be trained here: {unrecorded[:5]}"
    base = tmp_path_factory.mktemp("book-from-records")
    results = base / "results"
    shutil.copytree(COMMITTED, results, ignore=lambda folder, names: [
        n for n in names if Path(folder) == COMMITTED and n.endswith((".json", ".npz"))])
    return results, base / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_each_cpu_page_runs_from_the_committed_records_and_glues_what_its_prose_names(rebuilt, page):
    results, out = rebuilt
    out.mkdir(exist_ok=True)
    source = ROOT / "book" / f"{page}.md"
    notebook_in, notebook_out = out / f"{page}.input.ipynb", out / f"{page}.ipynb"
    jupytext.write(jupytext.read(source), notebook_in)
    parameters = {"profile": "cpu"}
    if page in CHAPTERS:
        parameters["overrides"] = {"results_dir": str(results)}
    papermill.execute_notebook(str(notebook_in), str(notebook_out), kernel_name="python3", cwd=str(source.parent),
                               parameters=parameters, progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
    named = set(GLUED_IN_PROSE.findall(source.read_text(encoding="utf-8")))
    executed = nbformat.read(notebook_out, as_version=4)
    missing = named - glued_keys(executed)
    assert not missing, f"{page}: its prose names keys the cpu run never glues: {sorted(missing)}"
    # the published page's outputs, checked as tests/test_browser.py checks the smoke build's
    reprs = browser_checks.raw_reprs(shown_text(executed))
    assert not reprs, f"{page} shows raw Python reprs at cpu: {reprs[:5]}"


@pytest.mark.slow
def test_the_pages_rebuilt_from_records_write_the_committed_results(rebuilt):
    results, out = rebuilt
    executed = {p.stem for p in out.glob("*.ipynb")} if out.is_dir() else set()
    if not executed >= set(CHAPTERS):
        pytest.skip("runs after the pages' test (pytest keeps file order); here not every page ran")
    # a results file not rewritten is a difference too; 4 ulps: the thread count moves the last bits of a few sums
    differences = compare_results.compare(COMMITTED, results, ulps=4)
    assert not differences, "\n".join(differences[:20])
    assert json.loads((results / "01_training.json").read_text())["provenance"]["protocol"] == protocol.protocol_hash(
        profiles.load_profile("cpu"))
