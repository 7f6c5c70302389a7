"""Tests of widedeep.cka: estimator identities, invariances, the streaming engine and its refusals.

Each numerical pitfall in shared/reference/pitfalls.md has a test here: float32 cancellation,
clamping/epsilons (constant layers must raise), mean of ratios vs ratio of sums, n <= 3 batches,
and cross-model comparisons that silently compare a model with itself.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

from widedeep.measures import cka
from widedeep.measures import grams as gram_ops
from widedeep.models import resnet


pytestmark = pytest.mark.usefixtures("one_thread")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pair(n: int = 40, d1: int = 12, d2: int = 20, noise: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two related representations of the same n examples."""
    rng = _rng(seed)
    x = rng.normal(size=(n, d1))
    y = x @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2))
    return x, y


def _orthogonal(d: int, seed: int = 1) -> np.ndarray:
    q, r = np.linalg.qr(_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _u_center_reference(gram: np.ndarray) -> np.ndarray:
    """Kornblith et al.'s demo `center_gram(unbiased=True)`, as an independent numpy reference."""
    gram = gram.copy()
    n = gram.shape[0]
    np.fill_diagonal(gram, 0)
    means = np.sum(gram, 0) / (n - 2)
    means -= np.sum(means) / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0)
    return gram


def _hsic1_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC of raw (uncentred) float64 features via the demo's U-centring: no shared code."""
    n = x.shape[0]
    return float(np.sum(_u_center_reference(x @ x.T) * _u_center_reference(y @ y.T)) / (n * (n - 3)))


# ---------------------------------------------------------------------------------------------
# Full-data estimators
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(debiased):
    x, _ = _pair()
    assert cka.linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    assert cka.rbf_cka(x, x, 0.5, debiased) == pytest.approx(1.0, abs=1e-12)
    assert cka.feature_space_linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(debiased):
    x, y = _pair()
    moved = 3.7 * x @ _orthogonal(x.shape[1]) + 5.0  # rotate, scale and shift
    assert cka.linear_cka(moved, y, debiased) == pytest.approx(cka.linear_cka(x, y, debiased), abs=1e-12)
    assert cka.rbf_cka(moved, y, 0.5, debiased) == pytest.approx(cka.rbf_cka(x, y, 0.5, debiased), abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_not_invariant_to_arbitrary_invertible_maps(debiased):
    x, y = _pair()
    stretch = np.diag(np.geomspace(0.01, 10.0, x.shape[1])) @ _orthogonal(x.shape[1], seed=2)  # invertible
    assert abs(np.linalg.det(stretch)) > 0
    assert cka.linear_cka(x @ stretch, x, debiased) < 0.9
    assert abs(cka.linear_cka(x @ stretch, y, debiased) - cka.linear_cka(x, y, debiased)) > 0.01


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(40, 12, 20), (10, 50, 30)])  # d < n and d > n
def test_feature_space_form_equals_gram_form(debiased, shape):
    x, y = _pair(*shape)
    assert cka.feature_space_linear_cka(x, y, debiased) == pytest.approx(cka.linear_cka(x, y, debiased), abs=1e-12)


def test_linear_cka_matches_textbook_formula():
    x, y = _pair()
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert cka.linear_cka(x, y) == pytest.approx(expected, abs=1e-12)


def test_rbf_cka_matches_kornblith_demo():
    x, y = _pair()

    def demo_gram_rbf(a: np.ndarray, threshold: float) -> np.ndarray:
        dots = a @ a.T
        sq_norms = np.diag(dots)
        sq_distances = -2 * dots + sq_norms[:, None] + sq_norms[None, :]
        return np.exp(-sq_distances / (2 * threshold ** 2 * np.median(sq_distances)))

    def demo_cka(k: np.ndarray, l: np.ndarray) -> float:
        kc = k - k.mean(0) - k.mean(1)[:, None] + k.mean()
        lc = l - l.mean(0) - l.mean(1)[:, None] + l.mean()
        return float(np.sum(kc * lc) / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc)))

    for threshold in (0.2, 0.5, 1.0):
        expected = demo_cka(demo_gram_rbf(x, threshold), demo_gram_rbf(y, threshold))
        assert cka.rbf_cka(x, y, threshold) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("kind", ["linear", "rbf", "indefinite"])
