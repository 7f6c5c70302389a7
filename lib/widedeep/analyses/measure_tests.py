"""The field's own tests of a similarity measure, run on representations of this book's models.

Analyses layer. A *measure* is any function `measure(x, y) -> float` over two (examples x features)
representations of the same examples, larger meaning more similar (e.g. the ones in
`widedeep.measures.similarity`, or linear CKA). The tests ask of a measure, not of a network:

- **layer identification** (Kornblith et al. 2019): for each layer of one seed, is the most similar
  layer of another seed the same layer? The accuracy over layers;
- **calibration** against width and maxima (Groger et al. 2026): a layer's best match among another
  seed's layers, beside the same maximum computed after shuffling the other seed's examples (which
  destroys any correspondence but keeps each layer's width and spectrum). The calibrated score is
  (best - null) / (1 - null), so 0 is what chance gives a layer of that shape and 1 is a perfect match;
- **specificity and sensitivity** (Ding et al. 2021): deleting a layer's top principal components
  changes what the network computes; a good measure falls as the accuracy falls, while another seed
  (same function, different weights) stays high. `remove_top_pcs` makes the perturbed layer and
  `rank_agreement` scores how well a measure's fall tracks the accuracy drops;
- **outlier sensitivity** (Davari et al. 2022): translate a few examples (1-5%) far along one random
  direction, c times the layer's standard deviation; a measure that is robust barely moves, while
  CKA tends to a limit set by that fraction.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats

Measure = Callable[[np.ndarray, np.ndarray], float]


def _features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"a representation must be (examples, features...); got shape {x.shape}")
    return x.reshape(len(x), -1)


def similarity_matrix(measure: Measure, layers_a: Sequence, layers_b: Sequence) -> np.ndarray:
    """The (len(a), len(b)) matrix of measure(a_i, b_j)."""
    return np.array([[measure(a, b) for b in layers_b] for a in layers_a])


def identification_accuracy(matrix: np.ndarray) -> float:
    """The share of rows whose largest entry sits on the diagonal (layer i of A best matches layer i of B)."""
    matrix = np.asarray(matrix, float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"layer identification compares the same layers of two seeds: need a square matrix, "
                         f"got {matrix.shape}")
    return float(np.mean(np.argmax(matrix, axis=1) == np.arange(len(matrix))))


def shuffled_best_match(measure: Measure, layer, others: Sequence, draws: int = 5, seed: int = 0) -> np.ndarray:
    """The best match of `layer` among `others` after shuffling the others' examples, per draw.

    The examples (first axis) are shuffled and the trailing axes kept, so a measure that reads a
    layer's shape (the subspace match's channels) sees the shuffled layer as it saw the original.
    """
    layer = np.asarray(layer)
    _features(layer)  # checks the shape
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for d in range(draws):
        order = rng.permutation(len(layer))
        out[d] = max(measure(layer, np.asarray(o)[order]) for o in others)
    return out


def calibrated_best_match(measure: Measure, layers_a: Sequence, layers_b: Sequence, draws: int = 5,
                          seed: int = 0) -> dict:
    """Per layer of A: best match in B, its shuffled-examples null (mean over draws), and the calibrated score."""
    best = similarity_matrix(measure, layers_a, layers_b).max(axis=1)
    null = np.array([shuffled_best_match(measure, a, layers_b, draws, seed + i).mean()
                     for i, a in enumerate(layers_a)])
    return {"best": best, "null": null, "calibrated": calibrated_score(best, null)}


def calibrated_score(best: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(best - null) / (1 - null): 0 at what chance gives a layer of that shape, 1 at a perfect match (NaN at null 1)."""
    best, null = np.asarray(best, float), np.asarray(null, float)
    return np.where(null < 1, (best - null) / np.where(null < 1, 1 - null, 1), np.nan)


def neighbour_similarity(matrices: Sequence[np.ndarray]) -> float:
    """A measure's mean similarity between consecutive layers (the first off-diagonal) of self-similarity matrices."""
    values = np.concatenate([np.diag(np.asarray(m, float), 1) for m in matrices])
    if values.size == 0:
        raise ValueError("need at least one self-similarity matrix of two or more layers")
    return float(values.mean())


def remove_top_pcs(x, k: int) -> np.ndarray:
    """The representation with its top-k principal components (over these examples) projected out."""
    x = _features(x)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer; got {k!r}")
    mean = x.mean(axis=0)
    xc = x - mean
    if k == 0:
        return x.copy()
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    top = vt[:k]
    return xc - (xc @ top.T) @ top + mean


def translate_outliers(x, fraction: float, scale: float, seed: int = 0) -> np.ndarray:
    """Move a random `fraction` of examples by `scale` x the layer's feature std along one random unit direction."""
    x = _features(x)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1); got {fraction!r}")
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(x))))
    chosen = rng.choice(len(x), count, replace=False)
    direction = rng.normal(size=x.shape[1])
    direction /= np.linalg.norm(direction)
    # The typical spread of an example's distance from the mean, so `scale` reads in the layer's own units.
    spread = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
    moved = x.copy()
    moved[chosen] += scale * spread * direction
    return moved


def rank_agreement(similarity_drops: Sequence[float], accuracy_drops: Sequence[float]) -> float:
    """Spearman correlation between a measure's fall and the accuracy's fall over perturbations (Ding et al.)."""
    a, b = np.asarray(similarity_drops, float), np.asarray(accuracy_drops, float)
    if a.shape != b.shape or a.size < 3:
        raise ValueError("need at least three perturbations with one similarity drop and one accuracy drop each")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def inside_outside_contrast(matrix: np.ndarray, inside: Sequence[bool]) -> float:
    """A measure's mean similarity among a block's layers minus its mean from them to the other layers."""
    matrix, inside = np.asarray(matrix, float), np.asarray(inside, bool)
    if inside.sum() < 2 or (~inside).sum() < 1:
        raise ValueError("a contrast needs >= 2 layers inside the block and >= 1 outside")
    within = matrix[np.ix_(inside, inside)]
    return float(within[~np.eye(len(within), dtype=bool)].mean() - matrix[np.ix_(inside, ~inside)].mean())


def run_contrasts(matrix: np.ndarray, length: int) -> np.ndarray:
    """The inside-outside contrast of every contiguous run of `length` layers (the null for a block of that length)."""
    n = len(matrix)
    if not 2 <= length < n:
        raise ValueError(f"run length must lie in [2, {n - 1}]; got {length}")
    index = np.arange(n)
    return np.array([inside_outside_contrast(matrix, (index >= start) & (index < start + length))
                     for start in range(n - length + 1)])
