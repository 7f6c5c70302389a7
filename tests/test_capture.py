"""Tests of widedeep.capture (and its Gram reduction): hooks fire once, leave nothing behind, and capture the true outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from widedeep.measures import cka
from widedeep.measures import grams as gram_ops
from widedeep.capture import Capture, HookError, capture_outputs, leaf_module_names, output_copy, resolve_layers
from widedeep.measures.grams import capture_grams, gram_capture
from widedeep.models import resnet


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet(8, 1, in_channels=1)


def _images(n: int = 12, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_hook_fires_once_and_all_are_removed():
    model = _model()
    before = _hook_count(model)
    with gram_capture(model) as capture:
        assert _hook_count(model) == before + len(model.layers())
        grams = capture(_images())
        assert capture._counts == [1] * len(model.layers())
        grams_again = capture(_images())  # counts reset per forward pass
    assert _hook_count(model) == before
    assert len(grams) == len(capture.names) == len(model.layers())
    assert all(g.shape == (12, 12) and g.dtype == torch.float32 for g in grams)  # the network's precision
    for g, h in zip(grams, grams_again):
        torch.testing.assert_close(g, h, rtol=0, atol=0)
    model(_images())  # no hooks left to fire, nothing captured
    assert capture._reduced == [None] * len(capture.names)


def test_eval_mode_inference_mode_and_training_flags_restored():
    model = _model()
    model.train()
    model.stages[1].eval()  # a submodule in its own mode must come back as it was
    running_mean = model.bn.running_mean.clone()
    with gram_capture(model) as capture:
        assert not model.training and not model.bn.training
        grams = capture(_images())
    assert model.training and model.bn.training and not model.stages[1].training
    assert not model.stages[1][0].bn1.training
    torch.testing.assert_close(model.bn.running_mean, running_mean, rtol=0, atol=0)  # BN stats untouched
    assert not any(g.requires_grad for g in grams)


def test_hook_grams_equal_a_manual_forward():
    model = _model().eval()
    images = _images()
    grams, names = capture_grams(model, images)
    with torch.no_grad():
        conv = model.conv(images)
        bn = model.bn(conv)
        relu = model.relu(bn)
        block = model.stages[0][0]
        conv1 = block.conv1(relu)
        logits = model(images)
    manual = {"input": images, "conv": conv, "bn": bn, "relu": relu, "stages.0.0.conv1": conv1, "logits": logits}
    for name, act in manual.items():
        torch.testing.assert_close(grams[names.index(name)], gram_ops.layer_gram(act), rtol=1e-6, atol=1e-8)
    engine = cka.MinibatchCKA(names)
    engine.update_grams(grams)
    assert engine.compute()[names.index("conv"), names.index("bn")] == pytest.approx(
        cka.linear_cka(conv, bn, debiased=True), abs=1e-6)


def test_float32_grams_agree_with_float64():
    model = _model()
    loader = [_images(seed=s) for s in range(2)]
    exact, _, _ = cka.model_cka(model, loader, gram_dtype=torch.float64)
    fast, _, _ = cka.model_cka(model, loader)  # float32 Grams by default for a float32 network
    assert capture_grams(model, loader[0], gram_dtype=torch.float64)[0][0].dtype == torch.float64
    np.testing.assert_allclose(fast, exact, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Arbitrary modules: torchvision's resnet18 (in-place ReLUs, a reused ReLU, functional adds)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_resnet18_without_layer_list_is_refused(resnet18):
    with pytest.raises(ValueError, match="no .layers.*module names"):
        gram_capture(resnet18)


def test_resnet18_reused_relu_is_refused_naming_it(resnet18):
    before = _hook_count(resnet18)
    with pytest.raises(HookError, match=r"layer 'layer1\.0\.relu' \(ReLU\) fired 2 times"):
        capture_grams(resnet18, _images(6, 3, 32), leaf_module_names(resnet18))
    assert _hook_count(resnet18) == before  # hooks removed even after the error


def test_resnet18_in_place_relu_does_not_corrupt_captured_outputs(resnet18):
    # bn1 is followed by ReLU(inplace=True): a hook that stored bn1's output would see post-ReLU values.
    images = _images(10, 3, 32)
    layers = ["conv1", "bn1", "relu", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.bn2", "layer4.1.bn2", "fc"]
    grams, names = capture_grams(resnet18, images, layers)
    with torch.no_grad():
        conv1 = resnet18.conv1(images)
        bn1 = resnet18.bn1(conv1)
    engine = cka.MinibatchCKA(names)
    engine.update_grams(grams)
    matrix = engine.compute()
    assert matrix[0, 1] == pytest.approx(cka.linear_cka(conv1, bn1, debiased=True), abs=1e-6)
    assert matrix[1, 2] == pytest.approx(cka.linear_cka(bn1, torch.relu(bn1), debiased=True), abs=1e-6)
    # What a naive stored-output hook would have compared: bn1 after the in-place ReLU.
    stored = {}
    handle = resnet18.bn1.register_forward_hook(lambda m, i, o: stored.setdefault("bn1", o))
    with torch.no_grad():
        resnet18(images)
    handle.remove()
    assert torch.equal(stored["bn1"], torch.relu(bn1)) and not torch.equal(stored["bn1"], bn1)


def test_module_that_never_fires_is_named():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 3)
            self.unused = nn.Linear(4, 3)
            self.blocks = nn.ModuleList([nn.Linear(3, 3)])

        def forward(self, x):
            return self.blocks[0](self.used(x))

    model = WithUnused()
    with pytest.raises(HookError, match=r"\['unused'\] never fired"):
        capture_grams(model, torch.randn(8, 4), ["used", "unused"])
    with pytest.raises(HookError, match=r"\['blocks'\] never fired"):
        capture_grams(model, torch.randn(8, 4), ["used", "blocks"])
    grams, names = capture_grams(model, torch.randn(8, 4), ["used", "blocks.0"])
    assert names == ["used", "blocks.0"] and len(grams) == 2


def test_non_tensor_output_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    model = nn.Sequential(nn.Linear(4, 4), Pair())
    with pytest.raises(HookError, match="layer '1' returned tuple"):
        capture_grams(model, torch.randn(8, 4), ["0", "1"])


def test_layer_resolution_errors():
    model = _model()
    with pytest.raises(ValueError, match="no module named 'stages.9'"):
        resolve_layers(model, ["conv", "stages.9"])
    with pytest.raises(ValueError, match="more than once"):
        resolve_layers(model, ["conv", "conv"])
    assert resolve_layers(model, [("stem", model.conv)]) == [("stem", model.conv)]
    assert [name for name, _ in resolve_layers(model, model.layers()[:3])] == ["input", "conv", "bn"]
    with pytest.raises(RuntimeError, match="context manager"):
        gram_capture(model)(_images())


def test_nan_activation_names_the_layer():
    model = _model()
    images = _images()
    images[2, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="layer 'input'.*NaN or inf"):
        cka.model_cka(model, [images])


def test_small_batch_is_refused_by_the_engine():
    with pytest.raises(ValueError, match="n=3"):
        cka.model_cka(_model(), [_images(12), _images(3)])


def test_capture_outputs_equal_a_manual_forward_in_any_batching():
    model, images = _model(), _images(10)
    model.eval()
    with torch.no_grad():
        stem = model.relu(model.bn(model.conv(images)))
    outputs = capture_outputs(model, images, ["relu", "logits"], batch_size=4)
    assert [tuple(o.shape) for o in outputs] == [tuple(stem.shape), (10, 10)]
    torch.testing.assert_close(outputs[0], stem)
    torch.testing.assert_close(outputs[1], capture_outputs(model, images, ["logits"], batch_size=10)[0])
    assert _hook_count(model) == 0


def test_one_capture_class_serves_any_reduction():
    model = _model()
    images = _images(6)
    seen = []

    def shape_of(index, output):
        seen.append(index)
        return tuple(output.shape)

    with Capture(model, None, shape_of) as capture:
        shapes = capture(images)
    assert seen == list(range(len(model.layers())))  # every layer once, in forward order here
    assert shapes[0] == (6, 1, 16, 16) and shapes[-1] == (6, 10)
    whole = capture_outputs(model, images, [model.layers()[-1].name], batch_size=4)[0]
    torch.testing.assert_close(whole, model.eval()(images))  # whole outputs, cut into batches and joined


class _PairOut(nn.Module):
    """Returns (x * 2, x): a tuple output, as attention modules do."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x