def test_unbiased_hsic_u_centring_equals_song_trace_formula(kind):
    x, y = _pair(n=30)
    if kind == "linear":
        k, l = x @ x.T, y @ y.T
    elif kind == "rbf":
        k, l = gram_ops.gram_rbf(x), gram_ops.gram_rbf(y)
    else:  # any symmetric matrices, not only Grams
        a, b = _rng(3).normal(size=(2, 30, 30))
        k, l = a + a.T, b + b.T
    u_form, trace_form = cka.hsic_unbiased(k, l), cka.hsic_unbiased_trace(k, l)
    assert u_form == pytest.approx(trace_form, rel=1e-10, abs=1e-12)
    assert cka.hsic_unbiased(k, l) == pytest.approx(
        float(np.sum(_u_center_reference(np.asarray(k)) * _u_center_reference(np.asarray(l))) / (30 * 27)), rel=1e-12)


def test_biased_hsic_matches_definition():
    x, y = _pair(n=25)
    k, l = x @ x.T, y @ y.T
    h = np.eye(25) - np.ones((25, 25)) / 25
    assert cka.hsic_biased(k, l) == pytest.approx(np.trace(k @ h @ l @ h) / 24 ** 2, rel=1e-12)


def test_u_centring_ignores_feature_means():
    # Pre-centring features is exactly neutral for the unbiased HSIC, which is why we may do it.
    x, y = _pair(n=20)
    assert cka.hsic_unbiased((x + 3.0) @ (x + 3.0).T, y @ y.T) == pytest.approx(
        cka.hsic_unbiased(x @ x.T, y @ y.T), rel=1e-10)


