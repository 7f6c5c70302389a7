"""Per-run analyses cached in the run folder (CKA, first-PC statistics, predictions) and the heatmap summaries the chapters state."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from widedeep import store
from widedeep.cka import model_cka
from widedeep.data import shuffled_passes
from widedeep.models import INSIDE, STREAM
from widedeep.pca import model_pc_stats
from widedeep.subspace import fraction_match_eps, match_scores_gram, model_neuron_moments
from widedeep.train import predict


def checkerboard_contrast(matrix: np.ndarray, kinds: list[str]) -> float:
    """Mean CKA among residual-stream layers minus mean CKA between stream and in-block layers.

    Identity shortcuts carry one residual stream through the network, so block outputs resemble each
    other more than they resemble the fresh computations inside blocks: a positive contrast is the
    checkerboard of the paper's heatmaps. The diagonal is excluded.
    """
    matrix = np.asarray(matrix, dtype=float)
    kinds = np.asarray(kinds)
    if matrix.shape != (len(kinds), len(kinds)):
        raise ValueError(f"matrix is {matrix.shape} but {len(kinds)} layer kinds were given")
    stream, inside = kinds == STREAM, kinds == INSIDE
    if stream.sum() < 2 or inside.sum() < 1:
        raise ValueError("need at least two residual-stream layers and one in-block layer")
    off_diagonal = ~np.eye(len(kinds), dtype=bool)
    among_stream = matrix[np.ix_(stream, stream)][off_diagonal[np.ix_(stream, stream)]].mean()
    stream_to_inside = matrix[np.ix_(stream, inside)].mean()
    return float(among_stream - stream_to_inside)


def checkerboard_verdict(residual: float, plain: float, margin: float = 0.05) -> str:
    """A sentence on whether the residual net shows a checkerboard that the plain net lacks."""
    if residual > margin and residual > plain + margin:
        return "a clear checkerboard in the residual net, absent from the plain net"
    if residual > margin:
        return "a checkerboard in both nets, so it is not specific to the residual connections here"
    return (f"no clear checkerboard at this scale: block outputs are no more alike than block outputs and "
            f"in-block layers (contrast within {margin})" if abs(residual) <= margin else
            "the opposite of a checkerboard: block outputs resemble in-block layers more than each other")


def matched_layer_similarity(matrix: np.ndarray) -> np.ndarray:
    """CKA of each layer with the same layer of the other model: the diagonal of a cross-model heatmap."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a cross-model heatmap of two models with the same layers is square; got {matrix.shape}")
    return np.diagonal(matrix).copy()


def relative_depth_similarity(matrix: np.ndarray, points: int = 20) -> np.ndarray:
    """CKA between layers at the same relative depth (0..1) of two models with different layer counts."""
    matrix = np.asarray(matrix, dtype=float)
    rows = np.rint(np.linspace(0, matrix.shape[0] - 1, points)).astype(int)
    cols = np.rint(np.linspace(0, matrix.shape[1] - 1, points)).astype(int)
    return matrix[rows, cols]


def _cache_path(run, prefix: str, data, **settings) -> Path:
    """`<run_dir>/<prefix>-<hash>.npz`, hashing a checksum of the images together with `settings`."""
    examples = hashlib.sha256(data.images.cpu().numpy().tobytes()).hexdigest()[:16]
    return run.run_dir / f"{prefix}-{store.config_hash({'examples': examples, **settings})}.npz"


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
    path = _cache_path(run_a, "cka", data, b=run_b.config.name() if run_b is not None else None,
                       batch=batch_size, passes=passes, seed=seed, pcs=remove_top_pcs, gram=gram_dtype,
                       **_layers_key(layers))

    def compute():
        loader = _analysis_batches(run_a, data, batch_size, passes, seed)
        matrix, _, _ = model_cka(run_a.model, loader, None if run_b is None else run_b.model, layers=layers,
                                 remove_top_pcs=remove_top_pcs, gram_dtype=getattr(torch, gram_dtype))
        return {"cka": matrix}

    return store.cached_npz(path, compute)["cka"]


def run_pc_stats(run, data, batch_size: int, passes: int, seed: int = 0, gram_dtype: str = "float32",
                 top_k: int = 3, layers: list[str] | None = None) -> dict[str, np.ndarray]:
    """First-PC statistics of a trained run's layers, {"shares" (L, top_k), "pc1_similarity" (L, L)}, cached.

    The same batches as `run_cka` (Nguyen et al.'s first-PC analysis, see `widedeep.pca`). The cache
    key holds the examples (a checksum of the images), batch size, passes, seed, Gram precision, top_k
    and, when given, the `layers` (module names; default: every analysable layer).
    """
    path = _cache_path(run, "pcs", data, batch=batch_size, passes=passes, seed=seed, gram=gram_dtype, top_k=top_k,
                       **_layers_key(layers))

    def compute():
        loader = _analysis_batches(run, data, batch_size, passes, seed)
        stats = model_pc_stats(run.model, loader, layers, gram_dtype=getattr(torch, gram_dtype), top_k=top_k)
        return {"shares": stats["shares"], "pc1_similarity": stats["pc1_similarity"]}

    return store.cached_npz(path, compute)


def run_predictions(run, data) -> np.ndarray:
    """The run's predicted class for every example of `data` (int64, shape (examples,)), cached in its folder."""
    path = _cache_path(run, "preds", data)

    def compute():
        return {"predictions": predict(run.model, data).argmax(1).numpy().astype(np.int64)}

    return store.cached_npz(path, compute)["predictions"]


def run_neuron_grams(run_a, run_b, data, batch_size: int, layers: list[str]) -> dict:
    """Stacked neuron Grams of the same `layers` of two runs over `data` (subspace match), cached in run_a's folder.

    Returns {"names", "n_a", "grams"} as `widedeep.subspace.model_neuron_moments` does (exact form:
    every example x position), so Chapter 7 reruns without a forward pass.
    """
    path = _cache_path(run_a, "neurons", data, b=run_b.config.name(), batch=batch_size, layers=list(layers))

    def compute():
        moments = model_neuron_moments(run_a.model, run_b.model, data.images, layers, batch_size=batch_size)
        return {"names": np.array(moments["names"]), "n_a": np.array(moments["n_a"]),
                **{f"gram_{i}": g for i, g in enumerate(moments["grams"])}}

    stored = store.cached_npz(path, compute)
    count = len(stored["names"])
    return {"names": [str(n) for n in stored["names"]], "n_a": [int(n) for n in stored["n_a"]],
            "grams": [stored[f"gram_{i}"] for i in range(count)]}


def run_match_scores(run_a, run_b, data, batch_size: int, layers: list[str],
                     eps_values: list[float]) -> tuple[dict, np.ndarray, np.ndarray]:
    """The pair's neuron Grams (cached), maximum-match scores (layers x eps) and the ε matching half the neurons per layer."""
    grams = run_neuron_grams(run_a, run_b, data, batch_size, layers)
    pairs = list(zip(grams["grams"], grams["n_a"]))
    scores = np.array([match_scores_gram(g, n, eps_values) for g, n in pairs])
    return grams, scores, np.array([fraction_match_eps(g, n, 0.5) for g, n in pairs])
