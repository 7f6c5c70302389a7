"""Tests of widedeep.pca: first-PC shares and similarities against an independent SVD, streaming, refusals."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from widedeep import data, records, store
from widedeep.analyses import runs
from widedeep.measures import cka
from widedeep.measures import grams as gram_ops
from widedeep.models import resnet
from widedeep.train import TrainConfig
from widedeep.measures.pca import PCStats, model_pc_stats

pytestmark = pytest.mark.usefixtures("one_thread")


def _planted(n: int = 50, p: int = 30, strength: float = 4.0, seed: int = 0) -> np.ndarray:
    """Features X = s z v^T + noise: a dominant direction v with example scores z."""
    rng = np.random.default_rng(seed)
    z, v = rng.standard_normal(n), rng.standard_normal(p)
    return strength * np.outer(z, v / np.linalg.norm(v)) + rng.standard_normal((n, p))


def _gram(x: np.ndarray) -> torch.Tensor:
    """Linear Gram of the centred features, float64."""
    xc = x - x.mean(axis=0)
    return torch.as_tensor(xc @ xc.T)


def _svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(squared singular values / their sum, first left singular vector) of the centred features."""
    u, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return s ** 2 / (s ** 2).sum(), u[:, 0]


def _stats(*layers: np.ndarray, top_k: int = 3) -> PCStats:
    """PCStats of one batch holding the given layers' features."""
    stats = PCStats([f"l{i}" for i in range(len(layers))], top_k)
    stats.update_grams([_gram(x) for x in layers])
    return stats


def test_shares_match_an_independent_svd():
    x = _planted()
    stats = _stats(x)
    expected, _ = _svd(x)
    assert expected[0] > 0.3  # the planted direction dominates
    assert stats.pc1_share[0] == pytest.approx(expected[0], abs=1e-10)
    np.testing.assert_allclose(stats.shares()[0], expected[:3], rtol=0, atol=1e-10)
    assert stats.shares().shape == (1, 3) and stats.num_batches == 1


def test_pc1_share_agrees_with_cka_top_pc_fraction():
    gram = _gram(_planted(seed=4))
    stats = PCStats(["layer"], top_k=1)
    stats.update_grams([gram])
    assert stats.pc1_share[0] == pytest.approx(gram_ops.top_pc_fraction(gram), abs=1e-12)


def test_similarity_of_rotated_copies_and_of_unrelated_layers():
    x, other = _planted(seed=1), _planted(seed=2)  # independent example scores and directions
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((30, 30)))
    matrix = _stats(x, 3 * x @ q, other).similarity()
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-10)  # a rotated, scaled copy has the same PCs
    _, u = _svd(x)
    _, u_other = _svd(other)
    expected = abs(u @ u_other)
    assert matrix[0, 2] == pytest.approx(expected, abs=1e-10) and expected < 0.5
    assert np.array_equal(np.diagonal(matrix), np.ones(3)) and np.array_equal(matrix, matrix.T)


def test_streaming_averages_the_batches():
    first, second = (_planted(seed=5), _planted(seed=6)), (_planted(seed=7), _planted(seed=8))
    stats = PCStats(["a", "b"])
    for batch in (first, second):
        stats.update_grams([_gram(x) for x in batch])
    single = [_stats(*batch) for batch in (first, second)]
    assert stats.num_batches == 2
    np.testing.assert_allclose(stats.shares(), (single[0].shares() + single[1].shares()) / 2, atol=1e-14)
    np.testing.assert_allclose(stats.similarity(), (single[0].similarity() + single[1].similarity()) / 2,
                               atol=1e-14)
    assert not np.allclose(single[0].similarity(), single[1].similarity())


def test_negated_features_change_nothing():
    x, y = _planted(seed=9), _planted(seed=10)
    plain, negated = _stats(x, y), _stats(-x, y)
    np.testing.assert_allclose(negated.shares(), plain.shares(), atol=1e-12)
    np.testing.assert_allclose(negated.similarity(), plain.similarity(), atol=1e-12)


def test_constant_layer_is_nan_with_a_warning_naming_it():
    stats = PCStats(["conv", "flat"])
    stats.update_grams([_gram(_planted()), torch.zeros(50, 50, dtype=torch.float64)])
    with pytest.warns(RuntimeWarning, match="flat"):
        shares = stats.shares()
    assert np.isnan(shares[1]).all() and np.isfinite(shares[0]).all()
    with pytest.warns(RuntimeWarning, match="flat"):
        matrix = stats.similarity()
    assert matrix[0, 0] == 1.0 and np.isnan(matrix[1]).all() and np.isnan(matrix[:, 1]).all()


