"""Grams of layer representations: the n x n matrices every measure of this package starts from.

Layer: measures (above capture; the CKA estimators, first-PC statistics and the subspace match
build on it). A layer's representation of n examples is a matrix X (one row per example, all
channels and positions flattened); its linear Gram is K = X X^T, computed here from pre-centred
features (which no CKA estimator notices, and which avoids cancellation of a large common offset).
`gram_capture` reduces every analysed layer of a model to its Gram inside forward hooks
(`widedeep.capture.Capture`), one batch at a time. The centrings (H K H for the biased HSIC,
U-centring for the unbiased one) and the first principal components of a centred Gram live here
too, because both the CKA engine and the first-PC statistics need them.

Everything downstream of a Gram is float64. Nothing is clamped: NaN/inf values and batches too
small for an estimator raise a ValueError naming the layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from typing import ContextManager

import numpy as np
import torch
from torch import nn

from widedeep import backends
from widedeep.capture import Capture, resolve_layers

ArrayLike = np.ndarray | torch.Tensor
MIN_EXAMPLES = 4  # the unbiased HSIC divides by n(n-3) and (n-2)
LAYER_CHUNK = 64  # layers processed together: few large tensor ops, bounded float64 temporaries

# ---------------------------------------------------------------------------------------------
# Inputs, checks and feature centring
# ---------------------------------------------------------------------------------------------

def as_matrix(x: ArrayLike, name: str = "x", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n, ...) array or tensor -> detached (n, d) tensor in `dtype`: one row per example."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() == 0:
        raise ValueError(f"{name}: expected an (n, ...) array with one row per example, got a scalar")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected real-valued activations, got dtype {t.dtype}")
    return t.reshape(t.shape[0], -1).to(dtype)


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise if `t` holds NaN or inf, since one bad value silently poisons every HSIC sum."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name}: {bad} of {t.numel()} values are NaN or inf; CKA would be meaningless")


def check_examples(n: int, name: str, minimum: int = MIN_EXAMPLES) -> None:
    """Raise if a batch is too small for the estimator (the unbiased HSIC needs n >= 4)."""
    if n < minimum:
        raise ValueError(
            f"{name}: batch of n={n} examples, but the unbiased HSIC needs n >= {minimum} (it divides "
            f"by n(n-3)); drop the last partial batch (e.g. DataLoader(drop_last=True))")


def check_same_examples(n_a: int, n_b: int, name_a: str, name_b: str) -> None:
    """Raise if two representations do not hold the same number of examples."""
    if n_a != n_b:
        raise ValueError(f"{name_a} has {n_a} examples but {name_b} has {n_b}; CKA compares the same examples")


def center_features(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Subtract each feature's mean over the examples, so Grams do not cancel a large common offset."""
    # Shifting by the first example first makes constant features exactly zero and removes most of a
    # large offset before averaging, so the mean itself is computed without cancellation. At most one
    # new buffer: fresh multi-megabyte allocations cost page faults comparable to the arithmetic.
    shifted = x.sub_(x[:1].clone()) if inplace else x - x[:1]
    return shifted.sub_(shifted.mean(dim=0, keepdim=True))


def no_tf32() -> ContextManager[None]:
    """Turn off TF32 for float32 CUDA matmuls inside the block (TF32 keeps only a 10-bit mantissa)."""
    return backends.no_tf32(convolutions=False)


# ---------------------------------------------------------------------------------------------
# Grams and centring
# ---------------------------------------------------------------------------------------------

def gram_linear(x: ArrayLike, center: bool = True) -> torch.Tensor:
    """Linear-kernel Gram X X^T in float64 (features centred first, which no CKA estimator notices)."""
    m = as_matrix(x, "x")
    check_finite(m, "x")
    if center:
        m = center_features(m)
    return m @ m.T


def gram_rbf(x: ArrayLike, threshold: float = 0.5) -> torch.Tensor:
    """RBF Gram exp(-|xi-xj|^2 / (2 sigma^2)) with sigma^2 = threshold^2 * median squared distance (Kornblith demo)."""
    m = center_features(as_matrix(x, "x"))  # distances are shift invariant; centring avoids cancellation
    check_finite(m, "x")
    dots = m @ m.T
    sq_norms = dots.diagonal()
    sq_distances = sq_norms[:, None] + sq_norms[None, :] - 2 * dots
    # As in Kornblith et al.'s demo the median runs over all n^2 entries, zero diagonal included.
    sq_median = float(np.median(sq_distances.cpu().numpy()))
    if not sq_median > 0:
        raise ValueError("x: the median squared pairwise distance is 0 (most examples coincide), "
                         "so the RBF bandwidth is undefined")
    return torch.exp(-sq_distances / (2 * threshold ** 2 * sq_median))


