"""Where the block comes from: dominant datapoints of the block's shared first principal component.

Analyses layer. Nguyen, Raghu & Kornblith's follow-up (TMLR 2022) traces the block structure to a few
*dominant datapoints*: examples whose activations in the block's layers project far along the
layers' shared first principal component. The functions here take each layer's Gram over the CKA
images (n x n, float64, from the capture layer) and say:

- **who dominates**: an example's *contribution* to a layer's first PC is its share u_1(i)^2 of the
  PC's variance (u_1 the unit top eigenvector of the centred Gram; the shares sum to 1), averaged
  over the block's layers;
- **how concentrated**: the share of the PC's variance that the top 1% / 5% / 10% of examples carry,
  beside the share the same top fraction would carry if the scores were Gaussian (then u_1(i)^2 is a
  scaled chi-squared and the top 10% carry ~44%, the top 1% ~8%);
- **shared or not**: Jaccard overlap of the top sets between layers or seeds, beside two random sets'
  expected overlap (~f / (2 - f) for a fraction f: 0.026 at 5%);
- **does removing them break the block** without circularity: the examples are *chosen* on one half
  of the images (the first-PC direction of each block layer is estimated there) and *removed and
  measured* on the other half, where each example is scored by its projection on that direction. The
  effect is the drop of the block's inside-versus-outside CKA contrast over the original block's
  fixed layers, beside the same drop after removing as many random examples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

TOP_FRACTIONS = (0.01, 0.05, 0.10)


def _square(gram: np.ndarray, name: str = "gram") -> np.ndarray:
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) Gram; got shape {gram.shape}")
    if not np.all(np.isfinite(gram)):
        raise ValueError(f"{name} holds NaN or inf")
    return gram


def centre_gram(gram: np.ndarray) -> np.ndarray:
    """H K H: the Gram of features centred over these examples."""
    gram = _square(gram)
    row = gram.mean(axis=0)
    return gram - row[None, :] - row[:, None] + row.mean()


def first_pc(gram: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(lambda_1, u_1, trace) of the centred Gram: the first PC's variance, unit scores and total variance."""
    centred = centre_gram(gram)
    eigenvalues, vectors = np.linalg.eigh(centred)
    trace = float(eigenvalues.sum())
    if trace <= 0:
        raise ValueError("the layer is constant over these examples (zero centred Gram): it has no first PC")
    return float(eigenvalues[-1]), vectors[:, -1], trace


def pc1_contributions(grams: Sequence[np.ndarray]) -> np.ndarray:
    """Each example's share u_1(i)^2 of the first PC's variance, averaged over the given layers (sums to 1)."""
    if len(grams) == 0:
        raise ValueError("need at least one layer's Gram")
    shares = [first_pc(g)[1] ** 2 for g in grams]
    if len({s.shape for s in shares}) != 1:
        raise ValueError("every layer's Gram must cover the same examples")
    return np.mean(shares, axis=0)


def _top_count(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction!r}")
    return max(1, int(round(fraction * n)))


