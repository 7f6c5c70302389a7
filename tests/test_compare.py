"""Tests of widedeep.compare: any two PyTorch models, layer by layer, on real architectures built without weights."""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from widedeep import compare
from widedeep.analyses.measure_tests import calibrated_score
from widedeep.capture import HookError
from widedeep.comparison import Comparison, measure_names, resolve_measure
from widedeep.models import resnet

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 24, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _cifar_resnet(seed: int = 0, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return resnet(8, 1, in_channels=in_channels)


def _small_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=64, mlp_dim=128, num_classes=10)


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                 enable_nested_tensor=False)


def _assert_unit_diagonal_and_informative(result: Comparison) -> None:
    """A model against itself: 1 on the diagonal within 1e-6, and not a matrix of ones (layers differ)."""
    np.testing.assert_allclose(np.diag(result.matrix), 1.0, rtol=0, atol=1e-6)
    assert np.isfinite(result.matrix).all()
    off_diagonal = result.matrix[~np.eye(len(result.rows), dtype=bool)]
    assert off_diagonal.min() < 0.99


# ---------------------------------------------------------------------------------------------
# Real architectures, each against itself (one pass) and against a copy of itself (two models)
# ---------------------------------------------------------------------------------------------

def _architectures():
    """(name, model, data, layer selection): real models built from their constructors, no weights."""
    resnet18_blocks = ["conv1", "bn1", "maxpool", "layer1.0", "layer2.0", "layer3.1", "layer4.1", "avgpool", "fc"]
    # (not "heads": torchvision zero-initialises it, a constant layer that compare refuses)
    vit_layers = lambda name, module: name in ("conv_proj", "encoder.ln") or (  # noqa: E731
        name.startswith("encoder.layers.encoder_layer_") and name.count(".") == 2)
    torch.manual_seed(0)
    yield "resnet18", torchvision.models.resnet18(weights=None), _images(16), resnet18_blocks
    yield "VisionTransformer", _small_vit(), _images(16), vit_layers
    yield "TransformerEncoder", _encoder(), torch.randn(16, 5, 32, generator=torch.Generator().manual_seed(1)), \
        ["layers.0", "layers.0.linear1", "layers.1", "layers.1.norm2"]
    yield "CifarResNet", _cifar_resnet(), _images(16), None


@pytest.mark.parametrize("case", list(_architectures()), ids=lambda case: case[0])
def test_a_model_against_itself_has_a_unit_diagonal(case):
    _, model, data, layers = case
    within = compare(model, data=data, layers_a=layers, batch_size=8)
    _assert_unit_diagonal_and_informative(within)
    twin = copy.deepcopy(model)  # two models, two captures: the cross-model path
    across = compare(model, twin, data, layers_a=layers, batch_size=8)
    _assert_unit_diagonal_and_informative(across)
    np.testing.assert_allclose(across.matrix, within.matrix, rtol=0, atol=1e-6)
    assert across.rows == within.rows == across.columns
    assert within.n_examples == 16


