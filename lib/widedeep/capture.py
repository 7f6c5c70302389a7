"""Capture layer: what a model's analysed layers output, reduced inside forward hooks, one batch at a time.

Layer: capture (above data, models and training; below measures). It knows modules and tensors,
not what a measure does with them: `Capture` hands each hooked layer's output to a `reduce(index,
output)` callback and returns what the callbacks return, in layer order. The measures build their
reductions on it: an n x n Gram per layer for CKA and first PCs (`widedeep.measures.grams.gram_capture`),
a pooled feature matrix for probes (`widedeep.analyses.probes`), whole outputs
(`capture_outputs`), or running second moments for the subspace match.

`Capture` is a context manager that registers one forward hook per analysed module, puts the model
in eval mode (BatchNorm uses its running statistics, dropout is off) and restores every module's
training flag and removes every hook on exit. Calling it on a batch runs the model under
`torch.inference_mode()`.

Why reduce inside the hook: a batch never holds all activations at once (for a wide ResNet that is
gigabytes, against L * n^2 numbers for the Grams), and an in-place op that later overwrites a hooked
output (torchvision's `ReLU(inplace=True)`, `out += identity`) cannot corrupt what was already
reduced.

What hooks cannot see, and how it is handled:
- a module called more than once per forward (torchvision's BasicBlock reuses one `relu`) fires its
  hook twice; that raises `HookError` naming the module, instead of keeping only the last call;
- a module that never runs (an `nn.ModuleList`, an unused branch) raises `HookError` too;
- functional ops (`F.relu(x)`, `x + shortcut`) are not modules and are simply invisible: their
  outputs cannot be analysed. Our `CifarResNet` makes every analysed op its own module for this.
Layers come from `model.layers()` (our CifarResNet) or an explicit list of module names.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

Reduce = Callable[[int, torch.Tensor], object]
Select = Callable[[int, object], torch.Tensor]  # (layer index, raw module output) -> the tensor to reduce
Inputs = torch.Tensor | Mapping[str, torch.Tensor]  # model(x), or model(**x) for keyword inputs


class HookError(RuntimeError):
    """A hooked layer did not fire exactly once in a forward pass (reused module, or never called)."""


def leaf_module_names(model: nn.Module) -> list[str]:
    """Names of all modules without children, in registration order: candidates for an explicit layer list."""
    return [name for name, module in model.named_modules() if name and next(module.children(), None) is None]


def resolve_layers(model: nn.Module, layers: Sequence | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs to hook: `model.layers()` by default, else names, Layer objects or (name, module) pairs."""
    if layers is None:
        if not callable(getattr(model, "layers", None)):
            raise ValueError(
                f"{type(model).__name__} has no .layers() method: pass layers=[module names] (see "
                f"widedeep.capture.leaf_module_names); note that functional ops and reused modules cannot be hooked")
        layers = model.layers()
    by_name = dict(model.named_modules())
    resolved: list[tuple[str, nn.Module]] = []
    for item in layers:
        if isinstance(item, str):
            if item not in by_name:
                raise ValueError(f"{type(model).__name__} has no module named {item!r} (see model.named_modules())")
            resolved.append((item, by_name[item]))
        elif hasattr(item, "name") and isinstance(getattr(item, "module", None), nn.Module):
            resolved.append((item.name, item.module))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], nn.Module):
            resolved.append((str(item[0]), item[1]))
        else:
            raise TypeError(f"a layer must be a module name, a Layer or a (name, module) pair, got {item!r}")
    names = [name for name, _ in resolved]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"layers listed more than once: {duplicates}")
    if not resolved:
        raise ValueError("no layers to capture")
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a module without either)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


