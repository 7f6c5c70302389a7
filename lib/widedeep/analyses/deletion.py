"""Deleting residual blocks: is the block structure doing any work? (Nguyen et al. 2021, §4)

Layer: analyses (runs models by hand; above measures, below book support).

The paper reports that blocks inside the block structure can be deleted at little cost in accuracy,
unlike blocks outside it. Deleting a residual block makes its output equal its input; in a
post-activation ResNet the input is the previous block's ReLU output, so this is exactly
ReLU(0 + input) = input, the block with its residual branch zeroed. Only blocks that keep the shape
can go: the first block of stages 2 and 3 (stride 2, with a projection shortcut) cannot, and
`deleted_blocks` refuses them.

Two variants of every measurement, both on a copy and never on the model itself:

- **no repair**: the trained weights and BatchNorm statistics as they are;
- **BN repair** (cheap, no gradient step): every BatchNorm's running statistics recomputed on the
  model's training images (reset, momentum None = exact average over the batches, forward in train
  mode without gradients, back to eval mode).

Deltas are test accuracy minus the intact model's test accuracy on the same images; for the repaired
variant that includes the effect of recomputing the statistics, reported on its own as
`repair_only_delta`.

The single-deletion sweep reuses what deletion cannot change: the input of block i is the same
whether or not block i is deleted, so each block's input is computed once (eval mode for the test
images; train mode for the repair images, whose batch statistics do not depend on running statistics)
and only blocks i+1.. are run per deletion. Memory: the inputs of every block for the test images
(twice) and the repair images, sum over blocks of n x C x H x W floats.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from widedeep.analyses.verdicts import CHEAPER_INSIDE, COSTLIER_INSIDE, NO_DIFFERENCE, NOT_TESTABLE
from widedeep.capture import batches, model_device
from widedeep.data import ImageData




# ---------------------------------------------------------------------------------------------
# Running a CifarResNet by hand, and deleting blocks
# ---------------------------------------------------------------------------------------------

def stem(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual stream entering the first block: conv, BN, ReLU of the input."""
    return model.relu(model.bn(model.conv(model.input(x))))


def run_blocks(model: nn.Module, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Logits from the stream `x` entering residual block `start`: blocks start.. then pool, flatten, dense."""
    for block in model.residual_blocks()[start:]:
        x = block(x)
    return model.logits(model.flatten(model.pool(x)))


def is_deletable(block: nn.Module) -> bool:
    """Whether the block maps its input to an output of the same shape (no stride, no channel change)."""
    return tuple(block.conv1.stride) == (1, 1) and block.conv1.in_channels == block.conv2.out_channels


def deletable_blocks(model: nn.Module) -> list[int]:
    """Indices (forward order) of the residual blocks that can be deleted."""
    return [i for i, block in enumerate(model.residual_blocks()) if is_deletable(block)]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def deleted_blocks(model: nn.Module, indices: Iterable[int]):
    """Within the context, residual blocks `indices` (forward order) pass their input through unchanged.

    The blocks' weights stay in place (their `forward` is shadowed, then restored on exit, also on an
    exception); deleting nothing changes nothing. Stride-2 / projection blocks change the shape and
    are refused with ValueError before anything is touched.
    """
    blocks = model.residual_blocks()
    chosen = sorted({int(i) for i in indices})
    for i in chosen:
        if not 0 <= i < len(blocks):
            raise ValueError(f"block index {i} is out of range: the model has {len(blocks)} residual blocks "
                             f"(0..{len(blocks) - 1})")
        if not is_deletable(blocks[i]):
            raise ValueError(f"residual block {i} changes the shape (stride {tuple(blocks[i].conv1.stride)}, "
                             f"{blocks[i].conv1.in_channels} -> {blocks[i].conv2.out_channels} channels): it cannot "
                             f"be deleted; deletable blocks are {deletable_blocks(model)}")
    saved = [(blocks[i], blocks[i].__dict__.get("forward")) for i in chosen]
    try:
        for block, _ in saved:
            block.forward = _identity
        yield model
    finally:
        for block, previous in saved:
            if previous is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = previous


def block_membership(model: nn.Module, block) -> list[bool]:
    """For each residual block, whether its output (relu2) lies in the detected block's layer span.

    `block` is a `blocks.Block` with full-layer indices into `model.layers()` (or None: all False).
    """
    residual = model.residual_blocks()
    if block is None:
        return [False] * len(residual)
    position = {id(layer.module): i for i, layer in enumerate(model.layers())}
    return [block.start <= position[id(b.relu2)] <= block.end for b in residual]


# ---------------------------------------------------------------------------------------------
# BatchNorm repair
# ---------------------------------------------------------------------------------------------

def _batchnorms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def _accumulating(bns: Sequence[nn.modules.batchnorm._BatchNorm]):
    """Reset the BatchNorms' statistics and let them average exactly (momentum None); momenta restored after."""
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    try:
        yield
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum


