"""Subspace match between two layers: maximum and simple matches (Wang, Hu et al., NeurIPS 2018).

Layer: measures (hooks from `widedeep.capture`; above capture, below analyses). The public API is
one object, `LayerPair`, built from two layers' activations or from their streamed stacked Gram
(`NeuronMoments`, `model_neuron_moments`), which answers every question below.

Neurons and their activation vectors. A neuron v of a layer has the activation vector z_v over d
samples: the examples for a dense unit, all (example, position) coordinates for a conv channel (an
(N, C, H, W) output gives C vectors of length d = N*H*W, coordinate e*H*W + p for example e and
position p). Activations are used raw (post-ReLU in the paper), never centred. Arrays here are
neuron-major: a layer is an (neurons, samples) matrix; `neuron_matrix` turns an (N, C, ...) network
output into one.

Matches. For two layers with neuron sets Xbar (layer a) and Ybar (layer b), (X, Y) with X in Xbar,
Y in Ybar is an *eps-approximate match* iff

    dist(z_v, span z_Y) <= eps * |z_v|  for every v in X,   and
    dist(z_u, span z_X) <= eps * |z_u|  for every u in Y.

The union of two matches is a match, so a unique *maximum match* (X*, Y*) exists. Algorithm 1 finds
it: start from all live neurons; delete every v in X whose relative distance to span z_Y exceeds
eps, then every u in Y whose relative distance to span z_X exceeds eps; repeat until nothing is
deleted. The distance to the empty span is |z_v|, so for eps >= 1 every live neuron matches and
for eps < 1 one empty side empties the other. The *score* is (|X*| + |Y*|) / (|Xbar| + |Ybar|).
*Dead* neurons (|z_v| <= dead_tol * the largest |z_u| of both layers, e.g. all-zero post-ReLU
channels) would match trivially by the definition; as in the paper they are left out of the
matching but counted in the denominator. `LayerPair.maximal_eps` is the largest relative distance of
a live neuron to the other layer's full live span: from that eps on, everything live matches.

Simple matches (Algorithm 2). For a neuron v of the maximum match: take the maximum match; for each
other neuron u in a fixed order (stacked order by default: a's neurons, then b's), delete u,
recompute the maximum match inside what remains, and keep the deletion only if v survives. The
result is a match containing v from which no single neuron can be removed while keeping v in the
maximum match of the rest (a v-minimal match). Neurons outside the recomputed maximum match are
dropped at once: they would be deleted later anyway with v surviving, so the result is the same as
the authors' one-at-a-time loop, with fewer calls.

Two exact forms of the same algorithm, behind the same `LayerPair` methods:
- *direct* (`LayerPair.from_activations`): relative distances by projection onto an orthonormal
  basis of the other side's span (an SVD of its unit-normalised activation vectors), as the
  authors' least-squares code does; the tests' oracle;
- *Gram* (`LayerPair.from_gram`): everything Algorithm 1 needs is the stacked Gram G = Z Z^T of Z = [z_a; z_b], an
  (n_a + n_b)^2 matrix that `NeuronMoments` accumulates over batches in float64:
  |z_v|^2 = G_vv and dist^2(z_v, span z_S) = G_vv - G_vS G_SS^+ G_Sv. It is evaluated on the
  normalised Gram C_uv = G_uv / sqrt(G_uu G_vv) with an eigendecomposition of C_SS.
In both, directions that the unit-normalised vectors of S span only with singular values below
`tol` times the largest are treated as absent (rank-deficient activations are the rule), and a
neuron is kept when its relative distance is <= eps + tol, so eps = 0 (an exact match, span z_X =
span z_Y) is usable in floating point. The Gram form resolves relative distances to about 1e-8
times the size of the coefficients expressing z_v in the other side's normalised neurons; between
eps of interest (0.05 to 0.5) the two forms agree (tested, and timed in benchmarks/subspace_speed.py).

Sampled form (the authors' protocol for conv layers): draw `n_samples` (default 10 000) of the
N*H*W coordinates without replacement, the same for both networks, match on those columns and
average the score over `draws` (default 16) draws. `SampledNeuronMoments` and
`model_neuron_moments(..., n_samples=...)` do it streaming, one Gram per draw, from a forward pass
over the data in a fixed order; `moment_match_scores` averages the scores over the draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from widedeep.capture import Capture, batches
from widedeep.measures.grams import no_tf32

ArrayLike = np.ndarray | torch.Tensor
TOL = 1e-6        # numerical resolution of relative distances; also the relative singular-value cutoff
DEAD_TOL = 1e-6   # a neuron is dead when |z_v| <= DEAD_TOL * the largest |z_u| of both layers
PAPER_EPS = (0.15, 0.2, 0.25, 0.3, 0.5)  # the eps values of the paper's tables
PAPER_SAMPLES, PAPER_DRAWS = 10_000, 16  # coordinates per draw and draws, for conv layers

Distances = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Inputs and checks
# ---------------------------------------------------------------------------------------------

def _as_float64(x: ArrayLike, name: str) -> np.ndarray:
    """A detached float64 numpy copy of an array or tensor (any device), refusing complex and bool."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name}: expected real-valued activations, got dtype {x.dtype}")
        return x.detach().to("cpu", torch.float64).numpy()  # via torch: numpy has no bfloat16
    arr = np.asarray(x)
    if arr.dtype == bool or np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected real-valued activations, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raise if `arr` holds NaN or inf: distances to spans would be meaningless."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"{name}: {int((~finite).sum())} of {arr.size} values are NaN or inf; "
                         f"a subspace match of them would be meaningless")


