"""Per-run analyses kept as records: CKA, first-PC statistics, predictions, subspace matches, probes, deletions.

Layer: analyses (drives `widedeep.measures` and `widedeep.analyses.probes` / `deletion` on trained
runs; above measures, below book support). Every function returns the run's record
`<records>/<kind>-<hash>.{npz,json}` (`widedeep.records`) under a key that holds everything the
numbers depend on, and computes it from the model only on a miss, so the book builds from committed
records without a checkpoint. `VERSIONS` holds each kind's version: bump it when a change to the
code would change that kind's numbers, and older records become stale (recomputed).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from widedeep import records
from widedeep.analyses import deletion
from widedeep.analyses import probes as probe_module
from widedeep.data import ImageData, shuffled_passes
from widedeep.measures.cka import model_cka
from widedeep.measures.pca import model_pc_stats
from widedeep.measures.subspace import LayerPair, model_neuron_moments
from widedeep.profiles import Deletion, Probes
from widedeep.train import predict


# Each record kind's version: bump it when the code that computes the kind would give other numbers.
VERSIONS = records.register_kinds({"cka": 1, "pcs": 1, "preds": 1, "match": 1, "probes": 1, "deletions": 2})


def cka_images(run, count: int) -> ImageData:
    """The first `count` test images of the run's data: every chapter compares representations on these."""
    return run.config.splits().test.subset(torch.arange(count))


def examples_key(data) -> str:
    """A checksum of the images: a record's key names its examples by content, not by position."""
    return hashlib.sha256(data.images.cpu().numpy().tobytes()).hexdigest()[:16]


def _record(run, kind: str, data, compute, **settings) -> dict[str, np.ndarray]:
    """The run's `.npz` record of `kind` on `data` under `settings` (computed on a miss)."""
    return run.record(kind, VERSIONS[kind], {"examples": examples_key(data), **settings}, compute)


def _layers_key(layers: list[str] | None) -> dict:
    """The cache-key entry for a layer subset (none for all layers, so older cache files stay valid)."""
    return {} if layers is None else {"layers": list(layers)}


def _analysis_batches(run, data, batch_size: int, passes: int, seed: int):
    """The seeded, unaugmented CKA batch order over `data`, on the device of `run`'s model."""
    device = next(run.model.parameters()).device
    return shuffled_passes(data.to(device), batch_size, passes, seed)


def run_cka(run_a, data, batch_size: int, passes: int, run_b=None, remove_top_pcs: int = 0,
            seed: int = 0, gram_dtype: str = "float32", layers: list[str] | None = None) -> np.ndarray:
    """Minibatch CKA heatmap of a trained run with itself or with `run_b`, cached in run_a's folder.

    Grams are float32 with TF32 off by default (within ~1e-8 of float64 on ResNet-56, ~3x faster on a
    CPU); every HSIC sum is float64. The cache key holds everything the numbers depend on: both runs'
    names, the examples (a checksum of the images), batch size, passes, seed, PC removal, Gram
    precision and, when given, the `layers` (module names, the same in both models; default: every
    analysable layer).
    """
    def compute():
        loader = _analysis_batches(run_a, data, batch_size, passes, seed)
        matrix, _, _ = model_cka(run_a.model, loader, None if run_b is None else run_b.model, layers=layers,
                                 remove_top_pcs=remove_top_pcs, gram_dtype=getattr(torch, gram_dtype))
        return {"cka": matrix}

    return _record(run_a, "cka", data, compute, b=run_b.config.name() if run_b is not None else None,
                   batch=batch_size, passes=passes, seed=seed, pcs=remove_top_pcs, gram=gram_dtype,
                   **_layers_key(layers))["cka"]


def run_pc_stats(run, data, batch_size: int, passes: int, seed: int = 0, gram_dtype: str = "float32",
                 top_k: int = 3, layers: list[str] | None = None) -> dict[str, np.ndarray]:
    """First-PC statistics of a trained run's layers, {"shares" (L, top_k), "pc1_similarity" (L, L)}, cached.

    The same batches as `run_cka` (Nguyen et al.'s first-PC analysis, see `widedeep.pca`). The cache
    key holds the examples (a checksum of the images), batch size, passes, seed, Gram precision, top_k
    and, when given, the `layers` (module names; default: every analysable layer).
    """
    def compute():
        loader = _analysis_batches(run, data, batch_size, passes, seed)
        stats = model_pc_stats(run.model, loader, layers, gram_dtype=getattr(torch, gram_dtype), top_k=top_k)
        return {"shares": stats["shares"], "pc1_similarity": stats["pc1_similarity"]}

    return _record(run, "pcs", data, compute, batch=batch_size, passes=passes, seed=seed, gram=gram_dtype,
                   top_k=top_k, **_layers_key(layers))


