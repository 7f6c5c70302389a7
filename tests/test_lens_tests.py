"""Chapter 9's tools on planted layer stacks: every measure sees a planted block, none a block-free run."""

import numpy as np
import pytest
import torch
from torch import nn

from widedeep.analyses import measure_tests, verdicts
from widedeep.book import sentences
from widedeep.measures.lenses import lenses

N, P, L = 80, 12, 8
LENSES = lenses(knn_k=5, eps=0.5)


def chain(seed: int, planted: tuple[int, int] | None = None) -> list[np.ndarray]:
    """L layers where each is a noisy random mixture of the previous one (nearby layers alike); `planted`
    (first, last) layers all carry one shared representation instead, as a block's layers do."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, P))
    layers, shared = [], rng.normal(size=(N, P))
    for i in range(L):
        x = x @ rng.normal(size=(P, P)) / np.sqrt(P) + 0.7 * rng.normal(size=(N, P))
        if planted and planted[0] <= i <= planted[1]:
            layers.append(shared + 0.05 * rng.normal(size=(N, P)))
        else:
            layers.append(x.copy())
    return layers


def self_matrix(lens, layers):
    return measure_tests.cross_matrix(lens, layers, layers)


def inside(first, last):
    return (np.arange(L) >= first) & (np.arange(L) <= last)


def test_every_measure_sees_a_planted_block_and_none_sees_a_block_free_run():
    frees = [chain(s) for s in (10, 11, 12)]
    planted = chain(20, planted=(2, 5))
    for name, lens in LENSES.items():
        free = [self_matrix(lens, layers) for layers in frees]
        details, verdict = measure_tests.block_contrast({"planted": (self_matrix(lens, planted), inside(2, 5))}, free[1:], 0.95)
        assert verdict == verdicts.suggestive(1), name   # one blocked seed: never "shown"
        assert details["planted"]["contrast"] > details["planted"]["null_max"], name
        # a seed without a block, asked about the same layers, is not seen against the other block-free seeds
        _, verdict = measure_tests.block_contrast({"free": (free[0], inside(2, 5))}, free[1:], 0.95)
        assert verdict == verdicts.NOT_SHOWN, name


def test_the_block_test_says_why_it_cannot_be_run():
    m = np.eye(L)
    assert measure_tests.block_contrast({}, [m], 0.95)[1] == "not testable: no seed has a block"
    assert verdicts.head(measure_tests.block_contrast({"a": (m, inside(2, 4))}, [], 0.95)[1]) == verdicts.NOT_TESTABLE
    _, verdict = measure_tests.block_contrast({"a": (m, inside(3, 3))}, [m], 0.95)   # a one-layer block has no inside pairs
    assert verdicts.head(verdict) == verdicts.NOT_TESTABLE


def test_the_claim_leaves_linear_cka_out_and_counts_the_judged_measures():
    found = {"linear CKA": "shown", "RSA": "shown", "SVCCA": "not shown", "PWCCA": "not testable: no seed has a block"}
    assert measure_tests.lens_claim(found) == (verdicts.PARTLY_SHOWN, ["RSA"], ["SVCCA"])
    assert measure_tests.lens_claim({"linear CKA": "not shown", "RSA": "shown"})[0] == verdicts.SHOWN
    assert measure_tests.lens_claim(dict.fromkeys(found, "not testable: no seed has a block"))[0] == verdicts.NOT_TESTABLE
    assert sentences.lens_sentence(found) == "seen by RSA; not by SVCCA"


def test_identification_and_calibration_separate_a_copy_from_an_unrelated_stack():
    lens = LENSES["linear CKA"]
    a = chain(30)
    copy = [x @ np.linalg.qr(np.random.default_rng(i).normal(size=(P, P)))[0] for i, x in enumerate(a)]
    other = [np.random.default_rng(100 + i).normal(size=(N, P)) for i in range(L)]
    same = measure_tests.cross_matrix(lens, a, copy)
    assert measure_tests.identification(same) == 1.0
    high = measure_tests.calibrated(lens, a, measure_tests.sides(lens, copy), same, draws=2)
    low = measure_tests.calibrated(lens, a, measure_tests.sides(lens, other), measure_tests.cross_matrix(lens, a, other), draws=2)
    assert high["calibrated"] > 0.9 and abs(low["calibrated"]) < 0.3
    assert 0 < low["null"] < 1   # the shuffled null of a maximum is not zero


def test_sensitivity_follows_the_accuracy_and_weighs_seeds_against_the_costliest_deletion():
    sims = {"a": [0.9, 0.6, 0.3], "b": [0.95, 0.8, 0.5]}
    drops = {"a": [0.05, 0.2, 0.4], "b": [0.0, 0.1, 0.3]}
    out = measure_tests.sensitivity(sims, drops, seed_similarity=0.85)
    assert out["rho"] == pytest.approx(1.0) and out["costliest_deletion_similarity"] == 0.3
    assert out["specificity_margin"] == pytest.approx(0.55)
    reversed_sims = {k: v[::-1] for k, v in sims.items()}
    assert measure_tests.sensitivity(reversed_sims, drops, 0.85)["rho"] < 0


def test_deleting_principal_components_lowers_every_measure_but_the_cca_family():
    x = chain(40)[3]
    blind = set()
    for name, lens in LENSES.items():
        assert lens.function(x, x) == pytest.approx(1.0, abs=1e-9), name
        sims = measure_tests.deletion_similarities(lens, {"x": x}, [1, 6])["x"]
        if sims[1] > 1 - 1e-6:
            blind.add(name)
    # the kept directions lie inside the layer's own span, so every canonical correlation is still 1:
    # CCA cannot see a deletion once the layer has fewer directions than its cap (n / 4)
    assert blind == {"mean CCA", "SVCCA", "PWCCA"}


def test_outliers_move_linear_cka_more_than_mutual_neighbours():
    layers = chain(50)
    out = {name: measure_tests.outlier_changes(LENSES[name], layers[3], layers[4], [0.05], [50.0])
           for name in ("linear CKA", "mutual k-NN")}
    assert out["linear CKA"]["max_self_change"] > 0.5 > out["mutual k-NN"]["max_self_change"]


def test_accuracy_with_a_layer_stripped_of_its_principal_components():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    images = torch.randn(40, 6)
    labels = model(images).argmax(1)          # the model is right on every image
    assert measure_tests.accuracy_with_layer(model, images, labels) == 1.0
    stripped = measure_tests.accuracy_with_layer(model, images, labels, "0", k=6)   # every direction gone: one prediction
    assert stripped == pytest.approx(max(np.bincount(labels.numpy(), minlength=3)) / 40) or stripped < 1.0
    assert stripped < 1.0
    assert measure_tests.accuracy_with_layer(model, images, labels) == 1.0   # the hook is gone


def test_the_shuffled_null_keeps_a_layers_shape():
    seen = []
    measure_tests.shuffled_best_match(lambda a, b: seen.append(b.shape) or 0.0, np.ones((6, 2, 3)),
                                      [np.ones((6, 4, 3))], draws=1)
    assert seen == [(6, 4, 3)]


@pytest.mark.parametrize("name", ["linear CKA", "PWCCA", "subspace match"])
def test_shuffling_the_layer_gives_the_null_of_shuffling_the_other_seed(name):
    """The chapter shuffles the layer and reuses the other seed's summaries: the same null, draw by draw."""
    rng = np.random.default_rng(3)
    x = np.maximum(rng.normal(size=(N, 3, 4, 4)), 0)
    others = [np.maximum(x[:, :2] + rng.normal(size=(N, 2, 4, 4)), 0), np.maximum(rng.normal(size=(N, 5, 2, 2)), 0)]
    lens = LENSES[name]
    chapter = measure_tests.lens_shuffled_best_match(lens, x, measure_tests.sides(lens, others), draws=3, seed=7)
    direct = measure_tests.shuffled_best_match(lens.function, x, others, draws=3, seed=7)
    assert chapter == pytest.approx(direct, abs=1e-9)


def test_the_table_has_a_row_per_measure_and_a_dash_where_a_test_could_not_run():
    from widedeep.book import tables

    found = {"linear CKA": "shown", "RSA": "not testable: no seed without a block to compare with"}
    details = {"linear CKA": {"m": {"contrast": 0.12}}, "RSA": {}}
    rows = measure_tests.summary_rows({"linear CKA": 0.75, "RSA": None}, {"linear CKA": {"calibrated": 0.5}},
                           {"linear CKA": {"rho": 0.9, "specificity_margin": 0.2}}, {}, found, details)
    assert [r["measure"] for r in rows] == ["linear CKA", "RSA"]
    assert rows[0]["block_contrast"] == 0.12 and rows[1]["block_contrast"] is None
    lines = tables.lens_table(rows).splitlines()
    assert len(lines) == 4 and "| linear CKA | 0.75 | 0.50 | 0.90 | +0.20 | — | +0.120 | shown |" == lines[2]
    assert lines[3].startswith("| RSA | — | — | — | — | — | — | not testable")
