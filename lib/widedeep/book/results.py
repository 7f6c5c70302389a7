"""The results schema: what `results/<profile>/<chapter>.json` holds, written, read and checked in one place.

Layer: book support (on `widedeep.store` for atomic writes and provenance, `widedeep.analyses.verdicts`
for the verdict vocabulary and `widedeep.labels` for display labels).

Every results file is one JSON object:

- `schema_version`: `SCHEMA_VERSION` (a file without it, or with another, is refused when read: the
  files of earlier schemas, written before the protocol's run, are gone; `make book` rewrites a chapter);
- `claims` (the chapters that judge a claim of the introduction's table): each claim's verdict object
  (`widedeep.analyses.verdicts.claim`): its verdict, n, k or mean, interval (None where the rule has
  none) and the rule of book/protocol.md it was judged by;
- `provenance`: profile, commit, hardware, wall time and package versions (`store.provenance`), and the
  hash of the protocol the chapter ran under (`protocol`);
- the chapter's own keys, listed in `CHAPTERS` (all required, none unknown);
- models keyed by their run name (`TrainConfig.name()`, the config hash at its end) wherever a
  table of models is kept (`CHAPTERS[...].model_tables`); each entry holds the model's depth, width,
  n_train and seed, which must agree with its name, and its display label is `label(entry)`, never
  stored;
- verdicts (`CHAPTERS[...].verdicts`, dotted paths where `*` is any key) spelled with the constants
  of `widedeep.analyses.verdicts` (`verdicts.head(value)` is one of them).

`write` checks a chapter's payload before anything is written; `read` and `load_all` check what they
read. tests/test_results.py validates every committed results file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from widedeep import protocol, records, store, studies
from widedeep.analyses import verdicts
from widedeep.labels import entry_label
from widedeep.profiles import Profile, repo_root
from widedeep.studies import keyed as keyed_rows
from widedeep.studies import stored, stored_keys

SCHEMA_VERSION = 3
RUN_NAME = re.compile(r"(?P<data>[a-z0-9]+)-(?P<family>resnet|plain|vit)(?P<depth>\d+)x(?P<width>[0-9.e+-]+)"
                      r"-n(?P<n_train>\d+)-s(?P<seed>\d+)-(?P<hash>[0-9a-f]{8})")
PROVENANCE_KEYS = ("profile", "commit", "hardware", "wall_time_s", "versions", "protocol")


class SchemaError(ValueError):
    """A results file (or payload) that does not follow the schema; the message names the file and the key."""


@dataclass(frozen=True)
class ChapterSchema:
    """The keys one chapter's results file holds."""

    keys: tuple[str, ...]                # every top-level key besides schema_version and provenance
    model_tables: tuple[str, ...] = ()   # keys holding {run name: model entry}
    verdicts: tuple[str, ...] = ()       # dotted paths to verdicts ('*': any key)


# Each chapter's schema is its study's result (widedeep.studies): the stored fields, in order.
CHAPTERS = {chapter: ChapterSchema(stored_keys(module.RESULT), module.MODEL_TABLES, module.VERDICTS)
            for chapter, module in studies.chapters().items()}


# ---------------------------------------------------------------------------------------------
# Models and labels
# ---------------------------------------------------------------------------------------------

def label(entry: dict) -> str:
    """A model entry's display label, 'ResNet-110 ×1, n=500, s0' (derived, never stored)."""
    return entry_label(entry)


def keyed(rows: list[dict]) -> dict[str, dict]:
    """Rows that carry their run name under "name" as {run name: the row without it}, in order (`studies.keyed`)."""
    try:
        return keyed_rows(rows)
    except ValueError as error:
        raise SchemaError(str(error)) from None


