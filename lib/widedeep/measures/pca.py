"""First principal components of every layer, streamed over minibatches (Nguyen, Raghu & Kornblith 2021).

Layer: measures (on `widedeep.measures.grams`; above capture).

Nguyen et al. (ICLR 2021, "block structure and the first principal component") tie the block
structure of wide and deep networks to a dominant first principal component. For a layer with
activations A (N x p, flattened, each feature centred over the examples), the first PC's share of
variance is sigma_1^2 / sum_j sigma_j^2 = lambda_1 / tr(K_c), with K_c = A A^T the centred Gram, and
its example-space score vector u_1 (unit length, N entries) is K_c's top eigenvector. Two layers'
first-PC similarity is |<u_1^a, u_1^b>|; the absolute value because an eigenvector's sign is arbitrary.

Like the CKA itself these are computed per minibatch from the n x n Grams that `grams.gram_capture` makes
and averaged over batches. Everything after the Gram is float64. A constant layer (zero trace) has
no principal component: its shares and its similarities are NaN, with a warning naming it, never a
silently clamped number. When a batch's top two eigenvalues coincide the top eigenvector is not
unique, and its similarities are as arbitrary as that choice.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from widedeep.capture import image_batches
from widedeep.measures.grams import (LAYER_CHUNK, check_finite_layers, check_same_examples, double_center,
                                     gram_capture)

MIN_EXAMPLES = 2  # a centred Gram of one example is zero


class PCStats:
    """Streaming first-PC statistics of L layers: top-k variance shares and the L x L first-PC similarity.

    Feed it one batch at a time with `update_grams(grams)` (each layer's n x n linear Gram of
    pre-centred features, e.g. from `grams.gram_capture`), then read `shares()`, `pc1_share` and
    `similarity()`: means over batches of the per-batch values.
    """

    def __init__(self, names: Sequence[str], top_k: int = 3):
        self.names = list(names)
        if not self.names:
            raise ValueError("need at least one layer name")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = top_k
        self.num_batches = 0
        self._share_sum: torch.Tensor | None = None
        self._similarity_sum: torch.Tensor | None = None
        self._constant = np.zeros(len(self.names), dtype=bool)  # constant in at least one batch

    def _check(self, grams: Sequence[torch.Tensor]) -> int:
        """Validate one batch's Grams and return its example count n."""
        if len(grams) != len(self.names):
            raise ValueError(f"got {len(grams)} layers in this batch but {len(self.names)} layer names "
                             f"({self.names[0]}...); every batch must hold the same layers")
        n = grams[0].shape[0] if grams[0].dim() else 0
        for g, name in zip(grams, self.names):
            if g.dim() != 2 or g.shape[0] != g.shape[1]:
                raise ValueError(f"layer '{name}': expected an (n, n) Gram, got shape {tuple(g.shape)}")
            check_same_examples(g.shape[0], n, f"layer '{name}'", f"layer '{self.names[0]}'")
        if n < MIN_EXAMPLES:
            raise ValueError(f"layer '{self.names[0]}': batch of n={n} examples, but principal components "
                             f"need n >= {MIN_EXAMPLES}")
        if self.top_k > n:
            raise ValueError(f"top_k={self.top_k} exceeds the batch's n={n} examples (a centred n x n Gram "
                             f"has at most n - 1 non-zero eigenvalues)")
        return n

    def update_grams(self, grams: Sequence[torch.Tensor]) -> None:
        """Add one batch given each layer's n x n linear Gram of pre-centred features (all layers share n)."""
        n = self._check(grams)
        device = grams[0].device
        count = len(grams)
        shares = torch.empty(count, self.top_k, dtype=torch.float64, device=device)
        top = torch.empty(count, n, dtype=torch.float64, device=device)  # each layer's top eigenvector
        for start in range(0, count, LAYER_CHUNK):
            part = slice(start, start + LAYER_CHUNK)
            stack = torch.stack([g.to(device, torch.float64) for g in grams[part]])
            # before eigh, which fails obscurely on NaN
            check_finite_layers(stack, self.names, start, "its principal components would be meaningless")
            eigenvalues, vectors = torch.linalg.eigh(double_center(stack))  # ascending, batched over layers
            trace = eigenvalues.sum(dim=-1, keepdim=True)
            constant = trace[:, 0] <= 0  # a zero centred Gram: the layer is constant over this batch
            largest = eigenvalues[:, -self.top_k:].flip(-1)
            shares[part] = torch.where(constant[:, None], torch.nan, largest / trace)
            top[part] = torch.where(constant[:, None], torch.nan, vectors[..., -1])
        overlap = (top @ top.T).abs()
        overlap = (overlap + overlap.T) / 2  # exactly symmetric whatever the matmul's summation order
        constant = torch.isnan(shares[:, 0])
        overlap.fill_diagonal_(1.0)  # unit eigenvectors: exactly 1, not 1 up to rounding
        index = torch.nonzero(constant).flatten()
        overlap[index, index] = torch.nan  # a constant layer has no eigenvector, so not even self-overlap
        if self._share_sum is None:
            self._share_sum, self._similarity_sum = shares, overlap
        else:
            self._share_sum += shares.to(self._share_sum.device)
            self._similarity_sum += overlap.to(self._similarity_sum.device)
        self._constant |= constant.cpu().numpy()
        self.num_batches += 1

    def _require_data(self) -> None:
        """Raise before any batch was added."""
        if self._share_sum is None:
            raise ValueError("no batches were added; call update_grams() first")

    def _warn_constant(self, what: str) -> None:
        """Warn, naming them, about layers that were constant in some batch (their values are NaN)."""
        if self._constant.any():
            bad = [self.names[i] for i in np.flatnonzero(self._constant)]
            warnings.warn(f"layer(s) {bad} were constant in some batch (zero centred Gram, no principal "
                          f"component); their {what} is NaN", RuntimeWarning, stacklevel=3)

    def shares(self) -> np.ndarray:
        """(L, top_k) mean over batches of lambda_i / trace for the top_k eigenvalues of each centred Gram."""
        self._require_data()
        self._warn_constant("share of variance")
        return (self._share_sum / self.num_batches).cpu().numpy()

    @property
    def pc1_share(self) -> np.ndarray:
        """(L,) mean over batches of each layer's first-PC share of variance."""
        self._require_data()
        self._warn_constant("first-PC share of variance")
        return (self._share_sum[:, 0] / self.num_batches).cpu().numpy()

    def similarity(self) -> np.ndarray:
        """(L, L) mean over batches of |<u1_a, u1_b>|, the first-PC score vectors' overlap (diagonal 1)."""
        self._require_data()
        self._warn_constant("first-PC similarity row and column")
        return (self._similarity_sum / self.num_batches).cpu().numpy()


def model_pc_stats(model: torch.nn.Module, loader: Iterable, layers: Sequence | None = None, *,
                   gram_dtype: torch.dtype | None = None, top_k: int = 3, max_batches: int | None = None) -> dict:
    """First-PC statistics of a model's layers over a loader: {"names", "shares" (L, top_k), "pc1_similarity" (L, L)}.

    `layers` defaults to `model.layers()` (our CifarResNet); for other modules pass module names.
    """
    with gram_capture(model, layers, gram_dtype=gram_dtype) as capture:
        stats = PCStats(capture.names, top_k)
        for images in image_batches(loader, max_batches):
            stats.update_grams(capture(images))
        return {"names": list(capture.names), "shares": stats.shares(), "pc1_similarity": stats.similarity()}
