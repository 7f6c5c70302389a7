"""Centred kernel alignment (CKA): full-data estimators, the streaming minibatch engine and model drivers.

Layer: measures (on `widedeep.measures.grams`, which reduces layers to Grams; above capture).

Full-data estimators follow Kornblith et al. (2019): linear and RBF CKA with the biased HSIC
tr(KHLH)/(n-1)^2 or, with `debiased=True`, the unbiased HSIC of Song et al. (2012) in its
U-centring form. The minibatch estimator follows Nguyen, Raghu & Kornblith (2021):

    CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) * sum_b HSIC_1(L_b, L_b)),

a ratio of sums over minibatches b (never a mean of per-batch ratios). Per batch every layer is
reduced to one n x n Gram of its flattened, pre-centred features; the Grams are U-centred, their
strict upper triangles flattened into the rows of a matrix G, and one product G_a G_b^T gives the
unbiased HSIC of every layer pair at once. Everything downstream of the Gram is float64.

Nothing here is clamped and no denominator gets an epsilon: a batch of n <= 3, mismatched example
counts, NaN/inf values, or a layer whose self-HSIC is zero (a constant representation) raise a
ValueError naming the layer (or, with `on_degenerate="nan"`, give NaN with a warning).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import NamedTuple

import numpy as np
import torch

from widedeep.capture import image_batches
from widedeep.measures.grams import (LAYER_CHUNK, MIN_EXAMPLES, ArrayLike, as_matrix, center_features, center_gram,
                                     check_examples, check_finite, check_finite_layers,
                                     check_same_examples, double_center, gram_capture, gram_linear,
                                     gram_rbf, layer_gram, u_center)

# ---------------------------------------------------------------------------------------------
# HSIC and full-data CKA
# ---------------------------------------------------------------------------------------------

def _square_pair(gram_x: ArrayLike, gram_y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Two same-sized square float64 Grams on one device (or a clear error)."""
    k = torch.as_tensor(gram_x).to(torch.float64)
    l = torch.as_tensor(gram_y).to(torch.float64).to(k.device)
    for g, name in ((k, "gram_x"), (l, "gram_y")):
        if g.dim() != 2 or g.shape[0] != g.shape[1]:
            raise ValueError(f"{name}: expected a square (n, n) Gram, got shape {tuple(g.shape)}")
        check_finite(g, name)
    check_same_examples(k.shape[0], l.shape[0], "gram_x", "gram_y")
    return k, l


def hsic_biased(gram_x: ArrayLike, gram_y: ArrayLike) -> float:
    """Biased HSIC_0 = tr(K H L H) / (n-1)^2 (Gretton et al. 2005), in float64."""
    k, l = _square_pair(gram_x, gram_y)
    n = k.shape[0]
    return float((double_center(k) * double_center(l)).sum() / (n - 1) ** 2)


def hsic_unbiased(gram_x: ArrayLike, gram_y: ArrayLike) -> float:
    """Unbiased HSIC_1 = <u_center(K), u_center(L)> / (n(n-3)) (Song et al. 2012, U-centring form)."""
    k, l = _square_pair(gram_x, gram_y)
    n = k.shape[0]
    return float((u_center(k, "gram_x") * u_center(l, "gram_y")).sum() / (n * (n - 3)))


def hsic_unbiased_trace(gram_x: ArrayLike, gram_y: ArrayLike) -> float:
    """Unbiased HSIC_1 by Song et al.'s trace formula: a cross-check of `hsic_unbiased`, not for float32 use."""
    k, l = _square_pair(gram_x, gram_y)
    n = k.shape[0]
    check_examples(n, "gram_x")
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    trace_kl = (k * l.T).sum()
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2 / (n - 2) * (k.sum(dim=0) @ l.sum(dim=1))  # 1^T K L 1
    return float((trace_kl + sums - cross) / (n * (n - 3)))


def warn_small_biased(n: int) -> None:
    """Warn that biased CKA on n < 4 examples says little: at n = 2 it is 1.0 for any two representations."""
    if 1 < n < MIN_EXAMPLES:  # n = 1 has a zero centred Gram, refused by _require_positive
        warnings.warn(f"biased CKA on n={n} examples: the centred Grams have rank <= {n - 1}, so the value is "
                      f"biased towards 1 (exactly 1.0 for any two representations at n=2); use many more "
                      f"examples (the debiased estimator needs n >= {MIN_EXAMPLES})", RuntimeWarning, stacklevel=3)