def top_set(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the top `fraction` of examples by score (ties broken by index, so deterministic)."""
    scores = np.asarray(scores, float)
    order = np.lexsort((np.arange(len(scores)), -scores))
    return np.sort(order[: _top_count(len(scores), fraction)])


def top_share(scores: np.ndarray, fraction: float) -> float:
    """The share of the total score carried by the top `fraction` of examples."""
    scores = np.asarray(scores, float)
    if np.any(scores < 0) or scores.sum() <= 0:
        raise ValueError("scores must be non-negative with a positive total")
    return float(scores[top_set(scores, fraction)].sum() / scores.sum())


def gaussian_top_share(fraction: float) -> float:
    """The share of E[z^2] carried by the top `fraction` of |z| for standard normal z (the no-dominance baseline)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction!r}")
    z = stats.norm.ppf(1 - fraction / 2)
    return float(2 * (z * stats.norm.pdf(z) + stats.norm.sf(z)))


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|A & B| / |A | B| of two index sets."""
    a, b = set(map(int, a)), set(map(int, b))
    if not a and not b:
        raise ValueError("both sets are empty")
    return len(a & b) / len(a | b)


def chance_jaccard(fraction: float, n: int) -> float:
    """The expected overlap of two independent random sets of round(fraction n) of n examples (ratio of means)."""
    k = _top_count(n, fraction)
    shared = k * k / n
    return shared / (2 * k - shared)


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of n examples into a choosing half and a measuring half."""
    if n < 8:
        raise ValueError(f"need at least 8 examples to split into halves; got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def cross_half_projections(gram: np.ndarray, choose: np.ndarray, measure: np.ndarray) -> np.ndarray:
    """Squared projection of each measuring-half example on the first PC direction fitted on the choosing half.

    The direction v = X_c^T u / sqrt(lambda) (features centred by the choosing half's mean) needs no
    features: (x_m - mu_c) . v comes from the uncentred Gram's blocks.
    """
    gram = _square(gram)
    k_cc, k_mc = gram[np.ix_(choose, choose)], gram[np.ix_(measure, choose)]
    lam, u, _ = first_pc(k_cc)
    n_c = len(choose)
    # (X_m - 1 mu^T)(X_c - 1 mu^T)^T with mu the choosing half's feature mean, from Gram blocks only.
    centred = (k_mc - k_mc.mean(axis=1, keepdims=True) - k_cc.mean(axis=0, keepdims=True) + k_cc.sum() / n_c ** 2)
    return (centred @ u) ** 2 / lam


def debiased_cka_matrix(grams: Sequence[np.ndarray]) -> np.ndarray:
    """L x L debiased linear CKA (unbiased HSIC) between layers from their Grams over the same examples."""
    n = grams[0].shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs n >= 4 examples; got {n}")
    rows = []
    for g in grams:
        g = _square(g).copy()
        np.fill_diagonal(g, 0)
        r = g.sum(axis=0)
        u = g - r[None, :] / (n - 2) - r[:, None] / (n - 2) + r.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(u, 0)
        rows.append(u.ravel())
    stack = np.stack(rows)
    hsic = stack @ stack.T
    norm = np.sqrt(np.clip(np.diag(hsic), 1e-300, None))
    return hsic / np.outer(norm, norm)


def block_contrast(cka: np.ndarray, inside: Sequence[bool]) -> float:
    """Mean CKA between distinct layers inside the block minus mean CKA from inside to outside layers."""
    cka, inside = np.asarray(cka, float), np.asarray(inside, bool)
    if inside.sum() < 2 or (~inside).sum() < 1:
        raise ValueError("a block contrast needs >= 2 layers inside and >= 1 outside")
    within = cka[np.ix_(inside, inside)]
    off_diagonal = within[~np.eye(len(within), dtype=bool)]
    return float(off_diagonal.mean() - cka[np.ix_(inside, ~inside)].mean())


def removal_effect(grams: Sequence[np.ndarray], inside: Sequence[bool], fraction: float = 0.05, seed: int = 0,
                   random_draws: int = 20, control_scores: np.ndarray | None = None) -> dict:
    """The block's contrast on the measuring half before and after removing its dominant examples, with controls.

    `grams` are every analysed layer's Grams over all images (inside and outside the block);
    `inside` marks the original block's layers (held fixed). Dominant examples of the measuring half
    are those projecting furthest on the first-PC directions fitted on the choosing half, averaged over
    the block's layers. Controls: `random_draws` random removals of as many examples, and optionally
    removal by `control_scores` (e.g. the projections onto a layer outside the block, or another seed's).
    """
    inside = np.asarray(inside, bool)
    if len(grams) != len(inside):
        raise ValueError(f"{len(grams)} Grams but {len(inside)} inside/outside flags")
    n = grams[0].shape[0]
    choose, measure = split_halves(n, seed)
    scores = np.mean([cross_half_projections(grams[i], choose, measure) for i in np.flatnonzero(inside)], axis=0)
    k = _top_count(len(measure), fraction)

    def contrast_without(removed_positions: np.ndarray) -> float:
        keep = np.setdiff1d(np.arange(len(measure)), removed_positions)
        rows = measure[keep]
        return block_contrast(debiased_cka_matrix([g[np.ix_(rows, rows)] for g in grams]), inside)

    before = contrast_without(np.array([], int))
    dominant = top_set(scores, k / len(measure))
    after = contrast_without(dominant)
    rng = np.random.default_rng(seed + 1)
    random_after = np.array([contrast_without(rng.choice(len(measure), k, replace=False))
                             for _ in range(random_draws)])
    out = {"fraction": fraction, "removed": int(k), "measured_examples": int(len(measure)),
           "contrast_before": before, "contrast_after_dominant": after, "drop_dominant": before - after,
           "contrast_after_random": random_after.tolist(), "drop_random_mean": float(before - random_after.mean()),
           "drop_random_sd": float(random_after.std(ddof=1)) if random_draws > 1 else 0.0,
           "dominant_positions": dominant.tolist()}
    if control_scores is not None:
        control_scores = np.asarray(control_scores, float)
        if control_scores.shape != (len(measure),):
            raise ValueError(f"control_scores must score the {len(measure)} measuring-half examples")
        control_after = contrast_without(top_set(control_scores, k / len(measure)))
        out.update(contrast_after_control=control_after, drop_control=before - control_after)
    return out


# ---------------------------------------------------------------------------------------------
# The protocol's tests of the follow-up's claims (book/protocol.md, Chapter 8)
# ---------------------------------------------------------------------------------------------

def span_jaccard(a: Sequence[int] | None, b: Sequence[int] | None) -> float:
    """Jaccard of the layers of two spans, each (first, last) inclusive layer positions; 0 when either is None."""
    if a is None or b is None:
        return 0.0
    first, second = set(range(a[0], a[1] + 1)), set(range(b[0], b[1] + 1))
    return len(first & second) / len(first | second)


def seed_label_permutation_test(sets: dict[tuple[int, int], Sequence[int]], permutations: int,
                                seed: int = 0) -> dict:
    """Do one seed's dominant sets at two layers overlap more than two seeds' sets at one layer?

    `sets[(seed, layer)]` holds a seed's dominant examples at one layer. Statistic: mean Jaccard between
    one seed's sets at two different layers minus mean Jaccard between two seeds' sets at one layer.
    Null: the seed labels permuted within each layer (each layer's sets shuffled among the seeds present
    there), `permutations` seeded draws; one-sided p = (1 + draws at least as large) / (1 + draws).
    (scipy.stats.permutation_test permutes whole samples or pairs of equal size; here each layer is its own
    stratum with its own set of seeds, so the draws are made here.) Needs at least one layer shared by two
    seeds and one seed with sets at two layers.
    """
    keys = sorted(sets)
    seeds = np.array([k[0] for k in keys])
    layers = np.array([k[1] for k in keys])
    n_examples = 1 + max(int(np.max(v)) for v in sets.values())
    member = np.zeros((len(keys), n_examples))
    for row, key in enumerate(keys):
        member[row, np.asarray(sets[key], int)] = 1
    shared = member @ member.T
    sizes = member.sum(axis=1)
    jaccard_matrix = shared / (sizes[:, None] + sizes[None, :] - shared)
    same_layer = layers[:, None] == layers[None, :]
    across = same_layer & ~np.eye(len(keys), dtype=bool)
    if not across.any() or not ((seeds[:, None] == seeds[None, :]) & ~same_layer).any():
        raise ValueError("the test needs a layer shared by two seeds and a seed with sets at two layers")
    across_mean = float(jaccard_matrix[across].mean())

    def within(labels: np.ndarray) -> float:
        mask = (labels[:, None] == labels[None, :]) & ~same_layer
        return float(jaccard_matrix[mask].mean())

    observed = within(seeds) - across_mean
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(layers == layer) for layer in np.unique(layers)]
    drawn = np.empty(permutations)
    for i in range(permutations):
        labels = seeds.copy()
        for rows in strata:
            labels[rows] = labels[rng.permutation(rows)]
        drawn[i] = within(labels) - across_mean
    exceed = int(np.sum(drawn >= observed - 1e-12))
    return {"statistic": observed, "within_seed": observed + across_mean, "across_seeds": across_mean,
            "p": (1 + exceed) / (1 + permutations), "permutations": permutations,
            "seeds": int(len(np.unique(seeds))), "layers": int(len(strata))}
