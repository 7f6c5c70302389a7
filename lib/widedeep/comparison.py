"""Compare any two PyTorch models (or one with itself) layer by layer: one entry point over capture and measures.

Layer: beside the analyses (on `widedeep.capture`, `widedeep.measures` and
`widedeep.analyses.measure_tests`); nothing in the package imports it, and `compare` is
exported lazily from the package (`from widedeep import compare`) so that `import widedeep` stays light;
the module is `comparison`, not `compare`, so that the function does not shadow its module.

    from widedeep import compare
    result = compare(model_a, model_b, loader, layers_a=["layer1", "layer2"], layers_b=lambda n, m: ...)
    result.matrix, result.rows, result.columns; result.plot(); result.to_frame()

What it does with each input, and why:
- layers: module names, modules, `(name, module)` pairs or a predicate `(name, module) -> bool`
  over `model.named_modules()`; `None` takes `model.layers()` (our CifarResNet). A name that matches
  nothing raises naming it and the closest names; an empty selection is refused.
- outputs: a module that returns a tuple, dict or Hugging Face ModelOutput is reduced through
  `output` (an index, a key, or `f(layer_name, output) -> tensor`); by default its first tensor,
  with one warning naming the layer. The tensor's first axis must be the batch of examples.
- examples: one `data` (a tensor, a dict of keyword tensors, a Dataset or an iterable of batches)
  feeds both models the same examples in the same order by construction. With a second `data_b`
  (say, another preprocessing), every pair of batches is checked to hold the same examples: equal
  inputs, or equal ids from `example_ids(batch)`; a mismatch raises.
- measure: "cka" (default) is the paper's estimator, unbiased minibatch linear CKA (Nguyen et al.
  2021): each layer is reduced to one n x n Gram per batch inside its forward hook and only summed
  HSICs are kept, so memory is O(layers x batch^2), whatever the number of examples or the layers'
  widths. Every other measure of Chapter 9 (`widedeep.measures.lenses`: linear, debiased and RBF
  CKA, mean CCA, SVCCA, PWCCA, Procrustes, RSA, mutual k-NN, subspace match) needs every example's
  whole activations at once, so it reads at most `max_examples` (default 1000) examples and holds
  layers x examples x features numbers.
- baseline: `baseline=True` also computes each score with one side's examples shuffled (a
  permutation null; for minibatch CKA a fresh permutation within each batch, which is the whole
  null of an estimator that only pairs examples within a batch), and `result.calibrated` gives
  (score - null) / (1 - null) (`widedeep.analyses.measure_tests.calibrated_score`).
- errors: NaN/inf activations, batches of fewer than 4 examples (the unbiased HSIC divides by
  n(n-3)), a layer that fires twice or never, and constant layers raise a ValueError (or
  `HookError`) naming the layer; nothing is clamped and no NaN is returned silently.
- device: `device=None` runs each model where its parameters are; `device="cuda"` moves both
  models there for the call and back afterwards. `progress=True` shows a tqdm bar over batches.
"""

from __future__ import annotations

import difflib
import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import zip_longest

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from widedeep.analyses.measure_tests import calibrated_score
from widedeep.capture import Capture, model_device, output_copy, resolve_layers
from widedeep.measures.cka import MinibatchCKA
from widedeep.measures.grams import MIN_EXAMPLES, layer_gram
from widedeep.measures.lenses import lenses

MINIBATCH_CKA = "minibatch CKA"  # the paper's estimator: unbiased HSIC summed over batches
DEFAULT_MAX_EXAMPLES = 1000      # cap for the measures that hold every example's activations
DEFAULT_BATCH_SIZE = 128         # for data given as a tensor, dict or Dataset

LayerSpec = Sequence | Callable[[str, nn.Module], bool] | str | None
OutputSpec = int | str | Callable[[str, object], torch.Tensor] | None


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------

