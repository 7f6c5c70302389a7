"""Compare two results folders value by value: "no number in the book may change".

    python tools/compare_results.py OLD_DIR NEW_DIR          # exit 0 when every value is the same
    python tools/compare_results.py OLD_DIR NEW_DIR --ulps 4 # floats may differ in their last bits (threads)

A rebuild after a refactor must give the same results. Every value of every JSON file is compared
(ints, strings, booleans and floats exactly; NaN equals NaN), and every array of every .npz file.
Provenance, schema_version and the list of records read are ignored, and so are the wall times in
VOLATILE. Paths present on one side only are differences too. Prints one line per difference and a
summary; exit status 1 if there is any.

At the cpu profile (records committed, or the run store filled by `widedeep train --profile cpu`):

    cp -r results/cpu /tmp/cpu-before       # or git show <old commit>:results/cpu/...
    make book                               # rewrites results/cpu/
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


def same(a, b, ulps: int = 0) -> bool:
    """Exact equality (or floats within `ulps` units in the last place), NaN equal to NaN, an int equal to the
    same float (JSON cannot tell them apart)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if ulps and isinstance(a, float) and isinstance(b, float):
        return arrays_same(np.array(a), np.array(b), ulps)   # one rule for numbers and arrays
    return a == b


def compare_json(chapter: str, old: dict, new: dict, ulps: int = 0) -> list[str]:
    """Differences between two documents of one chapter, provenance and schema_version left out."""
    kept = lambda doc: {k: v for k, v in doc.items() if k not in IGNORED and (chapter, k) not in VOLATILE}  # noqa: E731
    left, right = flatten(kept(old)), flatten(kept(new))
    out = [f"{chapter}: {p} only in OLD ({left[p]!r})" for p in left if p not in right]
    out += [f"{chapter}: {p} only in NEW ({right[p]!r})" for p in right if p not in left]
    out += [f"{chapter}: {p}: {left[p]!r} -> {right[p]!r}" for p in left if p in right and not same(left[p], right[p], ulps)]
    return out


def compare_npz(old: Path, new: Path, ulps: int = 0) -> list[str]:
    """Differences between the arrays of two .npz files (exact, or within `ulps`; NaN equal to NaN)."""
    out = []
    with np.load(old) as a, np.load(new) as b:
        for key in sorted(set(a.files) | set(b.files)):
            if key not in b.files or key not in a.files:
                out.append(f"{old.name}: array {key} only in {'OLD' if key in a.files else 'NEW'}")
            elif a[key].shape != b[key].shape or not arrays_same(a[key], b[key], ulps):
                diff = np.nanmax(np.abs(a[key].astype(float) - b[key].astype(float))) if a[key].shape == b[key].shape \
                    else f"shapes {a[key].shape} vs {b[key].shape}"
                out.append(f"{old.name}: array {key} differs (largest difference {diff})")
    return out


def arrays_same(a: np.ndarray, b: np.ndarray, ulps: int = 0) -> bool:
    """Equal arrays of one shape (NaN equal to NaN), floats within `ulps` units in the last place if asked."""
    if not ulps or a.dtype.kind != "f" or b.dtype.kind != "f":
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    both_nan = np.isnan(a) & np.isnan(b)
    close = np.abs(a - b) <= ulps * np.spacing(np.maximum(np.abs(a), np.abs(b)))
    return bool(np.all(both_nan | close))


def compare(old_dir: Path, new_dir: Path, ulps: int = 0) -> list[str]:
    """Every difference between two results folders (floats within `ulps` units in the last place count as the
    same: the number of BLAS threads moves the last bits of some sums)."""
    olds = {p.stem: json.loads(p.read_text()) for p in sorted(old_dir.glob("*.json"))}
    news = {p.stem: json.loads(p.read_text()) for p in sorted(new_dir.glob("*.json"))}
    diffs = [f"{stem}.json only in {'OLD' if stem in olds else 'NEW'}" for stem in sorted(set(olds) ^ set(news))]
    for stem in sorted(set(olds) & set(news)):
        diffs += compare_json(stem, olds[stem], news[stem], ulps)
    for old in sorted(old_dir.glob("*.npz")):
        new = new_dir / old.name
        diffs += compare_npz(old, new, ulps) if new.exists() else [f"{old.name} only in OLD"]
    diffs += [f"{p.name} only in NEW" for p in sorted(new_dir.glob("*.npz")) if not (old_dir / p.name).exists()]
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--ulps", type=int, default=0,
                        help="floats within this many units in the last place count as the same (default 0: exact)")
    args = parser.parse_args(argv)
    if args.ulps < 0:
        parser.error(f"--ulps {args.ulps}: give a count of units in the last place, 0 or more")
    diffs = compare(args.old, args.new, args.ulps)
    for line in diffs:
        print(line)
    files = len(list(args.old.glob("*.json"))) + len(list(args.old.glob("*.npz")))
    within = f"; floats within {args.ulps} ulp(s) count as the same" if args.ulps else ""
    print(f"{len(diffs)} difference(s) over {files} files of {args.old} against {args.new} "
          f"(provenance, schema_version and the records read ignored{within})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