def _check_eps(eps: float) -> float:
    """eps must be a finite number >= 0."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 (the paper uses 0.15 to 0.5); got {eps!r}")
    return float(eps)


def _check_tols(tol: float, dead_tol: float) -> None:
    """tol in (0, 1) and dead_tol in [0, 1)."""
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), e.g. {TOL}; got {tol!r}")
    if not 0 <= dead_tol < 1:
        raise ValueError(f"dead_tol must be in [0, 1), e.g. {DEAD_TOL}; got {dead_tol!r}")


def _check_pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Two (neurons, samples) float64 matrices over the same samples, finite, each with >= 1 neuron."""
    mats = []
    for x, name in ((a, "a"), (b, "b")):
        m = _as_float64(x, name)
        if m.ndim != 2:
            raise ValueError(f"{name} must be 2-D (neurons, samples); got shape {m.shape}. For a network "
                             f"output of shape (N, C, ...) pass neuron_matrix(output)")
        if m.shape[0] < 1 or m.shape[1] < 1:
            raise ValueError(f"{name} needs >= 1 neuron and >= 1 sample; got shape {m.shape}")
        _check_finite(m, name)
        mats.append(m)
    if mats[0].shape[1] != mats[1].shape[1]:
        raise ValueError(f"a has {mats[0].shape[1]} samples but b has {mats[1].shape[1]} (shapes {mats[0].shape}, "
                         f"{mats[1].shape}); both layers must be evaluated on the same inputs and positions")
    return mats[0], mats[1]


def _check_gram(gram: ArrayLike, n_a: int) -> np.ndarray:
    """A finite, symmetric (n, n) float64 Gram with 1 <= n_a < n and a non-negative diagonal."""
    g = _as_float64(gram, "gram")
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be a square (n_a + n_b, n_a + n_b) matrix; got shape {g.shape}")
    if isinstance(n_a, bool) or not isinstance(n_a, (int, np.integer)) or not 1 <= n_a < g.shape[0]:
        raise ValueError(f"n_a (neurons of layer a, the first rows of the Gram) must be an integer in "
                         f"[1, {g.shape[0] - 1}]; got {n_a!r}")
    _check_finite(g, "gram")
    scale = np.abs(g).max()
    if np.abs(g - g.T).max() > 1e-8 * scale:
        raise ValueError("gram is not symmetric: pass Z Z^T of the stacked neurons (e.g. NeuronMoments.gram())")
    if (np.diag(g) < 0).any():
        raise ValueError("gram has negative diagonal entries (squared norms): it is not a Gram Z Z^T")
    return (g + g.T) / 2


def neuron_matrix(acts: ArrayLike) -> np.ndarray:
    """(N, C, ...) network output -> float64 (C, N * positions): one row per neuron, column e*P + p."""
    arr = _as_float64(acts, "acts")
    if arr.ndim < 2:
        raise ValueError(f"acts must be (N, C) or (N, C, ...) with examples first; got shape {arr.shape}")
    return np.ascontiguousarray(np.moveaxis(arr.reshape(arr.shape[0], arr.shape[1], -1), 1, 0)).reshape(
        arr.shape[1], -1)