def _frozen(array: np.ndarray | None) -> np.ndarray | None:
    """A read-only float64 copy, so a frozen result cannot be changed through its arrays."""
    if array is None:
        return None
    array = np.array(array, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Comparison:
    """A labelled similarity matrix: rows are model A's layers, columns model B's, with measure and example count."""

    matrix: np.ndarray
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    measure: str
    n_examples: int
    baseline: np.ndarray | None = None   # the same scores with one side's examples shuffled
    model_a: str = "model A"
    model_b: str = "model B"
    notes: tuple[str, ...] = field(default=())  # what was chosen on the caller's behalf (outputs taken, caps)

    def __post_init__(self):
        matrix = _frozen(self.matrix)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "baseline", _frozen(self.baseline))
        if matrix.shape != (len(self.rows), len(self.columns)):
            raise ValueError(f"matrix of shape {matrix.shape} does not match {len(self.rows)} row and "
                             f"{len(self.columns)} column names")
        if self.baseline is not None and self.baseline.shape != matrix.shape:
            raise ValueError(f"baseline of shape {self.baseline.shape} does not match the matrix {matrix.shape}")

    @property
    def calibrated(self) -> np.ndarray:
        """(score - null) / (1 - null) per cell: 0 is what shuffled examples give, 1 a perfect match."""
        if self.baseline is None:
            raise ValueError("this comparison has no baseline: call compare(..., baseline=True)")
        return _frozen(calibrated_score(self.matrix, self.baseline))

    def values(self, which: str = "score") -> np.ndarray:
        """The matrix of 'score', 'baseline' or 'calibrated' values."""
        if which == "score":
            return self.matrix
        if which == "calibrated":
            return self.calibrated
        if which == "baseline":
            if self.baseline is None:
                raise ValueError("this comparison has no baseline: call compare(..., baseline=True)")
            return self.baseline
        raise ValueError(f"which must be 'score', 'baseline' or 'calibrated'; got {which!r}")

    def to_frame(self, which: str = "score"):
        """The matrix as a pandas DataFrame indexed by model A's layers, with model B's layers as columns."""
        import pandas as pd  # only this method needs pandas
        frame = pd.DataFrame(self.values(which), index=list(self.rows), columns=list(self.columns))
        frame.index.name, frame.columns.name = self.model_a, self.model_b
        return frame

    def as_dict(self) -> dict:
        """Plain JSON-ready values: names, measure, example count and the matrices as nested lists."""
        def listed(array):
            return None if array is None else [[None if math.isnan(v) else float(v) for v in row] for row in array]
        return {"measure": self.measure, "n_examples": self.n_examples, "model_a": self.model_a,
                "model_b": self.model_b, "rows": list(self.rows), "columns": list(self.columns),
                "matrix": listed(self.matrix), "baseline": listed(self.baseline),
                "calibrated": None if self.baseline is None else listed(self.calibrated),
                "notes": list(self.notes)}

    def plot(self, which: str = "score", ax=None, title: str | None = None, max_ticks: int = 40):
        """A heatmap of the matrix (model A's layers up the rows, model B's along the columns); returns the figure."""
        import matplotlib.pyplot as plt  # only plotting needs matplotlib
        values = self.values(which)
        if ax is None:
            side = min(9.0, 3.0 + 0.12 * max(len(self.rows), len(self.columns)))
            fig, ax = plt.subplots(figsize=(side + 1.2, side))
        else:
            fig = ax.figure
        finite = values[np.isfinite(values)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = max(1.0, float(finite.max())) if finite.size else 1.0
        image = ax.imshow(values, origin="lower", vmin=low, vmax=high, cmap="magma", interpolation="nearest",
                          aspect="auto")
        for axis, names in ((ax.yaxis, self.rows), (ax.xaxis, self.columns)):
            step = max(1, math.ceil(len(names) / max_ticks))
            axis.set_ticks(range(0, len(names), step))
            axis.set_ticklabels(names[::step], fontsize=7)
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_ylabel(f"{self.model_a} layers")
        ax.set_xlabel(f"{self.model_b} layers")
        label = self.measure if which == "score" else f"{self.measure} ({which})"
        ax.set_title(title if title is not None else f"{label}, {self.n_examples} examples", fontsize=10)
        fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.04)
        fig.tight_layout()
        return fig


# ---------------------------------------------------------------------------------------------
# Measures by name
# ---------------------------------------------------------------------------------------------

