"""Compare two results folders value by value, across the change of results schema (issue 15).

    python tools/compare_results.py OLD_DIR NEW_DIR          # exit 0 when every value is the same
    python tools/compare_results.py OLD_DIR NEW_DIR --migrate OUT_DIR   # also write OLD in the new schema

"No number in the book may change": a rebuild after a refactor must give the same results. Files of
the schema before `schema_version` existed (v0) are first mapped to schema 1 by the explicit table
below (`migrate`); then every value of every JSON file is compared (ints, strings, booleans and
floats exactly; NaN equals NaN), and every array of every .npz file. A NEW folder still in schema 0
is mapped the same way, so two old builds compare too. Provenance, schema_version and the list of
records read are ignored, and so are the wall times in VOLATILE. Paths present on one side only are differences too. Prints one line per difference and
a summary; exit status 1 if there is any.

At the cpu profile (run store filled, e.g. by `widedeep train --profile cpu`):

    git show <old commit>:results/cpu/... or keep a copy:  cp -r results/cpu /tmp/cpu-before
    make book                                             # rewrites results/cpu/
    python tools/compare_results.py /tmp/cpu-before results/cpu
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

# `records` lists the per-run record files a chapter read (for `widedeep status`): where numbers came from, not
# numbers, so a change of how they are recorded is no difference.
IGNORED = ("provenance", "schema_version", "records")
# Wall times of one build, kept beside the numbers (like provenance, they change with every run).
VOLATILE = {("05_pruning", "timing_s")}

# The mapping from schema 0 to schema 1 (issue 15): each entry is (chapter, path, change).
# - "keyed": a list of model rows with a "name" becomes {name: row without it};
# - "labels->names": model labels ("ResNet-56 ×1, n=500, s0"), as dict keys or as values, become run names;
# - ("rename", new): the key moves to `new` (same parent), its value unchanged;
# - "block_by_owner" (Chapter 7): the one seed's `block` summary and the top-level `block_pairs` become
#   {run name of the seed: {its summary, "pairs": block_pairs}} ({} without a block), since every seed
#   with a block is now asked (schema 1), as Chapter 4 does.
SCHEMA_0_TO_1 = [
    ("01_training", "models", "keyed"),
    ("02_cka", "models", ("rename", "run_roles")),
    ("03_block_structure", "models", "keyed"),
    ("03_block_structure", "seed_study", "keyed"),
    ("04_pca", "models", "keyed"),
    ("04_pca", "blocks_broken", "labels->names"),
    ("05_pruning", "models", "keyed"),
    ("05_pruning", "position_control", "labels->names"),
    ("05_pruning", "position_control.*.controls", "labels->names"),
    ("05_pruning", "probe_position_control", "labels->names"),
    ("05_pruning", "probe_position_control.*", "labels->names"),
    ("07_subspace_match", "", "block_by_owner"),
]


def old_label(row: dict) -> str:
    """The display label schema 0 used for a model row (and as keys)."""
    return f"ResNet-{row['depth']} ×{row['width']:g}, n={row['n_train']}, s{row['seed']}"


def label_map(documents: dict[str, dict]) -> dict[str, str]:
    """Model label -> run name, from every model row of every schema-0 file (residual models only)."""
    names = {}
    for document in documents.values():
        for key in ("models", "seed_study"):
            rows = document.get(key)
            if isinstance(rows, list):
                for row in rows:
                    if isinstance(row, dict) and "name" in row and row.get("residual", True):
                        names[old_label(row)] = row["name"]
    return names


def _block_by_owner(document: dict, names: dict[str, str]) -> dict:
    block, pairs = document.get("block"), document.get("block_pairs", [])
    out = {k: v for k, v in document.items() if k != "block_pairs"}
    if block is None:
        out["block"] = {}
    elif "label" in block:
        owner = _name(block["label"], names)
        out["block"] = {owner: {**{k: v for k, v in block.items() if k != "label"}, "pairs": pairs}}
    return out


def _apply(node, path: list[str], change, names: dict[str, str]):
    """`node` with `change` applied at `path` ('*' = every key)."""
    if change == "block_by_owner":
        return _block_by_owner(node, names)
    if not path:
        return _change(node, change, names)
    head, rest = path[0], path[1:]
    if not isinstance(node, dict):
        return node
    if head == "*":
        return {k: _apply(v, rest, change, names) for k, v in node.items()}
    if head not in node:
        return node
    if not rest and isinstance(change, tuple) and change[0] == "rename":
        return {(change[1] if k == head else k): v for k, v in node.items()}
    return {k: (_apply(v, rest, change, names) if k == head else v) for k, v in node.items()}


def _name(label, names: dict[str, str]):
    if isinstance(label, str) and label in names:
        return names[label]
    return label


def _change(value, change, names: dict[str, str]):
    if change == "keyed":
        if isinstance(value, list):
            return {row["name"]: {k: v for k, v in row.items() if k != "name"} for row in value}
        return value
    if change == "labels->names":
        if isinstance(value, dict):
            return {_name(k, names): v for k, v in value.items()}
        if isinstance(value, list):
            return [_name(v, names) for v in value]
        return _name(value, names)
    return value


def migrate(chapter: str, document: dict, names: dict[str, str]) -> dict:
    """A results document in schema 1 (schema-0 documents mapped by SCHEMA_0_TO_1; others unchanged)."""
    if "schema_version" in document:
        return document
    for table_chapter, path, change in SCHEMA_0_TO_1:
        if table_chapter == chapter:
            document = _apply(document, path.split(".") if path else [], change, names)
    return {"schema_version": 1, **document}


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Every leaf of a JSON value by its dotted path (list items by index)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out or {prefix: []}
    return {prefix: value}


def same(a, b) -> bool:
    """Exact equality, NaN equal to NaN, an int equal to the same float (JSON cannot tell them apart)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def compare_json(chapter: str, old: dict, new: dict) -> list[str]:
    """Differences between two schema-1 documents of one chapter, provenance and schema_version left out."""
    kept = lambda doc: {k: v for k, v in doc.items() if k not in IGNORED and (chapter, k) not in VOLATILE}  # noqa: E731
    left, right = flatten(kept(old)), flatten(kept(new))
    out = [f"{chapter}: {p} only in OLD ({left[p]!r})" for p in left if p not in right]
    out += [f"{chapter}: {p} only in NEW ({right[p]!r})" for p in right if p not in left]
    out += [f"{chapter}: {p}: {left[p]!r} -> {right[p]!r}" for p in left if p in right and not same(left[p], right[p])]
    return out