class _Keywords(nn.Module):
    """Takes keyword inputs, as tokenised-text models do."""

    def __init__(self):
        super().__init__()
        self.pair = _PairOut()

    def forward(self, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.pair(values * scale)[0]


def test_select_picks_a_tensor_from_tuple_outputs_and_dict_inputs_are_keywords():
    model = _Keywords()
    values, scale = torch.randn(5, 3), torch.full((5, 1), 3.0)
    with pytest.raises(HookError, match="'pair' returned tuple"):
        with Capture(model, ["pair"], output_copy) as capture:
            capture({"values": values, "scale": scale})
    with Capture(model, ["pair"], output_copy, select=lambda index, output: output[1]) as capture:
        (kept,) = capture({"values": values, "scale": scale})
    torch.testing.assert_close(kept, values * 3)


def test_batches_cut_a_tensor_in_order_and_read_loaders():
    """The one batching helper: consecutive slices (the last one short), at most max_batches, loaders' images."""
    from widedeep.capture import batches

    images = torch.arange(10.0).reshape(10, 1)
    cut = list(batches(images, 4))
    assert [len(b) for b in cut] == [4, 4, 2] and torch.equal(torch.cat(cut), images)
    assert [len(b) for b in batches(images, 4, max_batches=2)] == [4, 4]
    loader = [(images[:3], torch.zeros(3)), (images[3:], torch.zeros(7))]
    assert [len(b) for b in batches(loader, 999)] == [3, 7]
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            list(batches(images, bad))
