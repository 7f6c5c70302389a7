"""Chapter 9's ten measures, each split into a summary of one layer and a comparison of two summaries.

Measures layer (on `cka`, `grams`, `similarity` and `subspace`). A study of L layers in S seeds
compares O((L S)^2) pairs of only L S layers, and every measure here spends nearly all its time on
one side at a time: a Gram, an SVD, a dissimilarity matrix, neighbour lists. `Lens.prepare` does that
once per layer; `Lens.compare` of two summaries is cheap (a dot product of Grams, an SVD of at most
n x n). `lens.function(x, y) = compare(prepare(x), prepare(y))` is the measure itself: the CCA
family, Procrustes, RSA and k-NN functions of `similarity` are built from these same sides, and
the CKA lenses share `center_gram` and `cka.centred_alignment` with `cka.cka` (both tested equal).

Every measure compares the same examples on both sides, so permuting both sides' examples together
changes nothing (tested). A shuffled null can therefore shuffle one side and reuse the other's summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from widedeep.measures import cka, grams, similarity
from widedeep.measures.subspace import LayerPair, neuron_matrix


@dataclass(frozen=True)
class Lens:
    """A similarity measure (larger = more similar) as a per-layer summary and a pairwise comparison."""

    prepare: Callable[[Any], Any]
    compare: Callable[[Any, Any], float]

    def function(self, x, y) -> float:
        """The measure of two layers."""
        return self.compare(self.prepare(x), self.prepare(y))


def centred_gram(x, kernel: str = "linear", debiased: bool = False, threshold: float = 0.5) -> torch.Tensor:
    """One side of CKA: the layer's Gram (linear or RBF), centred for the biased or debiased HSIC."""
    m = grams.as_matrix(np.asarray(x).reshape(len(x), -1), "x")
    gram = grams.gram_linear(m) if kernel == "linear" else grams.gram_rbf(m, threshold)
    if debiased:
        grams.check_examples(len(m), "x")
    return grams.center_gram(gram, debiased)


@dataclass
class ChannelLayer:
    """One side of the subspace match: a conv layer's channels as neurons, kept at each spatial size asked for.

    Layers of different stages have different spatial sizes; a pair is compared on common coordinates
    (examples x positions) after average-pooling the larger map to the smaller's size. Each size's
    neuron matrix and its self-Gram are computed once.
    """

    activations: np.ndarray                        # (N, C, H, W) or (N, C)
    sizes: dict = field(default_factory=dict)      # spatial size -> (neuron matrix, its Gram)

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.activations.shape[2:])

    def at(self, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The (C, N * positions) neuron matrix at `size` and its Gram."""
        if size not in self.sizes:
            x = self.activations
            if size != self.size:
                pool = torch.nn.functional.adaptive_avg_pool2d
                x = pool(torch.from_numpy(np.ascontiguousarray(x)), size).numpy()
            z = neuron_matrix(x)
            self.sizes[size] = (z, z @ z.T)
        return self.sizes[size]


def channel_layer(x) -> ChannelLayer:
    """The subspace match's summary of a layer (its activations, as float64)."""
    x = np.asarray(x, np.float64)
    if x.ndim not in (2, 4):
        raise ValueError(f"the subspace match reads (examples, channels) or (examples, channels, H, W) "
                         f"layers; got shape {x.shape}")
    return ChannelLayer(x)


def subspace_of_sides(a: ChannelLayer, b: ChannelLayer, eps: float) -> float:
    """Wang et al.'s maximum-match score at eps of two layers' channels, on their common positions."""
    if len(a.activations) != len(b.activations):
        raise ValueError(f"x and y must hold the same examples; got {len(a.activations)} and "
                         f"{len(b.activations)}")
    size = tuple(min(p, q) for p, q in zip(a.size, b.size))
    (za, ga), (zb, gb) = a.at(size), b.at(size)
    cross = za @ zb.T
    gram = np.block([[ga, cross], [cross.T, gb]])
    return LayerPair.from_gram(gram, len(za)).score(eps)


def lenses(knn_k: int = 10, eps: float = 0.5) -> dict[str, Lens]:
    """The chapter's measures by name, in the table's order."""
    return {"linear CKA": Lens(centred_gram, cka.centred_alignment),
            "debiased CKA": Lens(lambda x: centred_gram(x, debiased=True), cka.centred_alignment),
            "RBF CKA": Lens(lambda x: centred_gram(x, "rbf"), cka.centred_alignment),
            "mean CCA": Lens(similarity.cca_basis,
                             lambda a, b: float(similarity.correlations_of_bases(a, b).mean())),
            "SVCCA": Lens(lambda x: similarity.cca_basis(x, similarity.SVCCA_VARIANCE),
                          lambda a, b: float(similarity.correlations_of_bases(a, b).mean())),
            "PWCCA": Lens(similarity.pwcca_side, similarity.pwcca_of_sides),
            "Procrustes": Lens(similarity.procrustes_side, similarity.procrustes_of_sides),
            "RSA": Lens(similarity.rsa_side, similarity.rsa_of_sides),
            "mutual k-NN": Lens(lambda x: similarity.knn_side(x, knn_k), similarity.knn_of_sides),
            "subspace match": Lens(channel_layer, lambda a, b: subspace_of_sides(a, b, eps))}
