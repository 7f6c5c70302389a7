"""Similarity measures beside CKA: each one's claimed invariances, its range, and its reductions."""

import numpy as np
import pytest
from scipy import stats

from widedeep.measures import similarity as sim

MEASURES = {"mean_cca": sim.mean_cca, "svcca": sim.svcca, "pwcca": sim.pwcca,
            "procrustes": sim.procrustes_similarity, "rsa": sim.rsa, "mutual_knn": sim.mutual_knn}


def _layer(n=200, p=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)) @ rng.normal(size=(5, p)) + 0.3 * rng.normal(size=(n, p))


def _orthogonal(p, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q


@pytest.mark.parametrize("name", list(MEASURES))
def test_a_representation_is_most_similar_to_itself_and_unlike_noise(name):
    x = _layer()
    noise = np.random.default_rng(9).normal(size=x.shape)
    assert MEASURES[name](x, x) == pytest.approx(1.0, abs=1e-9)
    assert MEASURES[name](x, noise) < 0.5


@pytest.mark.parametrize("name", ["mean_cca", "svcca", "pwcca", "procrustes", "mutual_knn"])
def test_invariant_to_rotation_isotropic_scaling_and_translation(name):
    x = _layer()
    y = 3.0 * x @ _orthogonal(x.shape[1], 1) + 5.0
    assert MEASURES[name](x, y) == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("name", ["mean_cca", "pwcca"])
def test_cca_family_is_invariant_to_any_invertible_linear_map(name):
    x = _layer(p=6)
    mixing = np.random.default_rng(2).normal(size=(6, 6)) + 3 * np.eye(6)
    assert MEASURES[name](x, x @ mixing) == pytest.approx(1.0, abs=1e-7)
    # ... which Procrustes is not:
    assert sim.procrustes_similarity(x, x @ np.diag([10, 1, 1, 1, 1, 0.1])) < 0.99


def test_rsa_sees_shifts_and_scalings_of_each_example_but_not_a_rotation():
    x = _layer()
    rng = np.random.default_rng(3)
    shifted = x * rng.uniform(0.5, 2, size=(len(x), 1)) + rng.normal(size=(len(x), 1))
    assert sim.rsa(x, shifted) == pytest.approx(1.0, abs=1e-9)
    assert sim.rsa(x, x[:, ::-1]) == pytest.approx(1.0, abs=1e-9)  # feature permutation
    # Correlation distance centres each example over its features, which a rotation does not commute with.
    assert sim.rsa(x, x @ _orthogonal(12, 4)) < 1 - 1e-3
    assert sim.rsa(x, x) == pytest.approx(stats.spearmanr(sim.rdm(x), sim.rdm(x)).statistic)


def test_procrustes_distance_matches_scipy_orthogonal_procrustes():
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    xn = (x - x.mean(0)) / np.linalg.norm(x - x.mean(0))
    yn = (y - y.mean(0)) / np.linalg.norm(y - y.mean(0))
    rotation, _ = orthogonal_procrustes(yn, xn)
    assert sim.procrustes_distance(x, y) == pytest.approx(np.linalg.norm(xn - yn @ rotation) ** 2)
    wide = rng.normal(size=(40, 300))  # more features than examples takes the n x n route
    assert 0 <= sim.procrustes_similarity(x, wide) <= 1


def test_cca_reduces_wide_layers_to_a_quarter_of_the_examples():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(80, 500)), rng.normal(size=(80, 500))
    # Unreduced, two independent 500-feature layers over 80 examples would have every correlation 1.
    rho = sim.canonical_correlations(x, y)
    assert len(rho) == 20 and rho.mean() < 0.9
    narrow = _layer(n=400, p=6)
    full = np.linalg.svd(np.linalg.qr(narrow - narrow.mean(0))[0].T
                         @ np.linalg.qr(narrow[:, ::-1] - narrow[:, ::-1].mean(0))[0], compute_uv=False)
    assert sim.canonical_correlations(narrow, narrow[:, ::-1]) == pytest.approx(full)
    assert len(sim.canonical_correlations(_layer(p=12), _layer(p=12, seed=1), 0.9)) <= 12


def test_mutual_knn_counts_shared_neighbours():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    y = x[::-1].copy() * -1  # same geometry, mirrored
    assert sim.mutual_knn(x, y, k=2) == pytest.approx(1.0)
    z = np.array([[0.0], [10.0], [1.0], [11.0], [2.0], [12.0]])
    assert sim.mutual_knn(x, z, k=2) < 1.0
    with pytest.raises(ValueError, match="k must be"):
        sim.mutual_knn(x, z, k=6)


@pytest.mark.parametrize("call, message", [
    (lambda: sim.mean_cca(np.ones((10, 3)), np.ones((9, 3))), "same examples"),
    (lambda: sim.rsa(np.ones((3, 3)), np.ones((3, 3))), "at least 4"),
    (lambda: sim.svcca(np.full((10, 3), np.nan), np.ones((10, 3))), "NaN"),
    (lambda: sim.mean_cca(np.ones((10, 3)), _layer(n=10)), "constant"),
    (lambda: sim.rsa(np.ones((10, 3)), _layer(n=10, p=3)), "constant"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_rsa_agrees_with_rsatoolbox():
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 9))
    y = x + 0.7 * rng.normal(size=(40, 9))
    theirs_x, theirs_y = (calc_rdm(Dataset(v), method="correlation") for v in (x, y))
    assert sim.rdm(x) == pytest.approx(theirs_x.get_vectors()[0])
    assert sim.rsa(x, y) == pytest.approx(float(compare(theirs_x, theirs_y, method="spearman")[0, 0]))
