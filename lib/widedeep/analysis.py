"""One trained run, analysed for the block structure: its CKA heatmap, first-PC shares and detected blocks.

Chapters 3-5 all start from the same per-model analysis, so it lives here once: CKA and PC statistics
come from the run store's caches (`heatmaps.run_cka`, `heatmaps.run_pc_stats`), and the detector's
settings come from the profile (`block_threshold`, `block_min_contrast`, `block_min_pc1`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from widedeep import blocks, heatmaps
from widedeep.data import ImageData
from widedeep.models import STREAM


@dataclass
class BlockAnalysis:
    """A run with its all-layer CKA heatmap, per-layer PC shares, and blocks found with and without the PC1 rule."""

    run: object                      # train.TrainedRun
    cka: np.ndarray                  # (L, L) minibatch CKA over every analysable layer
    names: list[str]
    kinds: list[str]
    pc_shares: np.ndarray            # (L, k) variance shares of the top-k PCs (residual-stream layers; NaN elsewhere)
    block: blocks.Block | None       # CKA and first-PC conditions (the book's definition)
    block_cka_only: blocks.Block | None

    @property
    def label(self) -> str:
        """'ResNet-56 ×1, n=500, s0'."""
        c = self.run.config
        return f"ResNet-{c.depth} ×{c.width:g}, n={c.n_train}, s{c.seed}"

    @property
    def pc1_share(self) -> np.ndarray:
        """First-PC share of variance per layer."""
        return self.pc_shares[:, 0]

    @property
    def stream(self) -> np.ndarray:
        """Indices of the residual-stream layers (the ones the detector looks at)."""
        return np.flatnonzero(np.asarray(self.kinds) == STREAM)

    @property
    def stream_names(self) -> list[str]:
        """Module names of the residual-stream layers."""
        return [self.names[i] for i in self.stream]

    def on_stream(self, block: blocks.Block | None) -> blocks.Block | None:
        """The block with start/end as positions among the residual-stream layers (for stream-only matrices)."""
        if block is None:
            return None
        position = {index: i for i, index in enumerate(self.stream)}
        return replace(block, start=position[block.start], end=position[block.end])

    def tested_block(self) -> tuple[blocks.Block | None, str | None]:
        """The span a chapter tests and where it came from: the block ("block"), else the CKA-only one
        ("cka_only", a control: not a block by the book's definition), else (None, None)."""
        if self.block is not None:
            return self.block, "block"
        if self.block_cka_only is not None:
            return self.block_cka_only, "cka_only"
        return None, None

    def span_name(self, block: blocks.Block | None) -> str:
        """'stages.0.3.relu2 … stages.1.2.relu2' for a block, '—' for none."""
        return "—" if block is None else f"{self.names[block.start]} … {self.names[block.end]}"

    def relative_span(self, block: blocks.Block | None) -> tuple[float, float] | None:
        """A block's first and last layer as relative depth along the residual stream (0..1)."""
        if block is None:
            return None
        position = {index: i / max(len(self.stream) - 1, 1) for i, index in enumerate(self.stream)}
        return position[block.start], position[block.end]

    def summary(self) -> dict:
        """The JSON entry for this model (the shape the results files share)."""
        c, m = self.run.config, self.run.metrics
        inside, outside = blocks.inside_outside(self.pc1_share, self.block, self.kinds)
        return {"name": c.name(), "depth": c.depth, "width": c.width, "n_train": c.n_train, "seed": c.seed,
                "test_acc": m["final"]["test_acc"], "train_acc": m["final"]["train_acc"],
                "n_layers": len(self.names), "n_stream_layers": int(len(self.stream)),
                "block": None if self.block is None else self.block.as_dict(),
                "block_cka_only": None if self.block_cka_only is None else self.block_cka_only.as_dict(),
                "max_pc1_share": float(np.nanmax(self.pc1_share[self.stream])),
                "pc1_share_inside": inside, "pc1_share_outside": outside}


def cka_images(run, count: int) -> ImageData:
    """The first `count` test images of the run's data: every chapter compares representations on these."""
    return run.config.splits().test.subset(torch.arange(count))


def detector_settings(params: dict) -> dict:
    """The detector's keyword arguments from a profile."""
    return {"threshold": params["block_threshold"], "min_contrast": params["block_min_contrast"],
            "min_pc1": params["block_min_pc1"]}


def detect(cka: np.ndarray, kinds: list[str], pc1_share: np.ndarray, params: dict,
           **changes) -> tuple[blocks.Block | None, blocks.Block | None]:
    """Blocks with the first-PC rule (if the profile sets one) and without it."""
    settings = {**detector_settings(params), **changes}
    min_pc1 = settings.pop("min_pc1")
    with_pc1 = blocks.block_structure_span(cka, kinds, pc1_share=pc1_share, min_pc1=min_pc1, **settings)
    cka_only = blocks.block_structure_span(cka, kinds, **settings)
    return with_pc1, cka_only


def batching(params: dict) -> dict:
    """The CKA minibatch settings of a profile (examples are `cka_images`)."""
    return {"batch_size": params["cka_batch_size"], "passes": params["cka_passes"]}


def analyse(run, params: dict) -> BlockAnalysis:
    """All-layer CKA, residual-stream PC shares and the blocks of one run (all cached in the run store).

    PC statistics are computed on the residual-stream layers only: they are what the detector reads,
    and an eigendecomposition per layer and minibatch over every layer would cost several times the
    CKA itself on a deep network.
    """
    images = cka_images(run, params["cka_examples"])
    matrix = heatmaps.run_cka(run, images, **batching(params))
    layers = run.model.layers()
    names, kinds = [layer.name for layer in layers], [layer.kind for layer in layers]
    stream = np.flatnonzero(np.asarray(kinds) == STREAM)
    stream_shares = heatmaps.run_pc_stats(run, images, layers=[names[i] for i in stream], **batching(params))["shares"]
    shares = np.full((len(names), stream_shares.shape[1]), np.nan)
    shares[stream] = stream_shares
    block, block_cka_only = detect(matrix, kinds, shares[:, 0], params)
    return BlockAnalysis(run, matrix, names, kinds, shares, block, block_cka_only)