def _key(name: str) -> str:
    """A measure name folded for lookup: case, spaces, hyphens and underscores ignored."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def measure_names() -> list[str]:
    """Every measure `compare` accepts: minibatch CKA first, then Chapter 9's measures."""
    return [MINIBATCH_CKA] + list(lenses())


def resolve_measure(measure: str) -> str:
    """The canonical name of a measure ('cka' is minibatch CKA), or a ValueError listing the close names."""
    if not isinstance(measure, str):
        raise TypeError(f"measure must be a name (one of {measure_names()}); got {measure!r}")
    aliases = {_key(name): name for name in measure_names()}
    aliases.update({"cka": MINIBATCH_CKA, "unbiasedminibatchcka": MINIBATCH_CKA, "knn": "mutual k-NN",
                    "unbiasedcka": "debiased CKA", "subspace": "subspace match"})
    if _key(measure) in aliases:
        return aliases[_key(measure)]
    close = difflib.get_close_matches(measure, measure_names(), n=3, cutoff=0.4)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(f"unknown measure {measure!r}{hint}; choose one of {measure_names()}")


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

def select_layers(model: nn.Module, layers: LayerSpec, side: str = "model") -> list[tuple[str, nn.Module]]:
    """(name, module) pairs to compare: by name, module, pair or predicate; unknown names and empty selections raise."""
    kind = type(model).__name__
    named = [(name, module) for name, module in model.named_modules() if name]
    if layers is None:
        if callable(getattr(model, "layers", None)):
            return resolve_layers(model)
        examples = ", ".join(repr(name) for name, _ in named[:6])
        raise ValueError(f"{side} ({kind}) has no .layers() method: pass layers_{side[-1].lower()}= module names "
                         f"(e.g. {examples}) or a predicate such as `lambda name, module: "
                         f"isinstance(module, nn.Conv2d)`")
    if isinstance(layers, str):
        layers = [layers]
    if callable(layers) and not isinstance(layers, nn.Module):
        selected = [(name, module) for name, module in named if layers(name, module)]
        if not selected:
            raise ValueError(f"the layer predicate selected none of the {len(named)} modules of {side} ({kind}); "
                             f"it is called as predicate(name, module) on model.named_modules()")
        return resolve_layers(model, selected)
    if isinstance(layers, nn.Module):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError(f"no layers selected for {side} ({kind}): pass at least one module name")
    by_name = dict(named)
    name_of = {id(module): name for name, module in named}
    resolved, missing = [], []
    for item in layers:
        if isinstance(item, str):
            if item in by_name:
                resolved.append((item, by_name[item]))
            else:
                missing.append(item)
        elif isinstance(item, nn.Module):
            if id(item) not in name_of:
                raise ValueError(f"a module passed as a layer ({type(item).__name__}) is not a submodule of "
                                 f"{side} ({kind})")
            resolved.append((name_of[id(item)], item))
        else:
            resolved.append(item)  # (name, module) pairs and Layer objects: resolve_layers checks them
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, list(by_name), n=4, cutoff=0.5)
            hints.append(f"{name!r}" + (f" (close: {', '.join(repr(c) for c in close)})" if close else ""))
        raise ValueError(f"{side} ({kind}) has no module named {'; '.join(hints)}; the names are those of "
                         f"model.named_modules()")
    return resolve_layers(model, resolved)


# ---------------------------------------------------------------------------------------------
# Module outputs
# ---------------------------------------------------------------------------------------------

def first_tensor(output: object, path: str = "") -> tuple[torch.Tensor, str] | None:
    """The first tensor in a module output (tensor, tuple/list, dict or ModelOutput) and where it sits, or None."""
    if isinstance(output, torch.Tensor):
        return output, path or "the output"
    if isinstance(output, Mapping):  # dicts and Hugging Face ModelOutput (which skips None fields)
        items = list(output.items())
        return next((found for key, value in items if (found := first_tensor(value, f"{path}[{key!r}]"))), None)
    if isinstance(output, (tuple, list)):
        return next((found for index, value in enumerate(output)
                     if (found := first_tensor(value, f"{path}[{index}]"))), None)
    return None