def _check_model(name: str, entry: Any, where: str) -> None:
    """A model entry: a run name whose coordinates agree with the entry's."""
    match = RUN_NAME.fullmatch(str(name))
    if not match:
        raise SchemaError(f"{where}: {name!r} is not a run name (e.g. fmnist16-resnet20x1-n500-s0-1a2b3c4d); "
                          f"key models by TrainConfig.name()")
    if not isinstance(entry, dict):
        raise SchemaError(f"{where}.{name}: a model entry is an object; got {type(entry).__name__}")
    missing = [k for k in ("depth", "width", "n_train", "seed") if k not in entry]
    if missing:
        raise SchemaError(f"{where}.{name}: lacks {missing}; every model entry holds depth, width, n_train and seed")
    named = (int(match["depth"]), float(match["width"]), int(match["n_train"]), int(match["seed"]))
    if named != (entry["depth"], float(entry["width"]), entry["n_train"], entry["seed"]):
        raise SchemaError(f"{where}.{name}: the entry says depth {entry['depth']}, width {entry['width']}, "
                          f"n_train {entry['n_train']}, seed {entry['seed']}, which is not the model its name names")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _at(document: Any, path: list[str], where: str) -> list[tuple[str, Any]]:
    """(dotted path, value) of every value at `path` ('*' = every key of an object) that exists."""
    if not path:
        return [(where, document)]
    head, rest = path[0], path[1:]
    if not isinstance(document, dict):
        return []
    keys = list(document) if head == "*" else [head] if head in document else []
    return [found for key in keys for found in _at(document[key], rest, f"{where}.{key}")]


def validate(document: dict, chapter: str, source: str = "results") -> None:
    """Raise SchemaError naming `source` and the key if `document` is not a valid results file of `chapter`."""
    if chapter not in CHAPTERS:
        raise SchemaError(f"{source}: no schema for chapter {chapter!r}; chapters: {sorted(CHAPTERS)}")
    if not isinstance(document, dict):
        raise SchemaError(f"{source}: a results file is a JSON object")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{source}: schema_version is {version!r}, this code reads {SCHEMA_VERSION}; rebuild the "
                          f"chapter (make chapter NB={chapter}) to rewrite it")
    provenance = document.get("provenance")
    if not isinstance(provenance, dict) or any(k not in provenance for k in PROVENANCE_KEYS):
        raise SchemaError(f"{source}: provenance must hold {list(PROVENANCE_KEYS)}")
    schema = CHAPTERS[chapter]
    keys = list(schema.keys)
    present = set(document) - {"schema_version", "provenance", "records"}   # records: what status checks
    missing, unknown = sorted(set(keys) - present), sorted(present - set(keys))
    if missing or unknown:
        raise SchemaError(f"{source}: " + "; ".join(
            ([f"lacks {missing}"] if missing else []) + ([f"has unknown keys {unknown}"] if unknown else []))
            + f" (the keys of {chapter} are listed in widedeep.book.results.CHAPTERS)")
    for table in (t for t in schema.model_tables if t in keys):
        models = document[table]
        if not isinstance(models, dict):
            raise SchemaError(f"{source}: {table} must map run names to model entries; got a "
                              f"{type(models).__name__}")
        for name, entry in models.items():
            _check_model(name, entry, f"{source}: {table}")
    for pattern in schema.verdicts:
        for where, value in _at(document, pattern.split("."), source):
            if verdicts.head(value) is None:
                raise SchemaError(f"{where}: {value!r} is not a verdict; spell it with widedeep.analyses.verdicts "
                                  f"({', '.join(verdicts.VERDICTS)})")
    if "claims" in keys:
        _check_claims(document["claims"], f"{source}: claims")


