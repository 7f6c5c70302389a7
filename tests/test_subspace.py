"""Tests of widedeep.measures.subspace: planted matches are recovered, both forms agree, streaming is exact, refusals.

The direct form (`LayerPair.from_activations`, the authors' least squares) is the oracle of the Gram form.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from widedeep.measures import subspace as ss
from widedeep.models import resnet

pytestmark = pytest.mark.usefixtures("one_thread")
direct, from_gram = ss.LayerPair.from_activations, ss.LayerPair.from_gram

EPS_RANGE = (0.05, 0.1, 0.2, 0.3)


def _mixing(k: int, rng: np.random.Generator) -> np.ndarray:
    """A well-conditioned invertible k x k matrix: rotation x scales in [0.5, 2] x rotation (condition <= 4)."""
    q1, _ = np.linalg.qr(rng.standard_normal((k, k)))
    q2, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return q1 @ np.diag(rng.uniform(0.5, 2.0, k)) @ q2


def _planted(n_a: int = 12, n_b: int = 10, k: int = 4, d: int = 400, noise: float = 0.01, seed: int = 0):
    """Layers sharing k neurons (a's mix b's, plus relative noise) at random positions; the rest are independent.

    Returns (a, b, planted_a, planted_b) with the planted index sets sorted.
    """
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n_b, d))
    a = rng.standard_normal((n_a, d))
    planted_a = np.sort(rng.choice(n_a, k, replace=False))
    planted_b = np.sort(rng.choice(n_b, k, replace=False))
    mixed = _mixing(k, rng) @ b[planted_b]
    jitter = rng.standard_normal(mixed.shape)
    jitter *= noise * np.linalg.norm(mixed, axis=1, keepdims=True) / np.linalg.norm(jitter, axis=1, keepdims=True)
    a[planted_a] = mixed + jitter
    return a, b, planted_a, planted_b


def _both(a: np.ndarray, b: np.ndarray, eps: float, **kw) -> tuple:
    """Maximum match by the direct and by the Gram form."""
    return direct(a, b, **kw).maximum_match(eps), from_gram(ss.stacked_gram(a, b), a.shape[0], **kw).maximum_match(eps)


def _assert_same(first: tuple, second: tuple) -> None:
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------
# Maximum match
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_planted_match_is_recovered_over_a_range_of_eps(seed):
    a, b, planted_a, planted_b = _planted(seed=seed)
    for eps in EPS_RANGE:
        for idx_a, idx_b in _both(a, b, eps):
            np.testing.assert_array_equal(idx_a, planted_a)
            np.testing.assert_array_equal(idx_b, planted_b)
            assert idx_a.dtype == idx_b.dtype == np.int64
        assert direct(a, b).score(eps) == pytest.approx(8 / 22)
    # Below the 1% noise nothing matches: the planted neurons are too far and then nothing is left.
    for idx_a, idx_b in _both(a, b, 0.001):
        assert idx_a.size == idx_b.size == 0
    # Independent neurons sit ~0.98 from the other layer's span: all of them match only at eps >~ 0.98.
    top = direct(a, b).maximal_eps()
    assert 0.95 < top < 1 and top == pytest.approx(from_gram(ss.stacked_gram(a, b), 12).maximal_eps(), abs=1e-9)


def test_identical_and_mixed_layers_match_fully_at_eps_zero():
    rng = np.random.default_rng(3)
    b = rng.standard_normal((10, 50))
    for a in (b.copy(), _mixing(10, rng) @ b, torch.as_tensor(b, dtype=torch.float32)):
        for idx_a, idx_b in _both(a, b, 0.0):
            np.testing.assert_array_equal(idx_a, np.arange(10))
            np.testing.assert_array_equal(idx_b, np.arange(10))
    half = torch.as_tensor(b, dtype=torch.bfloat16)  # tensors of any real dtype are read in float64
    assert direct(half, half).score(0.0) == 1.0
    # A layer mixed with a rank-deficient matrix spans only 9 of b's 10 dimensions: no b neuron lies in
    # it, so all leave, and then a's neurons have an empty span to match; at eps = 1 everything matches.
    singular = _mixing(10, rng)
    singular[-1] = singular[0] + singular[1]
    for idx_a, idx_b in _both(singular @ b, b, 0.0):
        assert idx_a.size == idx_b.size == 0
    assert direct(singular @ b, b).score(1.0) == 1.0


def test_large_eps_matches_every_live_neuron_and_dead_ones_never():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((8, 30)), rng.standard_normal((6, 30))
    a[[2, 5]] = 0.0
    b[4] = 1e-9 * rng.standard_normal(30)  # below dead_tol times the largest norm: dead too
    for eps in (1.0, 3.0):
        for idx_a, idx_b in _both(a, b, eps):
            np.testing.assert_array_equal(idx_a, [0, 1, 3, 4, 6, 7])
            np.testing.assert_array_equal(idx_b, [0, 1, 2, 3, 5])
    assert direct(a, b).score(1.0) == pytest.approx(11 / 14)  # dead neurons stay in the denominator
    # Dead neurons lower the score of an otherwise full match, and never enter it even at eps = 0.
    live = rng.standard_normal((6, 30))
    with_dead = np.concatenate([live, np.zeros((2, 30))])
    assert direct(live, live).score(0.0) == 1.0
    for idx_a, idx_b in _both(with_dead, live, 0.0):
        np.testing.assert_array_equal(idx_a, np.arange(6))
        np.testing.assert_array_equal(idx_b, np.arange(6))
    assert from_gram(ss.stacked_gram(with_dead, live), 8).score(0.0) == pytest.approx(12 / 14)
    assert direct(np.zeros((2, 30)), np.zeros((3, 30))).score(1.0) == 0.0  # all dead: nothing to match


def test_each_side_is_held_to_eps():
    # b's second neuron sits at relative distance 0.2 from span a = span{x1}; everything else is exact.
    rng = np.random.default_rng(19)
    x1, x2 = np.linalg.qr(rng.standard_normal((40, 2)))[0].T
    tilt = 0.2 / np.sqrt(1 - 0.2 ** 2)
    a, b = np.stack([3 * x1]), np.stack([x1, x1 + tilt * x2])
    for first, second, n_first in ((a, b, 1), (b, a, 2)):  # the tilted neuron in layer b, then in layer a
        for eps, expected in ((0.19, 2), (0.21, 3)):
            for idx in _both(first, second, eps):
                assert idx[0].size + idx[1].size == expected
        assert from_gram(ss.stacked_gram(first, second), n_first).maximal_eps() == pytest.approx(0.2, abs=1e-9)
        assert direct(first, second).maximal_eps() == pytest.approx(0.2, abs=1e-12)


def test_score_is_invariant_to_invertible_mixing_of_matched_neurons():
    a, b, planted_a, planted_b = _planted(noise=0.0, seed=5)
    rng = np.random.default_rng(6)
    mixed_a, mixed_b = a.copy(), b.copy()
    mixed_a[planted_a] = _mixing(4, rng) @ a[planted_a]
    mixed_b[planted_b] = _mixing(4, rng) @ b[planted_b]
    for eps in (0.0,) + EPS_RANGE:
        expected = direct(a, b).maximum_match(eps)
        _assert_same(direct(mixed_a, mixed_b).maximum_match(eps), expected)
        assert direct(mixed_a, mixed_b).score(eps) == direct(a, b).score(eps) == pytest.approx(8 / 22)
    # Scaling single neurons changes nothing either (relative distances).
    scaled = a * rng.uniform(0.1, 10.0, (a.shape[0], 1))
    _assert_same(direct(scaled, b).maximum_match(0.1), direct(a, b).maximum_match(0.1))


def test_a_small_exact_example_with_rank_deficiency():
    rng = np.random.default_rng(7)
    x1, x2, x3 = rng.standard_normal((3, 20))
    a = np.stack([x1, x1, 2 * x1, x2])            # duplicates: a spans {x1, x2}
    b = np.stack([x1, x1 + x2, x3])                # the first two span {x1, x2}, x3 is foreign
    for idx_a, idx_b in _both(a, b, 0.0):
        np.testing.assert_array_equal(idx_a, [0, 1, 2, 3])
        np.testing.assert_array_equal(idx_b, [0, 1])


@pytest.mark.parametrize("case", ["random", "duplicates", "wide", "relu"])
def test_gram_form_equals_direct_form(case):
    rng = np.random.default_rng({"random": 8, "duplicates": 9, "wide": 10, "relu": 11}[case])
    if case == "random":  # partial matches at several noise levels
        a, b, _, _ = _planted(n_a=16, n_b=14, k=6, d=300, noise=0.0, seed=12)
        a[:3] += rng.uniform(0.02, 0.4, (3, 1)) * rng.standard_normal((3, 300)) / np.sqrt(300) \
            * np.linalg.norm(a[:3], axis=1, keepdims=True)
    elif case == "duplicates":  # repeated neurons, combinations and a dead neuron on each side
        a, b, _, _ = _planted(n_a=10, n_b=10, k=5, d=200, noise=0.05, seed=13)
        a[7], a[8], b[9], b[2] = a[1], 3 * a[1] - a[2], 0.0, b[0] + b[1]
    elif case == "wide":  # more neurons than samples: each side spans the whole sample space
        a, b = rng.standard_normal((20, 12)), rng.standard_normal((25, 12))
    else:  # post-ReLU-like: non-negative, sparse, a shared mean direction
        base = rng.standard_normal((8, 500))
        a = np.maximum(rng.standard_normal((12, 8)) @ base + rng.standard_normal((12, 500)), 0)
        b = np.maximum(rng.standard_normal((10, 8)) @ base + 0.5 * rng.standard_normal((10, 500)), 0)
    gram = ss.stacked_gram(a, b)
    for eps in (0.0, 0.05, 0.15, 0.25, 0.5, 0.8):
        _assert_same(*_both(a, b, eps))
    if case == "wide":
        assert from_gram(gram, 20).score(0.0) == 1.0
    np.testing.assert_allclose(from_gram(gram, a.shape[0]).scores([0.15, 0.5]),
                               [direct(a, b).score(0.15), direct(a, b).score(0.5)])


def test_is_match_and_minimal_eps():
    a, b, planted_a, planted_b = _planted(seed=14)
    gram = ss.stacked_gram(a, b)
    assert direct(a, b).is_match(planted_a, planted_b, 0.05)
    assert from_gram(gram, 12).is_match(planted_a, planted_b, 0.05)
    assert not direct(a, b).is_match(planted_a, planted_b, 0.001)            # the 1% noise is too much
    assert not from_gram(gram, 12).is_match(planted_a, planted_b[:-1], 0.05)  # a needs all four of b's
    assert direct(a, b).is_match([], [], 0.0)                                 # the empty match
    eps = from_gram(gram, 12).minimal_eps(4, precision=1e-5)
    assert 0.001 < eps < 0.02
    assert from_gram(gram, 12).maximum_match(eps)[1].size >= 4
    assert from_gram(gram, 12).maximum_match(eps - 2e-5)[1].size < 4


def test_fraction_match_eps_is_the_smallest_eps_holding_that_fraction():
    rng = np.random.default_rng(16)
    samples = 600
    base = rng.standard_normal((4, samples))
    # Layer b's neuron i lies at relative distance 0.1 * (i + 1) from layer a's span (a: the 4 base vectors).
    noise = rng.standard_normal((4, samples))
    noise -= (noise @ base.T) @ np.linalg.solve(base @ base.T, base)  # orthogonal to span(base)
    dist = 0.1 * np.arange(1, 5)
    b = np.sqrt(1 - dist[:, None] ** 2) * base / np.linalg.norm(base, axis=1, keepdims=True) \
        + dist[:, None] * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    gram = ss.stacked_gram(base, b)
    half = from_gram(gram, 4).eps_for_fraction(0.5, precision=1e-5)
    assert from_gram(gram, 4).maximum_match(half)[1].size >= 2
    assert from_gram(gram, 4).maximum_match(half - 1e-4)[1].size < 2
    assert from_gram(gram, 4).eps_for_fraction(1.0, precision=1e-5) >= half
    assert np.isnan(from_gram(ss.stacked_gram(np.zeros((2, 9)), np.ones((2, 9))), 2).eps_for_fraction())
    with pytest.raises(ValueError, match="fraction must be in"):
        from_gram(gram, 4).eps_for_fraction(0.0)


# ---------------------------------------------------------------------------------------------
# Streaming and sampled forms
# ---------------------------------------------------------------------------------------------

def _conv_acts(n: int = 10, c_a: int = 4, c_b: int = 6, size: int = 5, seed: int = 15):
    """Post-ReLU-like (n, C, size, size) outputs of two 'layers' sharing two channels' worth of signal."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 2, size, size, generator=gen, dtype=torch.float64)
    acts_a = torch.cat([shared, torch.randn(n, c_a - 2, size, size, generator=gen, dtype=torch.float64)], 1)
    acts_b = torch.cat([shared.flip(1) * 2, torch.randn(n, c_b - 2, size, size, generator=gen, dtype=torch.float64)], 1)
    return acts_a.relu(), acts_b.relu()