def _require_positive(self_hsic: float, name: str) -> None:
    """Raise when a self-HSIC is not positive: CKA is 0/0 there, and an epsilon would invent a number."""
    if not self_hsic > 0:
        raise ValueError(f"{name} has self-HSIC {self_hsic!r} (a constant representation across the examples, "
                         f"or a vanishing centred Gram), so its CKA is undefined")


def cka(gram_x: ArrayLike, gram_y: ArrayLike, debiased: bool = False) -> float:
    """CKA of two Grams: HSIC(K,L)/sqrt(HSIC(K,K) HSIC(L,L)), biased or debiased, in float64."""
    k, l = _square_pair(gram_x, gram_y)
    if debiased:
        check_examples(k.shape[0], "gram_x")
    else:
        warn_small_biased(k.shape[0])
    return centred_alignment(center_gram(k, debiased), center_gram(l, debiased))


def centred_alignment(kc: torch.Tensor, lc: torch.Tensor) -> float:
    """<Kc, Lc> / sqrt(<Kc, Kc> <Lc, Lc>) of two Grams already centred by `center_gram`: CKA's last step."""
    if kc.shape != lc.shape:
        raise ValueError(f"x and y must hold the same examples; got Grams {tuple(kc.shape)} and {tuple(lc.shape)}")
    xy, xx, yy = float((kc * lc).sum()), float((kc * kc).sum()), float((lc * lc).sum())
    _require_positive(xx, "x")
    _require_positive(yy, "y")
    return xy / math.sqrt(xx * yy)  # sqrt of the product: exactly 1 for identical inputs


def _feature_pair(x: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 (n, d) feature matrices on one device with matching, finite examples."""
    a, b = as_matrix(x, "x"), as_matrix(y, "y")
    b = b.to(a.device)
    check_same_examples(a.shape[0], b.shape[0], "x", "y")
    check_finite(a, "x")
    check_finite(b, "y")
    return a, b


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA of (n, d1) and (n, d2) representations (Kornblith et al. 2019), Gram form, float64."""
    a, b = _feature_pair(x, y)
    return cka(gram_linear(a), gram_linear(b), debiased)


def rbf_cka(x: ArrayLike, y: ArrayLike, threshold: float = 0.5, debiased: bool = False) -> float:
    """RBF CKA with sigma = threshold * median pairwise distance (Kornblith et al. 2019), float64."""
    a, b = _feature_pair(x, y)
    return cka(gram_rbf(a, threshold), gram_rbf(b, threshold), debiased)


def _debiased_dot(xty: torch.Tensor, rows_x: torch.Tensor, rows_y: torch.Tensor, norm_x: torch.Tensor,
                  norm_y: torch.Tensor, n: int) -> torch.Tensor:
    """Kornblith's feature-space correction turning ||Y^T X||^2 into n(n-3) * unbiased HSIC."""
    return xty - n / (n - 2) * rows_x.dot(rows_y) + norm_x * norm_y / ((n - 1) * (n - 2))


def feature_space_linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA as ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F): cheaper than Grams when d << n."""
    a, b = _feature_pair(x, y)
    a, b = center_features(a), center_features(b)
    xy = torch.linalg.matrix_norm(b.T @ a) ** 2
    xx = torch.linalg.matrix_norm(a.T @ a)
    yy = torch.linalg.matrix_norm(b.T @ b)
    if debiased:
        n = a.shape[0]
        check_examples(n, "x")
        rows_x, rows_y = (a * a).sum(dim=1), (b * b).sum(dim=1)
        norm_x, norm_y = rows_x.sum(), rows_y.sum()
        xy = _debiased_dot(xy, rows_x, rows_y, norm_x, norm_y, n)
        xx2 = _debiased_dot(xx ** 2, rows_x, rows_x, norm_x, norm_x, n)
        yy2 = _debiased_dot(yy ** 2, rows_y, rows_y, norm_y, norm_y, n)
    else:
        warn_small_biased(a.shape[0])
        xx2, yy2 = xx ** 2, yy ** 2
    _require_positive(float(xx2), "x")
    _require_positive(float(yy2), "y")
    return float(xy / torch.sqrt(xx2 * yy2))


def _default_names(count: int, prefix: str) -> list[str]:
    """Placeholder layer names for error messages when the caller gave none."""
    return [f"{prefix}[{i}]" for i in range(count)]


def _triu(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, columns and flat indices of the strict upper triangle (a U-centred Gram is symmetric, zero diagonal)."""
    rows, cols = torch.triu_indices(n, n, offset=1, device=device)
    return rows, cols, rows * n + cols