def compare_npz(old: Path, new: Path) -> list[str]:
    """Differences between the arrays of two .npz files (exact; NaN equal to NaN)."""
    out = []
    with np.load(old) as a, np.load(new) as b:
        for key in sorted(set(a.files) | set(b.files)):
            if key not in b.files or key not in a.files:
                out.append(f"{old.name}: array {key} only in {'OLD' if key in a.files else 'NEW'}")
            elif a[key].shape != b[key].shape or not np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"):
                diff = np.nanmax(np.abs(a[key].astype(float) - b[key].astype(float))) if a[key].shape == b[key].shape \
                    else f"shapes {a[key].shape} vs {b[key].shape}"
                out.append(f"{old.name}: array {key} differs (largest difference {diff})")
    return out


def compare(old_dir: Path, new_dir: Path, migrate_to: Path | None = None) -> list[str]:
    """Every difference between two results folders (old files migrated to schema 1 first)."""
    olds = {p.stem: json.loads(p.read_text()) for p in sorted(old_dir.glob("*.json"))}
    news = {p.stem: json.loads(p.read_text()) for p in sorted(new_dir.glob("*.json"))}
    names = {**label_map(news), **label_map(olds)}
    diffs = [f"{stem}.json only in {'OLD' if stem in olds else 'NEW'}" for stem in sorted(set(olds) ^ set(news))]
    for stem in sorted(set(olds) & set(news)):
        migrated = migrate(stem, olds[stem], names)
        if migrate_to is not None:
            migrate_to.mkdir(parents=True, exist_ok=True)
            (migrate_to / f"{stem}.json").write_text(json.dumps(migrated, indent=1, ensure_ascii=True) + "\n")
        diffs += compare_json(stem, migrated, migrate(stem, news[stem], names))
    for old in sorted(old_dir.glob("*.npz")):
        new = new_dir / old.name
        diffs += compare_npz(old, new) if new.exists() else [f"{old.name} only in OLD"]
    diffs += [f"{p.name} only in NEW" for p in sorted(new_dir.glob("*.npz")) if not (old_dir / p.name).exists()]
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--migrate", type=Path, default=None, help="write OLD's JSON files, in schema 1, here")
    args = parser.parse_args(argv)
    diffs = compare(args.old, args.new, args.migrate)
    for line in diffs:
        print(line)
    files = len(list(args.old.glob("*.json"))) + len(list(args.old.glob("*.npz")))
    print(f"{len(diffs)} difference(s) over {files} files of {args.old} against {args.new} "
          f"(provenance and schema_version ignored; schema-0 keys mapped by SCHEMA_0_TO_1)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
