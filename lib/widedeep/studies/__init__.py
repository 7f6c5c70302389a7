"""Studies: one module per chapter, `study(records, settings) -> <Chapter>Result`, named as the chapter is.

Layer: studies (above the analyses, whose general tools they combine; below book support, which draws,
tabulates and words their results). A study reads run records only (nothing here trains: the
pipeline does, `widedeep.pipeline.ensure`), receives the settings it uses and nothing else of the
profile, and returns a frozen dataclass: its stored fields, in order, are the chapter's results file
(`widedeep.book.results` takes its schema from them); fields marked `DRAWN` are what the page shows
beside them and are never written. The same records and settings give an equal result, whatever ran
before.

A study module declares the runs its chapter reads (`configs(profile)`: what `pipeline.ensure` trains
for it), reads them (`models(profile)`, through their records), and names its chapter and its schema
in four constants, which is all `widedeep.book.results` needs to check and write the chapter's results
file (`chapters()` finds every study module):

    CHAPTER = "04_pca"            # the page's file stem, and the results file's
    RESULT = PcaResult            # the frozen result dataclass
    MODEL_TABLES = ("models",)    # stored fields holding {run name: model entry}
    VERDICTS = ()                 # dotted paths to verdicts in the stored fields ('*': any key)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import field, fields
from types import ModuleType

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


def section_values(*sections) -> dict:
    """Profile sections as results files keep them: each field under its profile key (PREFIX + name), in order."""
    return {section.PREFIX + f.name: getattr(section, f.name) for section in sections for f in fields(section)}


def keyed(rows: Iterable[dict]) -> dict[str, dict]:
    """Rows that carry their run name under "name" as {run name: the row without it}, in order."""
    table: dict[str, dict] = {}
    for row in rows:
        name = row["name"]
        if name in table:
            raise ValueError(f"run {name} appears twice in one table of models")
        table[name] = {k: v for k, v in row.items() if k != "name"}
    return table


def chapters() -> dict[str, ModuleType]:
    """Every study module of this package by the chapter it serves (its CHAPTER), in chapter order."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "CHAPTER"):
            found[module.CHAPTER] = module
    return dict(sorted(found.items()))
