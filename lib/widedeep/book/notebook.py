"""What chapter cells use to put computed values into their prose: glue many at once, show, time.

Layer: book support (no widedeep imports). A chapter's sentences quote values with
`{glue:text}` roles; `glue_all` registers a whole mapping of them in one call, so a cell that
computes a result glues it in one line instead of one line per value.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Mapping

WIDTH = 90  # columns of a code or output block on the page (tests/test_browser.py checks they fit)


def glue_all(values: Mapping[str, object]) -> None:
    """Glue every value under its key for the prose (`{glue:text}` roles), displaying nothing."""
    from myst_nb import glue  # the notebook's renderer; the library itself does not need it

    for key, value in values.items():
        glue(key, value, display=False)


def show(*parts: object) -> None:
    """Print like `print`, wrapped at WIDTH columns (continuations indented) so no output runs off the page."""
    text = " ".join(str(p) for p in parts)
    print("\n".join(textwrap.fill(line, WIDTH, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False) or line for line in text.split("\n")))


class Clock:
    """Wall time since the chapter started, for its results' provenance."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.start
