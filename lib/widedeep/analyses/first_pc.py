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

from widedeep import protocol
from widedeep.analyses import blocks, heatmaps, runs, verdicts
from widedeep.analyses.structure import BlockAnalysis, batching
from widedeep.profiles import CKA, Detector


def by_data_size(models: list[BlockAnalysis], n_trains: list[int], seed: int) -> dict[str, list[BlockAnalysis]]:
    """The models of one seed grouped by training-set size (most data first), titled 'n_train = 500'."""
    return {f"n_train = {n}": [m for m in models if m.run.config.n_train == n and m.run.config.seed == seed]
            for n in sorted(n_trains, reverse=True)}



def focus(models: list[BlockAnalysis]) -> list[BlockAnalysis]:
    """The models with a block or, where none has one, the model with the most dominant first PC."""
    return [m for m in models if m.block is not None] or [
        max(models, key=lambda m: np.nanmax(m.pc1_share[m.stream]))]


def without_first_pc(m: BlockAnalysis, settings: CKA) -> np.ndarray:
    """Stream-layer CKA of a model with every layer's first PC removed on every minibatch (cached)."""
    images = runs.cka_images(m.run, settings.examples)
    return runs.run_cka(m.run, images, remove_top_pcs=1, layers=m.stream_names, **batching(settings))


def pc1_similarity(m: BlockAnalysis, settings: CKA) -> np.ndarray:
    """|<u1_a, u1_b>| between the stream layers' first-PC score vectors, averaged over minibatches (cached)."""
    images = runs.cka_images(m.run, settings.examples)
    return runs.run_pc_stats(m.run, images, layers=m.stream_names, **batching(settings))["pc1_similarity"]


def broken_blocks(models: list[BlockAnalysis], effects: list[dict],
                  detector: Detector) -> tuple[list[BlockAnalysis], list[BlockAnalysis], list[float]]:
    """(models with a block, those whose block no longer passes the CKA conditions once the first PC is removed,
    the change of each block's CKA to the outside layers)."""
    tested = [(m, e) for m, e in zip(models, effects) if m.block is not None]
    broken = [m for m, e in tested if blocks.breaks(e["cka_inside_after"], e["cka_outside_after"],
                                                    detector.threshold, detector.min_contrast,
                                                    e["cka_inside_before"] - e["cka_outside_before"])]
    return [m for m, _ in tested], broken, [e["cka_outside_after"] - e["cka_outside_before"] for _, e in tested]


def cross_seed(seed_models: list[BlockAnalysis], settings: CKA) -> dict[tuple[int, int], np.ndarray]:
    """Stream-layer CKA between every pair of the seed study's models, by (seed, seed), on the same batches."""
    return {(a.run.config.seed, b.run.config.seed): runs.run_cka(
        a.run, runs.cka_images(a.run, settings.examples), run_b=b.run, layers=a.stream_names,
        **batching(settings)) for a, b in itertools.combinations(seed_models, 2)}


def mean_matched(cross: dict[tuple[int, int], np.ndarray]) -> float:
    """Mean CKA of each layer with the same layer of another seed, over all pairs."""
    return float(np.mean([heatmaps.matched_layer_similarity(c) for c in cross.values()]))



ENTRY_KEYS = ("name", "depth", "width", "n_train", "seed", "test_acc", "train_acc", "n_layers", "block",
              "max_pc1_share", "pc1_share_inside", "pc1_share_outside")
EFFECT_KEYS = ("cka_inside_before", "cka_outside_before", "cka_inside_after", "cka_outside_after", "span_from")


def entries(models: list[BlockAnalysis], effects: list[dict], cross_pairs: dict[int, dict],
            seed_models: list[BlockAnalysis], eligibility: dict[str, dict]) -> list[dict]:
    """One results row per model: its block and shares, the removal effect, its role and whether a rule leaves
    it out (`structure.eligibility`), and, for a blocked seed of the seed study, its per-pair cross-seed CKA
    inside and outside its block (`structure.cross_seed_pairs`) with their means."""
    rows = []
    for m, e in zip(models, effects):
        summary, after = m.summary(), e["block_after_pc1_removal"]
        row = {**{k: summary[k] for k in ENTRY_KEYS}, **{k: e[k] for k in EFFECT_KEYS},
               "block_after_pc1_removal": None if after is None else after.as_dict(),
               **eligibility[m.run.config.name()]}
        if m.run.config.seed in cross_pairs and m in seed_models:
            pairs = cross_pairs[m.run.config.seed]
            row["cross_seed_pairs"] = {str(t): list(v) for t, v in sorted(pairs.items())}
            row["cross_seed_cka_inside"] = float(np.mean([v[0] for v in pairs.values()]))
            row["cross_seed_cka_outside"] = float(np.mean([v[1] for v in pairs.values()]))
        rows.append(row)
    return rows


