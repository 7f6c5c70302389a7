"""What chapter cells use to put computed values into their prose: glue many at once, time the chapter.

Layer: book support (no widedeep imports). A chapter's sentences quote values with
`{glue:text}` roles; `glue_all` registers a whole mapping of them in one call, so a cell that
computes a result glues it in one line instead of one line per value.
"""

from __future__ import annotations

import time
from collections.abc import Mapping


def glue_all(values: Mapping[str, object]) -> None:
    """Glue every value under its key for the prose (`{glue:text}` roles), displaying nothing."""
    from myst_nb import glue  # the notebook's renderer; the library itself does not need it

    for key, value in values.items():
        glue(key, value, display=False)


class Clock:
    """Wall time since the chapter started, for its results' provenance."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.start