def output_selector(names: Sequence[str], output: OutputSpec,
                    notes: list[str]) -> Callable[[int, object], torch.Tensor]:
    """A `Capture` select: the tensor to compare from each layer's raw output, noting once per layer a default pick."""
    warned: set[str] = set()

    def select(index: int, raw: object) -> torch.Tensor:
        name = names[index]
        if callable(output):
            chosen = output(name, raw)
        elif isinstance(raw, torch.Tensor):  # an index or key is for tuple/dict outputs, never a tensor's rows
            return raw
        elif output is not None:
            try:
                chosen = raw[output]
            except (KeyError, IndexError, TypeError) as error:
                raise ValueError(f"layer '{name}': output={output!r} does not index its output "
                                 f"({type(raw).__name__}): {error}") from None
        else:
            found = first_tensor(raw)
            if found is None:
                raise ValueError(f"layer '{name}' returned {type(raw).__name__} holding no tensor; pass "
                                 f"output=... to say what to compare, or pick another layer")
            chosen, where = found
            if name not in warned:
                warned.add(name)
                message = (f"layer '{name}' returned {type(raw).__name__}; comparing its first tensor, {where} "
                           f"of shape {tuple(chosen.shape)} (pass output=index, key or a function to choose)")
                notes.append(message)  # warned by compare() itself, so the warning points at the caller
        if not isinstance(chosen, torch.Tensor):
            raise ValueError(f"layer '{name}': the output selector gave {type(chosen).__name__}, not a tensor")
        return chosen

    return select


# ---------------------------------------------------------------------------------------------
# Batches: the same examples, in the same order, for both models
# ---------------------------------------------------------------------------------------------

def default_inputs(batch: object) -> torch.Tensor | Mapping:
    """The model input of a batch: the batch itself, the first item of an (inputs, labels, ...) tuple, or a dict."""
    if isinstance(batch, (torch.Tensor, Mapping)):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], (torch.Tensor, Mapping)):
        return batch[0]
    raise TypeError(f"cannot find the model input in a batch of type {type(batch).__name__}: pass "
                    f"inputs=lambda batch: ... to pick it")


def examples_in(inputs: torch.Tensor | Mapping) -> int:
    """Number of examples in a model input (a tensor's first axis, or that of a dict's first tensor)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 0
    tensors = [value for value in inputs.values() if isinstance(value, torch.Tensor)]
    if not tensors:
        raise TypeError("a dict input must hold at least one tensor")
    return int(tensors[0].shape[0])


def _slice(inputs: torch.Tensor | Mapping, stop: int):
    """The first `stop` examples of a model input."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:stop]
    return {key: value[:stop] if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}


def batches_of(data: object, batch_size: int) -> tuple[Iterable, int | None]:
    """(an iterable of batches, its length or None) for a tensor, dict of tensors, Dataset or iterable of batches.

    A tensor, dict or Dataset is cut into ceil(n / batch_size) batches of nearly equal size, so no
    batch is left too small for the unbiased estimator (a loader's last partial batch is not).
    """
    if isinstance(data, torch.Tensor) or (isinstance(data, Mapping) and data
                                          and all(isinstance(v, torch.Tensor) for v in data.values())):
        n = examples_in(data)
        parts = max(1, math.ceil(n / batch_size))
        bounds = np.linspace(0, n, parts + 1).round().astype(int)
        spans = list(zip(bounds[:-1], bounds[1:]))
        if isinstance(data, torch.Tensor):
            return [data[a:b] for a, b in spans], len(spans)
        return [{key: value[a:b] for key, value in data.items()} for a, b in spans], len(spans)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__") and not isinstance(data, Iterable):
        n = len(data)
        parts = max(1, math.ceil(n / batch_size))
        spans = [list(chunk) for chunk in np.array_split(np.arange(n), parts)]
        return torch.utils.data.DataLoader(data, batch_sampler=spans), len(spans)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        return data, (len(data) if hasattr(data, "__len__") else None)
    raise TypeError(f"data must be a tensor, a dict of tensors, a torch Dataset or an iterable of batches "
                    f"(e.g. a DataLoader); got {type(data).__name__}")