class Capture:
    """Context manager: per-layer forward hooks that hand each output to `reduce(index, output)`.

    with Capture(model, layers, reduce) as capture:
        reduced = capture(images)   # what reduce returned for each layer of capture.names, in order

    What `reduce` returns is what a call gives back for that layer (e.g. a Gram, a copy of the output,
    or None after folding it into a running statistic). A module that returns a tuple, a dict or a
    ModelOutput (transformer blocks, attention) needs `select(index, output)` to pick the tensor to
    reduce; without it such an output raises `HookError`.
    """

    def __init__(self, model: nn.Module, layers: Sequence | None, reduce: Reduce, select: Select | None = None):
        self.model = model
        self.select = select
        resolved = resolve_layers(model, layers)
        self.names = [name for name, _ in resolved]
        self.modules = [module for _, module in resolved]
        self.reduce = reduce
        self._handles: list = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._running = False
        self._counts = [0] * len(self.names)
        self._reduced: list[object] = [None] * len(self.names)

    def _hook(self, index: int):
        """Forward hook for layer `index`: count the call and keep only the reduction of the output."""
        name = self.names[index]

        def hook(module: nn.Module, inputs, output) -> None:
            if not self._running:  # a forward pass not driven by this capture (e.g. another capture's)
                return
            self._counts[index] += 1
            if self._counts[index] > 1:
                raise HookError(
                    f"layer '{name}' ({type(module).__name__}) fired {self._counts[index]} times in one forward "
                    f"pass: the module is called more than once (e.g. torchvision BasicBlock's shared `relu`), "
                    f"so one hook cannot tell its outputs apart. Give each call its own module or drop '{name}'.")
            if self.select is not None:
                output = self.select(index, output)
            if not isinstance(output, torch.Tensor):
                raise HookError(f"layer '{name}' returned {type(output).__name__}, not a tensor; hook a "
                                f"module whose output is one tensor of shape (n, ...)")
            self._reduced[index] = self.reduce(index, output)

        return hook

    def __enter__(self) -> "Capture":
        if self._handles:
            raise RuntimeError("this Capture is already active")
        self._training = [(module, module.training) for module in self.model.modules()]
        self.model.eval()  # BatchNorm on running statistics, as in the paper's analysis
        try:
            self._handles = [module.register_forward_hook(self._hook(i)) for i, module in enumerate(self.modules)]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for module, flag in self._training:
            module.training = flag  # per module: a submodule may have been in a different mode
        self._training = []
        self._reduced = [None] * len(self.names)

    def __call__(self, images: Inputs) -> list:
        """Run one forward pass on `images` (a tensor, or a dict of keyword tensors) and return each layer's reduction."""
        if not self._handles:
            raise RuntimeError("use Capture as a context manager: `with Capture(model, layers, reduce) as capture:`")
        self._counts = [0] * len(self.names)
        self._reduced = [None] * len(self.names)
        self._running = True
        try:
            with torch.inference_mode():
                device = model_device(self.model)
                if isinstance(images, Mapping):  # keyword inputs, e.g. a tokenizer's input_ids and attention_mask
                    self.model(**{key: value.to(device) if isinstance(value, torch.Tensor) else value
                                  for key, value in images.items()})
                else:
                    self.model(images.to(device))
        finally:
            self._running = False
        missing = [name for name, count in zip(self.names, self._counts) if count == 0]
        if missing:
            raise HookError(
                f"layer(s) {missing} never fired during the forward pass: containers without their own "
                f"forward (nn.ModuleList), modules on an unused branch and functional ops are invisible to hooks")
        reduced, self._reduced = self._reduced, [None] * len(self.names)
        return reduced


def output_copy(_: int, output: torch.Tensor) -> torch.Tensor:
    """A reduction that keeps the whole output: a float32 CPU copy, which a later in-place op cannot change."""
    return output.detach().float().cpu().clone()


def capture_outputs(model: nn.Module, images: torch.Tensor, layers: Sequence,
                    batch_size: int = 250) -> list[torch.Tensor]:
    """Whole outputs of a few layers over `images`, batch by batch (for analyses that need activations, not Grams)."""
    with Capture(model, layers, output_copy) as capture:  # the capture moves each batch to the model
        captured = [capture(x) for x in batches(images, batch_size)]
    return [torch.cat(parts) for parts in zip(*captured)]


def batch_images(batch) -> torch.Tensor:
    """The images of a loader batch: the batch itself, or the first item of an (images, labels, ...) tuple."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"expected a batch tensor or an (images, labels) tuple from the loader, got {type(batch).__name__}")


def first_batches(loader: Iterable, max_batches: int | None) -> Iterator:
    """The loader's batches, at most `max_batches` of them (all with None)."""
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            return
        yield batch


def image_batches(loader: Iterable, max_batches: int | None = None) -> Iterator[torch.Tensor]:
    """The images of at most `max_batches` of a loader's batches."""
    return (batch_images(batch) for batch in first_batches(loader, max_batches))


def batches(data: torch.Tensor | Iterable, batch_size: int, max_batches: int | None = None) -> Iterator[torch.Tensor]:
    """Image batches in order: consecutive slices of an image tensor, or the images of a loader's batches.

    The package's one batching helper (captures, deletion, the subspace match), so every analysis cuts
    the same images into the same batches.
    """
    if not isinstance(data, torch.Tensor):
        return image_batches(data, max_batches)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    return first_batches((data[i:i + batch_size] for i in range(0, data.shape[0], batch_size)), max_batches)