def test_hugging_face_models_from_configs():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16,
                                     initializer_range=0.5)  # the default 0.02 leaves every layer ~ its input
    bert = transformers.BertModel(config)
    ids = torch.randint(0, 50, (16, 8), generator=torch.Generator().manual_seed(0))
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}  # keyword inputs, batched by compare
    layers = ["embeddings", "encoder.layer.0.attention", "encoder.layer.0", "encoder.layer.1", "encoder"]
    with pytest.warns(UserWarning) as caught:
        result = compare(bert, data=tokens, layers_a=layers, batch_size=8)
    _assert_unit_diagonal_and_informative(result)
    warned = [str(w.message) for w in caught]
    # the attention block returns a tuple, the encoder a ModelOutput: each is named once, with what was taken
    assert sum("'encoder.layer.0.attention'" in m and "[0]" in m for m in warned) == 1
    assert sum("'encoder' returned BaseModelOutput" in m and "last_hidden_state" in m for m in warned) == 1
    assert len(result.notes) == 2
    # the encoder's first tensor is its last hidden state, which is the last layer's output
    assert result.matrix[layers.index("encoder"), layers.index("encoder.layer.1")] == pytest.approx(1, abs=1e-6)

    vit_config = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    hf_vit = transformers.ViTModel(vit_config, add_pooling_layer=False)
    images = _images(16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # output= says which tensor of the attention tuples: no warning
        across = compare(hf_vit, _small_vit(), images, layers_a=["embeddings", "layers.0.attention", "layers.0",
                                                                 "layernorm"],
                         layers_b=["conv_proj", "encoder.layers.encoder_layer_0.self_attention",
                                   "encoder.layers.encoder_layer_0", "encoder.ln"], output=0, batch_size=8)
    assert across.matrix.shape == (4, 4) and np.isfinite(across.matrix).all()
    assert across.rows[1] == "layers.0.attention" and across.columns[1].endswith("self_attention")
    assert (across.model_a, across.model_b) == ("ViTModel", "VisionTransformer")


# ---------------------------------------------------------------------------------------------
# Against an independent float64 reference
# ---------------------------------------------------------------------------------------------

def _reference_activations(model: nn.Module, images: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    """Each named layer's output as float64 (n, features), captured by plain hooks that copy it."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda module, inputs, output, name=name: store.__setitem__(name, output.detach().clone()))
        for name in names]
    model.eval()
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return [store[name].reshape(len(images), -1).double().numpy() for name in names]


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al.'s (2012) unbiased HSIC, trace form, on Grams with zeroed diagonals (float64)."""
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    ones = np.ones(n)
    value = np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2)) \
        - 2 / (n - 2) * (ones @ k @ l @ ones)
    return value / (n * (n - 3))


def _reference_minibatch_cka(acts_a: list[list[np.ndarray]], acts_b: list[list[np.ndarray]]) -> np.ndarray:
    """sum_b HSIC(K_b, L_b) / sqrt(sum_b HSIC(K_b, K_b) sum_b HSIC(L_b, L_b)) over batches (Nguyen et al. 2021)."""
    layers_a, layers_b = len(acts_a[0]), len(acts_b[0])
    cross, self_a, self_b = np.zeros((layers_a, layers_b)), np.zeros(layers_a), np.zeros(layers_b)
    for batch_a, batch_b in zip(acts_a, acts_b):
        grams_a = [x @ x.T for x in batch_a]   # uncentred: the unbiased HSIC centres itself
        grams_b = [y @ y.T for y in batch_b]
        for i, k in enumerate(grams_a):
            self_a[i] += _hsic_unbiased(k, k)
            for j, l in enumerate(grams_b):
                cross[i, j] += _hsic_unbiased(k, l)
        for j, l in enumerate(grams_b):
            self_b[j] += _hsic_unbiased(l, l)
    return cross / np.sqrt(np.outer(self_a, self_b))


def test_scores_match_a_float64_numpy_reference_of_minibatch_cka():
    model_a, model_b = _cifar_resnet(0), _cifar_resnet(1)
    names = ["conv", "bn", "stages.0.0.conv2", "stages.1.0.add", "stages.2.0.relu2", "pool", "logits"]
    images = _images(30)
    batches = [images[:10], images[10:20], images[20:]]
    reference = _reference_minibatch_cka([_reference_activations(model_a, b, names) for b in batches],
                                         [_reference_activations(model_b, b, names) for b in batches])
    loader = DataLoader(TensorDataset(images), batch_size=10)
    exact = compare(model_a, model_b, loader, layers_a=names, gram_dtype=torch.float64)
    np.testing.assert_allclose(exact.matrix, reference, rtol=0, atol=1e-10)
    default = compare(model_a, model_b, loader, layers_a=names)  # float32 Grams, float64 HSICs
    np.testing.assert_allclose(default.matrix, reference, rtol=0, atol=1e-5)
    assert np.abs(reference - np.diag(np.diag(reference))).max() > 0.05  # a real cross-model matrix
    # a different seed is not the same model (the pitfall of capturing one model twice)
    itself = compare(model_a, data=loader, layers_a=names)
    assert np.abs(itself.matrix - default.matrix).max() > 0.1