def double_center(gram: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T/n (over the last two dims): the biased estimator's centring."""
    return (gram - gram.mean(dim=-2, keepdim=True) - gram.mean(dim=-1, keepdim=True)
            + gram.mean(dim=(-2, -1), keepdim=True))


def u_center(gram: torch.Tensor, name: str = "gram") -> torch.Tensor:
    """U-centre a symmetric Gram (Szekely & Rizzo): <u_center(K), u_center(L)> / (n(n-3)) is unbiased HSIC."""
    n = gram.shape[-1]
    check_examples(n, name)
    k = gram.to(torch.float64).clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    row = k.sum(dim=-1, keepdim=True) / (n - 2)  # r_i / (n-2)
    col = k.sum(dim=-2, keepdim=True) / (n - 2)  # r_j / (n-2); equals `row` for a symmetric Gram
    total = k.sum(dim=(-2, -1), keepdim=True) / ((n - 1) * (n - 2))
    k = k - row - col + total
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Centre a Gram for CKA: H K H (biased HSIC) or U-centring (unbiased HSIC), in float64."""
    gram = torch.as_tensor(gram).to(torch.float64)
    return u_center(gram) if unbiased else double_center(gram)


# ---------------------------------------------------------------------------------------------
# First principal component of a layer, from its Gram
# ---------------------------------------------------------------------------------------------

def top_pc_fraction(gram: ArrayLike) -> float:
    """Share of variance on the first PC, lambda_1 / trace of the centred Gram (NaN if the trace is 0)."""
    kc = double_center(torch.as_tensor(gram).to(torch.float64))
    eigenvalues = torch.linalg.eigvalsh(kc)
    trace = float(eigenvalues.sum())
    return float(eigenvalues[-1]) / trace if trace > 0 else math.nan


def remove_top_pcs(gram: ArrayLike, k: int = 1) -> torch.Tensor:
    """Centred Gram of the features with their top-k PCs removed: K_c - sum_i lambda_i u_i u_i^T."""
    kc = double_center(torch.as_tensor(gram).to(torch.float64))
    if k <= 0:
        return kc
    eigenvalues, vectors = torch.linalg.eigh(kc)  # ascending order
    top, lam = vectors[:, -k:], eigenvalues[-k:]
    return kc - (top * lam) @ top.T


# ---------------------------------------------------------------------------------------------
# The streaming minibatch engine
# ---------------------------------------------------------------------------------------------

def gram_dtype_for(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.dtype:
    """The Gram precision: `dtype` if given, else float64 for float64 inputs and float32 for all others."""
    if dtype is not None:
        return dtype
    return torch.float64 if getattr(x, "dtype", None) in (torch.float64, np.float64) else torch.float32


def layer_gram(x: ArrayLike, dtype: torch.dtype | None = None, name: str = "layer") -> torch.Tensor:
    """One layer's n x n linear Gram of flattened, pre-centred features: all a minibatch needs of it.

    `dtype=None` keeps the activations' precision (float32 for network activations, float64 for
    float64 arrays); float32 Grams are computed with TF32 off. NaN/inf activations (and float32
    overflow) make the Gram non-finite; the engine checks a whole batch's Grams at once and names the
    layer, which keeps this hot path to a few tensor ops.
    """
    dtype = gram_dtype_for(x, dtype)
    # Centre in the wider of the input and Gram precisions, then round: a float64 input with a large
    # offset keeps its small variations even when the Gram itself is float32.
    wide = torch.float64 if torch.float64 in (dtype, getattr(x, "dtype", None)) else torch.float32
    m = as_matrix(x, name, wide)
    converted = isinstance(x, torch.Tensor) and x.dtype != wide  # then `m` is our own buffer
    m = center_features(m, inplace=converted)
    if dtype != wide:
        m = m.to(dtype)
    with no_tf32():
        return symmetric_gram(m)


def symmetric_gram(m: torch.Tensor) -> torch.Tensor:
    """m m^T; on CPU from three half-size products (A A^T, A B^T, B B^T): 3/4 of the flops of one GEMM.

    BLAS syrk through SciPy (half the flops) measured 2.3-2.6x slower than one GEMM on 2 cores, and worse
    between torch ops, where OpenBLAS's and torch's OpenMP threads contend; it made the whole engine
    ~2.5x slower (`benchmarks/cka_speed.py` times the kernels side by side, alone and interleaved).
    """
    n = m.shape[0]
    if m.device.type != "cpu" or n < 64:  # on GPUs one large GEMM beats three small ones
        return m @ m.T
    half = n // 2
    top, bottom = m[:half], m[half:]
    cross = top @ bottom.T
    gram = torch.empty(n, n, dtype=m.dtype)
    gram[:half, :half] = top @ top.T
    gram[:half, half:] = cross
    gram[half:, :half] = cross.T
    gram[half:, half:] = bottom @ bottom.T
    return gram


def check_finite_layers(values: torch.Tensor, names: Sequence[str], start: int = 0,
                        consequence: str = "CKA would be meaningless") -> None:
    """Raise naming the first layer (leading index of `values`, offset by `start`) that holds NaN or inf."""
    finite = torch.isfinite(values).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = names[start + int(torch.nonzero(~finite)[0])]
        raise ValueError(f"layer '{bad}': its Gram holds NaN or inf values (NaN/inf activations, or "
                         f"float32 overflow of very large ones); {consequence}")


def gram_capture(model: nn.Module, layers: Sequence | None = None, *,
                 gram_dtype: torch.dtype | None = None) -> Capture:
    """A `Capture` whose hooks reduce each layer's output to its `layer_gram` (in `gram_dtype`)."""
    resolved = resolve_layers(model, layers)
    labels = [f"layer '{name}'" for name, _ in resolved]
    return Capture(model, resolved, lambda index, output: layer_gram(output, gram_dtype, labels[index]))


def capture_grams(model: nn.Module, images: torch.Tensor, layers: Sequence | None = None, *,
                  gram_dtype: torch.dtype | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """One-shot capture: (per-layer Grams, layer names) of one batch, hooks removed afterwards."""
    with gram_capture(model, layers, gram_dtype=gram_dtype) as capture:
        return capture(images), capture.names