def test_refusals_name_the_problem():
    gram = _gram(_planted())
    with pytest.raises(ValueError, match="no batches"):
        PCStats(["a"]).shares()
    with pytest.raises(ValueError, match="no batches"):
        PCStats(["a"]).similarity()
    with pytest.raises(ValueError, match="2 layers in this batch but 1 layer names"):
        PCStats(["a"]).update_grams([gram, gram])
    with pytest.raises(ValueError, match="layer 'b' has 40 examples"):
        PCStats(["a", "b"]).update_grams([gram, gram[:40, :40]])
    bad = gram.clone()
    bad[3, 4] = torch.nan
    with pytest.raises(ValueError, match="layer 'b'.*NaN"):
        PCStats(["a", "b"]).update_grams([gram, bad])
    with pytest.raises(ValueError, match="n >= 2"):
        PCStats(["a"]).update_grams([torch.ones(1, 1)])
    with pytest.raises(ValueError, match="top_k"):
        PCStats(["a"], top_k=0)


def _tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet(8, 1, num_classes=10, in_channels=1).eval()


def _tiny_run(folder) -> records.Run:
    """A ResNet-8 run whose model is in memory and whose records go to `folder`."""
    config = TrainConfig(depth=8, width=1, n_train=200, n_val=100, n_test=100)
    return records.Run(config, folder / "store", folder, _model=_tiny_resnet())


def test_model_pc_stats_on_a_tiny_resnet():
    model = _tiny_resnet()
    images = torch.rand(40, 1, 16, 16)
    loader = [images[:20], images[20:]]
    out = model_pc_stats(model, loader, top_k=3)
    layers = len(model.layers())
    assert out["names"] == [layer.name for layer in model.layers()]
    assert out["shares"].shape == (layers, 3) and out["pc1_similarity"].shape == (layers, layers)
    shares = out["shares"]
    assert np.all((shares >= 0) & (shares <= 1)) and np.all(np.diff(shares, axis=1) <= 0)
    assert np.allclose(np.diagonal(out["pc1_similarity"]), 1.0)


def test_run_pc_stats_is_cached_per_setting(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path)
    images = data.ImageData(torch.rand(40, 1, 16, 16), torch.randint(0, 10, (40,)), [])
    first = runs.run_pc_stats(run, images, batch_size=20, passes=1)
    files = sorted(tmp_path.glob("pcs-*.npz"))
    assert len(files) == 1 and set(first) == {"shares", "pc1_similarity"}
    assert first["shares"].shape == (len(run.model.layers()), 3)

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed despite a cached file")

    monkeypatch.setattr(runs, "model_pc_stats", refuse)
    second = runs.run_pc_stats(run, images, batch_size=20, passes=1)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    monkeypatch.undo()
    runs.run_pc_stats(run, images, batch_size=20, passes=1, seed=1)
    assert len(list(tmp_path.glob("pcs-*.npz"))) == 2


def test_run_cka_cache_path_is_unchanged(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path)
    images = data.ImageData(torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long), [])
    monkeypatch.setattr(runs, "model_cka", lambda *args, **kwargs: (np.eye(2), [], []))
    runs.run_cka(run, images, batch_size=4, passes=2, seed=3)
    examples = hashlib.sha256(images.images.numpy().tobytes()).hexdigest()[:16]
    key = store.config_hash({"b": None, "examples": examples, "batch": 4, "passes": 2, "seed": 3, "pcs": 0,
                             "gram": "float32"})
    assert [p.name for p in tmp_path.glob("*.npz")] == [f"cka-{key}.npz"]


def test_a_layer_subset_is_computed_and_cached_on_its_own(tmp_path):
    run = _tiny_run(tmp_path)
    images = data.ImageData(torch.rand(40, 1, 16, 16), torch.randint(0, 10, (40,)), [])
    layers = run.model.layers()
    stream = [layer.name for layer in layers if layer.kind == "stream"]
    full = runs.run_pc_stats(run, images, batch_size=20, passes=1)
    subset = runs.run_pc_stats(run, images, batch_size=20, passes=1, layers=stream)
    assert subset["shares"].shape == (len(stream), 3) and len(list(tmp_path.glob("pcs-*.npz"))) == 2
    rows = [i for i, layer in enumerate(layers) if layer.kind == "stream"]
    np.testing.assert_allclose(subset["shares"], full["shares"][rows], rtol=1e-6)
    cka_full = runs.run_cka(run, images, batch_size=20, passes=1)
    cka_stream = runs.run_cka(run, images, batch_size=20, passes=1, layers=stream)
    np.testing.assert_allclose(cka_stream, cka_full[np.ix_(rows, rows)], atol=1e-7)
    assert len(list(tmp_path.glob("cka-*.npz"))) == 2