def contrast_change(entry: dict) -> float:
    """The block's contrast (inside minus outside CKA, on its own span) after removing the first PC, minus before."""
    return ((entry["cka_inside_after"] - entry["cka_outside_after"])
            - (entry["cka_inside_before"] - entry["cka_outside_before"]))


def first_pc_claim(entries: Sequence[dict], min_pc1: float | None, level: float = 0.95, min_models: int = 3) -> dict:
    """Claim 3 (book/protocol.md, Chapter 4): over models with a block found by CKA alone, the first-PC share
    inside minus outside (> 0) and the contrast's change when the first PC is removed (< 0), each a paired
    effect, and the two combined. Blocks found with a first-PC rule are circular here: not testable."""
    if min_pc1 is not None:
        reason = (f"{verdicts.NOT_TESTABLE}: the blocks were found with a first-PC rule (share >= {min_pc1:g}), "
                  f"so the first PC cannot be tested on them")
        empty = {"verdict": reason, "n": 0}
        return {"dominates": empty, "removal_breaks": empty, "verdict": reason}
    blocked = [e for e in entries if e.get("block") is not None]
    dominates = verdicts.paired_verdict([e["pc1_share_inside"] - e["pc1_share_outside"] for e in blocked], +1, level,
                                        min_models)
    falls = verdicts.paired_verdict([contrast_change(e) for e in blocked], -1, level, min_models)
    return {"dominates": dominates, "removal_breaks": falls,
            "verdict": verdicts.combine(dominates["verdict"], falls["verdict"])}


def seeds_unique_claim(entries: Sequence[dict], resamples: int, level: float = 0.95, min_models: int = 3) -> dict:
    """Claim 4 (book/protocol.md, Chapter 4): per blocked seed of the seed study, the mean over the other seeds of
    same-layer CKA inside its block minus outside it (< 0), judged by a bootstrap over seeds
    (`verdicts.pair_bootstrap_verdict`) on the per-pair values of the entries (`cross_seed_pairs`)."""
    owners = [e for e in entries if e.get("cross_seed_pairs") and not e.get("left_out")]
    values = {(e["seed"], int(t)): v[0] - v[1] for e in owners for t, v in e["cross_seed_pairs"].items()}
    seeds = sorted({s for pair in values for s in pair})
    if len(seeds) < 2:
        return {"verdict": verdicts.NOT_TESTABLE, "n": 0, "mean": None, "interval": None}
    return verdicts.pair_bootstrap_verdict(values, [e["seed"] for e in owners], seeds, -1, resamples, level,
                                           min_models)


def claims(entries: Sequence[dict], min_pc1: float | None, rules: dict | None = None) -> dict[str, dict]:
    """Chapter 4's verdict objects (`verdicts.claim`) under the protocol's rules: claim 3's two halves and their
    combination, and claim 4, on the eligible models (a grid model below the interpolation rule is left out and
    counted; the short arm is described, not judged)."""
    rules = rules or protocol.rules()
    level, least = rules["level"], rules["min_models"]
    eligible = [e for e in entries if not e.get("left_out")]
    below = [e for e in entries if e.get("left_out") and e.get("role") == "grid" and e.get("block") is not None]
    left = {"left_out": len(below), "left_out_why": "grid models with a block below the interpolation rule"}
    first = first_pc_claim(eligible, min_pc1, level, least)
    section = "book/protocol.md, Chapter 4"
    return {"first_pc_dominates": verdicts.claim(first["dominates"], f"{section}: first-PC share inside minus "
                                                 f"outside the block, paired effect > 0", **left),
            "first_pc_removal_breaks": verdicts.claim(first["removal_breaks"], f"{section}: block contrast after "
                                                      f"minus before removing the first PC, paired effect < 0", **left),
            "first_pc": verdicts.claim({"verdict": first["verdict"], "n": first["dominates"]["n"], "interval": None},
                                       f"{section}: shown when both halves are, partly shown when one is", **left),
            "seeds_unique": verdicts.claim(seeds_unique_claim(eligible, rules["pair_bootstrap_resamples"], level,
                                                              least),
                                           f"{section}: cross-seed CKA inside minus outside each blocked seed's "
                                           f"block, bootstrap over seeds, < 0")}
