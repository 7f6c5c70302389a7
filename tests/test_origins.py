"""Dominant datapoints: first-PC contributions, concentration, overlaps and non-circular removal, on planted data."""

import numpy as np
import pytest

from widedeep.analyses import origins


def _planted(n=400, layers=8, block=(2, 6), dominant=0.05, strength=12.0, seed=0):
    """Layers sharing a signal; the block's layers also share one direction carried by a few dominant examples."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 20))
    heavy = np.zeros(n)
    chosen = rng.choice(n, int(dominant * n), replace=False)
    heavy[chosen] = strength * (1 + rng.random(len(chosen)))
    grams, inside = [], []
    for layer in range(layers):
        x = signal @ rng.normal(size=(20, 30)) + 0.5 * rng.normal(size=(n, 30))
        is_inside = block[0] <= layer < block[1]
        if is_inside:
            x = x + np.outer(heavy, rng.normal(size=30))
        grams.append(x @ x.T)
        inside.append(is_inside)
    return grams, np.array(inside), np.sort(chosen)


def test_contributions_find_the_planted_examples_and_are_concentrated():
    grams, inside, chosen = _planted()
    scores = origins.pc1_contributions([g for g, i in zip(grams, inside) if i])
    assert scores.sum() == pytest.approx(1.0)
    top = origins.top_set(scores, 0.05)
    assert origins.jaccard(top, chosen) > 0.9
    assert origins.top_share(scores, 0.05) > 0.8 > origins.gaussian_top_share(0.05)
    outside = origins.pc1_contributions([g for g, i in zip(grams, inside) if not i])
    assert origins.top_share(outside, 0.05) < 0.5


def test_gaussian_baseline_and_chance_overlap_match_their_closed_forms():
    assert origins.gaussian_top_share(0.10) == pytest.approx(0.44, abs=0.005)
    assert origins.gaussian_top_share(0.01) == pytest.approx(0.085, abs=0.005)
    assert origins.gaussian_top_share(1.0) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    z2 = rng.normal(size=200_000) ** 2
    assert origins.top_share(z2, 0.10) == pytest.approx(origins.gaussian_top_share(0.10), abs=0.01)
    assert origins.chance_jaccard(0.05, 2000) == pytest.approx(0.0256, abs=1e-3)
    draws = [origins.jaccard(rng.choice(2000, 100, replace=False), rng.choice(2000, 100, replace=False))
             for _ in range(400)]
    assert np.mean(draws) == pytest.approx(origins.chance_jaccard(0.05, 2000), abs=0.005)


def test_cross_half_projection_equals_the_feature_space_projection():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 7)) + np.outer(rng.normal(size=60) * 3, rng.normal(size=7))
    choose, measure = origins.split_halves(60, seed=3)
    projected = origins.cross_half_projections(x @ x.T, choose, measure)
    xc = x[choose] - x[choose].mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    expected = ((x[measure] - x[choose].mean(0)) @ vt[0]) ** 2
    assert projected == pytest.approx(expected, rel=1e-8)


def test_removing_the_dominant_examples_breaks_the_block_and_random_removal_does_not():
    grams, inside, chosen = _planted()
    effect = origins.removal_effect(grams, inside, fraction=0.05, seed=0, random_draws=10)
    assert effect["contrast_before"] > 0.2
    assert effect["drop_dominant"] > 0.5 * effect["contrast_before"]
    assert abs(effect["drop_random_mean"]) < 3 * effect["drop_random_sd"] + 0.02
    assert effect["drop_dominant"] > effect["drop_random_mean"] + 5 * effect["drop_random_sd"]
    # The stronger control: examples that dominate a layer outside the block do not break it.
    choose, measure = origins.split_halves(len(grams[0]), 0)
    outside_layer = int(np.flatnonzero(~inside)[0])
    control = origins.cross_half_projections(grams[outside_layer], choose, measure)
    controlled = origins.removal_effect(grams, inside, 0.05, 0, 2, control_scores=control)
    assert controlled["drop_control"] < 0.25 * controlled["drop_dominant"]


def test_debiased_cka_matrix_is_one_on_the_diagonal_and_matches_a_scaled_copy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    y = 3 * x @ q
    cka = origins.debiased_cka_matrix([x @ x.T, y @ y.T, rng.normal(size=(50, 50)) @ np.eye(50)])
    assert cka[0, 0] == pytest.approx(1) and cka[0, 1] == pytest.approx(1)


@pytest.mark.parametrize("call, message", [
    (lambda: origins.first_pc(np.ones((5, 5))), "constant"),
    (lambda: origins.top_set(np.ones(10), 0), "fraction"),
    (lambda: origins.split_halves(5), "at least 8"),
    (lambda: origins.block_contrast(np.eye(3), [True, False, False]), ">= 2 layers inside"),
    (lambda: origins.pc1_contributions([]), "at least one"),
    (lambda: origins.centre_gram(np.ones((2, 3))), "square"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
