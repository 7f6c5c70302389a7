"""Models: the CIFAR ResNet family, its validation, sizes, and hook-complete layer listing."""

import re

import pytest
import torch
from torch import nn

from widedeep import models


@pytest.mark.parametrize("depth", [21, 83, 2, 0, 20.0, "20"])
def test_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        models.resnet(depth, 1)


@pytest.mark.parametrize("width", [0, -1, 0.0])
def test_width_must_be_positive(width):
    with pytest.raises(ValueError, match="width must be a positive"):
        models.resnet(20, width)


@pytest.mark.parametrize("in_channels, size, classes", [(1, 16, 10), (3, 32, 100), (1, 28, 10)])
def test_output_shape(in_channels, size, classes):
    model = models.resnet(8, 1, num_classes=classes, in_channels=in_channels).eval()
    assert model(torch.rand(3, in_channels, size, size)).shape == (3, classes)


def test_stage_channels_and_parameters_grow_with_width_squared():
    assert models.stage_channels(1) == (16, 32, 64) and models.stage_channels(2.5) == (40, 80, 160)
    counts = {w: models.parameter_count(models.resnet(20, w)) for w in (1, 2, 4)}
    assert 3.6 < counts[2] / counts[1] < 4.0
    assert 14.5 < counts[4] / counts[1] < 16.0
    deeper = models.parameter_count(models.resnet(56, 1))
    assert 2.5 < deeper / counts[1] < 3.5  # blocks (and so parameters) grow ~ (56-2)/(20-2) = 3x


@pytest.mark.parametrize("residual", [True, False])
def test_every_layer_hook_fires_exactly_once_in_forward_order(residual):
    model = models.resnet(14, 1, in_channels=1, residual=residual).eval()
    layers = model.layers()
    fired = []
    handles = [layer.module.register_forward_hook(lambda m, i, o, name=layer.name: fired.append(name))
               for layer in layers]
    model(torch.rand(2, 1, 16, 16))
    for h in handles:
        h.remove()
    assert fired == [layer.name for layer in layers]


def test_layer_listing_is_complete_and_uses_distinct_modules():
    n = 3
    model = models.resnet(6 * n + 2, 1)
    layers = model.layers()
    assert len(layers) == 21 * n + 9  # the paper's count: 198 for ResNet-56
    assert len({id(layer.module) for layer in layers}) == len(layers)
    kinds = [layer.kind for layer in layers]
    assert kinds.count(models.STREAM) == 1 + 3 * n and kinds.count(models.HEAD) == 3
    assert sum(".projection" in layer.name for layer in layers) == 2
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert all(isinstance(layer.module, nn.Module) for layer in layers)
    plain = models.resnet(6 * n + 2, 1, residual=False).layers()
    assert not any(layer.name.endswith((".add", ".projection")) for layer in plain)
    assert len(plain) == 18 * n + 7  # no add per block, no projections


def test_residual_add_is_captured_before_the_final_relu():
    model = models.resnet(8, 1, in_channels=1).eval()
    outputs = {}
    block = model.stages[0][0]
    block.add.register_forward_hook(lambda m, i, o: outputs.setdefault("add", o))
    block.relu2.register_forward_hook(lambda m, i, o: outputs.setdefault("relu", o))
    model(torch.randn(4, 1, 16, 16))
    assert (outputs["add"] < 0).any()  # hooks see the pre-activation sum, not a ReLU'd alias
    assert torch.equal(outputs["relu"], outputs["add"].clamp(min=0))


@pytest.mark.parametrize("width", [float("inf"), float("-inf"), float("nan")])
def test_width_must_be_finite(width):
    with pytest.raises(ValueError, match="width must be a positive finite number"):
        models.resnet(20, width)


def test_the_hint_for_too_small_a_width_names_a_width_that_is_accepted():
    with pytest.raises(ValueError, match="above 1/32") as error:
        models.validate_architecture(20, 1 / 32)  # round(0.5) = 0: 1/32 itself is too small
    suggested = float(re.search(r"e\.g\. ([0-9.]+)", str(error.value)).group(1))
    assert models.stage_channels(suggested)[0] >= 1
    models.resnet(8, suggested)
    models.validate_architecture(8, 0.032)  # just above 1/32 is accepted, as the hint says


@pytest.mark.parametrize("num_classes", [0, 1, -3, 10.0, True])
def test_num_classes_must_be_at_least_two(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        models.resnet(8, 1, num_classes=num_classes)


@pytest.mark.parametrize("in_channels", [0, -1, 3.0, False])
def test_in_channels_must_be_positive_and_is_checked_when_building(in_channels):
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        models.resnet(8, 1, in_channels=in_channels)
