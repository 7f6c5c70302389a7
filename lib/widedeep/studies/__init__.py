"""Studies: one module per chapter, `study(records, settings) -> <Chapter>Result`, named as the chapter is.

Layer: studies (above the analyses, whose general tools they combine; below book support, which draws,
tabulates and words their results). A study reads run records only (nothing here trains: the
pipeline does, `widedeep.pipeline.ensure`), receives the settings it uses and nothing else of the
profile, and returns a frozen dataclass: its stored fields, in order, are the chapter's results file
(`widedeep.book.results` takes its schema from them); fields marked `DRAWN` are what the page shows
beside them and are never written. The same records and settings give an equal result, whatever ran
before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import field, fields

DRAWN = {"stored": False}   # metadata of a result field the page draws but the results file does not hold


def drawn(**kwargs):
    """A result field the page shows but the results file does not hold (kept out of `stored`)."""
    return field(metadata=DRAWN, **kwargs)


def stored_keys(result_type: type) -> tuple[str, ...]:
    """The results file's keys of a chapter, in order: the result dataclass's stored fields."""
    return tuple(f.name for f in fields(result_type) if f.metadata.get("stored", True))


def stored(result) -> dict:
    """The payload a chapter's results file holds: the stored fields of its result, in order."""
    return {name: getattr(result, name) for name in stored_keys(type(result))}


def keyed(rows: Iterable[dict]) -> dict[str, dict]:
    """Rows that carry their run name under "name" as {run name: the row without it}, in order."""
    table: dict[str, dict] = {}
    for row in rows:
        name = row["name"]
        if name in table:
            raise ValueError(f"run {name} appears twice in one table of models")
        table[name] = {k: v for k, v in row.items() if k != "name"}
    return table
