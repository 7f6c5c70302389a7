"""Count the code in the book's chapters: lines per cell outside imports and comments, and line widths.

    python tools/chapter_code.py            # a table per chapter, the totals, and the targets' verdict

Issue 15 sets the targets the chapters are held to (checked by tests/test_chapter_code.py): fewer than
450 code lines over its eight pages, kept as the book grows as a mean of under 60 a page (and no page
over 100), no cell over 20, no code line wider than 90 columns (wider lines
run past the rendered page's edge). Counted: every line of a ``{code-cell}`` except blank lines,
comment lines, cell options (``:tags:``) and import statements (a parenthesised import counts as one
import however many lines it spans).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"
MAX_MEAN, MAX_PAGE, MAX_CELL, MAX_WIDTH = 60, 100, 20, 90
FENCE = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)


@dataclass
class Cell:
    """One code cell of a chapter: where it starts, its counted code lines and its widest line."""

    chapter: str
    line: int        # line of the chapter file where the cell's fence opens
    code_lines: int
    widest: int      # columns of the widest line (comments included: they render too)


def _import_lines(source: str) -> set[int]:
    """1-based line numbers (within the cell) that belong to import statements."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def cells(path: Path) -> list[Cell]:
    """The code cells of one chapter file, counted."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        body = match.group(1)
        lines = body.splitlines()
        options = 0
        while options < len(lines) and lines[options].startswith(":"):
            options += 1
        code = "\n".join(lines[options:])
        imports = _import_lines(code)
        counted = sum(1 for number, line in enumerate(code.splitlines(), 1)
                      if line.strip() and not line.strip().startswith("#") and number not in imports)
        widest = max((len(line) for line in lines[options:]), default=0)
        out.append(Cell(path.stem, text[:match.start()].count("\n") + 1, counted, widest))
    return out


def book_cells(book: Path = BOOK) -> list[Cell]:
    """Every code cell of every chapter (the numbered chapters and the introduction)."""
    paths = sorted(book.glob("[0-9][0-9]_*.md")) + [book / "intro.md"]
    return [cell for path in paths if path.exists() for cell in cells(path)]


def main() -> int:
    """Print the counts and say whether the targets hold (exit status 1 if not)."""
    all_cells = book_cells()
    chapters = dict.fromkeys(c.chapter for c in all_cells)
    print(f"{'chapter':<22} {'cells':>5} {'code lines':>10} {'largest cell':>12} {'widest line':>11}")
    for chapter in chapters:
        mine = [c for c in all_cells if c.chapter == chapter]
        print(f"{chapter:<22} {len(mine):>5} {sum(c.code_lines for c in mine):>10} "
              f"{max(c.code_lines for c in mine):>12} {max(c.widest for c in mine):>11}")
    total = sum(c.code_lines for c in all_cells)
    largest = max(all_cells, key=lambda c: c.code_lines)
    widest = max(all_cells, key=lambda c: c.widest)
    mean = total / len(chapters)
    print(f"total {total} code lines, {mean:.0f} a page (target < {MAX_MEAN}); largest cell {largest.code_lines} lines at "
          f"{largest.chapter}.md:{largest.line} (target <= {MAX_CELL}); widest line {widest.widest} columns "
          f"at {widest.chapter}.md:{widest.line} (target <= {MAX_WIDTH})")
    ok = mean < MAX_MEAN and largest.code_lines <= MAX_CELL and widest.widest <= MAX_WIDTH
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
