"""Tests of widedeep.probes: features are the layers' true outputs, probes fit, and the test set never selects."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from widedeep.analyses import deletion as prune
from widedeep.analyses import probes
from widedeep.data import ImageData, Splits, dataset_info
from widedeep.models import STREAM, resnet

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = [str(c) for c in range(10)]


def _model():
    torch.manual_seed(0)
    return resnet(8, 1, 10, in_channels=1).eval()


def _data(n: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g), CLASSES)


def _separable(n: int, seed: int, classes: int = 3, dim: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters 8 standard deviations apart, shifted and scaled (the probe must standardise)."""
    g = torch.Generator().manual_seed(seed)
    centres = 8 * torch.eye(classes, dim)
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=g)
    return 100 + 50 * x, y


def test_pooled_features_average_then_flatten():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert probes.pooled_features(x, 1).shape == (2, 48)
    pooled = probes.pooled_features(x, 2)
    torch.testing.assert_close(pooled, F.avg_pool2d(x, 2).flatten(1))
    torch.testing.assert_close(probes.pooled_features(x, 8), x.mean((2, 3)))  # a window larger than the map
    assert probes.pooled_features(torch.ones(5, 7), 2).shape == (5, 7)  # dense outputs pass through
    with pytest.raises(ValueError, match="pool"):
        probes.pooled_features(x, 0)


def test_layer_features_are_the_true_outputs_in_any_grouping():
    model = _model()
    stream = [layer for layer in model.layers() if layer.kind == STREAM]
    images = [torch.rand(7, 1, 16, 16), torch.rand(3, 1, 16, 16)]
    whole = list(probes.layer_features(model, stream, images, pool=2, batch_size=4))
    split = list(probes.layer_features(model, stream, images, pool=2, batch_size=5, max_bytes=1))  # a pass per layer
    assert [name for name, _ in whole] == [layer.name for layer in stream] == [name for name, _ in split]
    for (_, a), (_, b) in zip(whole, split):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    with torch.no_grad():
        expected = F.avg_pool2d(prune.stem(model, images[0]), 2).flatten(1)
    torch.testing.assert_close(whole[0][1][0], expected)
    assert probes._feature_groups([10, 10, 10], 1, 80) == [[0, 1], [2]]


def test_a_probe_on_separable_features_is_perfect():
    train_x, train_y = _separable(90, 0)
    val_x, val_y = _separable(60, 1)
    test_x, test_y = _separable(60, 2)
    probe = probes.fit_probe(train_x, train_y, val_x, val_y, l2_grid=(1e-3, 1e-2), max_iter=50)
    assert probe.train_acc == probe.val_acc == 1.0
    assert probe.accuracy(test_x, test_y) == 1.0
    assert set(probe.val_accs) == {1e-3, 1e-2} and probe.l2 == 1e-2  # a tie keeps the stronger penalty


def test_the_chosen_probe_is_the_best_on_validation():
    g = torch.Generator().manual_seed(0)
    train_x, train_y = torch.randn(60, 30, generator=g), torch.randint(0, 3, (60,), generator=g)
    val_x, val_y = torch.randn(40, 30, generator=g), torch.randint(0, 3, (40,), generator=g)
    probe = probes.fit_probe(train_x, train_y, val_x, val_y, l2_grid=(1e-4, 1e-2, 1.0), max_iter=30)
    assert probe.val_acc == max(probe.val_accs.values()) == probe.val_accs[probe.l2]
    assert probe.val_acc == probe.accuracy(val_x, val_y)


def test_selection_never_sees_the_test_set():
    assert "test" not in " ".join(inspect.signature(probes.fit_probe).parameters)
    model = _model()
    info = dataset_info("fashion_mnist")
    splits = Splits(_data(60, 0), _data(40, 1), _data(40, 2), info)
    corrupted = Splits(splits.train, splits.val, ImageData(splits.test.images, (splits.test.labels + 1) % 10,
                                                           CLASSES), info)
    layers = [layer for layer in model.layers() if layer.kind == STREAM]
    kwargs = dict(pool=2, l2_grid=(1e-3, 1e-1), max_iter=15)
    clean, bad = (probes.probe_accuracies(model, layers, s, **kwargs) for s in (splits, corrupted))
    assert len(clean) == len(layers)
    for a, b in zip(clean, bad):
        chosen = ("layer", "l2", "val_acc", "train_acc")
        assert [a[k] for k in chosen] == [b[k] for k in chosen]
    assert any(a["test_acc"] != b["test_acc"] for a, b in zip(clean, bad))


def test_plateau_verdict():
    inside = [False, True, True, True, False]
    assert probes.plateau_verdict([0.5, 0.80, 0.81, 0.79, 0.85], inside) == probes.PLATEAU
    assert probes.plateau_verdict([0.5, 0.70, 0.75, 0.80, 0.85], inside) == probes.RISES
    assert probes.plateau_verdict([0.5, 0.80, 0.75, 0.70, 0.85], inside) == probes.FALLS
    assert probes.plateau_verdict([0.5, 0.6, 0.7, 0.8, 0.85], [False] * 5) == "no block"
    assert probes.gain_inside([0.5, 0.7, 0.75, 0.8, 0.85], inside) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="consecutive"):
        probes.gain_inside([0.1, 0.2, 0.3], [True, False, True])
    with pytest.raises(ValueError, match="one per layer"):
        probes.gain_inside([0.1, 0.2], [True, False, True])


def test_a_gain_of_exactly_the_tolerance_is_a_plateau():
    # 0.805 - 0.785 is 0.020000000000000018 in floating point
    assert probes.plateau_verdict([0.785, 0.79, 0.805], [True, True, True], tol=0.02) == probes.PLATEAU


def test_the_probe_statistic_is_the_largest_change_from_the_blocks_first_layer():
    from widedeep.analyses.probes import largest_change
    inside = [False, True, True, True, True, False]
    # the endpoints agree (0.80 -> 0.80), but the accuracy climbs 0.06 inside: the plateau rule must see it
    assert largest_change([0.5, 0.80, 0.86, 0.83, 0.80, 0.9], inside) == pytest.approx(0.06)
    assert largest_change([0.5, 0.80, 0.79, 0.78, 0.81, 0.9], inside) == pytest.approx(0.02)
    assert np.isnan(largest_change([0.5, 0.8, 0.9], [False, True, False]))
    with pytest.raises(ValueError, match="consecutive"):
        largest_change([0.1, 0.2, 0.3], [True, False, True])
