"""Capture every analysed layer of a model as an n x n Gram, one forward pass at a time.

`GramCapture` is a context manager that registers one forward hook per analysed module, puts the
model in eval mode (BatchNorm uses its running statistics, dropout is off) and restores every
module's training flag and removes every hook on exit. Calling it on a batch runs the model under
`torch.inference_mode()` and returns one Gram per layer, in layer order.

Why Grams inside the hook: a batch never holds all activations at once (for a wide ResNet that is
gigabytes, against L * n^2 numbers for the Grams), and an in-place op that later overwrites a
hooked output (torchvision's `ReLU(inplace=True)`, `out += identity`) cannot corrupt what was
already reduced. Each Gram is of the flattened, pre-centred features (see `widedeep.cka.layer_gram`),
in the activations' own precision (float32 for a float32 network, with TF32 off) unless
`gram_dtype=torch.float64` is asked for; everything after the Gram is float64.

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
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .cka import layer_gram


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
                f"widedeep.activations.leaf_module_names); note that functional ops and reused modules cannot be hooked")
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


class GramCapture:
    """Context manager: per-layer forward hooks that reduce each output to its n x n Gram.

    with GramCapture(model) as capture:
        grams = capture(images)   # list of (n, n) Grams, one per layer in capture.names
    """

    def __init__(self, model: nn.Module, layers: Sequence | None = None, *, gram_dtype: torch.dtype | None = None):
        self.model = model
        resolved = resolve_layers(model, layers)
        self.names = [name for name, _ in resolved]
        self.modules = [module for _, module in resolved]
        self.gram_dtype = gram_dtype
        self._handles: list = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._running = False
        self._counts = [0] * len(self.names)
        self._grams: list[torch.Tensor | None] = [None] * len(self.names)

    def _hook(self, index: int):
        """Forward hook for layer `index`: count the call and keep only the Gram of the output."""
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
            if not isinstance(output, torch.Tensor):
                raise HookError(f"layer '{name}' returned {type(output).__name__}, not a tensor; hook a "
                                f"module whose output is one tensor of shape (n, ...)")
            self._grams[index] = self._reduce(output, name)

        return hook

    def _reduce(self, output: torch.Tensor, name: str) -> torch.Tensor:
        """What a hook keeps of one layer's output: its Gram (subclasses keep something else)."""
        return layer_gram(output, self.gram_dtype, f"layer '{name}'")

    def __enter__(self) -> "GramCapture":
        if self._handles:
            raise RuntimeError("this GramCapture is already active")
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
        self._grams = [None] * len(self.names)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Run one forward pass on `images` and return each layer's (n, n) Gram, in layer order."""
        if not self._handles:
            raise RuntimeError("use GramCapture as a context manager: `with GramCapture(model) as capture:`")
        self._counts = [0] * len(self.names)
        self._grams = [None] * len(self.names)
        self._running = True
        try:
            with torch.inference_mode():
                self.model(images.to(model_device(self.model)))
        finally:
            self._running = False
        missing = [name for name, count in zip(self.names, self._counts) if count == 0]
        if missing:
            raise HookError(
                f"layer(s) {missing} never fired during the forward pass: containers without their own "
                f"forward (nn.ModuleList), modules on an unused branch and functional ops are invisible to hooks")
        grams, self._grams = self._grams, [None] * len(self.names)
        return grams


def capture_grams(model: nn.Module, images: torch.Tensor, layers: Sequence | None = None, *,
                  gram_dtype: torch.dtype | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """One-shot capture: (per-layer Grams, layer names) of one batch, hooks removed afterwards."""
    with GramCapture(model, layers, gram_dtype=gram_dtype) as capture:
        return capture(images), capture.names


class OutputCapture(GramCapture):
    """GramCapture whose hooks hand each layer's output to `reduce(layer_index, output)` instead of taking its Gram.

    What `reduce` returns is what a call gives back for that layer (e.g. a copy of the output, or
    None after folding it into a running statistic); the once-per-forward checks stay the same.
    """

    def __init__(self, model: nn.Module, layers: Sequence | None, reduce: Callable[[int, torch.Tensor], object]):
        super().__init__(model, layers)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.reduce = reduce

    def _reduce(self, output: torch.Tensor, name: str) -> object:
        return self.reduce(self.index[name], output)


def capture_outputs(model: nn.Module, images: torch.Tensor, layers: Sequence, batch_size: int = 250) -> list[torch.Tensor]:
    """Whole outputs of a few layers over `images`, batch by batch (for analyses that need activations, not Grams)."""
    # A float32 CPU copy: a later in-place op cannot change it. The capture moves each batch to the model.
    with OutputCapture(model, layers, lambda _, output: output.detach().float().cpu().clone()) as capture:
        batches = [capture(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return [torch.cat(parts) for parts in zip(*batches)]
