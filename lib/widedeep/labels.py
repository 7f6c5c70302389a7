"""Display labels of the model family: how an architecture or a trained run is named in tables, figures and prose.

Layer: models (no imports; everything above may use it). Results files key models by run name (the
config hash, `TrainConfig.name()`); these labels are derived from a model's coordinates in this one
place, so no chapter or module formats them itself.
"""

from __future__ import annotations


def architecture_label(depth: int, width: float, residual: bool = True, arch: str = "resnet") -> str:
    """'ResNet-56 ×1' (or 'plain-20 ×1' for the control without shortcuts, 'ViT-8 d32' for a Vision Transformer
    of 8 blocks and embedding dimension 32)."""
    if arch == "vit":
        return f"ViT-{depth} d{width:g}"
    return f"{'ResNet' if residual else 'plain'}-{depth} ×{width:g}"


def model_label(depth: int, width: float, n_train: int, seed: int, residual: bool = True, arch: str = "resnet") -> str:
    """'ResNet-56 ×1, n=500, s0': an architecture trained on n_train examples from one seed."""
    return f"{architecture_label(depth, width, residual, arch)}, n={n_train}, s{seed}"


def architecture_of(config) -> str:
    """The architecture label of a TrainConfig (or anything with depth, width, residual and optionally arch)."""
    return architecture_label(config.depth, config.width, getattr(config, "residual", True),
                              getattr(config, "arch", "resnet"))


def run_label(config) -> str:
    """The model label of a TrainConfig (or anything with depth, width, n_train, seed, residual, optionally arch)."""
    return model_label(config.depth, config.width, config.n_train, config.seed, getattr(config, "residual", True),
                       getattr(config, "arch", "resnet"))


def entry_label(entry: dict) -> str:
    """The model label of a results entry or table row (keys depth, width, n_train, seed, optionally residual, arch)."""
    return model_label(entry["depth"], entry["width"], entry["n_train"], entry["seed"], entry.get("residual", True),
                       entry.get("arch", "resnet"))