def test_every_measure_by_name_and_debiased_cka_agrees_with_one_minibatch():
    model = _cifar_resnet()
    names = ["conv", "stages.0.0.add", "stages.1.0.relu2", "logits"]
    images = _images(40)
    streamed = compare(model, data=images, layers_a=names, batch_size=40)  # one batch of all 40
    debiased = compare(model, data=images, layers_a=names, measure="debiased CKA")
    np.testing.assert_allclose(debiased.matrix, streamed.matrix, rtol=0, atol=1e-5)
    for name in measure_names()[1:]:
        layers = names[:3] if name == "subspace match" else names   # it compares conv maps with conv maps
        result = compare(model, data=images, layers_a=layers, measure=name, measure_options={"knn_k": 5})
        assert result.measure == name and result.matrix.shape == (len(layers),) * 2
        assert np.isfinite(result.matrix).all(), name
        np.testing.assert_allclose(np.diag(result.matrix), 1.0, atol=1e-6, err_msg=name)
    assert resolve_measure("rbf_cka") == "RBF CKA" and resolve_measure("CKA") == "minibatch CKA"
    with pytest.raises(ValueError, match=r"unknown measure 'pwca'.*'PWCCA'"):
        compare(model, data=images, layers_a=names, measure="pwca")


def test_whole_activation_measures_are_capped_and_say_so():
    model = _cifar_resnet()
    result = compare(model, data=_images(50), layers_a=["conv", "logits"], measure="RSA", max_examples=20,
                     batch_size=8)
    assert result.n_examples == 20
    assert any("at most 20 examples" in note for note in result.notes)
    streamed = compare(model, data=_images(50), layers_a=["conv", "logits"], max_examples=20, batch_size=8)
    assert streamed.n_examples == 20   # 8 + 8 + the 4 left of the third batch


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

def test_layers_by_name_module_or_predicate():
    model = _cifar_resnet()
    data = _images(12)
    by_name = compare(model, data=data, layers_a=["conv", "stages.0.0.conv1"])
    by_module = compare(model, data=data, layers_a=[model.conv, model.stages[0][0].conv1])
    by_predicate = compare(model, data=data, layers_a=lambda name, module: isinstance(module, nn.Conv2d)
                           and name in ("conv", "stages.0.0.conv1"))
    assert by_name.rows == by_module.rows == by_predicate.rows == ("conv", "stages.0.0.conv1")
    np.testing.assert_array_equal(by_name.matrix, by_predicate.matrix)
    # different rows and columns of one model: one forward pass, the same numbers as the full matrix
    full = compare(model, data=data)
    part = compare(model, data=data, layers_a=["conv", "bn"], layers_b=["relu", "logits", "conv"])
    rows, cols = [full.rows.index(n) for n in part.rows], [full.columns.index(n) for n in part.columns]
    np.testing.assert_allclose(part.matrix, full.matrix[np.ix_(rows, cols)], rtol=0, atol=1e-12)


def test_a_misspelt_layer_is_named_with_its_close_names():
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"no module named 'layer1.0.conv3' \(close: 'layer1.0.conv2', "
                                         r"'layer1.0.conv1'.*named_modules"):
        compare(model, data=_images(8), layers_a=["conv1", "layer1.0.conv3"])


