"""Linear probes: how much of the label a linear softmax can read from each layer (Nguyen et al. 2021, §4).

Layer: analyses (features from `widedeep.capture`; above measures, below book support).

The paper trains a dense softmax on each residual-stream layer of a frozen network and finds that
probe accuracy *plateaus* across the block structure: the block's layers add no linearly readable
information. Here a probe is multinomial logistic regression on a layer's flattened activations,
optionally average-pooled over `pool` x `pool` windows first (the paper's code max-pools; averaging
keeps every unit's contribution), fitted by full-batch L-BFGS on features standardised with the
*training* examples' mean and standard deviation.

Selection protocol (the paper picked the best *test* accuracy; we do not): fit on the model's own
training subset (clean images, no augmentation), choose the L2 strength on the validation split,
report test accuracy of the chosen probe. `fit_probe` takes no test data at all, so nothing about the
test set can influence the choice; the test set is only scored afterwards by `Probe.accuracy`.

Features come from forward hooks (`widedeep.capture.Capture`, reducing to pooled features) under
inference mode with the model in eval mode. All layers' features of all examples are not held at
once: layers are taken in groups whose features fit `max_bytes`, one forward pass per group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from widedeep.analyses.verdicts import FALLS, NO_BLOCK, PLATEAU, RISES
from widedeep.capture import Capture, batches, resolve_layers

DEFAULT_L2 = (1e-4, 1e-3, 1e-2, 1e-1)   # penalty l2 * ||W||^2 added to the mean cross-entropy


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------

def pooled_features(output: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """(n, features) float32: a (n, C, H, W) map average-pooled over pool x pool windows, then flattened."""
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be a positive integer (1 = no pooling); got {pool!r}")
    if output.dim() == 4 and pool > 1:
        size = min(pool, output.shape[-2], output.shape[-1])  # a map smaller than the window pools whole
        output = F.avg_pool2d(output, size)
    return output.flatten(1).float()


def feature_capture(model: nn.Module, layers: Sequence | None = None, *, pool: int = 1) -> Capture:
    """A `Capture` that keeps each layer's pooled, flattened features (see `pooled_features`)."""
    pooled_features(torch.zeros(1, 1), pool)  # validate before hooking anything
    return Capture(model, layers, lambda _, output: pooled_features(output, pool))


def _feature_groups(dims: Sequence[int], examples: int, max_bytes: int) -> list[list[int]]:
    """Consecutive layer indices grouped so that each group's float32 features fit max_bytes (>= 1 layer each)."""
    groups: list[list[int]] = []
    used = max_bytes + 1
    for index, dim in enumerate(dims):
        size = 4 * dim * examples
        if used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += size
    return groups


def layer_features(model: nn.Module, layers: Sequence, images: Sequence[torch.Tensor], pool: int = 1,
                   batch_size: int = 500, max_bytes: int = 2 ** 29
                   ) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """Yield (layer name, [features of each image set]) layer by layer, in order.

    Layers are captured in groups whose features (over all image sets) fit `max_bytes`, one forward
    pass of every image set per group; a group's features are dropped once its layers are yielded.
    """
    resolved = resolve_layers(model, layers)
    with feature_capture(model, resolved, pool=pool) as capture:
        dims = [f.shape[1] for f in capture(images[0][:1])]
    examples = sum(len(x) for x in images)
    for group in _feature_groups(dims, examples, max_bytes):
        chosen = [resolved[i] for i in group]
        with feature_capture(model, chosen, pool=pool) as capture:
            per_set = []
            for x in images:
                captured = [capture(part) for part in batches(x, batch_size)]
                per_set.append([torch.cat(parts) for parts in zip(*captured)])
        for position, (name, _) in enumerate(chosen):
            yield name, [features[position] for features in per_set]


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------

@dataclass
class Probe:
    """A fitted softmax probe with its standardisation and the validation accuracy that chose it."""

    weight: torch.Tensor    # (features, classes), on standardised features
    bias: torch.Tensor      # (classes,)
    mean: torch.Tensor      # (features,) training-feature mean
    scale: torch.Tensor     # (features,) training-feature std (1 where a feature is constant)
    l2: float               # the chosen penalty
    train_acc: float
    val_acc: float
    val_accs: dict          # {l2: validation accuracy} for every candidate

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of raw (unstandardised) features."""
        return ((x.to(self.weight) - self.mean) / self.scale) @ self.weight + self.bias

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Top-1 accuracy on raw features x with labels y."""
        return _accuracy(self.logits(x), y)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y.to(logits.device)).double().mean().item()