def _as_ids(ids: object) -> np.ndarray:
    """Example ids of a batch as a numpy array."""
    if isinstance(ids, torch.Tensor):
        return ids.detach().cpu().numpy()
    return np.asarray(list(ids))


def same_rows(inputs_a: torch.Tensor | Mapping, inputs_b: torch.Tensor | Mapping) -> torch.Tensor | None:
    """Per example, whether two model inputs are equal (NaN equal to NaN); None when their types or shapes differ."""
    if isinstance(inputs_a, Mapping) and isinstance(inputs_b, Mapping):
        if set(inputs_a) != set(inputs_b):
            return None
        tensors = [(inputs_a[k], inputs_b[k]) for k in inputs_a if isinstance(inputs_a[k], torch.Tensor)]
    else:
        tensors = [(inputs_a, inputs_b)]
    same = None
    for a, b in tensors:
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or not a.dim():
            return None
        a, b = a.detach().cpu().flatten(1), b.detach().cpu().flatten(1)
        equal = a == b
        if a.is_floating_point():
            equal |= a.isnan() & b.isnan()
        rows = equal.all(dim=1)
        same = rows if same is None else same & rows
    return same


def check_aligned(index: int, raw_a: object, raw_b: object, inputs_a, inputs_b,
                  example_ids: Callable[[object], object] | None) -> None:
    """Refuse a pair of batches from `data` and `data_b` that do not hold the same examples in the same order."""
    n_a, n_b = examples_in(inputs_a), examples_in(inputs_b)
    if n_a != n_b:
        raise ValueError(f"batch {index}: data gives {n_a} examples but data_b gives {n_b}; both must give the "
                         f"same examples in the same order (same batch size, same sampler)")
    if example_ids is not None:
        ids_a, ids_b = _as_ids(example_ids(raw_a)), _as_ids(example_ids(raw_b))
        if ids_a.shape != ids_b.shape or not np.array_equal(ids_a, ids_b):
            differ = int((ids_a != ids_b).sum()) if ids_a.shape == ids_b.shape else n_a
            raise ValueError(f"batch {index}: data and data_b hold different examples ({differ} of {n_a} example "
                             f"ids differ); give both loaders the same order (shuffle=False, or one seeded "
                             f"sampler), or pass a single data for both models")
        return
    same = same_rows(inputs_a, inputs_b)
    if same is None:
        raise ValueError(f"batch {index}: the inputs of data and data_b differ in type or shape, so their examples "
                         f"cannot be matched by content; pass example_ids=lambda batch: ... (e.g. a dataset "
                         f"index in each batch) to check that both give the same examples in the same order")
    if not bool(same.all()):
        raise ValueError(f"batch {index}: data and data_b hold different examples ({int((~same).sum())} of {n_a} "
                         f"inputs differ); give both loaders the same order (shuffle=False, or one seeded "
                         f"sampler), pass a single data for both models, or pass example_ids=... if the "
                         f"inputs differ by design (another preprocessing)")


def paired_inputs(data: object, data_b: object | None, batch_size: int, inputs: Callable[[object], object],
                  example_ids: Callable[[object], object] | None, max_examples: int | None,
                  min_batch: int) -> Iterator[tuple[object, object]]:
    """(input of model A, input of model B) per batch: one batch twice, or two checked batches of `data`/`data_b`."""
    source_a, _ = batches_of(data, batch_size)
    source_b = None if data_b is None else batches_of(data_b, batch_size)[0]
    seen = 0
    pairs = (((a, a) for a in source_a) if source_b is None
             else zip_longest(source_a, source_b, fillvalue=StopIteration))
    for index, (raw_a, raw_b) in enumerate(pairs):
        if raw_a is StopIteration or raw_b is StopIteration:
            longer = "data_b" if raw_a is StopIteration else "data"
            raise ValueError(f"{longer} gives more batches than the other (after {index}); data and data_b must "
                             f"give the same examples in the same order")
        input_a = inputs(raw_a)
        input_b = input_a if source_b is None else inputs(raw_b)
        if source_b is not None:
            check_aligned(index, raw_a, raw_b, input_a, input_b, example_ids)
        n = examples_in(input_a)
        if max_examples is not None and seen + n > max_examples:
            n = max_examples - seen
            if n < min_batch:
                return
            input_a, input_b = _slice(input_a, n), _slice(input_b, n)
        if n < min_batch:
            raise ValueError(f"batch {index} holds {n} examples, but unbiased minibatch CKA needs at least "
                             f"{min_batch} per batch (it divides by n(n-3)); use a larger batch size, "
                             f"DataLoader(drop_last=True), or pass the data as one tensor")
        seen += n
        yield input_a, input_b
        if max_examples is not None and seen >= max_examples:
            return


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------