def _batches(images: torch.Tensor, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """`capture.batches` of the images, each on `device`."""
    return [x.to(device) for x in batches(images, batch_size)]


def recompute_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 500,
                 deleted: Iterable[int] = ()) -> nn.Module:
    """A deep copy of `model` (blocks `deleted` removed) whose BatchNorm statistics are recomputed on `images`.

    The copy is returned in eval mode with its blocks intact again (the statistics were gathered with
    `deleted` removed, so evaluate it under `deleted_blocks(copy, deleted)`). `model` is not touched.
    """
    repaired = copy.deepcopy(model)
    device = model_device(repaired)
    with deleted_blocks(repaired, deleted), _accumulating(_batchnorms([repaired])), torch.no_grad():
        repaired.train()
        for x in _batches(images, batch_size, device):
            repaired(x)
    return repaired.eval()


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def logits_without(model: nn.Module, images: torch.Tensor, deleted: Iterable[int] = (),
                   batch_size: int = 500) -> torch.Tensor:
    """Logits (float32, CPU) of `model` in its current mode with blocks `deleted` removed."""
    device = model_device(model)
    with deleted_blocks(model, deleted):
        return torch.cat([model(x).float().cpu() for x in _batches(images, batch_size, device)])


def _accuracy_under(model: nn.Module, test: ImageData, deleted: Iterable[int], batch_size: int) -> float:
    """Test accuracy of `model` (in eval mode) with blocks `deleted` removed."""
    return _correct(logits_without(model, test.images, deleted, batch_size), test.labels)


@torch.no_grad()
def _block_inputs(model: nn.Module, batches: Sequence[torch.Tensor]) -> tuple[list[list[torch.Tensor]], list]:
    """Per block, per batch: the stream entering the block; and per batch the logits (model in its current mode)."""
    blocks = model.residual_blocks()
    inputs: list[list[torch.Tensor]] = [[] for _ in blocks]
    logits = []
    for x in batches:
        x = stem(model, x)
        for i, block in enumerate(blocks):
            inputs[i].append(x)
            x = block(x)
        logits.append(model.logits(model.flatten(model.pool(x))))
    return inputs, logits


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1).cpu() == labels.cpu()).double().mean().item()


@torch.no_grad()
def deletion_logits(model: nn.Module, images: torch.Tensor, repair_images: torch.Tensor, batch_size: int = 500):
    """Yield (block index, logits without repair, logits with BN repair) per deletable block, after
    (None, intact logits, logits of the intact model with repaired statistics).

    The same numbers as `deleted_blocks` with `recompute_bn` per block (tested), but each deletion
    runs only the blocks after the deleted one. `model` keeps its mode and statistics.
    """
    work = copy.deepcopy(model).eval()
    device = model_device(work)
    test_batches = _batches(images, batch_size, device)
    test_inputs, intact = _block_inputs(work, test_batches)
    # Repaired intact model; its train-mode pass records every block's input on the repair batches.
    repaired = copy.deepcopy(work)
    with _accumulating(_batchnorms([repaired])):
        repaired.train()
        train_inputs, _ = _block_inputs(repaired, _batches(repair_images, batch_size, device))
    repaired.eval()
    repaired_inputs, repaired_intact = _block_inputs(repaired, test_batches)
    yield None, torch.cat(intact), torch.cat(repaired_intact)
    for i in deletable_blocks(work):
        plain = torch.cat([run_blocks(work, x, i + 1) for x in test_inputs[i]])
        # Blocks before i see the same batches as in the intact repair, so only blocks i+1.. are recomputed.
        fixed = copy.deepcopy(repaired)
        with _accumulating(_batchnorms(fixed.residual_blocks()[i + 1:])):
            fixed.train()
            for x in train_inputs[i]:
                run_blocks(fixed, x, i + 1)
        fixed.eval()
        yield i, plain, torch.cat([run_blocks(fixed, x, i + 1) for x in repaired_inputs[i]])