def test_accepts_numpy_and_torch_and_images():
    x, y = _pair(n=24, d1=12, d2=18)
    images = torch.as_tensor(x, dtype=torch.float32).reshape(24, 3, 2, 2)
    value = cka.linear_cka(images, torch.as_tensor(y))
    assert isinstance(value, float)
    assert value == pytest.approx(cka.linear_cka(x.astype(np.float32), y), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The minibatch engine
# ---------------------------------------------------------------------------------------------

def _layers(n: int, seed: int = 0, offset: float = 0.0) -> list[np.ndarray]:
    """Three related 'layers' of n examples with different widths."""
    x, y = _pair(n=n, d1=8, d2=15, seed=seed)
    z = np.maximum(y @ _rng(seed + 7).normal(size=(15, 6)), 0) + offset
    return [x, y, z]


def test_single_batch_minibatch_equals_debiased_full_data_cka():
    layers = _layers(32)
    engine = cka.MinibatchCKA()
    engine.update([torch.as_tensor(a) for a in layers])
    matrix = engine.compute()
    expected = np.array([[cka.linear_cka(a, b, debiased=True) for b in layers] for a in layers])
    np.testing.assert_allclose(matrix, expected, atol=1e-12)
    assert matrix.dtype == np.float64 and np.all(np.diag(matrix) == 1.0)  # exactly 1, not approximately


def test_single_batch_cross_model_equals_debiased_full_data_cka():
    layers_a, layers_b = _layers(32, seed=0), _layers(32, seed=5)[:2]
    engine = cka.MinibatchCKA(["a0", "a1", "a2"], ["b0", "b1"])
    engine.update([torch.as_tensor(a) for a in layers_a], [torch.as_tensor(b) for b in layers_b])
    expected = np.array([[cka.linear_cka(a, b, debiased=True) for b in layers_b] for a in layers_a])
    assert engine.compute().shape == (3, 2)
    np.testing.assert_allclose(engine.compute(), expected, atol=1e-12)


def test_streaming_is_the_ratio_of_summed_hsics():
    # Batches of different sizes and scales, so a mean of per-batch CKAs would differ visibly.
    batches = [_layers(n, seed=s) for n, s in ((10, 1), (17, 2), (8, 3))]
    batches[1] = [a * 10.0 for a in batches[1]]
    engine = cka.MinibatchCKA()
    for layers in batches:
        engine.update([torch.as_tensor(a) for a in layers])
    matrix = engine.compute()
    for i in range(3):
        for j in range(3):
            cross = sum(_hsic1_reference(b[i], b[j]) for b in batches)
            self_i = sum(_hsic1_reference(b[i], b[i]) for b in batches)
            self_j = sum(_hsic1_reference(b[j], b[j]) for b in batches)
            assert matrix[i, j] == pytest.approx(cross / math.sqrt(self_i * self_j), abs=1e-10)
    mean_of_ratios = np.mean([cka.linear_cka(b[0], b[2], debiased=True) for b in batches])
    assert abs(matrix[0, 2] - mean_of_ratios) > 1e-3
    assert engine.num_batches == 3 and engine.num_examples == 35


@pytest.mark.parametrize("n", [5, 64, 101, 128, 257])  # one GEMM below 64 examples, three half-size products from 64
def test_symmetric_gram_and_u_centred_rows(n):
    m = torch.as_tensor(_rng(6).normal(size=(n, 30)))
    gram = gram_ops.symmetric_gram(m)
    torch.testing.assert_close(gram, m @ m.T, rtol=1e-12, atol=1e-12)
    triu = cka._triu(n, torch.device("cpu"))
    rows = cka.u_centred_rows(gram[None], triu)
    full = gram_ops.u_center(gram)
    torch.testing.assert_close(rows[0], full.reshape(-1)[triu[2]], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("n", [63, 128, 300])
def test_symmetric_gram_in_float32_matches_a_float64_product(n):
    m = torch.as_tensor(_rng(7).normal(size=(n, 500)), dtype=torch.float32)
    gram = gram_ops.symmetric_gram(m[:, ::2])  # a non-contiguous view too
    assert gram.dtype == torch.float32 and torch.equal(gram, gram.T)
    expected = (m[:, ::2].double() @ m[:, ::2].double().T).float()
    torch.testing.assert_close(gram, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("source", [torch.float32, torch.float64])
@pytest.mark.parametrize("gram_dtype", [None, torch.float32, torch.float64])
def test_layer_gram_never_modifies_its_input(source, gram_dtype):
    x = torch.as_tensor(_rng(11).normal(size=(70, 3, 4, 4)), dtype=source) + 5.0
    before = x.clone()
    gram = gram_ops.layer_gram(x, gram_dtype)
    assert torch.equal(x, before)
    assert gram.dtype == (gram_dtype or source)
    centred = (before.double().reshape(70, -1) - before.double().reshape(70, -1).mean(0))
    torch.testing.assert_close(gram.double(), centred @ centred.T, rtol=1e-5, atol=1e-4)


def test_update_grams_equals_update_and_sums_are_exposed():
    layers = _layers(16)
    from_acts, from_grams = cka.MinibatchCKA(), cka.MinibatchCKA()
    from_acts.update([torch.as_tensor(a) for a in layers])
    from_grams.update_grams([gram_ops.layer_gram(torch.as_tensor(a)) for a in layers])
    np.testing.assert_array_equal(from_acts.compute(), from_grams.compute())
    cross, self_a, self_b = from_grams.hsic_sums
    assert cross[0, 1] == pytest.approx(_hsic1_reference(layers[0], layers[1]), rel=1e-10)
    np.testing.assert_array_equal(self_a, np.diag(cross))


@pytest.mark.parametrize("gram_dtype", [torch.float32, torch.float64])
def test_float32_activations_with_large_offset(gram_dtype):
    # Post-ReLU-like features with a +1e4 common offset, stored in float32 as in a real network.
    rng = _rng(4)
    base = rng.normal(size=(64, 32))
    acts = [np.abs(base @ rng.normal(size=(32, 200))) + 1e4, np.abs(base @ rng.normal(size=(32, 150))) + 1e4]
    acts32 = [torch.as_tensor(a, dtype=torch.float32) for a in acts]
    exact = [a.double().numpy() for a in acts32]  # the float32 data, in float64
    reference = _hsic1_reference(exact[0] - exact[0].mean(0), exact[1] - exact[1].mean(0)) / math.sqrt(
        _hsic1_reference(exact[0] - exact[0].mean(0), exact[0] - exact[0].mean(0))
        * _hsic1_reference(exact[1] - exact[1].mean(0), exact[1] - exact[1].mean(0)))
    engine = cka.MinibatchCKA(gram_dtype=gram_dtype)
    engine.update(acts32)
    assert engine.compute()[0, 1] == pytest.approx(reference, abs=1e-6)
    # The naive route (float32 Grams of uncentred features, trace formula) is visibly wrong here.
    k, l = (a @ a.T for a in acts32)
    naive = cka.hsic_unbiased_trace(k.double(), l.double())
    assert abs(naive - _hsic1_reference(exact[0], exact[1])) > 1e-3 * abs(_hsic1_reference(exact[0], exact[1]))


def test_debiasing_removes_small_n_inflation_for_independent_inputs():
    # Independent representations: the biased estimator reports ~0.2+ at n=32, the debiased one ~0.
    rng = _rng(9)
    biased, debiased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(32, 64)), rng.normal(size=(32, 64))
        biased.append(cka.linear_cka(x, y))
        debiased.append(cka.linear_cka(x, y, debiased=True))
    assert np.mean(biased) > 0.15 and abs(np.mean(debiased)) < 0.03


def test_minibatch_cka_is_stable_across_batch_sizes():
    # The unbiased HSIC sums do not drift with n, so the batch size barely changes the estimate.
    rng = _rng(10)
    x = rng.normal(size=(1024, 40))
    y = np.tanh(x @ rng.normal(size=(40, 30)) / 4) + 0.5 * rng.normal(size=(1024, 30))
    values = []
    for n in (128, 256, 512):
        engine = cka.MinibatchCKA()
        for start in range(0, 1024, n):
            engine.update([torch.as_tensor(x[start:start + n]), torch.as_tensor(y[start:start + n])])
        values.append(engine.compute()[0, 1])
    assert max(values) - min(values) < 0.02
    assert values[-1] == pytest.approx(cka.linear_cka(x, y, debiased=True), abs=0.02)


# ---------------------------------------------------------------------------------------------
# Refusals: never silently wrong
# ---------------------------------------------------------------------------------------------

def test_rejects_batches_of_three_or_fewer():
    layers = [torch.as_tensor(a) for a in _layers(3)]
    with pytest.raises(ValueError, match=r"n=3.*n >= 4"):
        cka.MinibatchCKA(["x", "y", "z"]).update(layers)
    with pytest.raises(ValueError, match="n=3"):
        cka.linear_cka(layers[0], layers[1], debiased=True)
    with pytest.raises(ValueError, match="n=3"):
        cka.hsic_unbiased(np.eye(3), np.eye(3))


def test_biased_cka_on_two_or_three_examples_warns_that_it_says_little():
    rng = _rng(3)
    x, unrelated = rng.normal(size=(2, 5)), rng.normal(size=(2, 7))
    for estimator in (cka.linear_cka, cka.feature_space_linear_cka):
        with pytest.warns(RuntimeWarning, match="biased CKA on n=2 examples.*exactly 1.0"):
            assert estimator(x, unrelated) == pytest.approx(1.0)  # what the warning is about
    with pytest.warns(RuntimeWarning, match="n=3"):
        cka.rbf_cka(rng.normal(size=(3, 4)), rng.normal(size=(3, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # four or more examples: no warning
        cka.linear_cka(*_pair(n=4))


def test_rejects_mismatched_example_counts():
    a, b = _layers(12), _layers(10)
    with pytest.raises(ValueError, match="12 examples but y has 10"):
        cka.linear_cka(a[0], b[1])
    with pytest.raises(ValueError, match=r"layer 'wide'.*layer 'first'"):
        cka.MinibatchCKA(["first", "wide"]).update([torch.as_tensor(a[0]), torch.as_tensor(b[1])])
    engine = cka.MinibatchCKA(["a0", "a1", "a2"], ["b0", "b1", "b2"])
    with pytest.raises(ValueError, match="model a's batch has 12 examples but model b's batch has 10"):
        engine.update([torch.as_tensor(x) for x in a], [torch.as_tensor(x) for x in b])
    with pytest.raises(ValueError, match="3 layers in this batch but 2 layer names"):
        cka.MinibatchCKA(["p", "q"]).update([torch.as_tensor(x) for x in a])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_rejects_nan_and_inf_naming_the_layer(bad):
    layers = [torch.as_tensor(a) for a in _layers(12)]
    layers[1] = layers[1].clone()
    layers[1][3, 2] = bad
    with pytest.raises(ValueError, match=r"layer 'relu7'.*NaN or inf"):
        cka.MinibatchCKA(["conv", "relu7", "fc"]).update(layers)
    with pytest.raises(ValueError, match="y: 1 of .* NaN or inf"):
        cka.linear_cka(layers[0], layers[1])
    grams = [gram_ops.layer_gram(x) if i != 1 else torch.full((12, 12), bad) for i, x in enumerate(layers)]
    with pytest.raises(ValueError, match="layer 'relu7'"):
        cka.MinibatchCKA(["conv", "relu7", "fc"]).update_grams(grams)


def test_float32_gram_overflow_is_refused():
    huge = torch.full((8, 4), 1e30, dtype=torch.float32) * torch.arange(1, 9, dtype=torch.float32)[:, None]
    with pytest.raises(ValueError, match="layer 'big'.*NaN or inf"):
        cka.MinibatchCKA(["small", "big"], gram_dtype=torch.float32).update([torch.randn(8, 3), huge])


def test_constant_layer_raises_naming_it():
    layers = [torch.as_tensor(a) for a in _layers(16)]
    constant = torch.full((16, 5), 0.1, dtype=torch.float64)  # 0.1 is inexact: rounding must not fake variance
    engine = cka.MinibatchCKA(["conv", "dead_relu", "fc"])
    engine.update([layers[0], constant, layers[2]])
    with pytest.raises(ValueError, match=r"\['dead_relu'\].*constant"):
        engine.compute()
    with pytest.raises(ValueError, match="x has self-HSIC 0.0"):
        cka.linear_cka(constant, layers[0])
    with pytest.raises(ValueError, match="self-HSIC"):
        cka.feature_space_linear_cka(layers[0], constant, debiased=True)


def test_constant_layer_can_give_nan_with_warning():
    layers = [torch.as_tensor(a) for a in _layers(16)]
    engine = cka.MinibatchCKA(["conv", "dead_relu", "fc"], on_degenerate="nan")
    engine.update([layers[0], torch.zeros(16, 5), layers[2]])
    with pytest.warns(RuntimeWarning, match="dead_relu"):
        matrix = engine.compute()
    assert np.isnan(matrix[1]).all() and np.isnan(matrix[:, 1]).all()
    assert matrix[0, 2] == pytest.approx(cka.linear_cka(layers[0], layers[2], debiased=True), abs=1e-12)


def test_layer_constant_in_one_batch_only_is_fine():
    layers = [torch.as_tensor(a) for a in _layers(16)]
    engine = cka.MinibatchCKA()
    engine.update([layers[0], torch.zeros(16, 15), layers[2]])
    engine.update(layers)
    assert np.isfinite(engine.compute()).all()


def test_mode_and_empty_errors():
    engine = cka.MinibatchCKA()
    with pytest.raises(ValueError, match="no batches"):
        engine.compute()
    engine.update([torch.as_tensor(a) for a in _layers(8)])
    with pytest.raises(ValueError, match="within one model"):
        engine.update([torch.randn(8, 3)] * 3, [torch.randn(8, 3)] * 3)
    with pytest.raises(ValueError, match="on_degenerate"):
        cka.MinibatchCKA(on_degenerate="clamp")


# ---------------------------------------------------------------------------------------------
# First principal component
# ---------------------------------------------------------------------------------------------

def test_top_pc_fraction_and_removal_match_svd():
    layers = _layers(24)
    engine = cka.MinibatchCKA(track_top_pc=True)
    engine.update([torch.as_tensor(a) for a in layers])
    deflated_engine = cka.MinibatchCKA(remove_top_pcs=1)
    deflated_engine.update([torch.as_tensor(a) for a in layers])
    deflated = []
    for i, a in enumerate(layers):
        u, s, vt = np.linalg.svd(a - a.mean(0), full_matrices=False)
        assert engine.top_pc_fraction()[i] == pytest.approx(s[0] ** 2 / np.sum(s ** 2), rel=1e-10)
        assert gram_ops.top_pc_fraction(a @ a.T) == pytest.approx(s[0] ** 2 / np.sum(s ** 2), rel=1e-10)
        deflated.append((a - a.mean(0)) - s[0] * np.outer(u[:, 0], vt[0]))
    expected = np.array([[cka.linear_cka(a, b, debiased=True) for b in deflated] for a in deflated])
    np.testing.assert_allclose(deflated_engine.compute(), expected, atol=1e-10)
    assert engine.top_pc_fraction(per_batch=True).shape == (1, 3)


def test_removing_a_shared_dominant_pc_removes_similarity():
    # Two layers that agree only through one dominant direction: CKA high before, low after removal.
    rng = _rng(8)
    shared = rng.normal(size=(64, 1)) * 20
    a = shared @ rng.normal(size=(1, 30)) + rng.normal(size=(64, 30))
    b = shared @ rng.normal(size=(1, 25)) + rng.normal(size=(64, 25))
    before, after = cka.MinibatchCKA(), cka.MinibatchCKA(remove_top_pcs=1)
    for engine in (before, after):
        engine.update([torch.as_tensor(a), torch.as_tensor(b)])
    assert before.compute()[0, 1] > 0.9 and abs(after.compute()[0, 1]) < 0.2


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------

def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return resnet(8, 1, in_channels=1)


def _loader(batches: int = 3, n: int = 12, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 1, 16, 16, generator=g), torch.zeros(n, dtype=torch.long)) for _ in range(batches)]


def test_model_against_itself_has_unit_diagonal():
    model = _model(0)
    matrix, names_a, names_b = cka.model_cka(model, _loader())
    assert names_a == names_b == [layer.name for layer in model.layers()]
    assert matrix.shape == (len(names_a), len(names_a))
    assert np.all(np.diag(matrix) == 1.0)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)


def test_cross_model_differs_from_model_against_itself():
    model_a, model_b = _model(0), _model(1)
    loader = _loader()
    within, _, _ = cka.model_cka(model_a, loader)
    across, names_a, names_b = cka.model_cka(model_a, loader, model_b)
    assert names_a == names_b
    assert across[0, 0] == pytest.approx(1.0, abs=1e-12)  # the shared input layer
    conv = names_a.index("conv")
    assert across[conv, conv] < 0.99  # a different seed's first conv is not the same representation
    assert np.max(np.abs(across - within)) > 0.1
    # The cross path itself is not the culprit: an exact copy gives the within-model matrix back.
    copy_matrix, _, _ = cka.model_cka(model_a, loader, copy.deepcopy(model_a))
    np.testing.assert_allclose(copy_matrix, within, atol=1e-10)


def test_tensor_batches_and_max_batches():
    model = _model(0)
    loader = _loader()
    from_tuples, _, _ = cka.model_cka(model, loader, max_batches=2)
    from_tensors, _, _ = cka.model_cka(model, [images for images, _ in loader[:2]])
    np.testing.assert_array_equal(from_tuples, from_tensors)


def test_many_models_at_once_equals_pairwise():
    models = [_model(seed) for seed in (0, 1, 2)]
    loader = _loader(batches=2)
    matrices, names = cka.models_cka(models, loader)
    assert sorted(matrices) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    np.testing.assert_allclose(matrices[(1, 2)], cka.model_cka(models[1], loader, models[2])[0], atol=1e-10)
    np.testing.assert_allclose(matrices[(0, 0)], cka.model_cka(models[0], loader)[0], atol=1e-10)
    assert np.all(np.diag(matrices[(2, 2)]) == 1.0)


def test_multi_model_rejects_mismatched_batches():
    engine = cka.MultiModelCKA([["a"], ["b"]])
    with pytest.raises(ValueError, match="different numbers of examples"):
        engine.update_grams([[gram_ops.layer_gram(torch.randn(8, 3))], [gram_ops.layer_gram(torch.randn(9, 3))]])
    with pytest.raises(ValueError, match="Grams of 2 models, got 1"):
        engine.update_grams([[gram_ops.layer_gram(torch.randn(8, 3))]])


def test_same_model_twice_in_models_cka():
    model = _model(0)
    matrices, _ = cka.models_cka([model, model], _loader(batches=1))
    np.testing.assert_allclose(matrices[(0, 1)], matrices[(0, 0)], atol=1e-10)


def test_no_tf32_restores_the_setting():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with gram_ops.no_tf32():
        assert matmul.fp32_precision == "ieee"
    assert matmul.fp32_precision == before