def _reduction(names: Sequence[str], state: dict, gram: bool, gram_dtype: torch.dtype | None):
    """A `Capture` reduce: check the batch axis, then keep the layer's Gram (CKA) or a CPU copy of its output."""
    def reduce(index: int, output: torch.Tensor):
        n = state["n"]
        if output.dim() == 0 or output.shape[0] != n:
            raise ValueError(f"layer '{names[index]}' output has shape {tuple(output.shape)}, whose first axis is "
                             f"not the batch of {n} examples (a sequence-first module, batch_first=False?); pass "
                             f"output=lambda name, out: ... to put the examples first")
        if gram:
            return layer_gram(output, gram_dtype, f"layer '{names[index]}'")
        return output_copy(index, output)
    return reduce


def _union(first: list[tuple[str, nn.Module]], second: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The layers of both lists once each, in first-seen order (one capture serves both sides of one model)."""
    seen = {name for name, _ in first}
    return first + [(name, module) for name, module in second if name not in seen]


def _permuted(grams: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Grams of the same layers with the batch's examples shuffled (one permutation for every layer)."""
    order = torch.randperm(grams[0].shape[0], generator=generator).to(grams[0].device)
    return [g.index_select(0, order).index_select(1, order) for g in grams]


def compare(model_a: nn.Module, model_b: nn.Module | None = None, data: object = None, *,
            layers_a: LayerSpec = None, layers_b: LayerSpec = None, measure: str = "cka",
            data_b: object | None = None, inputs: Callable[[object], object] | None = None,
            example_ids: Callable[[object], object] | None = None, output: OutputSpec = None,
            batch_size: int = DEFAULT_BATCH_SIZE, max_examples: int | None = None, baseline: bool = False,
            seed: int = 0, device: str | torch.device | None = None, progress: bool = False,
            gram_dtype: torch.dtype | None = None, on_degenerate: str = "raise",
            measure_options: Mapping[str, object] | None = None) -> Comparison:
    """Similarity of every layer of `model_a` to every layer of `model_b` (or of `model_a`) on the same examples.

    Args:
        model_a, model_b: the models; `model_b=None` compares model A with itself.
        data: the examples: a tensor, a dict of keyword tensors, a Dataset or an iterable of batches
            (a DataLoader; a batch is a tensor, a dict, or a tuple whose first item is the input).
        layers_a, layers_b: module names, modules, (name, module) pairs or a predicate
            `(name, module) -> bool`; `layers_b=None` means the same selection as `layers_a`.
        measure: "cka" (unbiased minibatch CKA, streamed) or a name of `measure_names()`.
        data_b: model B's own batches of the same examples (checked batch by batch).
        inputs: picks the model input from a batch; example_ids: picks ids from a batch to check
            `data`/`data_b` alignment by id instead of by input content.
        output: for modules returning tuples/dicts: an index, a key, or `f(layer_name, output)`.
        batch_size: how a tensor, dict or Dataset is batched (loaders keep their own).
        max_examples: at most this many examples (default: all for "cka", 1000 for the others).
        baseline: also give each score with model B's examples shuffled (`result.calibrated`).
        device: run both models there (moved back after); default: where each model is.
        gram_dtype: Gram precision for "cka" (default float32 for float32 activations; HSICs are float64).
        on_degenerate: a constant layer (e.g. a zero-initialised head) raises; "nan" gives it NaN rows
            and columns with a warning instead ("cka" only).
        measure_options: keyword options of the measures (`knn_k`, `eps`), see `lenses.lenses`.
    """
    if not isinstance(model_a, nn.Module):
        raise TypeError(f"model_a must be a torch.nn.Module; got {type(model_a).__name__}")
    if model_b is not None and not isinstance(model_b, nn.Module):
        raise TypeError(f"model_b must be a torch.nn.Module or None; got {type(model_b).__name__} (to compare a "
                        f"model with itself pass compare(model, data=...))")
    if data is None:
        raise TypeError("compare() needs data: a tensor, a dict of tensors, a Dataset or a DataLoader of examples")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    name = resolve_measure(measure)
    streamed = name == MINIBATCH_CKA
    if max_examples is None and not streamed:
        max_examples = DEFAULT_MAX_EXAMPLES
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < MIN_EXAMPLES):
        raise ValueError(f"max_examples must be an integer >= {MIN_EXAMPLES}; got {max_examples!r}")
    options = dict(measure_options or {})
    known = list(inspect.signature(lenses).parameters)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown measure_options {unknown}; the measures take {known}")
    lens = None if streamed else lenses(**options)[name]
    # one capture and one forward pass serve both sides, unless model B has batches of its own
    same_model = model_b is None or (model_b is model_a and data_b is None)
    model_b = model_a if model_b is None else model_b
    if layers_b is None:
        layers_b = layers_a
    selected_a = select_layers(model_a, layers_a, "model_a")
    selected_b = select_layers(model_b, layers_b, "model_b")
    names_a, names_b = [n for n, _ in selected_a], [n for n, _ in selected_b]
    notes: list[str] = []
    if not streamed:
        notes.append(f"{name} reads every example's activations at once: at most {max_examples} examples")

    models = [model_a] if model_b is model_a else [model_a, model_b]
    homes = [model_device(m) for m in models]
    if device is not None:
        for model in models:
            model.to(device)
    try:
        with ExitStack() as stack:
            state = {"n": 0}
            if same_model:
                union = _union(selected_a, selected_b)
                union_names = [n for n, _ in union]
                captures = [stack.enter_context(
                    Capture(model_a, union, _reduction(union_names, state, streamed, gram_dtype),
                            output_selector(union_names, output, notes)))]
                rows_a = [union_names.index(n) for n in names_a]
                rows_b = [union_names.index(n) for n in names_b]
            else:
                captures = [stack.enter_context(
                    Capture(model, chosen, _reduction(names, state, streamed, gram_dtype),
                            output_selector(names, output, notes)))
                    for model, chosen, names in ((model_a, selected_a, names_a), (model_b, selected_b, names_b))]
                rows_a, rows_b = list(range(len(names_a))), list(range(len(names_b)))
            pairs = paired_inputs(data, data_b, batch_size, inputs or default_inputs, example_ids, max_examples,
                                  MIN_EXAMPLES if streamed else 1)
            _, total = batches_of(data, batch_size)
            pairs = tqdm(pairs, total=total, disable=not progress, desc=f"compare ({name})", unit="batch")
            if streamed:
                matrix, null, n_examples = _stream_cka(captures, pairs, state, rows_a, rows_b, baseline, seed,
                                                       on_degenerate)
            else:
                matrix, null, n_examples = _whole_activations(captures, pairs, state, rows_a, rows_b, baseline,
                                                              seed, name, lens)
    finally:
        if device is not None:
            for model, home in zip(models, homes):
                model.to(home)
    for note in notes:
        if note.startswith("layer '"):
            warnings.warn(note, UserWarning, stacklevel=2)
    return Comparison(matrix, names_a, names_b, name, n_examples, null, type(model_a).__name__,
                      type(model_b).__name__, tuple(notes))


