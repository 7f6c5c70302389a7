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


def cca_basis(x, variance: float | None = None) -> np.ndarray:
    """One side of the CCA family: the orthonormal basis of X's top principal directions, capped at n / 4."""
    x = as_float64(x)
    return principal_basis(x, variance, _max_dims(len(x)))


def correlations_of_bases(qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Canonical correlations (descending) of two sides given as orthonormal bases of the same examples."""
    if len(qx) != len(qy):
        raise ValueError(f"x and y must hold the same examples; got {len(qx)} and {len(qy)} rows")
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def canonical_correlations(x, y, variance: float | None = None) -> np.ndarray:
    """Canonical correlations (descending) between the reduced, centred X and Y."""
    x, y = _pair(x, y)
    return correlations_of_bases(cca_basis(x, variance), cca_basis(y, variance))


def mean_cca(x, y) -> float:
    """Mean canonical correlation (Yanai's / Kornblith's rho-bar) over min(p1, p2) reduced directions."""
    return float(canonical_correlations(x, y).mean())


def svcca(x, y, variance: float = SVCCA_VARIANCE) -> float:
    """SVCCA: mean CCA after keeping each side's directions that hold `variance` of its variance."""
    return float(canonical_correlations(x, y, variance).mean())


def pwcca_side(x) -> tuple[np.ndarray, np.ndarray]:
    """One side of PWCCA: its CCA basis Q and Q^T X_c, the basis's projections onto X's own neurons."""
    x = as_float64(x)
    q = cca_basis(x)
    return q, q.T @ (x - x.mean(axis=0))


def pwcca_of_sides(side_x: tuple[np.ndarray, np.ndarray], side_y: tuple[np.ndarray, np.ndarray]) -> float:
    """PWCCA from two `pwcca_side`s: the correlations weighted by X's side (not symmetric)."""
    (qx, projections), (qy, _) = side_x, side_y
    if len(qx) != len(qy):
        raise ValueError(f"x and y must hold the same examples; got {len(qx)} and {len(qy)} rows")
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    # X's canonical variates are Q_x u (unit, example space); their projections onto X's neurons are u^T Q_x^T X_c
    weights = np.abs(u.T @ projections).sum(axis=1)
    return float(np.sum(weights * np.clip(rho, 0, 1)) / weights.sum())


def pwcca(x, y) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): correlations weighted by how much of X each variate explains."""
    x, y = _pair(x, y)
    return pwcca_of_sides(pwcca_side(x), pwcca_side(y))


def _normalised(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    norm = np.linalg.norm(xc)
    if norm == 0:
        raise ValueError("a representation is constant over these examples")
    return xc / norm


def procrustes_side(x) -> np.ndarray:
    """One side of Procrustes: the centred, unit-Frobenius X in its principal coordinates U S (n x rank)."""
    u, s, _ = np.linalg.svd(_normalised(as_float64(x)), full_matrices=False)
    return u * s


def procrustes_of_sides(px: np.ndarray, py: np.ndarray) -> float:
    """||X^T Y||_* from two `procrustes_side`s: the singular values of (U_x S_x)^T (U_y S_y), at most n x n."""
    if len(px) != len(py):
        raise ValueError(f"x and y must hold the same examples; got {len(px)} and {len(py)} rows")
    return float(np.linalg.svd(px.T @ py, compute_uv=False).sum())


def procrustes_similarity(x, y) -> float:
    """Nuclear norm of X^T Y for centred, unit-Frobenius X and Y: 1 when Y is a rotation of X (0 <= s <= 1)."""
    x, y = _pair(x, y)
    return procrustes_of_sides(procrustes_side(x), procrustes_side(y))


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


def rsa_side(x) -> np.ndarray:
    """One side of RSA: the ranks of X's RDM, centred and scaled to unit norm (Spearman = their dot product)."""
    ranks = stats.rankdata(rdm(x))
    ranks -= ranks.mean()
    norm = np.linalg.norm(ranks)
    return ranks / norm if norm > 0 else np.full_like(ranks, np.nan)   # a constant RDM: Spearman is undefined


def rsa_of_sides(rx: np.ndarray, ry: np.ndarray) -> float:
    """Spearman correlation of two RDMs from their `rsa_side`s (Pearson of the average ranks)."""
    if rx.shape != ry.shape:
        raise ValueError(f"x and y must hold the same examples; got RDMs of {rx.size} and {ry.size} pairs")
    return float(np.clip(rx @ ry, -1.0, 1.0))


def rsa(x, y) -> float:
    """RSA: Spearman correlation of the two representations' correlation-distance RDMs."""
    x, y = _pair(x, y)
    return rsa_of_sides(rsa_side(x), rsa_side(y))


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    xc = x - x.mean(axis=0)
    sq = (xc ** 2).sum(axis=1)
    distances = sq[:, None] + sq[None, :] - 2 * xc @ xc.T
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def knn_side(x, k: int = 10) -> np.ndarray:
    """One side of mutual k-NN: each example's k nearest neighbours (Euclidean), (n, k) indices."""
    x = as_float64(x)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < len(x):
        raise ValueError(f"k must be an integer in [1, {len(x) - 1}]; got {k!r}")
    return _neighbours(x, int(k))


def knn_of_sides(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of each example's neighbours that two `knn_side`s share."""
    if a.shape != b.shape:
        raise ValueError(f"both sides need the same examples and k; got neighbour lists {a.shape} and {b.shape}")
    shared = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))   # neighbours are distinct within a row
    return float(shared.mean() / a.shape[1])


def mutual_knn(x, y, k: int = 10) -> float:
    """Mean fraction of each example's k nearest neighbours (Euclidean) that X and Y share."""
    x, y = _pair(x, y)
    return knn_of_sides(knn_side(x, k), knn_side(y, k))