def test_neuron_moments_over_batches_equal_the_gram_of_all_data():
    acts_a, acts_b = _conv_acts()
    moments = ss.NeuronMoments()
    for start, stop in ((0, 3), (3, 4), (4, 10)):
        moments.update(acts_a[start:stop], acts_b[start:stop])
    za, zb = ss.neuron_matrix(acts_a), ss.neuron_matrix(acts_b)
    assert za.shape == (4, 250) and moments.num_samples == 250 and (moments.n_a, moments.n_b) == (4, 6)
    np.testing.assert_allclose(za[1, 5 * 25 + 7], acts_a[5, 1, 1, 2].item())  # column e*H*W + p
    np.testing.assert_allclose(moments.gram(), ss.stacked_gram(za, zb), rtol=1e-12, atol=1e-12)
    for eps in (0.0, 0.2):
        _assert_same(from_gram(moments.gram(), 4).maximum_match(eps), direct(za, zb).maximum_match(eps))
    assert from_gram(moments.gram(), 4).score(1e-6) == pytest.approx(4 / 10)  # the shared channels
    flat = ss.NeuronMoments(dtype=torch.float32)  # (batch, C) outputs, float32 products
    flat.update(acts_a[:, :, 0, 0].float(), acts_b[:, :, 0, 0].float())
    np.testing.assert_allclose(flat.gram(), ss.stacked_gram(acts_a[:, :, 0, 0].T, acts_b[:, :, 0, 0].T), rtol=1e-6)


