"""Summaries of CKA heatmaps that the chapters state: the checkerboard, matched layers, relative depth.

Layer: analyses (plain functions over CKA matrices; above measures, below book support).
"""

from __future__ import annotations

import numpy as np

from widedeep.models import INSIDE, STREAM


def checkerboard_contrast(matrix: np.ndarray, kinds: list) -> float:
    """Mean CKA among residual-stream layers minus mean CKA between stream and in-block layers.

    Identity shortcuts carry one residual stream through the network, so block outputs resemble each
    other more than they resemble the fresh computations inside blocks: a positive contrast is the
    checkerboard of the paper's heatmaps. The diagonal is excluded.
    """
    matrix = np.asarray(matrix, dtype=float)
    kinds = np.asarray([k if isinstance(k, str) else k.kind for k in kinds])  # kinds, or Layer objects
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