def _forward_pairs(captures: list[Capture], pairs: Iterable, state: dict) -> Iterator[tuple[list, list]]:
    """Each batch's per-layer reductions for side A and side B (the same list when one capture serves both)."""
    for input_a, input_b in pairs:
        state["n"] = examples_in(input_a)
        reduced_a = captures[0](input_a)
        reduced_b = reduced_a if len(captures) == 1 else captures[1](input_b)
        yield reduced_a, reduced_b


def _stream_cka(captures: list[Capture], pairs: Iterable, state: dict, rows_a: list[int], rows_b: list[int],
                baseline: bool, seed: int, on_degenerate: str) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Unbiased minibatch CKA from per-batch Grams: (matrix, shuffled-examples null or None, examples)."""
    one_capture = len(captures) == 1
    all_a = captures[0].names
    all_b = all_a if one_capture else captures[1].names
    engine = (MinibatchCKA(all_a, on_degenerate=on_degenerate) if one_capture
              else MinibatchCKA(all_a, all_b, on_degenerate=on_degenerate))
    null_engine = MinibatchCKA(all_a, all_b, on_degenerate=on_degenerate) if baseline else None
    generator = torch.Generator().manual_seed(seed)
    for grams_a, grams_b in _forward_pairs(captures, pairs, state):
        if not one_capture:
            grams_b = [g.to(grams_a[0].device) for g in grams_b]  # models may sit on different devices
            engine.update_grams(grams_a, grams_b)
        else:
            engine.update_grams(grams_a)
        if null_engine is not None:
            null_engine.update_grams(grams_a, _permuted(grams_b, generator))
    if engine.num_batches == 0:
        raise ValueError("data gave no batches")
    pick = np.ix_(rows_a, rows_b)
    null = null_engine.compute()[pick] if null_engine is not None else None
    return engine.compute()[pick], null, engine.num_examples


def _whole_activations(captures: list[Capture], pairs: Iterable, state: dict, rows_a: list[int],
                       rows_b: list[int], baseline: bool, seed: int, name: str,
                       lens) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A Chapter 9 measure on whole activations, each layer prepared once: (matrix, null or None, examples)."""
    parts_a, parts_b = [], []
    for outputs_a, outputs_b in _forward_pairs(captures, pairs, state):
        parts_a.append(outputs_a)
        if len(captures) > 1:
            parts_b.append(outputs_b)
    if not parts_a:
        raise ValueError("data gave no batches")
    acts_a = [torch.cat(layer).numpy() for layer in zip(*parts_a)]
    acts_b = acts_a if len(captures) == 1 else [torch.cat(layer).numpy() for layer in zip(*parts_b)]
    del parts_a, parts_b
    n = len(acts_a[0])
    if n < MIN_EXAMPLES:
        raise ValueError(f"data gave {n} examples; similarity measures need at least {MIN_EXAMPLES}")
    if name == "subspace match":
        _check_channel_layers(captures, acts_a, acts_b, rows_a, rows_b)
    sides_a = {i: lens.prepare(acts_a[i]) for i in rows_a}
    sides_b = {j: sides_a[j] if len(captures) == 1 and j in sides_a else lens.prepare(acts_b[j]) for j in rows_b}
    matrix = np.array([[lens.compare(sides_a[i], sides_b[j]) for j in rows_b] for i in rows_a])
    null = None
    if baseline:
        order = np.random.default_rng(seed).permutation(n)
        shuffled = {j: lens.prepare(acts_b[j][order]) for j in rows_b}
        null = np.array([[lens.compare(sides_a[i], shuffled[j]) for j in rows_b] for i in rows_a])
    return matrix, null, n


def _check_channel_layers(captures: list[Capture], acts_a: list[np.ndarray], acts_b: list[np.ndarray],
                          rows_a: list[int], rows_b: list[int]) -> None:
    """Refuse a subspace match between a feature map (n, C, H, W) and a vector layer (n, C): no common positions."""
    names_b = captures[-1].names
    kinds = {f"'{captures[0].names[i]}' {acts_a[i].shape[1:]}": acts_a[i].ndim for i in rows_a}
    kinds.update({f"'{names_b[j]}' {acts_b[j].shape[1:]}": acts_b[j].ndim for j in rows_b})
    if set(kinds.values()) - {2, 4} or len(set(kinds.values())) > 1:
        raise ValueError(f"the subspace match compares channels at common positions: all layers must be feature "
                         f"maps (n, C, H, W) or all vectors (n, C); got {', '.join(kinds)}")
