"""CIFAR ResNet v1 (He et al. 2016) as in the paper's code, and a small Vision Transformer beside it, with every
analysed operation its own module.

Nguyen et al. build post-activation ResNets of depth 6n+2: a 3x3 stem, three stages of n basic
blocks with round(16k), round(32k), round(64k) channels, a 1x1 stride-2 projection (no BN) where a
stage starts, then global average pooling and a dense layer. We mirror the Keras details of their
`resnet_cifar.py` (conv biases, He-normal init, BN momentum 0.01 / eps 1e-3) so that representations
behave like theirs. Every operation the analysis reads (conv, BN, ReLU, add, projection, pool,
flatten, logits) is a distinct module that is called exactly once per forward pass and never
in place, so a forward hook sees each layer's true output.

The Vision Transformer (Dosovitskiy et al. 2021; `vit`) follows the same rule for Chapter 10: a
patch embedding (a strided convolution), a learned position embedding, `depth` pre-LayerNorm encoder
blocks of embedding dimension `width` (multi-head self-attention and a GELU MLP, each added to the
residual stream), a final LayerNorm, mean pooling over the tokens and a dense layer. Its residual
stream is each encoder block's output (kind "stream"); inside a block the analysed layers are the
LayerNorms, the attention output, the stream after attention, the MLP's hidden activation and its
output. A token map is (n, tokens, width), flattened per example to tokens x width as a ResNet's
(n, channels, h, w) map is flattened to channels x h x w.
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


# ---------------------------------------------------------------------------------------------
# A small Vision Transformer
# ---------------------------------------------------------------------------------------------

VIT_HEADS = 4          # attention heads (the width must be a multiple of it)
VIT_MLP_RATIO = 2      # the MLP's hidden width over the embedding width


class Tokens(nn.Module):
    """(n, width, h, w) patch map -> (n, h*w, width) tokens in row-major patch order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class PositionEmbedding(nn.Module):
    """Adds a learned position embedding to the tokens (the stream's first representation)."""

    def __init__(self, tokens: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, tokens, width))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class SelfAttention(nn.Module):
    """Multi-head self-attention: one qkv projection, scaled dot-product attention per head, an output projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(attended.transpose(1, 2).reshape(n, tokens, width))


class TokenMean(nn.Module):
    """Mean over the tokens: (n, tokens, width) -> (n, width), the ViT's global average pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: x + attn(norm1(x)), then + fc2(act(fc1(norm2(.)))), each add a module."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.add1 = Add()
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * width, width)
        self.add2 = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add1(x, self.attn(self.norm1(x)))
        return self.add2(x, self.fc2(self.act(self.fc1(self.norm2(x)))))


VIT_INSIDE = ("norm1", "attn", "add1", "norm2", "act", "fc2")   # analysed per block, before its output add2


class VisionTransformer(nn.Module):
    """A small ViT on square images with mean pooling (no class token) and an ordered list of analysable layers.

    Mean pooling rather than a class token: every token then plays the same role at every layer, so the
    flattened token map compares like with like across layers and models, and the head matches the
    ResNet's global average pooling, which keeps the ViT-ResNet comparison about the blocks.
    """

    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int, image_size: int,
                 patch_size: int, heads: int = VIT_HEADS, mlp_ratio: int = VIT_MLP_RATIO):
        super().__init__()
        validate_vit(depth, width, heads, mlp_ratio)
        validate_io(num_classes, in_channels)
        validate_patches(image_size, patch_size)
        self.depth, self.width, self.heads, self.mlp_ratio = depth, width, heads, mlp_ratio
        self.num_classes, self.in_channels, self.patch_size = num_classes, in_channels, patch_size
        tokens = (image_size // patch_size) ** 2
        self.input = nn.Identity()
        self.patch = nn.Conv2d(in_channels, width, patch_size, patch_size)
        self.tokens = Tokens()
        self.embed = PositionEmbedding(tokens, width)
        self.blocks = nn.Sequential(*(EncoderBlock(width, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.pool = TokenMean()
        self.logits = nn.Linear(width, num_classes)
        _vit_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.tokens(self.patch(self.input(x))))
        return self.logits(self.pool(self.norm(self.blocks(x))))

    def layers(self) -> list[Layer]:
        """Every analysable layer in forward order: input, patch embedding, the stream (embedding and each
        block's output) with each block's inside layers before its output, then the head."""
        out = [Layer("input", INPUT, 0, -1, self.input), Layer("patch", STEM, 0, -1, self.patch),
               Layer("embed", STREAM, 0, -1, self.embed)]
        for index, block in enumerate(self.blocks):
            out += [Layer(f"blocks.{index}.{n}", INSIDE, 1, index, getattr(block, n)) for n in VIT_INSIDE]
            out.append(Layer(f"blocks.{index}.add2", STREAM, 1, index, block.add2))
        out += [Layer(n, HEAD, 0, -1, getattr(self, n)) for n in ("norm", "pool", "logits")]
        return out

    def residual_blocks(self) -> list[EncoderBlock]:
        """All encoder blocks in forward order."""
        return list(self.blocks)


def validate_vit(depth: int, width: int, heads: int = VIT_HEADS, mlp_ratio: int = VIT_MLP_RATIO) -> None:
    """Check a ViT's depth (blocks >= 1), width (a positive multiple of the head count), heads and MLP ratio."""
    for name, value in (("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"a ViT's {name} must be a positive integer (depth: encoder blocks); got {value!r}")
    if isinstance(width, float) and width.is_integer():
        width = int(width)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1 or width % heads:
        raise ValueError(f"a ViT's width is its embedding dimension, a positive integer multiple of its {heads} "
                         f"heads (e.g. {4 * heads}, {8 * heads}, {16 * heads}); got {width!r}")


def validate_patches(image_size: int, patch_size: int) -> None:
    """Check that square patches of `patch_size` tile the image exactly."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer (pixels); got {patch_size!r}")
    if image_size % patch_size:
        raise ValueError(f"patch_size {patch_size} does not tile a {image_size} px image; choose a divisor of "
                         f"{image_size}, e.g. {next(p for p in (4, 2, 1) if image_size % p == 0)}")


def _vit_init(model: nn.Module) -> None:
    """Truncated-normal (std 0.02) weights and zero biases for dense and patch layers (ViT convention)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)


def vit(depth: int, width: int, num_classes: int = 10, in_channels: int = 1, image_size: int = 16,
        patch_size: int = 4, heads: int = VIT_HEADS, mlp_ratio: int = VIT_MLP_RATIO) -> VisionTransformer:
    """Build a ViT with `depth` encoder blocks of embedding dimension `width` (a multiple of `heads`)."""
    if isinstance(width, float) and width.is_integer():
        width = int(width)
    return VisionTransformer(depth, width, num_classes, in_channels, image_size, patch_size, heads, mlp_ratio)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
