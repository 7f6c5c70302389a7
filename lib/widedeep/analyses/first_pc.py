"""What a block is made of (Chapter 4): first-PC shares inside and outside it, CKA once the first PC is
removed, and whether seeds agree inside versus outside their blocks.

Layer: analyses (on `structure` and the run caches in `runs`; below book support). Every function
takes analysed models (`structure.BlockAnalysis`) and returns what the chapter shows, asserts and
records; the heavy parts (CKA without the first PC, first-PC similarity, cross-seed CKA) come from
the run store's caches.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from widedeep.analyses import blocks, runs, similarity, verdicts
from widedeep.analyses.structure import BlockAnalysis, batching
from widedeep.profiles import Detector, Profile


def by_data_size(models: list[BlockAnalysis], n_trains: list[int], seed: int) -> dict[str, list[BlockAnalysis]]:
    """The models of one seed grouped by training-set size (most data first), titled 'n_train = 500'."""
    return {f"n_train = {n}": [m for m in models if m.run.config.n_train == n and m.run.config.seed == seed]
            for n in sorted(n_trains, reverse=True)}


def share_summary(models: list[BlockAnalysis]) -> dict[str, str]:
    """The first-PC shares the chapter states: models with a block, mean share inside each block, the median
    share outside blocks (whole networks without one) and the largest share of any layer."""
    rows = [m.summary() for m in models]
    inside = [r["pc1_share_inside"] for r in rows if r["block"] is not None]
    return {"n_blocked": f"{len(inside)} of {len(models)}",
            "pc1_inside": ", ".join(f"{v:.2f}" for v in inside) or "none (no block)",
            "pc1_inside_spread": (f"mean {np.mean(inside):.2f}, sd {np.std(inside, ddof=1):.2f} over {len(inside)} models"
                                  if len(inside) > 1 else "no spread (fewer than two models with a block)"),
            "pc1_outside_all": f"{np.median([r['pc1_share_outside'] for r in rows]):.2f}",
            "pc1_max": f"{max(r['max_pc1_share'] for r in rows):.2f}"}


def focus(models: list[BlockAnalysis]) -> list[BlockAnalysis]:
    """The models with a block or, where none has one, the model with the most dominant first PC."""
    return [m for m in models if m.block is not None] or [
        max(models, key=lambda m: np.nanmax(m.pc1_share[m.stream]))]


def without_first_pc(m: BlockAnalysis, profile: Profile) -> np.ndarray:
    """Stream-layer CKA of a model with every layer's first PC removed on every minibatch (cached)."""
    images = runs.cka_images(m.run, profile.cka.examples)
    return runs.run_cka(m.run, images, remove_top_pcs=1, layers=m.stream_names, **batching(profile.cka))


def pc1_similarity(m: BlockAnalysis, profile: Profile) -> np.ndarray:
    """|<u1_a, u1_b>| between the stream layers' first-PC score vectors, averaged over minibatches (cached)."""
    images = runs.cka_images(m.run, profile.cka.examples)
    return runs.run_pc_stats(m.run, images, layers=m.stream_names, **batching(profile.cka))["pc1_similarity"]


def broken_blocks(models: list[BlockAnalysis], effects: list[dict],
                  detector: Detector) -> tuple[list[BlockAnalysis], list[BlockAnalysis], list[float]]:
    """(models with a block, those whose block no longer passes the CKA conditions once the first PC is removed,
    the change of each block's CKA to the outside layers)."""
    tested = [(m, e) for m, e in zip(models, effects) if m.block is not None]
    broken = [m for m, e in tested if blocks.breaks(e["cka_inside_after"], e["cka_outside_after"],
                                                    detector.threshold, detector.min_contrast,
                                                    e["cka_inside_before"] - e["cka_outside_before"])]
    return [m for m, _ in tested], broken, [e["cka_outside_after"] - e["cka_outside_before"] for _, e in tested]


def cross_seed(seed_models: list[BlockAnalysis], profile: Profile) -> dict[tuple[int, int], np.ndarray]:
    """Stream-layer CKA between every pair of the seed study's models, by (seed, seed), on the same batches."""
    return {(a.run.config.seed, b.run.config.seed): runs.run_cka(
        a.run, runs.cka_images(a.run, profile.cka.examples), run_b=b.run, layers=a.stream_names,
        **batching(profile.cka)) for a, b in itertools.combinations(seed_models, 2)}


def mean_matched(cross: dict[tuple[int, int], np.ndarray]) -> float:
    """Mean CKA of each layer with the same layer of another seed, over all pairs."""
    return float(np.mean([similarity.matched_layer_similarity(c) for c in cross.values()]))


def split_sentence(cross_split: dict[int, tuple[float, float]]) -> str:
    """'seed 0: 0.41 inside its block vs 0.83 outside; ...' (`structure.cross_seed_split`), for the prose."""
    return "; ".join(f"seed {s}: {i:.2f} inside its block vs {o:.2f} outside"
                     for s, (i, o) in cross_split.items()) or "no seed has a block"


ENTRY_KEYS = ("name", "depth", "width", "n_train", "seed", "test_acc", "n_layers", "block", "max_pc1_share",
              "pc1_share_inside", "pc1_share_outside")
EFFECT_KEYS = ("cka_inside_before", "cka_outside_before", "cka_inside_after", "cka_outside_after", "span_from")


def entries(models: list[BlockAnalysis], effects: list[dict], cross_split: dict[int, tuple],
            seed_models: list[BlockAnalysis]) -> list[dict]:
    """One results row per model: its block and shares, the removal effect, and its cross-seed split if any."""
    rows = []
    for m, e in zip(models, effects):
        summary, after = m.summary(), e["block_after_pc1_removal"]
        row = {**{k: summary[k] for k in ENTRY_KEYS}, **{k: e[k] for k in EFFECT_KEYS},
               "block_after_pc1_removal": None if after is None else after.as_dict()}
        if m.run.config.seed in cross_split and m in seed_models:
            row["cross_seed_cka_inside"], row["cross_seed_cka_outside"] = cross_split[m.run.config.seed]
        rows.append(row)
    return rows



def contrast_change(entry: dict) -> float:
    """The block's contrast (inside minus outside CKA, on its own span) after removing the first PC, minus before."""
    return ((entry["cka_inside_after"] - entry["cka_outside_after"])
            - (entry["cka_inside_before"] - entry["cka_outside_before"]))


def first_pc_claim(entries: Sequence[dict], min_pc1: float | None, level: float = 0.95) -> dict:
    """Claim 3 (book/protocol.md, Chapter 4): over models with a block found by CKA alone, the first-PC share
    inside minus outside (> 0) and the contrast's change when the first PC is removed (< 0), each a paired
    effect, and the two combined. Blocks found with a first-PC rule are circular here: not testable."""
    if min_pc1 is not None:
        reason = (f"{verdicts.NOT_TESTABLE}: the blocks were found with a first-PC rule (share >= {min_pc1:g}), "
                  f"so the first PC cannot be tested on them")
        empty = {"verdict": reason, "n": 0}
        return {"dominates": empty, "removal_breaks": empty, "verdict": reason}
    blocked = [e for e in entries if e.get("block") is not None]
    dominates = verdicts.paired_verdict([e["pc1_share_inside"] - e["pc1_share_outside"] for e in blocked], +1, level)
    falls = verdicts.paired_verdict([contrast_change(e) for e in blocked], -1, level)
    return {"dominates": dominates, "removal_breaks": falls,
            "verdict": verdicts.combine(dominates["verdict"], falls["verdict"])}
