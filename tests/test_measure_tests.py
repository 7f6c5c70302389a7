"""The field's tests of a measure: identification, calibration against shuffled examples, PC removal, outliers."""

import numpy as np
import pytest

from widedeep.analyses import measure_tests as mt
from widedeep.measures import similarity as sim


def _linear_cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _two_seeds(layers=5, n=150, seed=0):
    """Two 'seeds' whose layer i share a layer-specific signal (rotated), plus seed-specific noise."""
    rng = np.random.default_rng(seed)
    signals = [rng.normal(size=(n, 4)) for _ in range(layers)]
    def seed_layers(s):
        r = np.random.default_rng(100 + s)
        return [sig @ r.normal(size=(4, 10)) + 0.4 * r.normal(size=(n, 10)) for sig in signals]
    return seed_layers(0), seed_layers(1)


def test_identification_finds_corresponding_layers_and_not_shuffled_ones():
    a, b = _two_seeds()
    matrix = mt.similarity_matrix(_linear_cka, a, b)
    assert mt.identification_accuracy(matrix) == 1.0
    assert mt.identification_accuracy(matrix[::-1]) < 1.0
    with pytest.raises(ValueError, match="square"):
        mt.identification_accuracy(matrix[:3])


def test_calibration_puts_chance_at_zero_and_a_real_match_well_above_it():
    a, b = _two_seeds()
    rng = np.random.default_rng(5)
    unrelated = [rng.normal(size=x.shape) for x in b]
    real = mt.calibrated_best_match(_linear_cka, a, b, draws=3)
    chance = mt.calibrated_best_match(_linear_cka, a, unrelated, draws=3)
    assert np.all(real["calibrated"] > 0.4) and np.all(real["calibrated"] < real["best"])
    assert np.all(np.abs(chance["calibrated"]) < 0.15)
    assert np.all(chance["null"] > 0)  # the raw null of a maximum over layers is not zero: that is the point


def test_removing_top_pcs_lowers_rank_and_keeps_the_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3)) @ rng.normal(size=(3, 12)) + 0.01 * rng.normal(size=(80, 12)) + 7.0
    removed = mt.remove_top_pcs(x, 2)
    assert removed.mean(0) == pytest.approx(x.mean(0))
    s = np.linalg.svd(removed - removed.mean(0), compute_uv=False)
    assert s[1] < 0.1 * np.linalg.svd(x - x.mean(0), compute_uv=False)[1]
    assert np.array_equal(mt.remove_top_pcs(x, 0), x)
    assert _linear_cka(x, mt.remove_top_pcs(x, 1)) < _linear_cka(x, mt.remove_top_pcs(x, 0))


def test_outliers_pull_linear_cka_down_more_than_neighbour_overlap():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 20))
    moved = mt.translate_outliers(x, 0.02, 50.0, seed=3)
    assert (np.abs(moved - x).sum(1) > 0).sum() == 4
    assert _linear_cka(x, moved) < 0.5
    assert sim.mutual_knn(x, moved, k=10) > 0.8


def test_rank_agreement_and_run_contrasts():
    assert mt.rank_agreement([0.1, 0.2, 0.4], [0.01, 0.05, 0.3]) == pytest.approx(1.0)
    assert mt.rank_agreement([0.4, 0.2, 0.1], [0.01, 0.05, 0.3]) == pytest.approx(-1.0)
    assert np.isnan(mt.rank_agreement([0.1, 0.1, 0.1], [0.01, 0.05, 0.3]))
    matrix = np.full((6, 6), 0.3)
    matrix[1:4, 1:4] = 0.9
    np.fill_diagonal(matrix, 1.0)
    contrasts = mt.run_contrasts(matrix, 3)
    assert len(contrasts) == 4 and int(np.argmax(contrasts)) == 1
    assert mt.inside_outside_contrast(matrix, [False, True, True, True, False, False]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="run length"):
        mt.run_contrasts(matrix, 6)


def test_calibrated_score_is_zero_at_the_null_and_one_at_a_perfect_match():
    score = mt.calibrated_score([0.4, 1.0, 0.7], [0.4, 0.5, 1.0])
    assert score[0] == 0 and score[1] == 1 and np.isnan(score[2])


def test_neighbour_similarity_reads_the_first_off_diagonal_of_every_matrix():
    a = np.array([[1, 0.9, 0.1], [0.9, 1, 0.5], [0.1, 0.5, 1]])
    assert mt.neighbour_similarity([a, np.eye(2)]) == pytest.approx((0.9 + 0.5 + 0.0) / 3)
    with pytest.raises(ValueError, match="two or more layers"):
        mt.neighbour_similarity([np.eye(1)])