def fit_softmax(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 100,
                init: torch.Tensor | None = None) -> torch.Tensor:
    """Weights (features + 1, classes), last row the bias, minimising mean cross-entropy + l2 * ||W||^2.

    Full-batch L-BFGS with a strong-Wolfe line search from `init` (zeros by default): the objective is
    convex (strictly so for l2 > 0), so the result does not depend on a random seed.
    """
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0; got {l2!r}")
    w = torch.zeros(x.shape[1] + 1, num_classes, dtype=x.dtype, device=x.device)
    if init is not None:
        w.copy_(init)
    w.requires_grad_(True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-6,
                                  tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w[:-1] + w[-1], y) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach()


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
              l2_grid: Sequence[float] = DEFAULT_L2, max_iter: int = 100, num_classes: int | None = None) -> Probe:
    """Fit a probe on (train_x, train_y) at each L2 strength and keep the one best on (val_x, val_y).

    There is deliberately no test argument: selection sees training and validation data only. The
    strengths are fitted from the strongest down, each warm-started from the previous solution; a tie
    in validation accuracy keeps the stronger penalty.
    """
    if len(train_x) != len(train_y) or len(val_x) != len(val_y):
        raise ValueError(f"features and labels differ in length: train {len(train_x)} vs {len(train_y)}, "
                         f"val {len(val_x)} vs {len(val_y)}")
    if not l2_grid:
        raise ValueError("l2_grid is empty: give at least one L2 strength, e.g. (1e-3,)")
    train_x = train_x.float()
    train_y = train_y.to(train_x.device)
    classes = num_classes or max(int(train_y.max()), int(val_y.max())) + 1
    mean = train_x.mean(0)
    scale = train_x.std(0)
    scale = torch.where(scale > 1e-6 * scale.max().clamp_min(1e-30), scale, torch.ones_like(scale))
    xs = (train_x - mean) / scale
    best, w, val_accs = None, None, {}
    for l2 in sorted(l2_grid, reverse=True):
        w = fit_softmax(xs, train_y, classes, float(l2), max_iter, init=w)
        candidate = Probe(w[:-1], w[-1], mean, scale, float(l2), _accuracy(xs @ w[:-1] + w[-1], train_y), 0.0, {})
        candidate.val_acc = candidate.accuracy(val_x, val_y)
        val_accs[float(l2)] = candidate.val_acc
        if best is None or candidate.val_acc > best.val_acc:
            best = candidate
    best.val_accs = val_accs
    return best


def probe_accuracies(model: nn.Module, layers: Sequence, splits, pool: int = 2,
                     l2_grid: Sequence[float] = DEFAULT_L2, max_iter: int = 100, batch_size: int = 500,
                     max_bytes: int = 2 ** 29) -> list[dict]:
    """One probe per layer: fitted on splits.train, L2 chosen on splits.val, scored on splits.test.

    `splits` has `.train`, `.val` and `.test` ImageData (e.g. `TrainConfig.splits()`, the test set
    possibly cut with `.first(k)`). Returns one dict per layer: layer, l2, train_acc, val_acc, test_acc.
    """
    sets = (splits.train, splits.val, splits.test)
    num_classes = len(splits.train.classes) or None
    rows = []
    for name, (train_x, val_x, test_x) in layer_features(model, layers, [s.images for s in sets], pool,
                                                         batch_size, max_bytes):
        probe = fit_probe(train_x, splits.train.labels, val_x, splits.val.labels, l2_grid, max_iter, num_classes)
        rows.append({"layer": name, "l2": probe.l2, "train_acc": probe.train_acc, "val_acc": probe.val_acc,
                     "test_acc": probe.accuracy(test_x, splits.test.labels)})
    return rows


# ---------------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------------

def _inside_accuracies(accuracies: Sequence[float], inside: Sequence[bool]) -> np.ndarray | None:
    """The probe accuracies of the block's layers, in order (None with fewer than two inside)."""
    acc, mask = np.asarray(accuracies, dtype=float), np.asarray(inside, dtype=bool)
    if acc.shape != mask.shape:
        raise ValueError(f"{acc.size} accuracies but {mask.size} membership flags: give one per layer")
    members = np.flatnonzero(mask)
    if members.size < 2:
        return None
    if np.any(np.diff(members) != 1):
        raise ValueError("the layers inside the block must be consecutive")
    return acc[members]


def gain_inside(accuracies: Sequence[float], inside: Sequence[bool]) -> float:
    """Probe accuracy at the block's last layer minus at its first (NaN without at least two inside)."""
    block = _inside_accuracies(accuracies, inside)
    return float("nan") if block is None else float(block[-1] - block[0])


def largest_change(accuracies: Sequence[float], inside: Sequence[bool]) -> float:
    """The protocol's probe statistic (book/protocol.md, Chapter 5): the largest |accuracy change| from the block's
    first layer to any later layer of it (NaN without at least two layers inside)."""
    block = _inside_accuracies(accuracies, inside)
    return float("nan") if block is None else float(np.max(np.abs(block[1:] - block[0])))


def plateau_verdict(accuracies: Sequence[float], inside: Sequence[bool], tol: float = 0.02) -> str:
    """'plateau' if probe accuracy changes by at most `tol` across the block, else 'rises' or 'falls'.

    The paper's finding is a plateau. Without a block (fewer than two layers inside) there is
    nothing to judge: 'no block'.
    """
    gain = gain_inside(accuracies, inside)
    if np.isnan(gain):
        return NO_BLOCK
    if abs(gain) <= tol + 1e-9:  # accuracies are fractions k/n: a gain of exactly tol is a plateau
        return PLATEAU
    return RISES if gain > 0 else FALLS