def flips(logits: torch.Tensor, intact_right: np.ndarray, labels: torch.Tensor) -> dict[str, list[int]]:
    """The test examples a deletion turns from right to wrong ("lost") and from wrong to right ("gained")."""
    right = (logits.argmax(1).cpu() == labels.cpu()).numpy()
    return {"lost": np.flatnonzero(intact_right & ~right).tolist(), "gained": np.flatnonzero(~intact_right & right).tolist()}


def single_deletions(model: nn.Module, test: ImageData, repair_images: torch.Tensor,
                     batch_size: int = 500) -> dict:
    """Test accuracy change for deleting each deletable block alone, without and with BN repair.

    Returns {"baseline_acc", "repair_only_delta", "examples", "deletions": [{"block_index", "delta_acc",
    "delta_acc_repaired", "lost", "gained"}]}: "lost" and "gained" are the test examples the plain deletion
    turns wrong and right (`flips`), from which `example_scores` rebuilds every per-example change.
    """
    sweep = deletion_logits(model, test.images, repair_images, batch_size)
    _, intact, repaired = next(sweep)
    baseline = _correct(intact, test.labels)
    intact_right = (intact.argmax(1).cpu() == test.labels.cpu()).numpy()
    rows = [{"block_index": i, "delta_acc": _correct(plain, test.labels) - baseline,
             "delta_acc_repaired": _correct(mended, test.labels) - baseline, **flips(plain, intact_right, test.labels)}
            for i, plain, mended in sweep]
    return {"baseline_acc": baseline, "repair_only_delta": _correct(repaired, test.labels) - baseline,
            "examples": len(test.labels), "deletions": rows}


def cumulative_deletions(model: nn.Module, test: ImageData, repair_images: torch.Tensor, order: Sequence[int],
                         batch_size: int = 500) -> list[dict]:
    """Delete `order[:k]` for k = 0..len(order): test accuracy change without and with BN repair."""
    work = copy.deepcopy(model).eval()
    baseline = _accuracy_under(work, test, (), batch_size)
    curve = []
    for k in range(len(order) + 1):
        deleted = list(order[:k])
        repaired = recompute_bn(work, repair_images, batch_size, deleted)
        curve.append({"n_deleted": k, "blocks": deleted,
                      "delta_acc": _accuracy_under(work, test, deleted, batch_size) - baseline,
                      "delta_acc_repaired": _accuracy_under(repaired, test, deleted, batch_size) - baseline})
    return curve


def cumulative_orders(block_in_structure: Sequence[bool], deletable: Sequence[int], max_steps: int | None = None,
                      seed: int = 0) -> tuple[list[int], list[int]]:
    """Equally long deletion orders inside and outside the block: seeded random permutations of each side's
    deletable blocks, cut to the shorter side (and to max_steps). Empty when either side has none."""
    inside = [i for i in deletable if block_in_structure[i]]
    outside = [i for i in deletable if not block_in_structure[i]]
    steps = min(len(inside), len(outside))
    if max_steps is not None:
        steps = min(steps, max_steps)
    generator = np.random.default_rng(seed)
    return ([int(i) for i in generator.permutation(inside)[:steps]],
            [int(i) for i in generator.permutation(outside)[:steps]])


def deletion_effects(model: nn.Module, test: ImageData, block_in_structure: Sequence[bool],
                     repair_images: torch.Tensor, batch_size: int = 500, max_steps: int | None = None,
                     seed: int = 0) -> dict:
    """Single deletions of every deletable block and cumulative curves inside vs outside the block structure.

    `block_in_structure[i]` says whether residual block i lies in the block structure (see
    `block_membership`). Returns the dict of `single_deletions` with `inside_block` added to each
    deletion, plus `cumulative_inside` and `cumulative_outside` (lists from `cumulative_deletions`,
    empty when one side has no deletable block).
    """
    blocks = model.residual_blocks()
    if len(block_in_structure) != len(blocks):
        raise ValueError(f"block_in_structure has {len(block_in_structure)} flags but the model has "
                         f"{len(blocks)} residual blocks; build it with block_membership(model, block)")
    result = single_deletions(model, test, repair_images, batch_size)
    for row in result["deletions"]:
        row["inside_block"] = bool(block_in_structure[row["block_index"]])
    inside, outside = cumulative_orders(block_in_structure, deletable_blocks(model), max_steps, seed)
    curves = {"cumulative_inside": inside, "cumulative_outside": outside}
    for key, order in curves.items():
        curves[key] = cumulative_deletions(model, test, repair_images, order, batch_size) if order else []
    return {**result, **curves}


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