def sample_positions(acts_a, acts_b, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The authors' sampling on stored activations (the oracle): the same random (example, position) columns of both."""
    z_a, z_b = ss.neuron_matrix(acts_a), ss.neuron_matrix(acts_b)
    coords = rng.choice(z_a.shape[1], n_samples, replace=False)
    return z_a[:, coords], z_b[:, coords]


def test_sampled_moments_stream_the_same_draws_as_stored_activations():
    acts_a, acts_b = _conv_acts()
    moments = ss.SampledNeuronMoments(10, n_samples=40, draws=3, seed=7)
    for start in range(0, 10, 4):
        moments.update(acts_a[start:start + 4], acts_b[start:start + 4])
    grams = moments.gram()
    rng = np.random.default_rng(7)
    assert grams.shape == (3, 10, 10)
    for d in range(3):
        draw = np.sort(rng.choice(250, 40, replace=False))  # the coordinates each draw takes, in order
        z_a, z_b = ss.neuron_matrix(acts_a)[:, draw], ss.neuron_matrix(acts_b)[:, draw]
        np.testing.assert_allclose(grams[d], ss.stacked_gram(z_a, z_b), rtol=1e-12, atol=1e-12)
    assert not np.allclose(grams[0], grams[1])  # independent draws
    scores = ss.moment_match_scores({"grams": [grams], "n_a": [4]}, [0.2])
    assert scores[0, 0] == pytest.approx(np.mean([from_gram(g, 4).score(0.2) for g in grams]))
    small = ss.SampledNeuronMoments(10, n_samples=1000, draws=2)  # more than the 250 coordinates: all of them
    small.update(acts_a, acts_b)
    assert small.num_samples == 250
    exact = ss.stacked_gram(ss.neuron_matrix(acts_a), ss.neuron_matrix(acts_b))
    np.testing.assert_allclose(small.gram()[1], exact)
    all_columns = sample_positions(acts_a, acts_b, 250, np.random.default_rng(0))  # any order of all columns
    np.testing.assert_allclose(ss.stacked_gram(*all_columns), exact, rtol=1e-12)
    partial = ss.SampledNeuronMoments(10, n_samples=40, draws=1)
    partial.update(acts_a[:4], acts_b[:4])
    with pytest.raises(ValueError, match="saw 4 of num_examples=10"):
        partial.gram()


# ---------------------------------------------------------------------------------------------
# Simple matches
# ---------------------------------------------------------------------------------------------

def _two_pairs(seed: int = 16):
    """a[0:2] mixes b[3:5] and a[2:4] mixes b[0:2] (plus 1% noise); the other neurons are independent."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((7, 300)), rng.standard_normal((6, 300))
    a[0:2] = _mixing(2, rng) @ b[3:5] + 0.01 * rng.standard_normal((2, 300))
    a[2:4] = _mixing(2, rng) @ b[0:2] + 0.01 * rng.standard_normal((2, 300))
    return a, b


def test_simple_match_of_a_neuron_holds_only_its_own_pair():
    a, b = _two_pairs()
    gram = ss.stacked_gram(a, b)
    idx_a, idx_b = from_gram(gram, 7).maximum_match(0.1)
    np.testing.assert_array_equal(idx_a, [0, 1, 2, 3])
    np.testing.assert_array_equal(idx_b, [0, 1, 3, 4])
    for v, pair_a, pair_b in ((0, [0, 1], [3, 4]), (3, [2, 3], [0, 1]), (7 + 4, [0, 1], [3, 4]), (7, [2, 3], [0, 1])):
        for got in (from_gram(gram, 7).simple_match(v, 0.1), direct(a, b).simple_match(v, 0.1)):
            np.testing.assert_array_equal(got[0], pair_a)
            np.testing.assert_array_equal(got[1], pair_b)
            assert direct(a, b).is_match(*got, 0.1)
    reverse = from_gram(gram, 7).simple_match(0, 0.1, order=np.arange(13)[::-1])  # another order, same answer here
    np.testing.assert_array_equal(reverse[0], [0, 1])
    sizes = from_gram(gram, 7).simple_match_sizes(0.1)
    np.testing.assert_array_equal(sizes["neurons"], [0, 1, 2, 3, 7, 8, 10, 11])
    np.testing.assert_array_equal(sizes["sizes"], [4] * 8)
    np.testing.assert_array_equal(sizes["sizes_a"], [2] * 8)
    some = from_gram(gram, 7).simple_match_sizes(0.1, max_neurons=3, seed=1)
    assert some["neurons"].size == 3 and set(some["neurons"]) <= {0, 1, 2, 3, 7, 8, 10, 11}


def _survives_without(gram: np.ndarray, n_a: int, idx_a: np.ndarray, idx_b: np.ndarray, v: int, u: int,
                      eps: float) -> bool:
    """Whether stacked neuron v stays in the maximum match of the neurons idx_a, idx_b less stacked neuron u."""
    keep = np.setdiff1d(np.r_[idx_a, n_a + idx_b], [u])
    keep_a = int((keep < n_a).sum())
    if keep_a == 0 or keep_a == keep.size:
        return False  # one side empty: nothing matches below eps = 1
    rest_a, rest_b = from_gram(gram[np.ix_(keep, keep)], keep_a).maximum_match(eps)
    return v in keep[rest_a] or v in keep[keep_a + rest_b]


def _one_at_a_time(a: np.ndarray, b: np.ndarray, v: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The authors' Algorithm 2 loop: delete one neuron at a time (a's, then b's), keep the set (not its match)."""
    n_a = a.shape[0]
    xs, ys = direct(a, b).maximum_match(eps)
    current, checked = list(xs) + [n_a + j for j in ys], {v}
    while True:
        unchecked = [u for u in current if u not in checked]
        if not unchecked:
            chosen = np.array(sorted(current), dtype=np.int64)
            return chosen[chosen < n_a], chosen[chosen >= n_a] - n_a
        u = unchecked[0]
        checked.add(u)
        trial = [w for w in current if w != u]
        sub_a, sub_b = [w for w in trial if w < n_a], [w - n_a for w in trial if w >= n_a]
        if sub_a and sub_b:
            kept_a, kept_b = direct(a[sub_a], b[sub_b]).maximum_match(eps)
            if v in np.array(sub_a)[kept_a] or v - n_a in np.array(sub_b)[kept_b]:
                current = trial


def test_simple_match_is_a_valid_v_minimal_match_in_a_tangled_case():
    # One planted match whose mixing couples all its neurons: the simple match must be a match with v
    # from which no neuron can be deleted without losing v.
    a, b, planted_a, planted_b = _planted(n_a=9, n_b=8, k=5, d=200, noise=0.02, seed=17)
    gram = ss.stacked_gram(a, b)
    for v in (int(planted_a[0]), 9 + int(planted_b[-1])):
        idx_a, idx_b = from_gram(gram, 9).simple_match(v, 0.2)
        assert from_gram(gram, 9).is_match(idx_a, idx_b, 0.2)
        assert v in idx_a or v - 9 in idx_b
        assert set(idx_a) <= set(planted_a) and set(idx_b) <= set(planted_b)
        assert _survives_without(gram, 9, idx_a, idx_b, v, -1, 0.2)  # the match itself keeps v
        for u in np.r_[idx_a, 9 + idx_b]:
            if u != v:
                assert not _survives_without(gram, 9, idx_a, idx_b, v, u, 0.2)
        _assert_same((idx_a, idx_b), _one_at_a_time(a, b, v, 0.2))  # the same as the authors' loop


def _graded(channels: int = 10, samples: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative mixtures of channels/2 shared ReLU features plus per-channel noise of graded size."""
    rng = np.random.default_rng(seed)
    features = np.maximum(rng.standard_normal((channels // 2, samples)), 0.0)
    layers = []
    for _ in range(2):
        signal = rng.uniform(0.0, 1.0, (channels, channels // 2)) @ features
        noise = np.abs(rng.standard_normal((channels, samples)))
        scale = rng.uniform(0.0, 0.6, (channels, 1)) * np.linalg.norm(signal, axis=1, keepdims=True)
        layers.append(signal + scale * noise / np.linalg.norm(noise, axis=1, keepdims=True))
    return layers[0], layers[1]


def test_simple_matches_of_overlapping_neurons_equal_the_authors_loop():
    a, b = _graded()
    gram = ss.stacked_gram(a, b)
    idx_a, idx_b = from_gram(gram, 10).maximum_match(0.25)
    assert 4 <= idx_a.size < 10 and 4 <= idx_b.size < 10  # a partial match
    sizes = []
    for v in np.r_[idx_a, 10 + idx_b]:
        got = from_gram(gram, 10).simple_match(int(v), 0.25)
        _assert_same(got, _one_at_a_time(a, b, int(v), 0.25))
        assert direct(a, b).is_match(*got, 0.25)
        sizes.append(got[0].size + got[1].size)
    assert min(sizes) < max(sizes) < idx_a.size + idx_b.size  # simple matches of different sizes, all smaller
    np.testing.assert_array_equal(from_gram(gram, 10).simple_match_sizes(0.25)["sizes"], sizes)


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

def test_refusals_say_what_is_wrong():
    rng = np.random.default_rng(18)
    a, b = rng.standard_normal((3, 20)), rng.standard_normal((4, 20))
    with pytest.raises(ValueError, match="a has 3 samples but b has 20"):
        direct(a[:, :3], b).maximum_match(0.1)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        direct(a, b).maximum_match(-0.1)
    with pytest.raises(ValueError, match="eps must be"):
        from_gram(ss.stacked_gram(a, b), 3).score(float("nan"))
    with pytest.raises(ValueError, match=r"a must be 2-D \(neurons, samples\).*neuron_matrix"):
        direct(a[None], b).maximum_match(0.1)
    bad = a.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="a: 1 of 60 values are NaN or inf"):
        direct(bad, b).maximum_match(0.1)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        ss.stacked_gram(b, bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        ss.NeuronMoments().update(torch.full((2, 3), float("nan")), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"n_a .* must be an integer in \[1, 6\]"):
        from_gram(ss.stacked_gram(a, b), 7).maximum_match(0.1)
    with pytest.raises(ValueError, match="square"):
        from_gram(np.ones((3, 4)), 1).maximum_match(0.1)
    with pytest.raises(ValueError, match="not symmetric"):
        from_gram(np.triu(np.ones((4, 4))), 2).maximum_match(0.1)
    with pytest.raises(ValueError, match="not in the maximum 0.1-match"):
        direct(a, b).simple_match(0, 0.1)
    with pytest.raises(ValueError, match="share the examples and the spatial shape"):
        ss.NeuronMoments().update(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 2, 2))
    moments = ss.NeuronMoments()
    moments.update(torch.ones(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="earlier ones had 3 \\+ 2"):
        moments.update(torch.ones(2, 4), torch.ones(2, 2))
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        ss.SampledNeuronMoments(4, n_samples=0)
    with pytest.raises(ValueError, match="no batches"):
        ss.NeuronMoments().gram()


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------

def _tiny(width: float, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return resnet(8, width, in_channels=1)


def test_model_neuron_moments_on_two_tiny_resnets():
    model_a, model_b = _tiny(0.25, 0), _tiny(0.5, 1)
    model_a.train()
    model_b.eval()
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    result = ss.model_neuron_moments(model_a, model_b, images, batch_size=4)
    assert model_a.training and model_a.bn.training and not model_b.training  # flags restored
    names = [layer.name for layer in model_a.layers()]
    assert result["names"] == names
    by_name = dict(zip(names, zip(result["grams"], result["n_a"], result["n_b"])))
    assert by_name["stages.2.0.relu2"][1:] == (16, 32) and by_name["input"][1:] == (1, 1)
    for gram, n_a, n_b in zip(result["grams"], result["n_a"], result["n_b"]):
        assert gram.shape == (n_a + n_b, n_a + n_b) and gram.dtype == np.float64
        np.testing.assert_array_equal(gram, gram.T)
        assert np.linalg.eigvalsh(gram).min() >= -1e-9 * max(np.abs(gram).max(), 1e-300)
    # Two batches (4 + 2) add up to the Gram of the whole forward pass.
    with torch.no_grad():
        logits = torch.cat([model_a.eval()(images), model_b.eval()(images)], 1).double()
    np.testing.assert_allclose(by_name["logits"][0], (logits.T @ logits).numpy(), rtol=1e-5, atol=1e-8)
    z = images.double().reshape(6, -1)
    np.testing.assert_allclose(by_name["input"][0], np.full((2, 2), (z * z).sum().item()), rtol=1e-12)
    scores = ss.moment_match_scores(result, [0.2, 1.0])
    assert scores.shape == (len(names), 2) and scores[names.index("input")].tolist() == [1.0, 1.0]
    relus = ss.relu_layer_names(model_a)
    assert relus[0] == "relu" and all("relu" in name for name in relus) and len(relus) == 7


def test_model_neuron_moments_of_a_model_with_its_copy_and_sampled():
    model = _tiny(0.25, 2)
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    layers = ss.relu_layer_names(model)
    result = ss.model_neuron_moments(model, copy.deepcopy(model), [(images, torch.zeros(5))], layers)
    # Identical networks: every live neuron matches its twin at eps ~ 0, as at eps = 1.
    scores = ss.moment_match_scores(result, [1e-6, 1.0])
    np.testing.assert_array_equal(scores[:, 0], scores[:, 1])
    assert (scores[:, 1] > 0).all()
    sampled = ss.model_neuron_moments(model, model, images, layers, batch_size=2, n_samples=30, draws=2, seed=3)
    assert [g.shape for g in sampled["grams"]] == [(2, 8, 8)] * 3 + [(2, 16, 16)] * 2 + [(2, 32, 32)] * 2
    assert sampled["num_samples"] == [30] * 5 + [20] * 2  # stage 3 has 5 x 2 x 2 = 20 coordinates: all used
    np.testing.assert_allclose(sampled["grams"][-1][0], sampled["grams"][-1][1])
    assert ss.moment_match_scores(sampled, [1e-6]).shape == (len(layers), 1)
    with pytest.raises(ValueError, match="pass num_examples"):
        ss.model_neuron_moments(model, model, [images], layers, n_samples=30)
    with pytest.raises(ValueError, match=r"different layers \('stages.1.0.conv1' vs 'stages.0.1.conv1'\)"):
        ss.model_neuron_moments(model, resnet(14, 0.25, in_channels=1), images)