def test_empty_selections_are_refused():
    model = _cifar_resnet()
    with pytest.raises(ValueError, match="selected none of the"):
        compare(model, data=_images(8), layers_a=lambda name, module: isinstance(module, nn.LSTM))
    with pytest.raises(ValueError, match="no layers selected"):
        compare(model, data=_images(8), layers_a=[])
    with pytest.raises(ValueError, match=r"no \.layers\(\) method: pass layers_a="):
        compare(torchvision.models.resnet18(weights=None), data=_images(8))


def test_a_reused_module_is_refused_by_name():
    model = torchvision.models.resnet18(weights=None)  # BasicBlock calls its one `relu` twice
    with pytest.raises(HookError, match="'layer1.0.relu'.*fired 2 times"):
        compare(model, data=_images(8), layers_a=["layer1.0.relu"])


# ---------------------------------------------------------------------------------------------
# Outputs that are not one tensor
# ---------------------------------------------------------------------------------------------

def test_tuple_outputs_take_the_first_tensor_with_one_warning_per_layer():
    model = _encoder()
    data = torch.randn(24, 5, 32, generator=torch.Generator().manual_seed(0))
    layers = ["layers.0.self_attn", "layers.0", "layers.1.self_attn"]
    with pytest.warns(UserWarning) as caught:
        default = compare(model, data=data, layers_a=layers, batch_size=8)   # three batches
    messages = [str(w.message) for w in caught if "returned tuple" in str(w.message)]
    assert len(messages) == 2   # once per tuple-returning layer, not once per batch
    assert "'layers.0.self_attn'" in messages[0] and "[0] of shape (8, 5, 32)" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = compare(model, data=data, layers_a=layers, batch_size=8, output=0)
    np.testing.assert_array_equal(default.matrix, chosen.matrix)
    with pytest.raises(ValueError, match=r"layer 'layers.0.self_attn': the output selector gave NoneType"):
        compare(model, data=data, layers_a=layers, output=1)   # need_weights=False: the weights are None