def run_predictions(run, data) -> np.ndarray:
    """The run's predicted class for every example of `data` (int64, shape (examples,)), cached in its folder."""
    def compute():
        return {"predictions": predict(run.model, data).argmax(1).numpy().astype(np.int64)}

    return _record(run, "preds", data, compute)["predictions"]


def neuron_grams(run_a, run_b, data, batch_size: int, layers: list[str]) -> dict:
    """Stacked neuron Grams of the same `layers` of two runs over `data` (exact form: every example x position).

    Returns {"names", "n_a", "grams"} as `widedeep.subspace.model_neuron_moments` does. Never recorded:
    the Grams of a deep pair would take most of the records' budget; what the chapter reads from them is.
    """
    moments = model_neuron_moments(run_a.model, run_b.model, data.images, layers, batch_size=batch_size)
    return {"names": list(moments["names"]), "n_a": list(moments["n_a"]), "grams": moments["grams"]}


def run_match_scores(run_a, run_b, data, batch_size: int, layers: list[str],
                     eps_values: list[float]) -> tuple[dict, np.ndarray, np.ndarray]:
    """A pair's maximum-match scores (layers x eps) and the ε matching half the neurons per layer, with each layer's
    channels of run_a ({"names", "n_a"}); recorded in run_a's folder, the Grams computed only on a miss."""
    def compute():
        grams = neuron_grams(run_a, run_b, data, batch_size, layers)
        pairs = [LayerPair.from_gram(g, n) for g, n in zip(grams["grams"], grams["n_a"])]
        return {"names": np.array(grams["names"]), "n_a": np.array(grams["n_a"], dtype=np.int64),
                "scores": np.array([p.scores(eps_values) for p in pairs]),
                "half_eps": np.array([p.eps_for_fraction(0.5) for p in pairs])}

    stored = _record(run_a, "match", data, compute, b=run_b.config.name(), batch=batch_size, layers=list(layers),
                     eps=[float(e) for e in eps_values])
    layout = {"names": [str(n) for n in stored["names"]], "n_a": [int(n) for n in stored["n_a"]]}
    return layout, stored["scores"], stored["half_eps"]


def probe_splits(run, probes: Probes):
    """The run's own splits with the test set cut to the profile's probe subset (Chapter 5)."""
    splits = run.config.splits()
    return replace(splits, test=splits.test.first(probes.test_examples))


def run_probes(run, layers: list, probes: Probes) -> list[dict]:
    """Linear-probe rows of `layers` (Layer objects) of a run under the profile's probe settings, cached in its folder."""
    settings = {"layers": [layer.name for layer in layers], "pool": probes.pool, "l2": list(probes.l2),
                "max_iter": probes.max_iter, "test_examples": probes.test_examples}
    # By name: `layers` may come from the architecture alone (records need no checkpoint), not this model.
    return run.record("probes", VERSIONS["probes"], settings, lambda: probe_module.probe_accuracies(
        run.model, settings["layers"], probe_splits(run, probes), pool=probes.pool, l2_grid=probes.l2,
        max_iter=probes.max_iter), suffix=".json")


def run_deletions(run, membership: list[bool], settings: Deletion) -> dict:
    """Single and cumulative block deletions of a run (Chapter 5's settings), cached in its folder by membership."""
    key = {"membership": [bool(m) for m in membership], "test_examples": settings.test_examples,
           "repair_examples": settings.repair_examples, "max_steps": settings.max_steps}
    def compute():
        splits = run.config.splits()
        test = splits.test.first(settings.test_examples)
        repair = splits.train.first(settings.repair_examples).images
        return deletion.deletion_effects(run.model, test, membership, repair, max_steps=settings.max_steps)

    return run.record("deletions", VERSIONS["deletions"], key, compute, suffix=".json")
