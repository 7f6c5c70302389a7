"""Estimate a profile's records (`widedeep.records`) by kind from the shapes of what each chapter records.

    python tools/records_estimate.py            # the cpu profile (README: the 100 MB budget)
    python tools/records_estimate.py smoke

Uncompressed bytes (float64 and int64 arrays, JSON rows at a measured size per row), so an upper
bound for the npz records, which are compressed. It mirrors the chapters' record calls by hand
(the calls are in `widedeep.analyses` and `widedeep.studies`: `runs`, `structure`, `first_pc`, `pruning`, `errors`,
`matching`, `origins`, `measure_tests`): update it when a chapter records something new.
Per-run records of a smoke build are measured instead by `widedeep status --profile smoke`.
"""

from __future__ import annotations

import collections
import itertools
import math
import sys

from torch import nn

from widedeep import experiments, pipeline, profiles
from widedeep.models import STREAM

FLOAT = 8                 # bytes of a float64 or int64
EPOCH_ENTRY = 280         # bytes of one epoch's entry in metrics.json as written (indented JSON)
LENSES = 10               # Chapter 9's measures (`widedeep.measures.lenses.lenses`)


def layer_counts(config) -> tuple[int, int, int]:
    """(analysable layers, residual-stream layers, ReLU layers) of a config's architecture."""
    layers = config.build_model().layers()
    return (len(layers), sum(layer.kind == STREAM for layer in layers),
            sum(isinstance(layer.module, nn.ReLU) for layer in layers))


def estimate(name: str) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes and files per kind of record of profile `name`."""
    p = profiles.load_profile(name)
    counts: dict[tuple, tuple[int, int, int]] = {}

    def shape(c):
        key = (c.depth, c.width, c.residual)
        if key not in counts:
            counts[key] = layer_counts(c)
        return counts[key]

    size: collections.Counter = collections.Counter()
    files: collections.Counter = collections.Counter()

    def add(kind: str, nbytes: float, n: int = 1) -> None:
        """`n` files of `nbytes` each."""
        size[kind] += int(nbytes * n)
        files[kind] += n

    for c in experiments.required_runs(p):
        add("config.json, metrics.json", 2_000)
        add("config.json, metrics.json", 2_000 + EPOCH_ENTRY * c.total_epochs)
    seed = experiments.seed_study_grid(p)
    snapshots = [c for c in seed for _ in c.snapshot_epochs]
    for c in pipeline.analysable(p) + snapshots:             # Chapters 3-5, 8: every run's block analysis
        L, S, _ = shape(c)
        add("cka: all layers (runs and snapshots)", L * L * FLOAT)
        add("pcs: stream layers", (S * 3 + S * S) * FLOAT)
    base = experiments.cka_base_grid(p)[:-1]
    for a, b in itertools.combinations(base, 2):              # Chapter 2
        add("cka: Chapter 2 pairs", shape(a)[0] * shape(b)[0] * FLOAT)
    wide, deep = experiments.wide_and_deep(p)
    add("cka: Chapter 2 pairs", shape(wide)[0] * shape(deep)[0] * FLOAT)
    for c in experiments.block_models(p):                         # Chapters 4-5
        L, S, _ = shape(c)
        add("cka: Chapter 4 first PC removed", S * S * FLOAT)
        add("probes, deletions (JSON)", S * 150)
        add("probes, deletions (JSON)", S // 2 * 400)
        add("preds: Chapter 5 check", p.deletion.test_examples * FLOAT)
    for a, _ in itertools.combinations(seed, 2):
        add("cka: Chapter 4 seed pairs", shape(a)[1] ** 2 * FLOAT)
    n_test = p.values().get("n_test") or 10_000
    for c in [c for cs in experiments.errors_grid(p).values() for c in cs]:   # Chapter 6
        add("preds: Chapter 6", n_test * FLOAT)
        add("preds: Chapter 6", p.values()["n_val"] * FLOAT)
    eps = len(p.subspace.eps)                                   # Chapter 7
    for a, _ in itertools.combinations(base, 2):               # the base model's seed pairs: match and CKA
        relu = shape(a)[2]
        add("Chapter 7: match, ReLU CKA, sampled, simple, invariance", relu * (eps + 3) * FLOAT)
        add("Chapter 7: match, ReLU CKA, sampled, simple, invariance", relu * relu * FLOAT)
    add("Chapter 7: match, ReLU CKA, sampled, simple, invariance", shape(base[0])[2] * eps * FLOAT + 2_000, 3)
    for a, _ in itertools.permutations(seed, 2):               # each seed with a block against the others
        add("Chapter 7: block match (at most)", shape(a)[2] * (eps + 3) * FLOAT)
    for c in seed + snapshots:                                  # Chapter 8 (snapshots: seeds with a block)
        add("origins_pc1: Chapter 8 (at most)", shape(c)[1] * p.origins.examples * FLOAT)
    add("origins_removal (JSON)", 3_000, len(seed))
    analysed = math.ceil(shape(seed[0])[1] / p.measures.stride)  # Chapter 9
    add("Chapter 9: lens matrices and tests", LENSES * analysed ** 2 * FLOAT,
        len(seed) + len(list(itertools.combinations(seed, 2))))
    add("Chapter 9: lens matrices and tests", 2_000, 4)     # calibration, deletions, outliers, accuracy
    return dict(size), dict(files)


def main(name: str = "cpu") -> None:
    size, files = estimate(name)
    for kind, nbytes in sorted(size.items(), key=lambda kv: -kv[1]):
        print(f"{kind:58s} {files[kind]:4d} files {nbytes / 2 ** 20:7.2f} MiB")
    print(f"{'total (uncompressed)':58s} {sum(files.values()):4d} files {sum(size.values()) / 2 ** 20:7.2f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:])