def u_centred_rows(stack: torch.Tensor, triu: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Strict upper triangles of the U-centred symmetric Grams in `stack` (L, n, n), as float64 rows (L, P)."""
    n = stack.shape[-1]
    rows, cols, flat = triu
    k = stack.to(torch.float64)
    row_sums = k.sum(dim=-1) - k.diagonal(dim1=-2, dim2=-1)  # r_i of K with a zero diagonal
    # U-centring is K_ij - r_i/(n-2) - r_j/(n-2) + S/((n-1)(n-2)) off the diagonal, i.e. K_ij - a_i - a_j:
    shift = row_sums / (n - 2) - row_sums.sum(dim=-1, keepdim=True) / (2 * (n - 1) * (n - 2))
    upper = k.flatten(1).index_select(1, flat)
    return upper.sub_(shift.index_select(1, rows)).sub_(shift.index_select(1, cols))


class _Prepared(NamedTuple):
    """One model's batch: rows of flattened U-centred Grams scaled so row products are unbiased HSICs."""

    rows: torch.Tensor
    top_pc: torch.Tensor | None

def prepare_grams(grams: Sequence[torch.Tensor], names: Sequence[str], remove_pcs: int = 0,
                  track_top_pc: bool = False) -> _Prepared:
    """Validate a batch's Grams and turn them into an (L, n(n-1)/2) float64 matrix of U-centred rows."""
    if len(grams) != len(names):
        raise ValueError(f"got {len(grams)} layers in this batch but {len(names)} layer names "
                         f"({names[0] if names else ''}...); every batch must hold the same layers")
    if not grams:
        raise ValueError("got no layers in this batch")
    n = grams[0].shape[0] if grams[0].dim() else 0
    for g, name in zip(grams, names):
        if g.dim() != 2 or g.shape[0] != g.shape[1]:
            raise ValueError(f"layer '{name}': expected an (n, n) Gram, got shape {tuple(g.shape)}")
        check_same_examples(g.shape[0], n, f"layer '{name}'", f"layer '{names[0]}'")
    check_examples(n, f"layer '{names[0]}'")
    device = grams[0].device
    triu = _triu(n, device)
    scale = math.sqrt(2.0 / (n * (n - 3)))  # 2 sum_{i<j} K_ij L_ij = <K, L> for symmetric zero-diagonal K, L
    rows = torch.empty(len(grams), triu[2].numel(), dtype=torch.float64, device=device)
    top_pc = torch.empty(len(grams), dtype=torch.float64, device=device) if track_top_pc else None
    same_dtype = len({g.dtype for g in grams}) == 1
    for start in range(0, len(grams), LAYER_CHUNK):
        part = slice(start, start + LAYER_CHUNK)
        stack = torch.stack([g.to(device) if same_dtype else g.to(device, torch.float64) for g in grams[part]])
        if track_top_pc or remove_pcs:
            check_finite_layers(stack.flatten(1), names, start)  # before eigh, which fails obscurely on NaN
            stack = double_center(stack.to(torch.float64))
            eigenvalues, vectors = torch.linalg.eigh(stack)  # ascending, batched over layers
            if track_top_pc:
                trace = eigenvalues.sum(dim=-1)
                # A zero trace is a constant layer in this batch: NaN, reported by top_pc_fraction().
                top_pc[part] = torch.where(trace > 0, eigenvalues[:, -1] / trace, torch.nan)
            if remove_pcs:
                top, lam = vectors[..., -remove_pcs:], eigenvalues[:, -remove_pcs:]
                stack = stack - (top * lam[:, None, :]) @ top.transpose(-2, -1)
        rows[part] = u_centred_rows(stack, triu) * scale
        # Any NaN/inf in a Gram reaches its row (through the row sums), so checking rows is enough.
        check_finite_layers(rows[part], names, start)
    return _Prepared(rows, top_pc)


def _cka_from_sums(cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor, names_a: Sequence[str],
                   names_b: Sequence[str], on_degenerate: str, examples: int) -> np.ndarray:
    """Divide summed cross-HSICs by the root of the product of summed self-HSICs, refusing zero self-HSICs."""
    cross, self_a, self_b = (t.detach().cpu().numpy() for t in (cross, self_a, self_b))
    bad = [names_a[i] for i in np.flatnonzero(~(self_a > 0))]
    bad += [names_b[j] for j in np.flatnonzero(~(self_b > 0)) if names_b[j] not in bad]
    with np.errstate(invalid="ignore", divide="ignore"):
        # sqrt of the product (not a product of roots) makes the within-model diagonal exactly 1
        matrix = cross / np.sqrt(np.outer(self_a, self_b))
    if bad:
        message = (f"layer(s) {bad} have zero summed self-HSIC over {examples} examples: their output is "
                   f"constant across examples, so CKA with them is undefined")
        if on_degenerate == "raise":
            raise ValueError(message + " (pass on_degenerate='nan' to get NaN rows instead)")
        warnings.warn(message + "; their rows/columns are NaN", RuntimeWarning, stacklevel=3)
        matrix[~(self_a > 0), :] = np.nan
        matrix[:, ~(self_b > 0)] = np.nan
    return matrix


def _check_on_degenerate(on_degenerate: str) -> str:
    """Validate the policy for constant layers."""
    if on_degenerate not in ("raise", "nan"):
        raise ValueError(f"on_degenerate must be 'raise' or 'nan', got {on_degenerate!r}")
    return on_degenerate


class MinibatchCKA:
    """Streaming minibatch linear CKA within one model (L x L) or across two (L1 x L2), Nguyen et al. 2021.

    Feed it one batch at a time with `update(acts_a, acts_b=None)` (per-layer activations) or
    `update_grams(grams_a, grams_b=None)` (per-layer Grams from `layer_gram`, e.g. computed inside
    forward hooks), then call `compute()`. Grams are in the activations' precision unless `gram_dtype`
    is given (float32 Grams of pre-centred features are accurate to ~1e-8 in CKA and twice as fast on
    CPU); U-centring, numerators and denominators are float64, summed over batches and divided only
    at the end. `remove_top_pcs=k` deflates each layer's centred Gram by its
    top-k principal components per batch before the HSICs; `track_top_pc=True` records each layer's
    first-PC share of variance per batch (`top_pc_fraction`).
    """

    def __init__(self, names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None, *,
                 gram_dtype: torch.dtype | None = None, remove_top_pcs: int = 0, track_top_pc: bool = False,
                 on_degenerate: str = "raise"):
        if remove_top_pcs < 0:
            raise ValueError(f"remove_top_pcs must be >= 0, got {remove_top_pcs}")
        self.names_a = list(names_a) if names_a is not None else None
        self.names_b = list(names_b) if names_b is not None else None
        self.gram_dtype = gram_dtype
        self.remove_top_pcs = remove_top_pcs
        self.track_top_pc = track_top_pc
        self.on_degenerate = _check_on_degenerate(on_degenerate)
        self.cross_model: bool | None = None if names_b is None else True
        self.num_batches = 0
        self.num_examples = 0
        self._cross: torch.Tensor | None = None
        self._self_a: torch.Tensor | None = None
        self._self_b: torch.Tensor | None = None
        self._top_pc_a: list[torch.Tensor] = []
        self._top_pc_b: list[torch.Tensor] = []

    def update(self, acts_a: Sequence[torch.Tensor], acts_b: Sequence[torch.Tensor] | None = None) -> None:
        """Add one batch given each layer's (n, ...) activations (flattened per example)."""
        grams_a = self._grams(acts_a, self.names_a, "a")
        grams_b = None if acts_b is None else self._grams(acts_b, self.names_b, "b")
        self.update_grams(grams_a, grams_b)

    def _grams(self, acts: Sequence[torch.Tensor], names: list[str] | None, model: str) -> list[torch.Tensor]:
        """Per-layer Grams of one model's batch, checking the layer count against the names."""
        if names is not None and len(acts) != len(names):
            raise ValueError(f"model {model}: got {len(acts)} layers in this batch but {len(names)} layer names")
        names = names or _default_names(len(acts), model)
        return [layer_gram(x, self.gram_dtype, f"layer '{name}'") for x, name in zip(acts, names)]

    def update_grams(self, grams_a: Sequence[torch.Tensor], grams_b: Sequence[torch.Tensor] | None = None) -> None:
        """Add one batch given each layer's n x n linear Gram of pre-centred features (see `layer_gram`)."""
        cross_model = grams_b is not None
        if self.cross_model is None:
            self.cross_model = cross_model
        elif self.cross_model != cross_model:
            raise ValueError("this MinibatchCKA compares " + ("two models: pass grams_b/acts_b" if self.cross_model
                             else "layers within one model: do not pass grams_b/acts_b"))
        self.names_a = self.names_a or _default_names(len(grams_a), "a")
        a = prepare_grams(grams_a, self.names_a, self.remove_top_pcs, self.track_top_pc)
        n = grams_a[0].shape[0]
        if cross_model:
            self.names_b = self.names_b or _default_names(len(grams_b), "b")
            check_same_examples(n, grams_b[0].shape[0] if len(grams_b) else 0, "model a's batch", "model b's batch")
            b = prepare_grams(grams_b, self.names_b, self.remove_top_pcs, self.track_top_pc)
            cross = a.rows @ b.rows.T
            self_a, self_b = (a.rows * a.rows).sum(dim=1), (b.rows * b.rows).sum(dim=1)
            if b.top_pc is not None:
                self._top_pc_b.append(b.top_pc)
        else:
            cross = a.rows @ a.rows.T
            self_a = self_b = cross.diagonal()  # the very numbers on the diagonal: CKA_ii == 1 exactly
        if a.top_pc is not None:
            self._top_pc_a.append(a.top_pc)
        if self._cross is None:
            # separate copies: within one model self_a and self_b start as the same tensor
            self._cross, self._self_a, self._self_b = cross, self_a.clone(), self_b.clone()
        else:
            self._cross += cross
            self._self_a += self_a
            self._self_b += self_b
        self.num_batches += 1
        self.num_examples += n

    def _require_data(self) -> None:
        """Raise before any batch was added."""
        if self._cross is None:
            raise ValueError("no batches were added; call update() or update_grams() first")

    @property
    def hsic_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cross, self_a, self_b): the summed unbiased HSICs, e.g. to merge runs or inspect denominators."""
        self._require_data()
        return tuple(t.detach().cpu().numpy().copy() for t in (self._cross, self._self_a, self._self_b))

    def compute(self) -> np.ndarray:
        """The CKA matrix (L x L, or L1 x L2 across models) as a float64 numpy array."""
        self._require_data()
        names_b = self.names_b if self.cross_model else self.names_a
        return _cka_from_sums(self._cross, self._self_a, self._self_b, self.names_a, names_b,
                              self.on_degenerate, self.num_examples)

    def top_pc_fraction(self, model: str = "a", per_batch: bool = False) -> np.ndarray:
        """First-PC share of variance per layer: mean over batches (L,) or per batch (batches, L)."""
        if not self.track_top_pc:
            raise ValueError("construct MinibatchCKA(track_top_pc=True) to record first-PC fractions")
        self._require_data()
        values = self._top_pc_a if model == "a" else self._top_pc_b
        if model not in ("a", "b") or not values:
            raise ValueError(f"no first-PC fractions recorded for model {model!r}")
        table = torch.stack(values).cpu().numpy()
        names = self.names_a if model == "a" else self.names_b
        constant = [names[i] for i in np.flatnonzero(np.isnan(table).any(axis=0))]
        if constant:
            warnings.warn(f"layer(s) {constant} were constant in some batch; their first-PC fraction is NaN",
                          RuntimeWarning, stacklevel=2)
        return table if per_batch else table.mean(axis=0)


class MultiModelCKA:
    """Minibatch CKA between every pair of M models from one stacked product per batch.

    Each model's U-centred Grams are prepared once per batch; the rows of all models are stacked
    into one matrix G and G G^T gives every within- and cross-model HSIC at once. `compute()` returns
    {(i, j): L_i x L_j CKA matrix} for all i <= j, so (i, i) is model i against itself.
    """

    def __init__(self, names: Sequence[Sequence[str]], *, remove_top_pcs: int = 0, on_degenerate: str = "raise"):
        if len(names) < 1:
            raise ValueError("need at least one model")
        self.names = [list(layer_names) for layer_names in names]
        self.remove_top_pcs = remove_top_pcs
        self.on_degenerate = _check_on_degenerate(on_degenerate)
        offsets = np.cumsum([0] + [len(layer_names) for layer_names in self.names])
        self._slices = [slice(int(offsets[i]), int(offsets[i + 1])) for i in range(len(self.names))]
        self._sums: torch.Tensor | None = None
        self.num_batches = 0
        self.num_examples = 0

    def update_grams(self, grams_per_model: Sequence[Sequence[torch.Tensor]]) -> None:
        """Add one batch: for every model (same examples, same order), its per-layer Grams."""
        if len(grams_per_model) != len(self.names):
            raise ValueError(f"expected Grams of {len(self.names)} models, got {len(grams_per_model)}")
        sizes = {int(grams[0].shape[0]) for grams in grams_per_model if len(grams)}
        if len(sizes) > 1:
            raise ValueError(f"the models' batches hold different numbers of examples {sorted(sizes)}")
        device = grams_per_model[0][0].device  # models may live on different devices
        rows = torch.cat([prepare_grams(grams, names, self.remove_top_pcs).rows.to(device)
                          for grams, names in zip(grams_per_model, self.names)])
        products = rows @ rows.T
        self._sums = products if self._sums is None else self._sums + products
        self.num_batches += 1
        self.num_examples += sizes.pop()

    def compute(self) -> dict[tuple[int, int], np.ndarray]:
        """CKA matrices for every model pair (i <= j)."""
        if self._sums is None:
            raise ValueError("no batches were added; call update_grams() first")
        diagonal = self._sums.diagonal()
        out = {}
        for i, si in enumerate(self._slices):
            for j in range(i, len(self._slices)):
                sj = self._slices[j]
                out[(i, j)] = _cka_from_sums(self._sums[si, sj], diagonal[si], diagonal[sj], self.names[i],
                                             self.names[j], self.on_degenerate, self.num_examples)
        return out

# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------

def model_cka(model_a: torch.nn.Module, loader: Iterable, model_b: torch.nn.Module | None = None,
              layers: Sequence | None = None, layers_b: Sequence | None = None, *,
              gram_dtype: torch.dtype | None = None, remove_top_pcs: int = 0, max_batches: int | None = None,
              on_degenerate: str = "raise") -> tuple[np.ndarray, list[str], list[str]]:
    """Minibatch CKA heatmap of a model with itself or with `model_b`: (matrix, names_a, names_b).

    Both models see each batch in the same order. `layers` (and `layers_b`) default to
    `model.layers()` (our CifarResNet); for other modules pass a list of module names.
    """
    within = model_b is None or (model_b is model_a and layers_b is None)
    with gram_capture(model_a, layers, gram_dtype=gram_dtype) as capture_a:
        if within:
            engine = MinibatchCKA(capture_a.names, gram_dtype=gram_dtype, remove_top_pcs=remove_top_pcs,
                                  on_degenerate=on_degenerate)
            for images in image_batches(loader, max_batches):
                engine.update_grams(capture_a(images))
            return engine.compute(), capture_a.names, capture_a.names
        with gram_capture(model_b, layers_b if layers_b is not None else layers, gram_dtype=gram_dtype) as capture_b:
            engine = MinibatchCKA(capture_a.names, capture_b.names, gram_dtype=gram_dtype,
                                  remove_top_pcs=remove_top_pcs, on_degenerate=on_degenerate)
            for images in image_batches(loader, max_batches):
                engine.update_grams(capture_a(images), capture_b(images))
            return engine.compute(), capture_a.names, capture_b.names


def models_cka(models: Sequence[torch.nn.Module], loader: Iterable, layers: Sequence | None = None, *,
               gram_dtype: torch.dtype | None = None, remove_top_pcs: int = 0, max_batches: int | None = None,
               on_degenerate: str = "raise") -> tuple[dict[tuple[int, int], np.ndarray], list[list[str]]]:
    """CKA between every pair of `models` from one forward pass of each per batch: ({(i, j): matrix}, names)."""
    with ExitStack() as stack:
        captures = [stack.enter_context(gram_capture(m, layers, gram_dtype=gram_dtype)) for m in models]
        engine = MultiModelCKA([c.names for c in captures], remove_top_pcs=remove_top_pcs,
                               on_degenerate=on_degenerate)
        for images in image_batches(loader, max_batches):
            engine.update_grams([capture(images) for capture in captures])
        return engine.compute(), [c.names for c in captures]
