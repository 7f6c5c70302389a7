"""Does block incidence follow capacity and data size? The paper's two trends, checked on detector output.

Layer: analyses (plain functions over rows of detector output; below book support).

The paper's claims, as testable statements over a grid of trained models (each row has `depth`,
`width`, `n_train` and `has_block`):

- **capacity**: at a fixed training-set size, along the width series (fixed depth) or the depth series
  (fixed width), a block appears in the larger models and not in the smaller ones: sorted by capacity,
  presence goes from absent to present and never back;
- **data**: for a fixed architecture, a block appears when the training set shrinks: sorted from the
  most to the least data, presence goes from absent to present and never back.

A trend is *shown* when at least one sequence changes from absent to present and none goes the other
way; it is *contradicted* when some sequence goes from present to absent; otherwise (no block
anywhere, or blocks everywhere) the grid *cannot show* it. The chapters print these verdicts next to
the heatmaps instead of typing a conclusion into the prose.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from widedeep.analyses.verdicts import CONTRADICTED, NOT_SHOWN, SHOWN
from widedeep.labels import architecture_label



def presence_pattern(flags: Sequence[bool]) -> str:
    """'rises' (absent then present, never back), 'falls' (a present followed by an absent), 'flat' (constant)."""
    flags = [bool(f) for f in flags]
    if len(set(flags)) <= 1:
        return "flat"
    first_present = flags.index(True)
    return "rises" if all(flags[first_present:]) else "falls"


def _verdict(patterns: Iterable[str]) -> str:
    """Combine per-sequence patterns into shown / contradicted / not shown."""
    patterns = list(patterns)
    if "falls" in patterns:
        return CONTRADICTED
    return SHOWN if "rises" in patterns else NOT_SHOWN


def _capacity_key(row: dict) -> tuple[float, float]:
    return (row["depth"] * row["width"] ** 2, row["depth"])


def capacity_sequences(rows: list[dict]) -> dict[str, list[dict]]:
    """The grid's capacity series at each n_train: same depth (a width series) or same width (a depth series)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[f"n_train {row['n_train']}, depth {row['depth']}"].append(row)
        groups[f"n_train {row['n_train']}, width {row['width']:g}"].append(row)
    return {name: sorted(group, key=_capacity_key) for name, group in groups.items() if len(group) > 1}


def data_sequences(rows: list[dict]) -> dict[str, list[dict]]:
    """For each architecture with several n_train: its rows from the most to the least data."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[architecture_label(row["depth"], row["width"])].append(row)
    return {name: sorted(group, key=lambda r: -r["n_train"]) for name, group in groups.items() if len(group) > 1}


def _check_rows(rows: list[dict]) -> None:
    """One row per (depth, width, n_train): several seeds must be summarised first."""
    keys = [(r["depth"], r["width"], r["n_train"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("rows repeat an architecture and n_train (several seeds?); pass one row each, e.g. seed 0, "
                         "or set has_block to 'any seed has a block'")


def capacity_trend(rows: list[dict]) -> tuple[str, dict[str, str]]:
    """The capacity trend's verdict and the pattern of each capacity series."""
    _check_rows(rows)
    patterns = {name: presence_pattern([r["has_block"] for r in seq]) for name, seq in capacity_sequences(rows).items()}
    return _verdict(patterns.values()), patterns


def data_trend(rows: list[dict]) -> tuple[str, dict[str, str]]:
    """The data-size trend's verdict and the pattern of each architecture across n_train."""
    _check_rows(rows)
    patterns = {name: presence_pattern([r["has_block"] for r in seq]) for name, seq in data_sequences(rows).items()}
    return _verdict(patterns.values()), patterns


def incidence_sentence(rows: list[dict]) -> str:
    """Which models have a block, per n_train, as one sentence for the prose."""
    parts = []
    for n_train in sorted({r["n_train"] for r in rows}, reverse=True):
        at = sorted((r for r in rows if r["n_train"] == n_train), key=_capacity_key)
        blocked = [architecture_label(r["depth"], r["width"]) for r in at if r["has_block"]]
        parts.append(f"at n_train = {n_train}: " + (f"{', '.join(blocked)} ({len(blocked)} of {len(at)} models)"
                                                   if blocked else f"none of {len(at)} models"))
    return "; ".join(parts)


def grid_verdicts(rows: list[dict]) -> tuple[dict[str, str], dict[str, str]]:
    """Both trends judged on the book's blocks and on the CKA-only ones, and the incidence sentences.

    `rows` are one seed's model summaries (keys depth, width, n_train, block, block_cka_only). Returns
    ({"capacity", "data", "capacity_cka_only", "data_cka_only"}: verdicts, {"incidence", "incidence_cka_only"}).
    """
    with_pc1 = [{**r, "has_block": r["block"] is not None} for r in rows]
    cka_only = [{**r, "has_block": r["block_cka_only"] is not None} for r in rows]
    verdicts = {"capacity": capacity_trend(with_pc1)[0], "data": data_trend(with_pc1)[0],
                "capacity_cka_only": capacity_trend(cka_only)[0], "data_cka_only": data_trend(cka_only)[0]}
    return verdicts, {"incidence": incidence_sentence(with_pc1), "incidence_cka_only": incidence_sentence(cka_only)}
