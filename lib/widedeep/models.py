"""CIFAR ResNet v1 (He et al. 2016) as in the paper's code, with every analysed operation its own module.

Nguyen et al. build post-activation ResNets of depth 6n+2: a 3x3 stem, three stages of n basic
blocks with round(16k), round(32k), round(64k) channels, a 1x1 stride-2 projection (no BN) where a
stage starts, then global average pooling and a dense layer. We mirror the Keras details of their
`resnet_cifar.py` (conv biases, He-normal init, BN momentum 0.01 / eps 1e-3) so that representations
behave like theirs. Every operation the analysis reads (conv, BN, ReLU, add, projection, pool,
flatten, logits) is a distinct module that is called exactly once per forward pass and never
in place, so a forward hook sees each layer's true output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Layer kinds, in the vocabulary of the analysis chapters.
INPUT, STEM, INSIDE, STREAM, HEAD = "input", "stem", "inside", "stream", "head"


@dataclass(frozen=True)
class Layer:
    """One analysable layer: its module path, kind, stage (0 = stem/head) and block index."""

    name: str
    kind: str
    stage: int
    block: int
    module: nn.Module


class Add(nn.Module):
    """Elementwise sum as a module, so hooks see the residual addition."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


KERAS_BN_MOMENTUM = 0.01  # Keras BatchNormalization momentum 0.99 is PyTorch's 0.01


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    # Keras BatchNormalization defaults as in the paper's code: eps 1e-3 and (by default) momentum 0.01.
    return nn.BatchNorm2d(channels, momentum=momentum, eps=1e-3)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (post-activation, ResNet v1)."""

    def __init__(self, in_channels: int, channels: int, stride: int, residual: bool = True,
                 bn_momentum: float = KERAS_BN_MOMENTUM):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=True)
        self.bn1 = _bn(channels, bn_momentum)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=True)
        self.bn2 = _bn(channels, bn_momentum)
        if residual:
            if stride != 1 or in_channels != channels:
                # The paper's code: 1x1 strided conv with bias, no BN and no activation.
                self.projection = nn.Conv2d(in_channels, channels, 1, stride, 0, bias=True)
            else:
                self.projection = None
            self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.residual:
            shortcut = x if self.projection is None else self.projection(x)
            out = self.add(out, shortcut)
        return self.relu2(out)


class CifarResNet(nn.Module):
    """The CIFAR ResNet family (or its plain twin) with an ordered list of analysable layers."""

    def __init__(self, depth: int, width: float, num_classes: int, in_channels: int, residual: bool,
                 bn_momentum: float = KERAS_BN_MOMENTUM):
        super().__init__()
        blocks_per_stage = validate_architecture(depth, width)
        validate_io(num_classes, in_channels)
        self.depth, self.width, self.residual = depth, width, residual
        self.num_classes, self.in_channels = num_classes, in_channels
        channels = stage_channels(width)
        self.input = nn.Identity()  # a module so the input itself is an analysable "layer"
        self.conv = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=True)
        self.bn = _bn(channels[0], bn_momentum)
        self.relu = nn.ReLU()
        stages, previous = [], channels[0]
        for stage_index, stage_width in enumerate(channels):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if (stage_index > 0 and block_index == 0) else 1
                blocks.append(BasicBlock(previous, stage_width, stride, residual, bn_momentum))
                previous = stage_width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.logits = nn.Linear(previous, num_classes)
        _keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(self.input(x))))
        for stage in self.stages:
            x = stage(x)
        return self.logits(self.flatten(self.pool(x)))

    def layers(self) -> list[Layer]:
        """Every analysable layer in forward order, with its kind (see the module constants)."""
        out = [Layer("input", INPUT, 0, -1, self.input)]
        out += [Layer(n, STEM, 0, -1, getattr(self, n)) for n in ("conv", "bn")]
        out.append(Layer("relu", STREAM, 0, -1, self.relu))
        block_number = 0
        for stage_index, stage in enumerate(self.stages, start=1):
            for block_index, block in enumerate(stage):
                prefix = f"stages.{stage_index - 1}.{block_index}"
                names = ["conv1", "bn1", "relu1", "conv2", "bn2"]
                if block.residual:
                    names += (["projection"] if block.projection is not None else []) + ["add"]
                for n in names:
                    out.append(Layer(f"{prefix}.{n}", INSIDE, stage_index, block_number, getattr(block, n)))
                out.append(Layer(f"{prefix}.relu2", STREAM, stage_index, block_number, block.relu2))
                block_number += 1
        out += [Layer(n, HEAD, 0, -1, getattr(self, n)) for n in ("pool", "flatten", "logits")]
        return out

    def residual_blocks(self) -> list[BasicBlock]:
        """All basic blocks in forward order (the units that block deletion removes)."""
        return [block for stage in self.stages for block in stage]


def validate_architecture(depth: int, width: float) -> int:
    """Check depth = 6n+2 (n >= 1) and width > 0; return n, the blocks per stage."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth must be an integer of the form 6n+2 with n >= 1 (8, 14, 20, 26, 32, 38, 44, 56, "
            f"110, 164, ...); got {depth!r}. The nearest allowed depths are "
            f"{_nearest_depths(depth)}."
        )
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive finite number (a multiplier of 16/32/64 channels); "
                         f"got {width!r}")
    if round(16 * width) < 1:
        # round() halves to even: 16 * (1/32) = 0.5 rounds to 0, so 1/32 itself is too small.
        raise ValueError(f"width {width} gives round(16*width) = 0 channels in the first stage; use a width "
                         f"above 1/32, e.g. 0.0625 (1 channel in the first stage)")
    return (depth - 2) // 6


def validate_io(num_classes: int, in_channels: int) -> None:
    """Check that the model has classes to score (>= 2) and input channels to read (>= 1)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (the classes the logits score; 10 for "
                         f"Fashion-MNIST and CIFAR-10, 100 for CIFAR-100); got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer (1 for grey images, 3 for colour); "
                         f"got {in_channels!r}")


def _nearest_depths(depth) -> str:
    try:
        n = max(1, round((float(depth) - 2) / 6))
    except (TypeError, ValueError):
        return "8, 14, 20"
    return ", ".join(str(6 * k + 2) for k in sorted({max(1, n - 1), n, n + 1}))


def stage_channels(width: float) -> tuple[int, int, int]:
    """Channels of the three stages: round(16k), round(32k), round(64k)."""
    return round(16 * width), round(32 * width), round(64 * width)


def _keras_init(model: nn.Module) -> None:
    """He-normal (fan-in) weights and zero biases, as Keras' he_normal / zeros in the paper's code."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(module.bias)


def resnet(depth: int, width: float = 1, num_classes: int = 10, in_channels: int = 3,
           residual: bool = True, bn_momentum: float = KERAS_BN_MOMENTUM) -> CifarResNet:
    """Build a CIFAR ResNet-`depth` at width multiplier `width` (residual=False: the plain control)."""
    return CifarResNet(depth, width, num_classes, in_channels, residual, bn_momentum)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
