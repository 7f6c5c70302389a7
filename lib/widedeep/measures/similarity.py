"""Representational similarity measures beside CKA: CCA family, Procrustes, RSA and mutual neighbours.

Measures layer. Every function takes two representations of the same n examples, X (n, p1) and
Y (n, p2), as arrays or tensors, works in float64, and returns one number where **larger means more
similar** (Procrustes is also given as its distance). What each is invariant to (the tests assert it):

| measure | invariant to |
|---|---|
| mean CCA, SVCCA, PWCCA | any invertible linear map of either side (on the reduced features), translation |
| orthogonal Procrustes (normalised) | orthogonal maps, isotropic scaling, translation |
| RSA (Spearman of correlation-distance RDMs) | feature permutations, a shift or scaling of each example's vector, monotone changes of the dissimilarities |
| mutual k-nearest neighbours | orthogonal maps, isotropic scaling, translation |

Feature reduction. CCA-family measures are degenerate when features approach the number of
examples (every canonical correlation reaches 1 once p1 + p2 >= n). Each side is therefore reduced to
its top principal components: SVCCA keeps the directions that hold 99% of the side's variance (Raghu
et al. 2017), capped at n / 4; mean CCA and PWCCA use all directions up to the same cap. The cap is
what keeps the measure meaningful on wide layers, and it is reported with every result.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

SVCCA_VARIANCE = 0.99
MAX_DIMS_FRACTION = 0.25   # at most n / 4 directions per side in the CCA family
MIN_EXAMPLES = 4


def as_float64(x, name: str = "x") -> np.ndarray:
    """A 2-D float64 array (examples x features), flattened past the first axis; finite, >= 4 examples."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"{name} must be (examples, features...); got shape {x.shape}")
    x = x.reshape(len(x), -1)
    if len(x) < MIN_EXAMPLES:
        raise ValueError(f"{name} has {len(x)} examples; similarity measures need at least {MIN_EXAMPLES}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf")
    return x


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_float64(x, "x"), as_float64(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same examples; got {len(x)} and {len(y)} rows")
    return x, y


def principal_basis(x: np.ndarray, variance: float | None = None, max_dims: int | None = None) -> np.ndarray:
    """An orthonormal basis (n, k) of the centred X's top principal directions in example space."""
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    tol = s.max() * max(xc.shape) * np.finfo(float).eps if s.size else 0.0
    rank = int((s > tol).sum())
    if rank == 0:
        raise ValueError("a representation is constant over these examples: it has no directions to compare")
    k = rank
    if variance is not None:
        energy = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
        k = int(np.searchsorted(energy, variance) + 1)
    if max_dims is not None:
        k = min(k, max_dims)
    return u[:, :max(k, 1)]


def _max_dims(n: int) -> int:
    return max(1, int(n * MAX_DIMS_FRACTION))


def canonical_correlations(x, y, variance: float | None = None) -> np.ndarray:
    """Canonical correlations (descending) between the reduced, centred X and Y."""
    x, y = _pair(x, y)
    qx = principal_basis(x, variance, _max_dims(len(x)))
    qy = principal_basis(y, variance, _max_dims(len(y)))
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def mean_cca(x, y) -> float:
    """Mean canonical correlation (Yanai's / Kornblith's rho-bar) over min(p1, p2) reduced directions."""
    return float(canonical_correlations(x, y).mean())


def svcca(x, y, variance: float = SVCCA_VARIANCE) -> float:
    """SVCCA: mean CCA after keeping each side's directions that hold `variance` of its variance."""
    return float(canonical_correlations(x, y, variance).mean())


def pwcca(x, y) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): correlations weighted by how much of X each variate explains."""
    x, y = _pair(x, y)
    xc = x - x.mean(axis=0)
    qx = principal_basis(x, None, _max_dims(len(x)))
    qy = principal_basis(y, None, _max_dims(len(y)))
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    variates = qx @ u                          # X's canonical variates (unit, example space)
    weights = np.abs(variates.T @ xc).sum(axis=1)
    return float(np.sum(weights * np.clip(rho, 0, 1)) / weights.sum())


def _normalised(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    norm = np.linalg.norm(xc)
    if norm == 0:
        raise ValueError("a representation is constant over these examples")
    return xc / norm


def procrustes_similarity(x, y) -> float:
    """Nuclear norm of X^T Y for centred, unit-Frobenius X and Y: 1 when Y is a rotation of X (0 <= s <= 1)."""
    x, y = _pair(x, y)
    # ||X^T Y||_* from thin SVDs X = U_x S_x V_x^T: the singular values of S_x U_x^T U_y S_y (at most n x n).
    ux, sx, _ = np.linalg.svd(_normalised(x), full_matrices=False)
    uy, sy, _ = np.linalg.svd(_normalised(y), full_matrices=False)
    return float(np.linalg.svd((sx[:, None] * (ux.T @ uy)) * sy[None, :], compute_uv=False).sum())


def procrustes_distance(x, y) -> float:
    """Orthogonal Procrustes distance min_Q ||X - Y Q||_F^2 for centred unit-norm X, Y: 2 - 2 * similarity, in [0, 2]."""
    return max(0.0, 2.0 - 2.0 * procrustes_similarity(x, y))


def rdm(x) -> np.ndarray:
    """Representational dissimilarity: 1 - Pearson correlation between the examples' feature vectors (upper triangle)."""
    x = as_float64(x)
    xc = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(xc, axis=1)
    if np.any(norms == 0):
        raise ValueError("an example's feature vector is constant: its correlation distance is undefined")
    xn = xc / norms[:, None]
    upper = np.triu_indices(len(x), 1)
    return 1.0 - (xn @ xn.T)[upper]


def rsa(x, y) -> float:
    """RSA: Spearman correlation of the two representations' correlation-distance RDMs."""
    x, y = _pair(x, y)
    return float(stats.spearmanr(rdm(x), rdm(y)).statistic)


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    xc = x - x.mean(axis=0)
    sq = (xc ** 2).sum(axis=1)
    distances = sq[:, None] + sq[None, :] - 2 * xc @ xc.T
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def mutual_knn(x, y, k: int = 10) -> float:
    """Mean fraction of each example's k nearest neighbours (Euclidean) that X and Y share."""
    x, y = _pair(x, y)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(x):
        raise ValueError(f"k must be an integer in [1, {len(x) - 1}]; got {k!r}")
    a, b = _neighbours(x, k), _neighbours(y, k)
    shared = [len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(len(x))]
    return float(np.mean(shared) / k)
