"""The subspace match of Wang et al. on trained runs: its claim, a layer's invariances, the record kinds.

Layer: analyses (on `widedeep.measures.subspace` and `measures.cka`; below the studies). General tools
that Chapter 7's study (`widedeep.studies.subspace_match`) combines: Wang et al.'s claim judged per
layer with a bootstrap over seeds (`subspace_claim`), linear CKA and the match of one layer against
transformed copies of itself (`invariance_checks`), the evenly spaced layers whose simple matches are
computed (`simple_layers`), and the record kinds of the match beside `runs.run_match_scores` ("match").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from widedeep import protocol, records
from widedeep.analyses import verdicts
from widedeep.analyses.verdicts import fraction_verdict
from widedeep.capture import capture_outputs
from widedeep.measures import cka, subspace

# Chapter 7's record kinds beside `runs.run_match_scores` ("match"): bump one when its numbers would change.
VERSIONS = records.register_kinds({"match_sampled": 1, "match_simple": 1, "match_invariance": 1})


def subspace_verdict(match_scores: Sequence[Sequence[Sequence[float]]], eps: Sequence[float],
                     threshold: float = 0.5) -> tuple[str, int, int]:
    """Wang et al.'s claim per layer: (verdict, layers whose mean score over seed pairs at the largest ε is below
    `threshold`, layers). `match_scores` is (pairs, layers, ε values)."""
    scores = np.asarray(match_scores, dtype=float)
    loosest = scores[:, :, int(np.argmax(eps))].mean(axis=0)
    low = int(np.sum(loosest < threshold))
    return fraction_verdict(low, loosest.size, min_models=1), low, loosest.size  # layers, not models


def subspace_claim(match_scores: Sequence[Sequence[Sequence[float]]], eps: Sequence[float],
                   pairs: Sequence[Sequence[int]], rules: dict | None = None) -> dict:
    """Wang et al.'s claim (book/protocol.md, Chapter 7) as a verdict object: per layer, the maximum-match score at
    the loosest ε averaged over the seed pairs, with a bootstrap interval over seeds (`verdicts.seed_bootstrap`:
    a draw averages the pairs of distinct drawn seeds); a layer matches in fewer than half its neurons when its
    upper bound is below `subspace_half`. Shown when every layer does, partly shown when some do, not shown when
    none do (layers are not independent units: no interval over layers). `match_scores` is (pairs, layers, ε);
    `pairs` the seeds of each pair."""
    rules = rules or protocol.rules()
    scores = np.asarray(match_scores, dtype=float)[:, :, int(np.argmax(eps))]
    by_pair = {frozenset(map(int, pair)): row for pair, row in zip(pairs, scores)}
    seeds = sorted({int(s) for pair in pairs for s in pair})
    rule = "book/protocol.md, Chapter 7: a layer's upper bound (bootstrap over seeds) below subspace_half"
    if len(seeds) < 2:
        return verdicts.claim({"verdict": verdicts.NOT_TESTABLE, "n": scores.shape[1], "interval": None}, rule)

    def per_layer(drawn: list) -> np.ndarray:
        rows = [by_pair[frozenset((a, b))] for i, a in enumerate(drawn) for b in drawn[i + 1:] if a != b]
        return np.mean(rows, axis=0) if rows else np.full(scores.shape[1], np.nan)

    boot = verdicts.seed_bootstrap(seeds, per_layer, rules["pair_bootstrap_resamples"], rules["level"])
    low, high = boot["interval"]
    below = high < rules["subspace_half"]
    verdict = verdicts.fraction_verdict(int(below.sum()), len(below), min_models=1)
    if len(seeds) < rules["min_models"]:   # one pair: the interval is that pair's value, at most suggestive
        verdict = verdicts.suggestive(len(seeds)) if below.all() else verdicts.NOT_SHOWN
    return verdicts.claim({"verdict": verdict,
                           "n": len(below), "k": int(below.sum()), "interval": None,
                           "layer_means": boot["estimate"].tolist(),
                           "layer_intervals": [[float(a), float(b)] for a, b in zip(low, high)],
                           "seeds": len(seeds), "pairs": len(pairs), "undefined_resamples": boot["undefined"],
                           "test": f"bootstrap over {len(seeds)} seeds, per layer"}, rule)


def invariance_checks(model, images, layer: str, energy_kept: float, eps: float) -> dict:
    """Linear CKA and the match at `eps` between one layer's neurons and (a) an invertible mixing of its channels,
    (b) its top directions holding `energy_kept` of the uncentred energy: {"checks", "kept", "channels"}."""
    acts = subspace.neuron_matrix(capture_outputs(model, images, [layer])[0]).astype(np.float64)
    mix = np.random.default_rng(1).standard_normal((acts.shape[0], acts.shape[0])) + 2 * np.eye(acts.shape[0])
    u, s, vt = np.linalg.svd(acts, full_matrices=False)
    energy = np.cumsum(s ** 2) / np.sum(s ** 2)   # the share of the uncentred energy
    kept = int(np.searchsorted(energy, energy_kept)) + 1
    transformed = {"channels mixed by an invertible matrix": mix @ acts,
                   "only the top directions kept": (u[:, :kept] * s[:kept]) @ vt[:kept]}
    checks = {k: [float(cka.feature_space_linear_cka(acts.T, t.T)),
                  float(subspace.LayerPair.from_activations(acts, t).score(eps))] for k, t in transformed.items()}
    return {"checks": checks, "kept": kept, "channels": int(acts.shape[0])}


def simple_layers(scores: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` evenly spaced layers (indices) with a non-empty maximum match (a simple match lives inside it)."""
    candidates = np.flatnonzero(np.asarray(scores) > 0)
    if not candidates.size:
        return np.array([], int)
    return candidates[np.unique(np.linspace(0, len(candidates) - 1, count).round().astype(int))]