class _Transposing(nn.Module):
    """Returns its input with the example axis moved last, as a sequence-first module would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.T


def test_an_output_whose_first_axis_is_not_the_batch_is_refused():
    model = nn.Sequential(nn.Linear(6, 5), _Transposing())
    with pytest.raises(ValueError, match=r"layer '1' output has shape \(5, 12\).*not the batch of 12 examples"):
        compare(model, data=torch.randn(12, 6), layers_a=["0", "1"])


# ---------------------------------------------------------------------------------------------
# The same examples in the same order
# ---------------------------------------------------------------------------------------------

def _indexed(n: int = 32) -> TensorDataset:
    return TensorDataset(_images(n, size=16), torch.arange(n))


def test_two_loaders_that_shuffle_differently_are_refused():
    model = _cifar_resnet()
    dataset = _indexed()
    loader_a = DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
    loader_b = DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match=r"batch 0: data and data_b hold different examples \(\d+ of 8 inputs"):
        compare(model, model, loader_a, data_b=loader_b)
    with pytest.raises(ValueError, match=r"batch 0: .*example ids differ"):
        compare(model, model, loader_a, data_b=loader_b, example_ids=lambda batch: batch[1])


def test_two_loaders_in_the_same_order_give_a_unit_diagonal():
    model = _cifar_resnet()
    dataset = _indexed()
    seeded = [DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
              for _ in range(2)]
    result = compare(model, model, seeded[0], data_b=seeded[1], example_ids=lambda batch: batch[1])
    np.testing.assert_allclose(np.diag(result.matrix), 1.0, rtol=0, atol=1e-6)
    # model B's own preprocessing of the same examples: checked by id, not by content
    resized = DataLoader(TensorDataset(nn.functional.interpolate(dataset.tensors[0], size=24), dataset.tensors[1]),
                         batch_size=8)
    plain = DataLoader(dataset, batch_size=8)
    across = compare(model, model, plain, data_b=resized, example_ids=lambda batch: batch[1])
    assert across.matrix.shape == (30, 30)
    assert across.matrix[0, 0] < 0.999   # model B saw the resized images: its own forward pass
    with pytest.raises(ValueError, match="differ in type or shape.*example_ids"):
        compare(model, model, plain, data_b=resized)
    with pytest.raises(ValueError, match="data_b gives more batches"):
        compare(model, model, DataLoader(_indexed(16), batch_size=8), data_b=plain)


# ---------------------------------------------------------------------------------------------
# Numerical trouble is an error, never a silent NaN
# ---------------------------------------------------------------------------------------------

class _Poison(nn.Module):
    """Replaces one value of its input by `value` (NaN or inf)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[0, 0] = self.value
        return x


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("measure", ["cka", "RBF CKA"])
def test_nan_or_inf_activations_raise_naming_the_layer(value, measure):
    model = nn.Sequential(nn.Linear(6, 5), _Poison(value), nn.Linear(5, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        compare(model, data=torch.randn(12, 6), layers_a=["0", "1"], measure=measure)
    with pytest.raises(ValueError, match="layer '1'"):
        compare(model, data=torch.randn(12, 6), layers_a=["0", "1"])


def test_batches_too_small_for_the_unbiased_estimator_are_refused():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
    data = torch.randn(11, 6)
    with pytest.raises(ValueError, match=r"batch 2 holds 3 examples.*at least 4.*drop_last"):
        compare(model, data=DataLoader(TensorDataset(data), batch_size=4), layers_a=["0"])
    with pytest.raises(ValueError, match=r"batch 0 holds 3 examples"):
        compare(model, data=data[:3], layers_a=["0"])
    # a tensor is cut into nearly equal batches, so no example is lost and none is too small
    result = compare(model, data=data, layers_a=["0", "1"], batch_size=9)
    assert result.n_examples == 11


def test_a_constant_layer_is_refused():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.ones_like(x)
    model = nn.Sequential(nn.Linear(6, 5), Constant())
    with pytest.raises(ValueError, match=r"layer\(s\) \['1'\] have zero summed self-HSIC"):
        compare(model, data=torch.randn(12, 6), layers_a=["0", "1"])
    with pytest.warns(RuntimeWarning, match="zero summed self-HSIC"):
        result = compare(model, data=torch.randn(12, 6), layers_a=["0", "1"], on_degenerate="nan")
    assert result.matrix[0, 0] == 1.0 and np.isnan(result.matrix[1]).all() and np.isnan(result.matrix[:, 1]).all()


# ---------------------------------------------------------------------------------------------
# Baseline, device, progress, result
# ---------------------------------------------------------------------------------------------

def test_the_shuffled_baseline_sits_beside_every_score():
    model = _cifar_resnet()
    names = ["conv", "stages.0.0.add", "stages.1.0.add", "stages.2.0.relu2", "logits"]
    data = _images(48)
    result = compare(model, data=data, layers_a=names, baseline=True, batch_size=16)
    assert result.baseline.shape == result.matrix.shape
    # unbiased CKA of shuffled examples is near 0, far below the matched scores
    assert np.abs(result.baseline).max() < 0.25
    assert (np.diag(result.matrix) - np.diag(result.baseline)).min() > 0.7
    np.testing.assert_array_equal(result.calibrated, calibrated_score(result.matrix, result.baseline))
    np.testing.assert_allclose(np.diag(result.calibrated), 1.0, atol=1e-12)
    again = compare(model, data=data, layers_a=names, baseline=True, batch_size=16)
    np.testing.assert_array_equal(again.baseline, result.baseline)   # seeded
    # the biased estimator's null sits well above 0 at small n: why a baseline belongs beside a score
    biased = compare(model, data=data[:16], layers_a=names, baseline=True, measure="linear CKA")
    assert biased.baseline.mean() > np.abs(result.baseline).mean() + 0.05
    with pytest.raises(ValueError, match="baseline=True"):
        compare(model, data=data, layers_a=names).calibrated


def test_device_argument_runs_there_and_leaves_the_model_where_it_was():
    model = _cifar_resnet()
    names = ["conv", "logits"]
    here = compare(model, data=_images(12), layers_a=names)
    there = compare(model, data=_images(12), layers_a=names, device="cpu")
    np.testing.assert_array_equal(here.matrix, there.matrix)
    if torch.cuda.is_available():
        on_gpu = compare(model, data=_images(12), layers_a=names, device="cuda")
        np.testing.assert_allclose(on_gpu.matrix, here.matrix, atol=1e-5)
    assert next(model.parameters()).device.type == "cpu"


def test_progress_bar_when_asked(capsys):
    model = _cifar_resnet()
    compare(model, data=_images(16), layers_a=["conv"], batch_size=8, progress=True)
    assert "compare (minibatch CKA)" in capsys.readouterr().err
    compare(model, data=_images(16), layers_a=["conv"], batch_size=8)
    assert "compare" not in capsys.readouterr().err


def test_the_result_is_frozen_labelled_and_plots():
    pytest.importorskip("pandas")
    model = _cifar_resnet()
    result = compare(model, data=_images(16), layers_a=["conv", "bn", "logits"], baseline=True)
    with pytest.raises(FrozenInstanceError):
        result.measure = "other"
    with pytest.raises(ValueError, match="read-only"):
        result.matrix[0, 0] = 2.0
    frame = result.to_frame()
    assert list(frame.index) == ["conv", "bn", "logits"] == list(frame.columns)
    assert frame.loc["bn", "logits"] == result.matrix[1, 2]
    record = json.loads(json.dumps(result.as_dict()))
    assert record["measure"] == "minibatch CKA" and record["n_examples"] == 16
    assert record["calibrated"][1][2] == pytest.approx(result.calibrated[1, 2])
    import matplotlib
    matplotlib.use("Agg")
    figure = result.plot()
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["conv", "bn", "logits"]
    np.testing.assert_array_equal(axes.images[0].get_array(), result.matrix)
    assert isinstance(result.plot("calibrated"), matplotlib.figure.Figure)
    import matplotlib.pyplot as plt
    plt.close("all")
    with pytest.raises(ValueError, match="does not match"):
        Comparison(np.zeros((2, 2)), ("a",), ("b", "c"), "minibatch CKA", 4)


def test_bad_arguments_name_themselves():
    model = _cifar_resnet()
    with pytest.raises(TypeError, match="model_b must be a torch.nn.Module.*compare\\(model, data=...\\)"):
        compare(model, _images(8))
    with pytest.raises(TypeError, match="needs data"):
        compare(model)
    with pytest.raises(ValueError, match=r"unknown measure_options \['k'\]"):
        compare(model, data=_images(8), measure="mutual k-NN", measure_options={"k": 3})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        compare(model, data=_images(8), batch_size=0)


def test_the_subspace_match_refuses_maps_beside_vectors():
    model = _cifar_resnet()
    with pytest.raises(ValueError, match=r"all layers must be feature maps.*'conv' \(16, 32, 32\).*'logits' \(10,\)"):
        compare(model, data=_images(12), layers_a=["conv", "logits"], measure="subspace match")


def test_keyword_inputs_from_two_loaders_are_checked_key_by_key():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, initializer_range=0.5))
    ids = torch.randint(0, 50, (16, 8), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long)} for i in range(16)]
    ordered = DataLoader(rows, batch_size=8)
    result = compare(bert, bert, ordered, data_b=DataLoader(rows, batch_size=8), layers_a=["embeddings", "pooler"])
    np.testing.assert_allclose(np.diag(result.matrix), 1.0, rtol=0, atol=1e-6)
    shuffled = DataLoader(rows, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="hold different examples"):
        compare(bert, bert, ordered, data_b=shuffled, layers_a=["embeddings", "pooler"])