def stacked_gram(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """The float64 Gram Z Z^T of the stacked neurons Z = [a; b] of two (neurons, samples) matrices."""
    a, b = _check_pair(a, b)
    z = np.concatenate([a, b])
    return z @ z.T


# ---------------------------------------------------------------------------------------------
# Relative distances to spans: direct and Gram forms
# ---------------------------------------------------------------------------------------------

def _live(sq_norms: np.ndarray, dead_tol: float) -> np.ndarray:
    """Mask of live neurons: squared norm above dead_tol^2 times the largest (none if all are zero)."""
    top = sq_norms.max()
    return (sq_norms > dead_tol ** 2 * top) if top > 0 else np.zeros(sq_norms.shape, dtype=bool)


def _direct_distances(z: np.ndarray, tol: float) -> Distances:
    """dist(rows, span): relative distances of unit rows of z to the span of other unit rows, by SVD."""

    def distances(rows: np.ndarray, span: np.ndarray) -> np.ndarray:
        if span.size == 0:
            return np.ones(rows.size)
        _, s, vh = np.linalg.svd(z[span], full_matrices=False)
        basis = vh[s > tol * s[0]]  # orthonormal basis of the span, rank tolerance relative to s_max
        x = z[rows]
        return np.linalg.norm(x - (x @ basis.T) @ basis, axis=1)

    return distances


def _gram_distances(c: np.ndarray, tol: float) -> Distances:
    """dist(rows, span) from the normalised Gram c: sqrt(1 - c_vS c_SS^+ c_Sv), eigenvalues below tol^2 dropped."""

    def distances(rows: np.ndarray, span: np.ndarray) -> np.ndarray:
        if span.size == 0:
            return np.ones(rows.size)
        lam, vec = np.linalg.eigh(c[np.ix_(span, span)])
        keep = lam > tol ** 2 * lam[-1]  # lam = s^2 of the unit vectors: the direct form's cutoff
        w = (c[np.ix_(rows, span)] @ vec[:, keep]) / np.sqrt(lam[keep])
        # 1 - |projection|^2 >= 0 in exact arithmetic; rounding can make it slightly negative.
        return np.sqrt(np.clip(1.0 - np.einsum("ij,ij->i", w, w), 0.0, None))

    return distances


def _normalised_rows(z: np.ndarray, dead_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(z with live rows scaled to unit norm and dead rows zero, live mask)."""
    sq = np.einsum("ij,ij->i", z, z)
    live = _live(sq, dead_tol)
    out = np.zeros_like(z)
    out[live] = z[live] / np.sqrt(sq[live])[:, None]
    return out, live


def _normalised_gram(g: np.ndarray, dead_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(the Gram of the unit-normalised live neurons, zero for dead ones; live mask)."""
    sq = np.diag(g).copy()
    live = _live(sq, dead_tol)
    inv = np.zeros_like(sq)
    inv[live] = 1.0 / np.sqrt(sq[live])
    c = g * inv[:, None] * inv[None, :]
    np.fill_diagonal(c, live.astype(float))  # exactly 1 for live neurons
    return c, live


def _direct_setup(a: ArrayLike, b: ArrayLike, tol: float, dead_tol: float) -> tuple[Distances, np.ndarray, int]:
    """Distances, live mask and n_a of the direct form for layers a and b."""
    _check_tols(tol, dead_tol)
    a, b = _check_pair(a, b)
    z, live = _normalised_rows(np.concatenate([a, b]), dead_tol)
    return _direct_distances(z, tol), live, a.shape[0]


def _gram_setup(gram: ArrayLike, n_a: int, tol: float, dead_tol: float) -> tuple[Distances, np.ndarray, int]:
    """Distances, live mask and n_a of the Gram form."""
    _check_tols(tol, dead_tol)
    c, live = _normalised_gram(_check_gram(gram, n_a), dead_tol)
    return _gram_distances(c, tol), live, int(n_a)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: the maximum match
# ---------------------------------------------------------------------------------------------

def _algorithm1(distances: Distances, xs: np.ndarray, ys: np.ndarray, eps: float,
                tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximum match inside (xs, ys) (stacked indices): delete neurons farther than eps from the other span, repeat."""
    while True:
        changed = False
        if xs.size:
            keep = distances(xs, ys) <= eps + tol
            if not keep.all():
                xs, changed = xs[keep], True
        if ys.size:
            keep = distances(ys, xs) <= eps + tol
            if not keep.all():
                ys, changed = ys[keep], True
        if not changed:
            return xs, ys


def _start(live: np.ndarray, n_a: int) -> tuple[np.ndarray, np.ndarray]:
    """All live neurons of each side, in stacked indices."""
    idx = np.flatnonzero(live)
    return idx[idx < n_a], idx[idx >= n_a]


def _split(xs: np.ndarray, ys: np.ndarray, n_a: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacked indices -> (sorted indices into a, sorted indices into b)."""
    return np.sort(xs).astype(np.int64), np.sort(ys - n_a).astype(np.int64)


def _maximal_eps(distances: Distances, live: np.ndarray, n_a: int) -> float:
    """Largest relative distance of a live neuron to the other side's full live span (0 with no live neurons)."""
    xs, ys = _start(live, n_a)
    if xs.size == 0 and ys.size == 0:
        return 0.0
    parts = [distances(xs, ys) if xs.size else np.zeros(0), distances(ys, xs) if ys.size else np.zeros(0)]
    return float(np.concatenate(parts).max())


def _is_match(distances: Distances, live: np.ndarray, xs: np.ndarray, ys: np.ndarray, eps: float, tol: float) -> bool:
    """Whether (xs, ys) (stacked indices, all live) satisfies both eps-conditions."""
    if not (live[xs].all() and live[ys].all()):
        return False
    return bool((distances(xs, ys) <= eps + tol).all() and (distances(ys, xs) <= eps + tol).all())


def _stacked(idx_a: Sequence[int], idx_b: Sequence[int], n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked stacked indices of a subset given as indices into a and into b."""
    xs, ys = np.asarray(idx_a, dtype=np.int64).ravel(), np.asarray(idx_b, dtype=np.int64).ravel()
    for idx, n, name in ((xs, n_a, "idx_a"), (ys, n_b, "idx_b")):
        if idx.size and (idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size):
            raise ValueError(f"{name} must hold distinct neuron indices in [0, {n}); got {idx.tolist()}")
    return xs, ys + n_a


# ---------------------------------------------------------------------------------------------
# Algorithm 2: simple matches
# ---------------------------------------------------------------------------------------------

def _simple_match(distances: Distances, live: np.ndarray, n_a: int, v: int, eps: float, tol: float,
                  order: Sequence[int] | None, maximum: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 2 for stacked neuron v, in stacked indices; `maximum` is the maximum match if already known."""
    n = live.size
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
        raise ValueError(f"v must be a stacked neuron index in [0, {n}) (a's neuron i is i, b's neuron j is "
                         f"n_a + j = {n_a} + j); got {v!r}")
    xs, ys = maximum if maximum is not None else _algorithm1(distances, *_start(live, n_a), eps, tol)
    if v not in xs and v not in ys:
        raise ValueError(f"neuron v={v} is not in the maximum {eps}-match (it is dead or too far from the other "
                         f"layer's span), so it has no simple match; pick v from maximum_match")
    order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64).ravel()
    if order.size and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"order must hold stacked neuron indices in [0, {n})")
    for u in order:
        if u == v or (u not in xs and u not in ys):
            continue
        tx, ty = _algorithm1(distances, xs[xs != u], ys[ys != u], eps, tol)
        if v in tx or v in ty:  # v survives without u: keep the deletion (and what fell out with it)
            xs, ys = tx, ty
    return xs, ys


# ---------------------------------------------------------------------------------------------
# The public API: a pair of layers
# ---------------------------------------------------------------------------------------------

class LayerPair:
    """Two layers' neurons ready for Wang et al.'s matches, from activations (direct form) or a stacked Gram.

    `LayerPair.from_activations(a, b)` takes two (neurons, samples) matrices and measures relative
    distances by projection (the authors' least squares): the form to use when the activations are
    at hand, and the tests' oracle. `LayerPair.from_gram(gram, n_a)` takes the stacked Gram of both
    layers' neurons, e.g. `NeuronMoments.gram()` streamed over a dataset: the form for whole
    networks. Both give the same matches (tested). Validation and normalisation happen once, so a
    pair answers many questions (scores at several eps, the eps for half the neurons, simple
    matches) without repeating them.
    """

    def __init__(self, distances: Distances, live: np.ndarray, n_a: int, tol: float):
        self._distances, self.live, self.n_a, self.tol = distances, live, int(n_a), tol
        self.n_b = live.size - self.n_a

    @classmethod
    def from_activations(cls, a: ArrayLike, b: ArrayLike, *, tol: float = TOL,
                         dead_tol: float = DEAD_TOL) -> "LayerPair":
        """Layers a and b as (neurons, samples) matrices over the same samples (direct form)."""
        return cls(*_direct_setup(a, b, tol, dead_tol), tol)

    @classmethod
    def from_gram(cls, gram: ArrayLike, n_a: int, *, tol: float = TOL, dead_tol: float = DEAD_TOL) -> "LayerPair":
        """The stacked Gram [a; b][a; b]^T whose first n_a rows are layer a's neurons (Gram form)."""
        return cls(*_gram_setup(gram, n_a, tol, dead_tol), tol)

    def _maximum(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        return _algorithm1(self._distances, *_start(self.live, self.n_a), eps, self.tol)

    def maximum_match(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """The maximum eps-match: (sorted indices into a, sorted indices into b)."""
        return _split(*self._maximum(_check_eps(eps)), self.n_a)

    def score(self, eps: float) -> float:
        """(|X*| + |Y*|) / (|Xbar| + |Ybar|) of the maximum eps-match; dead neurons count as unmatched."""
        return self.scores([eps])[0]

    def scores(self, eps_values: Sequence[float]) -> np.ndarray:
        """The score at each eps of `eps_values`: shape (len(eps_values),)."""
        eps_values = [_check_eps(e) for e in eps_values]
        sizes = [sum(part.size for part in self._maximum(e)) for e in eps_values]
        return np.array(sizes, dtype=float) / self.live.size

    def maximal_eps(self) -> float:
        """The authors' "maximal eps": from this eps on every live neuron is in the maximum match."""
        return _maximal_eps(self._distances, self.live, self.n_a)

    def minimal_eps(self, min_size: int, precision: float = 1e-4) -> float:
        """Smallest eps (to `precision`, by bisection) whose maximum match has >= min_size neurons on each side."""
        xs, ys = _start(self.live, self.n_a)
        if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or not 1 <= min_size <= min(
                xs.size, ys.size):
            raise ValueError(f"min_size must be an integer in [1, {min(xs.size, ys.size)}] (the live neurons of the "
                             f"smaller side); got {min_size!r}")
        if not precision > 0:
            raise ValueError(f"precision must be > 0, e.g. 1e-4; got {precision!r}")
        low, high = 0.0, self.maximal_eps()  # at `high` everything live matches
        while high - low > precision:
            mid = (low + high) / 2
            mx, my = _algorithm1(self._distances, xs, ys, mid, self.tol)
            if min(mx.size, my.size) >= min_size:
                high, xs, ys = mid, mx, my  # the match at a smaller eps lies inside this one
            else:
                low = mid
        return high

    def eps_for_fraction(self, fraction: float = 0.5, precision: float = 1e-3) -> float:
        """Smallest eps whose maximum match holds `fraction` of the smaller side's live neurons on each side. NaN when
        a side has no live neuron.

        A continuous companion of the score: where every layer's match is empty at the paper's eps,
        this still says how far apart the two layers' neuron subspaces are.
        """
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], e.g. 0.5; got {fraction!r}")
        smaller = int(min(self.live[:self.n_a].sum(), self.live[self.n_a:].sum()))
        if smaller == 0:
            return float("nan")
        return self.minimal_eps(max(1, math.ceil(fraction * smaller)), precision)

    def is_match(self, idx_a: Sequence[int], idx_b: Sequence[int], eps: float) -> bool:
        """Whether neurons idx_a of a and idx_b of b form an eps-match of live neurons."""
        eps = _check_eps(eps)
        return _is_match(self._distances, self.live, *_stacked(idx_a, idx_b, self.n_a, self.n_b), eps, self.tol)

    def simple_match(self, v: int, eps: float, order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A v-minimal eps-match (Algorithm 2) for stacked neuron v (a's i is i, b's j is n_a + j): (idx_a, idx_b)."""
        eps = _check_eps(eps)
        return _split(*_simple_match(self._distances, self.live, self.n_a, v, eps, self.tol, order), self.n_a)

    def simple_match_sizes(self, eps: float, *, neurons: Sequence[int] | None = None,
                           max_neurons: int | None = None, seed: int = 0) -> dict:
        """Simple-match sizes of neurons of the maximum match: {"neurons", "sizes", "sizes_a", "sizes_b"}.

        `neurons` (stacked indices) defaults to every neuron of the maximum match; `max_neurons` keeps a
        random subset of that many (seeded), since each neuron costs O(n) maximum-match calls.
        """
        eps = _check_eps(eps)
        maximum = self._maximum(eps)
        chosen = np.concatenate(maximum) if neurons is None else np.asarray(neurons, dtype=np.int64).ravel()
        if max_neurons is not None:
            if isinstance(max_neurons, bool) or not isinstance(max_neurons, (int, np.integer)) or max_neurons < 1:
                raise ValueError(f"max_neurons must be a positive integer or None; got {max_neurons!r}")
            if chosen.size > max_neurons:
                chosen = np.random.default_rng(seed).choice(chosen, max_neurons, replace=False)
        chosen = np.sort(chosen)
        sizes_a, sizes_b = np.zeros(chosen.size, dtype=np.int64), np.zeros(chosen.size, dtype=np.int64)
        for k, v in enumerate(chosen):
            xs, ys = _simple_match(self._distances, self.live, self.n_a, int(v), eps, self.tol, None, maximum)
            sizes_a[k], sizes_b[k] = xs.size, ys.size
        return {"neurons": chosen, "sizes": sizes_a + sizes_b, "sizes_a": sizes_a, "sizes_b": sizes_b}


# ---------------------------------------------------------------------------------------------
# Sampled coordinates (the authors' protocol for conv layers)
# ---------------------------------------------------------------------------------------------

def _positions(acts_a: ArrayLike, acts_b: ArrayLike) -> tuple[int, int]:
    """(examples N, positions per example P) shared by two (N, C, ...) outputs, or a ValueError."""
    sa, sb = tuple(np.shape(acts_a)), tuple(np.shape(acts_b))
    if len(sa) < 2 or len(sb) < 2:
        raise ValueError(f"acts_a and acts_b must be network outputs (N, C) or (N, C, ...); got shapes {sa}, {sb}")
    if sa[0] != sb[0] or sa[2:] != sb[2:]:
        raise ValueError(f"acts_a {sa} and acts_b {sb} must share the examples and the spatial shape (only the "
                         f"channel count may differ); compare the same layer of both networks on the same inputs")
    return sa[0], math.prod(sa[2:])


def _gather(acts: ArrayLike, coords: np.ndarray, positions: int, name: str) -> np.ndarray:
    """float64 (C, len(coords)) of an (N, C, ...) output at flat coordinates e*P + p, without a full copy."""
    shape = tuple(np.shape(acts))
    if isinstance(acts, torch.Tensor):
        flat = acts.detach().reshape(shape[0], shape[1], positions)
        e, p = torch.as_tensor(coords // positions, device=acts.device), torch.as_tensor(coords % positions,
                                                                                         device=acts.device)
        out = _as_float64(flat[e, :, p], name)  # advanced indices around a slice: shape (k, C)
    else:
        out = _as_float64(np.asarray(acts).reshape(shape[0], shape[1], positions)[coords // positions, :,
                                                                                  coords % positions], name)
    return out.T


# ---------------------------------------------------------------------------------------------
# Streaming second moments
# ---------------------------------------------------------------------------------------------

def _neuron_major(acts: torch.Tensor, name: str) -> torch.Tensor:
    """(N, C, ...) tensor -> (C, N * positions), column e*P + p."""
    if not isinstance(acts, torch.Tensor):
        acts = torch.as_tensor(np.asarray(acts))
    if acts.dim() < 2:
        raise ValueError(f"{name} must be a network output (N, C) or (N, C, ...); got shape {tuple(acts.shape)}")
    if acts.is_complex() or acts.dtype == torch.bool:
        raise ValueError(f"{name}: expected real-valued activations, got dtype {acts.dtype}")
    return acts.detach().reshape(acts.shape[0], acts.shape[1], -1).transpose(0, 1).reshape(acts.shape[1], -1)


class NeuronMoments:
    """Streaming stacked Gram Z Z^T (float64) of two layers' neurons, Z = [z_a; z_b], over batches.

    `update(acts_a, acts_b)` takes one batch of both layers' outputs, (batch, C, H, W) or (batch, C),
    for the same inputs; each channel's activation vector runs over examples x positions. The Gram
    of all batches equals that of the concatenated data, so LayerPair.from_gram(moments.gram(), n_a)
    gives the exact maximum match over all examples and positions. `dtype` is the precision of the
    per-batch products (float64 by default; float32 runs with TF32 off); sums are always float64.
    """

    def __init__(self, dtype: torch.dtype = torch.float64):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
        self.dtype = dtype
        self.n_a: int | None = None
        self.n_b: int | None = None
        self.num_samples = 0
        self._gram: torch.Tensor | None = None

    def _check_channels(self, n_a: int, n_b: int) -> None:
        """The channel counts must stay the same across batches."""
        if self.n_a is None:
            self.n_a, self.n_b = n_a, n_b
        elif (n_a, n_b) != (self.n_a, self.n_b):
            raise ValueError(f"this batch has {n_a} + {n_b} neurons but earlier ones had {self.n_a} + {self.n_b}; "
                             f"every batch must come from the same two layers")

    def _add(self, z: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
        """gram + z z^T in float64 (out of place, so it works in and out of inference mode); checks finiteness."""
        z = z.to(self.dtype)
        with no_tf32():
            product = (z @ z.T).to(torch.float64)
        if not bool(torch.isfinite(product).all()):
            raise ValueError("this batch's activations hold NaN or inf (or overflow the product precision); "
                             "a subspace match of them would be meaningless")
        return product if gram is None else gram + product.to(gram.device)

    def update_matrices(self, z_a: torch.Tensor, z_b: torch.Tensor) -> None:
        """Add one batch given neuron-major (C_a, d) and (C_b, d) activation matrices over the same d samples."""
        if z_a.dim() != 2 or z_b.dim() != 2 or z_a.shape[1] != z_b.shape[1]:
            raise ValueError(f"expected (C_a, d) and (C_b, d) matrices over the same samples; got shapes "
                             f"{tuple(z_a.shape)} and {tuple(z_b.shape)}")
        self._check_channels(z_a.shape[0], z_b.shape[0])
        self._gram = self._add(torch.cat([z_a.to(z_b.device, self.dtype), z_b.to(self.dtype)]), self._gram)
        self.num_samples += z_a.shape[1]

    def update(self, acts_a: torch.Tensor, acts_b: torch.Tensor) -> None:
        """Add one batch of both layers' outputs (batch, C, ...) for the same inputs."""
        _positions(acts_a, acts_b)
        self.update_matrices(_neuron_major(acts_a, "acts_a"), _neuron_major(acts_b, "acts_b"))

    def gram(self) -> np.ndarray:
        """The (n_a + n_b, n_a + n_b) float64 Gram accumulated so far (exactly symmetric)."""
        if self._gram is None:
            raise ValueError("no batches were added; call update() first")
        g = self._gram.cpu().numpy()
        return (g + g.T) / 2


class SampledNeuronMoments(NeuronMoments):
    """One stacked Gram per draw of `n_samples` shared (example, position) coordinates, streamed over batches.

    Batches must arrive in a fixed order and cover exactly `num_examples` examples; draw d uses the
    coordinates np.random.default_rng(seed).choice(num_examples * P, k, replace=False) of the d-th
    call, with k = min(n_samples, num_examples * P) (a layer with fewer coordinates than n_samples
    uses all of them, like the paper's dense layers).
    """

    def __init__(self, num_examples: int, n_samples: int = PAPER_SAMPLES, draws: int = PAPER_DRAWS,
                 seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__(dtype)
        for value, name in ((num_examples, "num_examples"), (n_samples, "n_samples"), (draws, "draws")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.num_examples, self.n_samples, self.draws, self.seed = num_examples, n_samples, draws, seed
        self.examples_seen = 0
        self.positions: int | None = None
        self._coords: list[np.ndarray] = []
        self._grams: list[torch.Tensor | None] = [None] * draws

    def _draw(self, positions: int) -> None:
        """Draw every draw's coordinates once the positions per example are known (first batch)."""
        total = self.num_examples * positions
        rng = np.random.default_rng(self.seed)
        self.positions = positions
        self.num_samples = min(self.n_samples, total)  # a small layer: all coordinates, in every draw
        self._coords = [np.sort(rng.choice(total, self.num_samples, replace=False)) for _ in range(self.draws)]

    def update_matrices(self, z_a: torch.Tensor, z_b: torch.Tensor) -> None:
        """Not available: coordinates are (example, position) pairs, so pass the outputs to update()."""
        raise ValueError("SampledNeuronMoments draws (example, position) coordinates: pass the (batch, C, ...) "
                         "outputs to update(), not neuron-major matrices")

    def update(self, acts_a: torch.Tensor, acts_b: torch.Tensor) -> None:
        """Add one batch (the next examples in order): each draw gets its coordinates that fall in this batch."""
        batch, positions = _positions(acts_a, acts_b)
        if self.positions is None:
            self._draw(positions)
        elif positions != self.positions:
            raise ValueError(f"this batch has {positions} positions per example but earlier ones had {self.positions}")
        if self.examples_seen + batch > self.num_examples:
            raise ValueError(f"got {self.examples_seen + batch} examples but num_examples={self.num_examples}")
        self._check_channels(acts_a.shape[1], acts_b.shape[1])
        low, high = self.examples_seen * positions, (self.examples_seen + batch) * positions
        for d, coords in enumerate(self._coords):
            local = coords[np.searchsorted(coords, low):np.searchsorted(coords, high)] - low
            if local.size:
                z = np.concatenate([_gather(acts_a, local, positions, "acts_a"),
                                    _gather(acts_b, local, positions, "acts_b")])
                device = acts_b.device if isinstance(acts_b, torch.Tensor) else torch.device("cpu")
                self._grams[d] = self._add(torch.from_numpy(z).to(device), self._grams[d])
        self.examples_seen += batch

    def gram(self) -> np.ndarray:
        """(draws, n, n) float64 Grams, one per draw of coordinates; all num_examples must have been seen."""
        if self.examples_seen != self.num_examples:
            raise ValueError(f"saw {self.examples_seen} of num_examples={self.num_examples} examples; feed all of "
                             f"them (in a fixed order) before reading the Grams")
        n = self.n_a + self.n_b
        out = np.stack([np.zeros((n, n)) if g is None else g.cpu().numpy() for g in self._grams])
        return (out + out.transpose(0, 2, 1)) / 2


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------

def relu_layer_names(model: nn.Module) -> list[str]:
    """Names of model.layers() whose module is an nn.ReLU: the post-ReLU layers the paper matches."""
    return [layer.name for layer in model.layers() if isinstance(layer.module, nn.ReLU)]


def model_neuron_moments(model_a: nn.Module, model_b: nn.Module, data: torch.Tensor | Iterable,
                         layers: Sequence | None = None, *, batch_size: int = 64, max_batches: int | None = None,
                         n_samples: int | None = None, draws: int = PAPER_DRAWS, seed: int = 0,
                         num_examples: int | None = None, dtype: torch.dtype = torch.float64) -> dict:
    """Stacked neuron Grams of the same layers of two models: {"names", "n_a", "n_b", "num_samples", "grams"}.

    `data` is an image tensor (cut into `batch_size` batches) or a loader in a fixed order. `layers`
    defaults to model_a.layers() (our CifarResNet; both models must have the same names; see
    relu_layer_names for the paper's post-ReLU layers). Both run in eval mode under inference mode,
    each hook must fire once per forward, and training flags are restored. Per batch, model a's
    layer outputs are kept (a copy, on its device) until model b's hook for that layer reduces both
    to the (C_a + C_b)^2 moment, so memory peaks at one batch of model a's hooked outputs.

    n_samples=None gives the exact Gram over all examples x positions per layer, shape (n, n);
    otherwise SampledNeuronMoments (the paper's sampled protocol) gives (draws, n, n) per layer
    ("num_samples" says how many coordinates each layer's draws have), and `num_examples` (default:
    the length of the tensor, or of the loader's dataset) must be what `data` yields.
    """
    if n_samples is not None and num_examples is None:
        if isinstance(data, torch.Tensor):
            num_examples = data.shape[0] if max_batches is None else min(data.shape[0], max_batches * batch_size)
        elif max_batches is None and hasattr(data, "dataset"):
            num_examples = len(data.dataset)
        else:
            raise ValueError("with n_samples, pass num_examples (the examples that data yields) so that the "
                             "coordinates can be drawn before the forward passes")
    stash: list[torch.Tensor | None] = []
    moments: list[NeuronMoments] = []

    def keep_a(index: int, output: torch.Tensor) -> None:
        stash[index] = output.detach().clone()  # a clone: a later in-place op cannot change it

    def reduce_b(index: int, output: torch.Tensor) -> None:
        moments[index].update(stash[index], output)
        stash[index] = None

    with Capture(model_a, layers, keep_a) as capture_a, Capture(model_b, layers, reduce_b) as capture_b:
        if capture_a.names != capture_b.names:
            first = next(((a, b) for a, b in zip(capture_a.names, capture_b.names) if a != b), None)
            differ = (f"'{first[0]}' vs '{first[1]}'" if first else
                      f"{len(capture_a.names)} vs {len(capture_b.names)} layers")
            raise ValueError(f"model_a and model_b have different layers ({differ}); "
                             f"pass layers=[module names present in both]")
        stash[:] = [None] * len(capture_a.names)
        moments[:] = [NeuronMoments(dtype) if n_samples is None else
                      SampledNeuronMoments(num_examples, n_samples, draws, seed, dtype) for _ in capture_a.names]
        count = 0
        for images in batches(data, batch_size, max_batches):
            capture_a(images)
            capture_b(images)
            count += 1
        if count == 0:
            raise ValueError("data yielded no batches")
        names = capture_a.names
    return {"names": names, "n_a": [m.n_a for m in moments], "n_b": [m.n_b for m in moments],
            "num_samples": [m.num_samples for m in moments], "grams": [m.gram() for m in moments]}


def moment_match_scores(moments: dict, eps_values: Sequence[float] = PAPER_EPS, *, tol: float = TOL,
                        dead_tol: float = DEAD_TOL) -> np.ndarray:
    """(layers, len(eps)) match scores from model_neuron_moments' result; sampled Grams are averaged over draws."""
    rows = []
    for gram, n_a in zip(moments["grams"], moments["n_a"]):
        stack = gram[None] if np.ndim(gram) == 2 else gram
        rows.append(np.mean([LayerPair.from_gram(g, n_a, tol=tol, dead_tol=dead_tol).scores(eps_values) for g in stack],
                            axis=0))
    return np.array(rows)
