"""Let `pytest --nbval-lax` collect the book's jupytext text notebooks and run them at the smoke profile."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
from nbval.plugin import IPyNbFile

BOOK_DIR = Path(__file__).parent / "book"

# Chapters read their profile from here when no parameter is injected; tests always use smoke.
os.environ.setdefault("WIDEDEEP_PROFILE", "smoke")
# Tests never read a machine's leftovers: a fresh, empty run store for this session (chapters, Ray workers
# and subprocesses inherit it), removed at exit. Never a user's own store, even when $WIDEDEEP_RUNS names one.
os.environ["WIDEDEEP_RUNS"] = tempfile.mkdtemp(prefix="widedeep-test-runs-")
atexit.register(shutil.rmtree, os.environ["WIDEDEEP_RUNS"], ignore_errors=True)


def _is_text_notebook(path: Path) -> bool:
    if path.suffix not in {".md", ".py"} or BOOK_DIR not in path.parents:
        return False
    head = path.read_text(encoding="utf-8")[:2000]
    return "jupytext:" in head and "kernelspec:" in head


class TextNotebook(IPyNbFile):
    """An nbval notebook item read through jupytext (nbval itself only reads .ipynb)."""

    def collect(self):
        with mock.patch.object(nbformat, "read", lambda fp, as_version=4, **kw: jupytext.read(fp)):
            yield from super().collect()


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if (option.nbval or option.nbval_lax) and _is_text_notebook(Path(file_path)):
        return TextNotebook.from_parent(parent, path=file_path)
