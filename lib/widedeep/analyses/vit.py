"""Vision Transformers under the paper's lens: token norms, the calibrated ViT-ResNet heatmap, uniformity.

Layer: analyses (on `structure`, `incidence`, `measure_tests` and the run records of `runs`; below the
studies). The tools Chapter 10's study (`widedeep.studies.vit`) combines, under the protocol's rules
(`book/protocol.md`, "Chapter 10"):

- **the law** on the ViT grid (claims V1): Chapter 3's Firth logistic law of block presence over
  log(parameters), log(n_train) and the series, judged as Chapter 3 judges it; the block is the
  CKA-only detector's (`blocks.block_structure_span` without a first-PC condition);
- **the first PC inside ViT blocks** (claim V2): per blocked ViT, mean first-PC share of its block's
  stream layers minus that of its other stream layers, a paired effect (direction > 0). The control
  for ViTs' high-norm outlier tokens is each stream layer's token-norm ratio (largest token norm over
  the median token norm of the same image), reported inside against outside, not judged;
- **uniformity** (claim V3, Raghu et al. 2021): per (ViT, ResNet) pair, the mean CKA between distinct
  residual-stream layers of the ViT minus that of the ResNet, a paired effect (direction > 0);
- **correspondence** (reported, not judged): debiased CKA between the ViT's and the ResNet's stream
  layers, beside the same CKA with the ResNet's examples shuffled (the calibrated baseline) and the
  calibrated score (best - null) / (1 - null) of `measure_tests.calibrated_score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from widedeep import records
from widedeep.analyses import incidence, measure_tests, runs
from widedeep.analyses.structure import BlockAnalysis
from widedeep.capture import Capture, batches, capture_outputs
from widedeep.measures.cka import cka
from widedeep.measures.grams import gram_linear

VERSIONS = records.register_kinds({"tokens": 1, "crosscal": 1})
LAW_FITS = ("incidence_fit", "continuous_fit")   # presence (judged) and the maximum first-PC share (reported)


# ---------------------------------------------------------------------------------------------
# Per-run records: token norms, and the calibrated ViT-ResNet heatmap
# ---------------------------------------------------------------------------------------------

def token_ratio(output: torch.Tensor) -> torch.Tensor:
    """Per image: its largest token norm over its median token norm, from an (n, tokens, width) map."""
    if output.dim() != 3:
        raise ValueError(f"a token map is (examples, tokens, width); got shape {tuple(output.shape)}")
    norms = output.float().norm(dim=-1)
    return norms.max(dim=1).values / norms.median(dim=1).values


def run_token_ratios(run, data, batch_size: int, layers: list[str]) -> dict[str, np.ndarray]:
    """Per layer of a ViT, the token-norm ratio's mean and maximum over the images of `data` (a record)."""
    def compute():
        sums, peaks, count = np.zeros(len(layers)), np.zeros(len(layers)), 0
        with Capture(run.model, layers, lambda _, output: token_ratio(output)) as capture:
            for images in batches(data.images, batch_size):
                ratios = torch.stack(capture(images)).double().numpy()
                sums += ratios.sum(axis=1)
                peaks = np.maximum(peaks, ratios.max(axis=1))
                count += ratios.shape[1]
        return {"mean": sums / count, "max": peaks}

    return run.record("tokens", VERSIONS["tokens"], {"examples": runs.examples_key(data), "batch": batch_size,
                                                     "layers": list(layers)}, compute)


def shuffled_cka(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor], order: np.ndarray | None) -> np.ndarray:
    """Debiased CKA of every pair of layers of A and B, B's examples taken in `order` (None: as they are)."""
    if order is not None:
        index = torch.as_tensor(order)
        grams_b = [g[index][:, index] for g in grams_b]
    return np.array([[cka(a, b, debiased=True) for b in grams_b] for a in grams_a])


def run_cross_calibration(run_a, run_b, data, layers_a: list[str], layers_b: list[str], draws: int,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Debiased CKA between two runs' layers on `data` and its shuffled-examples baseline (a record of run_a).

    Returns {"cka": (La, Lb), "null": (La, Lb)}: the null is the mean over `draws` shuffles of B's examples
    (one shuffle for all of B's layers per draw), which keeps every layer's width and spectrum and destroys
    any correspondence between the examples.
    """
    def compute():
        grams_a = [gram_linear(x) for x in capture_outputs(run_a.model, data.images, layers_a)]
        grams_b = [gram_linear(x) for x in capture_outputs(run_b.model, data.images, layers_b)]
        rng = np.random.default_rng(seed)
        null = np.mean([shuffled_cka(grams_a, grams_b, rng.permutation(len(data.images))) for _ in range(draws)],
                       axis=0)
        return {"cka": shuffled_cka(grams_a, grams_b, None), "null": null}

    return run_a.record("crosscal", VERSIONS["crosscal"], {
        "b": run_b.config.name(), "examples": runs.examples_key(data), "layers_a": list(layers_a),
        "layers_b": list(layers_b), "draws": draws, "seed": seed}, compute)


# ---------------------------------------------------------------------------------------------
# Statistics and verdicts
# ---------------------------------------------------------------------------------------------

def uniformity(matrix: np.ndarray) -> float:
    """Mean CKA between distinct layers of a within-model heatmap (symmetrised): 1 for a uniform stream."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"uniformity needs a square heatmap of at least 2 layers; got shape {matrix.shape}")
    sym = (matrix + matrix.T) / 2
    return float(sym[~np.eye(len(sym), dtype=bool)].mean())


def best_match_depths(matrix: np.ndarray) -> np.ndarray:
    """For each row layer, the relative depth (0..1) of its most similar column layer."""
    matrix = np.asarray(matrix, dtype=float)
    return np.argmax(matrix, axis=1) / max(matrix.shape[1] - 1, 1)


# ---------------------------------------------------------------------------------------------
# A reference ViT beside its ResNet, and a ViT's row of the law
# ---------------------------------------------------------------------------------------------

@dataclass
class Pair:
    """A reference ViT and the ResNet it is set beside, analysed, with their calibrated cross heatmap."""

    vit: BlockAnalysis
    resnet: BlockAnalysis
    cross: dict[str, np.ndarray]      # {"cka", "null"} over stream layers (ViT rows, ResNet columns)

    @property
    def calibrated(self) -> np.ndarray:
        """The cross heatmap calibrated against its shuffled-examples baseline: 0 at chance, 1 at a perfect match."""
        return measure_tests.calibrated_score(self.cross["cka"], self.cross["null"])

    def uniformity_difference(self) -> float:
        """Mean stream CKA of the ViT minus that of the ResNet."""
        return uniformity(self.vit.stream_cka) - uniformity(self.resnet.stream_cka)


def vit_row(m: BlockAnalysis, width_series_depth: int, depth_series_width: int) -> dict:
    """A ViT's summary with its series, arch and CKA-only block as the block the law and the claims read."""
    s = m.summary()
    block = s["block_cka_only"]
    return {**s, "arch": "vit", "block": block, "has_block": block is not None, "block_size": s["block_size_cka_only"],
            "series": incidence.series_of(s["depth"], s["width"], width_series_depth, depth_series_width)}


def inside_outside(values: np.ndarray, m: BlockAnalysis) -> tuple[float, float]:
    """Mean of a per-layer vector over the CKA-only block's stream layers and over the other stream layers."""
    block = m.block_cka_only
    stream = m.stream
    inside = (stream >= block.start) & (stream <= block.end)
    return float(np.mean(values[stream[inside]])), float(np.mean(values[stream[~inside]]))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation, None where either side is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)
