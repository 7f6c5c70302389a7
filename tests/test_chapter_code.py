"""The chapters only tell the story: under 60 code lines a page on average, no page over 100, no cell over 20,
none wider than 90 columns.

Counted by tools/chapter_code.py (imports, comments and cell options aside); issue 15's targets.
"""

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).parents[1] / "tools" / "chapter_code.py"
spec = importlib.util.spec_from_file_location("chapter_code", TOOL)
chapter_code = sys.modules["chapter_code"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(chapter_code)


def test_the_chapters_stay_thin():
    cells = chapter_code.book_cells()
    assert len({c.chapter for c in cells}) >= 8  # the seven chapters and the introduction
    pages = {}
    for c in cells:
        pages[c.chapter] = pages.get(c.chapter, 0) + c.code_lines
    mean = sum(pages.values()) / len(pages)
    assert mean < chapter_code.MAX_MEAN, f"{mean:.0f} code lines a page (target < {chapter_code.MAX_MEAN}): {pages}"
    heavy = {page: n for page, n in pages.items() if n > chapter_code.MAX_PAGE}
    assert not heavy, f"pages over {chapter_code.MAX_PAGE} code lines: move their steps into the library: {heavy}"
    large = [f"{c.chapter}.md:{c.line} ({c.code_lines} lines)" for c in cells if c.code_lines > chapter_code.MAX_CELL]
    assert not large, f"cells over {chapter_code.MAX_CELL} code lines: move their steps into the library: {large}"
    wide = [f"{c.chapter}.md:{c.line} ({c.widest} columns)" for c in cells if c.widest > chapter_code.MAX_WIDTH]
    assert not wide, f"cells with lines wider than {chapter_code.MAX_WIDTH} columns (they run off the page): {wide}"


def test_the_counter_leaves_out_imports_comments_and_options(tmp_path):
    chapter = tmp_path / "01_x.md"
    chapter.write_text("text\n```{code-cell} ipython3\n:tags: [remove-input]\n\nimport os\nfrom a import (b,\n    c)\n"
                       "# a comment\nx = 1\n\nprint(x)  # trailing\n```\nmore\n```{code-cell} ipython3\ny = 2\n```\n")
    first, second = chapter_code.cells(chapter)
    assert (first.code_lines, second.code_lines) == (2, 1)
    assert first.line == 2 and first.widest == len("print(x)  # trailing")
