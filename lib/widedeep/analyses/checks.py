"""Checks with a known answer that the chapters run before trusting a measure or the model family.

Layer: analyses (on `widedeep.measures`; below book support). Each function returns what a chapter
asserts and shows: CKA's invariances and its minibatch estimator on random data (Chapter 2), the
parameter count's growth with width (Chapter 1), and planted layers for the subspace match (Chapter 7).
Random data comes from the caller's generator, drawn in a fixed order, so a chapter's numbers are
reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from widedeep.measures import cka

CKA_INVARIANT_TO = ("identical", "rotated", "scaled x 7.5", "shifted by +1e4")  # CKA exactly 1 under these


def cka_invariances(generator: torch.Generator, n: int = 500, d: int = 64) -> tuple[torch.Tensor, dict[str, float]]:
    """Random float64 features X (n, d) and linear CKA of X with transformed copies of itself (and with noise).

    Transformations: identity, an orthogonal rotation, isotropic scaling, a shift (CKA is 1 for all),
    an invertible linear map stretching directions 1000x unequally, and independent noise.
    """
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    stretch = torch.diag(torch.logspace(-2, 1, d, dtype=torch.float64)) @ rotation  # invertible, not orthogonal
    return x, {
        "identical": cka.linear_cka(x, x),
        "rotated": cka.linear_cka(x, x @ rotation),
        "scaled x 7.5": cka.linear_cka(x, 7.5 * x),
        "shifted by +1e4": cka.linear_cka(x, x + 1e4),
        "invertible linear map": cka.linear_cka(x, x @ stretch),
        "independent noise": cka.linear_cka(x, torch.randn(n, d, generator=generator, dtype=torch.float64)),
    }


def correlated_layer(x: torch.Tensor, generator: torch.Generator, width: int = 32) -> torch.Tensor:
    """A second 'layer' (n, width) that depends on x nonlinearly, plus noise: CKA with x in between 0 and 1."""
    weights = torch.randn(x.shape[1], width, generator=generator, dtype=torch.float64)
    return torch.tanh(x @ weights) + 0.5 * torch.randn(x.shape[0], width, generator=generator, dtype=torch.float64)


def minibatch_errors(x: torch.Tensor, y: torch.Tensor, reference: float, batch_sizes: Sequence[int],
                     trials: int, generator: torch.Generator) -> dict[int, float]:
    """Mean |minibatch CKA - reference| over `trials` random partitions of the examples into batches, per size."""
    errors = {}
    for batch_size in batch_sizes:
        gaps = []
        for _ in range(trials):
            order = torch.randperm(x.shape[0], generator=generator)
            engine = cka.MinibatchCKA()
            for start in range(0, x.shape[0], batch_size):
                index = order[start:start + batch_size]
                engine.update([x[index], y[index]])
            gaps.append(abs(engine.compute()[0, 1] - reference))
        errors[batch_size] = float(np.mean(gaps))
    return errors


def width_parameter_ratios(rows: list[dict], depth: int, widths: Sequence[float]) -> list[tuple[float, float, float]]:
    """(width, parameters / those of the narrowest, width ratio squared) along a width series of `rows`."""
    size = {(r["depth"], r["width"]): r["parameters"] for r in rows}
    return [(w, size[depth, w] / size[depth, widths[0]], (w / widths[0]) ** 2) for w in widths]


def planted_layers(rng: np.random.Generator, samples: int = 3000) -> dict[str, np.ndarray]:
    """Two layers for the subspace match with a known answer: six neurons of `a` are an invertible,
    non-orthogonal mixture of six of `b`'s; each has neurons of its own (noise) and `a` one dead neuron.

    Returns {"a" (11, samples), "b" (11, samples), "shared" (6, samples), "mixing" (6, 6)}.
    """
    shared = rng.standard_normal((6, samples))
    mixing = rng.standard_normal((6, 6)) + 2 * np.eye(6)
    a = np.vstack([shared, rng.standard_normal((4, samples)), np.zeros((1, samples))])
    b = np.vstack([mixing @ shared, rng.standard_normal((5, samples))])
    return {"a": a, "b": b, "shared": shared, "mixing": mixing}
