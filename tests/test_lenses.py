"""Chapter 9's measures as a per-layer summary and a comparison: the same numbers as the measures themselves."""

import numpy as np
import pytest

from widedeep.measures import cka, similarity
from widedeep.measures.lenses import channel_layer, lenses, subspace_of_sides
from widedeep.measures.subspace import LayerPair, neuron_matrix

LENSES = lenses(knn_k=5, eps=0.5)
TWO_ARGUMENT = {"linear CKA": cka.linear_cka, "debiased CKA": lambda x, y: cka.linear_cka(x, y, debiased=True),
                "RBF CKA": cka.rbf_cka, "mean CCA": similarity.mean_cca, "SVCCA": similarity.svcca,
                "PWCCA": similarity.pwcca, "Procrustes": similarity.procrustes_similarity, "RSA": similarity.rsa,
                "mutual k-NN": lambda x, y: similarity.mutual_knn(x, y, 5)}


def related_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two post-ReLU conv maps of the same 40 examples, more features than examples, sharing channels."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(40, 4, 6, 6)), 0)
    y = np.concatenate([x[:, :3] + 0.3 * rng.normal(size=(40, 3, 6, 6)), rng.normal(size=(40, 2, 6, 6))], axis=1)
    return x, np.maximum(y, 0)


@pytest.mark.parametrize("name", list(TWO_ARGUMENT))
def test_a_lens_is_its_measure(name):
    x, y = related_maps()
    value = LENSES[name].function(x, y)
    assert value == pytest.approx(TWO_ARGUMENT[name](x.reshape(40, -1), y.reshape(40, -1)), abs=1e-10)
    assert value < 1 - 1e-3 and LENSES[name].function(x, x) == pytest.approx(1.0, abs=1e-9)


def oracle_subspace(x, y, eps):
    """The direct (projection) form of the match on maps pooled to the smaller's positions: the tests' oracle."""
    import torch
    size = tuple(min(a, b) for a, b in zip(x.shape[2:], y.shape[2:]))
    pool = [torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(z), size).numpy() for z in (x, y)]
    return LayerPair.from_activations(neuron_matrix(pool[0]), neuron_matrix(pool[1])).score(eps)


@pytest.mark.parametrize("eps", [0.2, 0.5, 0.8])
def test_the_subspace_lens_matches_the_direct_form_on_maps_of_two_sizes(eps):
    x, y = related_maps(1)
    small = y[:, :, ::2, ::2].copy()
    for a, b in ((x, y), (x, small), (small, x)):
        assert subspace_of_sides(channel_layer(a), channel_layer(b), eps) == oracle_subspace(a, b, eps)
    assert subspace_of_sides(channel_layer(x), channel_layer(x), 0.1) == 1.0


@pytest.mark.parametrize("name", list(LENSES))
def test_permuting_both_sides_examples_together_changes_no_measure(name):
    x, y = related_maps(2)
    order = np.random.default_rng(0).permutation(40)
    lens = LENSES[name]
    assert lens.function(x[order], y[order]) == pytest.approx(lens.function(x, y), abs=1e-9)


def test_summaries_of_different_examples_are_refused():
    x, y = related_maps(3)
    for name, lens in LENSES.items():
        with pytest.raises(ValueError, match="same examples"):
            lens.compare(lens.prepare(x), lens.prepare(y[:30]))


def test_the_subspace_lens_names_the_shapes_it_reads():
    with pytest.raises(ValueError, match="channels"):
        channel_layer(np.ones((10, 2, 3)))