def mean_deltas(deletions: Sequence[dict], key: str = "delta_acc") -> tuple[float, float]:
    """Mean accuracy change of single deletions inside and outside the block (NaN for an empty side)."""
    inside = [d[key] for d in deletions if d["inside_block"]]
    outside = [d[key] for d in deletions if not d["inside_block"]]
    return (float(np.mean(inside)) if inside else float("nan"),
            float(np.mean(outside)) if outside else float("nan"))


def example_scores(effects: dict) -> np.ndarray | None:
    """Per test example, its part of the deletion score (book/protocol.md, Chapter 5): the mean over deletions
    inside the block of its change in correctness (+1 gained, -1 lost, 0 otherwise) minus the same over
    deletions outside. Their mean is mean_delta_inside - mean_delta_outside; None when a side has no deletion
    (or the record predates the per-example flips)."""
    rows = effects["deletions"]
    sides = [[d for d in rows if d["inside_block"] == side] for side in (True, False)]
    if not all(sides) or "examples" not in effects or any("lost" not in d for d in rows):
        return None
    means = []
    for side in sides:
        change = np.zeros(effects["examples"])
        for d in side:
            change[d["gained"]] += 1
            change[d["lost"]] -= 1
        means.append(change / len(side))
    return means[0] - means[1]


def cost_verdict(inside_delta: float, outside_delta: float, margin: float = 0.01) -> str:
    """Compare accuracy changes (negative = loss): 'cheaper inside' if inside loses at least `margin` less.

    'costlier inside' for the reverse, 'no clear difference' within the margin, 'not testable' if
    either side is missing (NaN). The paper's finding is 'cheaper inside'.
    """
    if not (np.isfinite(inside_delta) and np.isfinite(outside_delta)):
        return NOT_TESTABLE
    difference = inside_delta - outside_delta
    if difference >= margin - 1e-9:  # accuracies are fractions k/n: a difference of exactly margin counts
        return CHEAPER_INSIDE
    if difference <= -margin + 1e-9:
        return COSTLIER_INSIDE
    return NO_DIFFERENCE


def position_control(deletions: Sequence[dict], controls: Sequence[Sequence[dict]],
                     key: str = "delta_acc") -> tuple[float, float]:
    """What position alone costs: the mean accuracy change when, in models *without* a block (same
    architecture), the blocks are deleted that sit inside / outside the block of the model with one.

    Early residual blocks cost more to delete than later ones in any ResNet, so "cheaper inside" can
    be a matter of where the block sits; subtracting these means separates the two. NaN for a side
    with no matching deletion.
    """
    inside = {d["block_index"] for d in deletions if d["inside_block"]}
    outside = {d["block_index"] for d in deletions if not d["inside_block"]}
    values = {True: [], False: []}
    for control in controls:
        for d in control:
            if d["block_index"] in inside | outside:
                values[d["block_index"] in inside].append(d[key])
    return tuple(float(np.mean(values[side])) if values[side] else float("nan") for side in (True, False))


def curve_end(curve: Sequence[dict], key: str = "delta_acc") -> float:
    """The accuracy change after the last cumulative deletion (NaN for an empty curve)."""
    return float(curve[-1][key]) if curve else float("nan")


def deletion_verdicts(effects: dict, margin: float = 0.01) -> dict:
    """The numbers and verdicts of one model's `deletion_effects`, without and with BN repair.

    Keys: mean_delta_inside/outside (single deletions), cumulative_inside_end/outside_end (after the
    last cumulative deletion), the same with a `_repaired` suffix, and the verdicts `single`,
    `single_repaired`, `cumulative`, `cumulative_repaired` (`cost_verdict` at `margin`).
    """
    out = {}
    for key, suffix in (("delta_acc", ""), ("delta_acc_repaired", "_repaired")):
        inside, outside = mean_deltas(effects["deletions"], key)
        out[f"mean_delta_inside{suffix}"], out[f"mean_delta_outside{suffix}"] = inside, outside
        out[f"single{suffix}"] = cost_verdict(inside, outside, margin)
        inside = curve_end(effects["cumulative_inside"], key)
        outside = curve_end(effects["cumulative_outside"], key)
        out[f"cumulative_inside_end{suffix}"], out[f"cumulative_outside_end{suffix}"] = inside, outside
        out[f"cumulative{suffix}"] = cost_verdict(inside, outside, margin)
    return out