def _check_claims(claims: Any, where: str) -> None:
    """Verdict objects by claim: a spelled verdict, an integer n >= 0, an interval (None or [low, high]), a rule."""
    if not isinstance(claims, dict):
        raise SchemaError(f"{where} must map claim names to verdict objects (widedeep.analyses.verdicts.claim)")
    for name, claim in claims.items():
        at = f"{where}.{name}"
        if not isinstance(claim, dict) or any(k not in claim for k in CLAIM_KEYS):
            raise SchemaError(f"{at}: a verdict object holds {list(CLAIM_KEYS)}; build it with verdicts.claim")
        if verdicts.head(claim["verdict"]) is None:
            raise SchemaError(f"{at}.verdict: {claim['verdict']!r} is not a verdict; spell it with "
                              f"widedeep.analyses.verdicts")
        if not isinstance(claim["n"], int) or isinstance(claim["n"], bool) or claim["n"] < 0:
            raise SchemaError(f"{at}.n: {claim['n']!r} is not a count of units")
        interval = claim["interval"]
        if interval is not None and (not isinstance(interval, list) or len(interval) != 2):
            raise SchemaError(f"{at}.interval: {interval!r} is neither None nor [low, high]")
        if not isinstance(claim["rule"], str) or not claim["rule"]:
            raise SchemaError(f"{at}.rule: name the rule of book/protocol.md the verdict was judged by")


CLAIM_KEYS = ("verdict", "n", "interval", "rule")


def _plain(value: Any) -> Any:
    """`value` as JSON values: NumPy and torch numbers and arrays, tuples and paths converted; NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):   # NumPy arrays/scalars, torch tensors
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


# ---------------------------------------------------------------------------------------------
# Writing and reading
# ---------------------------------------------------------------------------------------------

def write(profile: Profile, chapter: str, wall_time_s: float, **payload) -> Path:
    """Check and write `<profile.results_dir>/<chapter>.json` with schema version and provenance; return its path."""
    provenance = {**store.provenance(profile.name, wall_time_s), "protocol": protocol.protocol_hash(profile)}
    document = {"schema_version": SCHEMA_VERSION, "provenance": provenance, "records": records_read(profile),
                **_plain(payload)}
    path = Path(profile.results_dir) / f"{chapter}.json"
    validate(document, chapter, f"the results of {chapter} (not written)")
    store.write_json(path, document)
    return path


def write_study(profile: Profile, chapter: str, wall_time_s: float, result) -> Path:
    """`write` a study's result (`widedeep.studies`): its stored fields, in order, are the chapter's keys."""
    return write(profile, chapter, wall_time_s, **stored(result))


def records_read(profile: Profile) -> dict[str, str]:
    """The per-run records this process has read or written for `profile` (path under its records folder -> kind),
    so `widedeep status` knows which records a chapter needs."""
    root = records.records_dir(profile)
    return {str(Path(path).relative_to(root)): kind for path, kind in sorted(records.read_log().items())
            if Path(path).is_relative_to(root)}
def run_of(document: dict) -> str:
    """The hash of the protocol a results file was written under."""
    return document["provenance"]["protocol"]


def stale_note(document: dict, profile: Profile) -> str:
    """'' when a results file was written under the protocol `profile` has now, else a sentence saying it was not
    (a chapter built alone against stale files says so on its page)."""
    current, run = protocol.protocol_hash(profile), run_of(document)
    if run == current:
        return ""
    return (f"Note: the results read here were written under protocol {run}, not under this book's protocol now "
            f"({current}): they are another run's; rebuild their chapter to judge them under this one")


def read(path: str | Path) -> dict:
    """A results file, checked against the schema of its chapter (the file's stem)."""
    path = Path(path)
    document = store.read_json(path)
    validate(document, path.stem, str(path))
    return document


def shown_path(path: Path) -> Path:
    """A results path as a page shows it: relative to the repository, or whole when outside it (smoke)."""
    path = Path(path)
    return path.relative_to(repo_root()) if path.is_relative_to(repo_root()) else path


def load_all(results_dir: str | Path) -> dict[str, dict]:
    """Every chapter's results in `results_dir` (checked), keyed by chapter (file stem)."""
    return {path.stem: read(path) for path in sorted(Path(results_dir).glob("*.json")) if path.stem in CHAPTERS}
