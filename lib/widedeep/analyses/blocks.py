"""Block structure in a layer-by-layer CKA matrix (Nguyen, Raghu & Kornblith 2021).

Layer: analyses (plain functions over CKA matrices; no widedeep imports).

Definition (the one this book uses). Given a CKA matrix `cka` over all L hooked layers of one model
and each layer's kind ("input", "stem", "inside", "stream", "head"), only the *analysed* layers take
part: those whose kind is in `analysed_kinds` (by default the residual-stream outputs, "stream").
Call them a_0 < a_1 < ... < a_{m-1} (indices into the full matrix) and let S be `cka` restricted to
them, symmetrised as (S + S^T) / 2 (CKA within one model is symmetric up to rounding). Non-analysed
layers never enter any statistic, whatever their values.

A *run* is a contiguous range a_p..a_q of k = q - p + 1 consecutive analysed layers with
min_layers <= k <= m - 1: it must leave at least one analysed layer outside, because a "block"
covering the whole network has nothing to stand out from. For a run,

    mean_cka    = mean of S[i, j] over the k(k-1)/2 unordered pairs i != j inside the run,
    layer_cka_i = mean of S[i, j] over the other k - 1 layers j of the run (for each layer i in it),
    outside_cka = mean of S[i, j] over the k(m-k) pairs with i inside and j outside the run,
    contrast    = mean_cka - outside_cka,
    mean_pc1    = mean of pc1_share[a_i] over the run's analysed layers (if shares are given).

A run is a *block structure* when

    (1) layer_cka_i > threshold for every layer i of the run
                                            (nearly identical representations: a bright square in
                                             which every layer belongs; this implies mean_cka >
                                             threshold, and stops a long run from absorbing
                                             dissimilar layers at its edges on the strength of
                                             its bright middle),
    (2) contrast >= min_contrast            (clearly more alike than the layers outside), and
    (3) pc1_share[a_i] >= min_pc1 for every layer of the run
                                            (only if min_pc1 is given: each layer dominated by one
                                             principal component, as the paper found inside its
                                             blocks).

The detector reports the longest block structure; among equally long ones the higher mean_cka
(means within 1e-12 count as equal, so floating-point noise cannot decide), then the earlier start.
It reports None when no run qualifies, including when there are fewer than min_layers + 1 analysed
layers. The reported start/end are full-matrix indices of the run's first and last analysed layers
(non-analysed layers between them are spanned but never counted). Condition (3) exists because on
small-data runs conditions (1)-(2) alone also fire on ordinary stage-wise similarity, while the
paper's blocks are dominated by their first principal component.

Continuous measures (`block_measures`). Presence is a yes/no that one seed can flip, so every model
also gets two numbers that move smoothly: the **block size**, the largest block's share of the
analysed layers (its `fraction`; 0 when the detector finds none), and the **maximum first-PC share**
over the analysed layers (the paper's mechanism, measured whether or not a block qualifies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

TIE_TOL = 1e-12  # prefix sums round differently at different positions; smaller gaps are ties


@dataclass(frozen=True)
class Block:
    """One detected block structure and the statistics that made it qualify."""

    start: int              # index of the block's first layer in the full matrix (all layers)
    end: int                # index of its last layer, inclusive, in the full matrix
    n_layers: int           # analysed layers inside the block
    fraction: float         # n_layers / number of analysed layers in the network
    mean_cka: float         # mean off-diagonal CKA between analysed layers inside (unordered pairs)
    outside_cka: float      # mean CKA between analysed layers inside and analysed layers outside
    contrast: float         # mean_cka - outside_cka
    mean_pc1: float | None  # mean first-PC share of the analysed layers inside (None without shares)

    def as_dict(self) -> dict:
        """JSON-ready dict: plain Python int/float/None values, keys = field names."""
        out = {}
        for key, value in asdict(self).items():
            if value is None:
                out[key] = None
            elif key in ("start", "end", "n_layers"):
                out[key] = int(value)
            else:
                out[key] = float(value)
        return out


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _kind_set(analysed_kinds: Sequence[str] | str) -> set[str]:
    """analysed_kinds as a set; a bare string means that one kind (not its characters)."""
    if isinstance(analysed_kinds, str):
        return {analysed_kinds}
    kinds = set(analysed_kinds)
    if not kinds:
        raise ValueError("analysed_kinds is empty: name at least one layer kind to analyse, e.g. ('stream',)")
    return kinds


def analysed_indices(kinds: Sequence[str], analysed_kinds: Sequence[str] = ("stream",)) -> np.ndarray:
    """Indices of the layers whose kind is analysed, in order; ValueError if there are none."""
    if isinstance(kinds, str):
        raise ValueError(f"kinds must be a sequence of layer kinds (one per layer), got the string {kinds!r}")
    wanted = _kind_set(analysed_kinds)
    idx = np.array([i for i, kind in enumerate(kinds) if kind in wanted], dtype=np.int64)
    if idx.size == 0:
        raise ValueError(
            f"no layer has an analysed kind {sorted(wanted)}; the kinds present are {sorted(set(kinds))}: "
            f"pass analysed_kinds= naming one of them")
    return idx


def _layer_vector(values: np.ndarray, n: int, name: str, idx: np.ndarray) -> np.ndarray:
    """`values` as a float vector of length n, finite on the analysed layers `idx`."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name}: expected one value per layer, a vector of length {n} (= len(kinds)), "
                         f"got shape {v.shape}")
    bad = idx[~np.isfinite(v[idx])]
    if bad.size:
        raise ValueError(f"{name}: NaN or inf at analysed layer index {int(bad[0])} "
                         f"({bad.size} analysed layer(s) affected); fix or recompute that layer")
    return v


def _analysed_cka(cka: np.ndarray, kinds: Sequence[str],
                  analysed_kinds: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(analysed indices, symmetrised CKA among them) after checking shape and finiteness."""
    m_full = np.asarray(cka, dtype=np.float64)
    if m_full.ndim != 2 or m_full.shape[0] != m_full.shape[1]:
        raise ValueError(f"cka: expected a square 2-D (L, L) matrix, got shape {m_full.shape}")
    if m_full.shape[0] != len(kinds):
        raise ValueError(f"cka is {m_full.shape[0]} x {m_full.shape[1]} but kinds lists {len(kinds)} layers; "
                         f"pass one kind per row of the matrix")
    idx = analysed_indices(kinds, analysed_kinds)
    sub = m_full[np.ix_(idx, idx)]
    finite = np.isfinite(sub)
    if not finite.all():
        # name a full-matrix layer index: that is what the caller can look up
        row, col = np.argwhere(~finite)[0]
        r, c = int(idx[row]), int(idx[col])
        raise ValueError(f"cka[{r}, {c}] is NaN or inf (CKA between analysed layer indices {r} and {c}); "
                         f"recompute those layers' CKA or leave them out of analysed_kinds")
    return idx, (sub + sub.T) / 2.0


def _check_params(threshold: float, min_contrast: float, min_layers: int, min_pc1: float | None,
                  pc1_share: np.ndarray | None) -> None:
    """Raise on parameters for which the definition is meaningless."""
    if not (isinstance(threshold, (int, float, np.floating, np.integer)) and 0.0 < threshold <= 1.0):
        raise ValueError(f"threshold={threshold!r} is outside (0, 1]: CKA lies in [0, 1], pick e.g. 0.9")
    if not math.isfinite(min_contrast):
        raise ValueError(f"min_contrast={min_contrast!r} must be a finite number, e.g. 0.2")
    if isinstance(min_layers, bool) or not isinstance(min_layers, (int, np.integer)) or min_layers < 2:
        raise ValueError(f"min_layers={min_layers!r}: a block needs an integer of at least 2 layers "
                         f"(one layer has no off-diagonal CKA); the default is 3")
    if min_pc1 is not None:
        if pc1_share is None:
            raise ValueError("min_pc1 was given without pc1_share: pass pc1_share (first-PC share of "
                             "every layer, length len(kinds)) or drop min_pc1")
        if not (0.0 <= min_pc1 <= 1.0):
            raise ValueError(f"min_pc1={min_pc1!r} is outside [0, 1]: it is a share of variance")


# ---------------------------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------------------------

def run_statistics(sym: np.ndarray, min_layers: int) -> dict[str, np.ndarray]:
    """Every admissible run (p, q) of the symmetric m x m matrix with its mean_cka and outside_cka."""
    m = sym.shape[0]
    p, q = np.triu_indices(m)
    k = q - p + 1
    keep = (k >= min_layers) & (k <= m - 1)  # a run must leave an analysed layer outside
    p, q, k = p[keep], q[keep], k[keep]
    # 2-D prefix sums make each run's square, strip and diagonal sums O(1)
    square = np.zeros((m + 1, m + 1))
    square[1:, 1:] = sym.cumsum(0).cumsum(1)
    rows = np.concatenate([[0.0], sym.sum(1).cumsum()])
    diag = np.concatenate([[0.0], np.diag(sym).cumsum()])
    inside = square[q + 1, q + 1] - square[p, q + 1] - square[q + 1, p] + square[p, p]
    strip = rows[q + 1] - rows[p]  # rows of the run, all columns
    mean_cka = (inside - (diag[q + 1] - diag[p])) / (k * (k - 1))
    outside_cka = (strip - inside) / (k * (m - k))
    return {"p": p, "q": q, "k": k, "mean_cka": mean_cka, "outside_cka": outside_cka,
            "min_layer_cka": _min_layer_cka(sym, p, q)}


def _min_layer_cka(sym: np.ndarray, p: np.ndarray, q: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each run p..q, the smallest over its layers i of the mean CKA of i with the run's other layers."""
    m = sym.shape[0]
    row_prefix = np.concatenate([np.zeros((m, 1)), sym.cumsum(1)], axis=1)  # row_prefix[i, j] = sum_{l<j} S[i, l]
    layers = np.arange(m)
    out = np.empty(p.size)
    for start in range(0, p.size, chunk):  # (runs, m) at a time keeps memory bounded on long layer lists
        pp, qq = p[start:start + chunk, None], q[start:start + chunk, None]
        sums = row_prefix[layers, qq + 1] - row_prefix[layers, pp] - np.diag(sym)[layers]
        per_layer = np.where((layers >= pp) & (layers <= qq), sums / (qq - pp), np.inf)
        out[start:start + chunk] = per_layer.min(axis=1)
    return out


def _window_min(values: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """min(values[p..q]) for each run."""
    m = values.size
    table = np.full((m, m), np.inf)
    for first in range(m):
        table[first, first:] = np.minimum.accumulate(values[first:])
    return table[p, q]


def block_structure_span(cka: np.ndarray, kinds: Sequence[str], *, threshold: float = 0.9,
                         min_contrast: float = 0.2, min_layers: int = 3,
                         pc1_share: np.ndarray | None = None, min_pc1: float | None = None,
                         analysed_kinds: Sequence[str] = ("stream",)) -> Block | None:
    """The longest block structure (module docstring) in `cka`, or None; the matrix is symmetrised first."""
    _check_params(threshold, min_contrast, min_layers, min_pc1, pc1_share)
    idx, sym = _analysed_cka(cka, kinds, analysed_kinds)
    m = idx.size
    shares = None
    if pc1_share is not None:
        shares = _layer_vector(pc1_share, len(kinds), "pc1_share", idx)[idx]
    stats = run_statistics(sym, min_layers)
    p, q, k = stats["p"], stats["q"], stats["k"]
    mean_cka, outside_cka = stats["mean_cka"], stats["outside_cka"]
    contrast = mean_cka - outside_cka
    ok = (stats["min_layer_cka"] > threshold) & (contrast >= min_contrast)
    mean_pc1 = None
    if shares is not None:
        prefix = np.concatenate([[0.0], shares.cumsum()])
        mean_pc1 = (prefix[q + 1] - prefix[p]) / k
        if min_pc1 is not None:
            ok &= _window_min(shares, p, q) >= min_pc1
    if not ok.any():
        return None
    cand = np.flatnonzero(ok)
    cand = cand[k[cand] == k[cand].max()]                             # longest
    cand = cand[mean_cka[cand] >= mean_cka[cand].max() - TIE_TOL]     # then brightest
    best = cand[np.argmin(p[cand])]                                   # then earliest
    return Block(
        start=int(idx[p[best]]), end=int(idx[q[best]]), n_layers=int(k[best]),
        fraction=float(k[best] / m), mean_cka=float(mean_cka[best]),
        outside_cka=float(outside_cka[best]), contrast=float(contrast[best]),
        mean_pc1=None if mean_pc1 is None else float(mean_pc1[best]))


def block_size(block: Block | None) -> float:
    """The continuous block measure: the block's share of the analysed layers, 0.0 without a block."""
    return 0.0 if block is None else float(block.fraction)


def block_measures(cka: np.ndarray, kinds: Sequence[str], pc1_share: np.ndarray, *,
                   analysed_kinds: Sequence[str] = ("stream",), **detector) -> dict[str, float]:
    """Block size (with the detector's settings) and maximum first-PC share over the analysed layers."""
    idx, _ = _analysed_cka(cka, kinds, analysed_kinds)
    shares = _layer_vector(pc1_share, len(kinds), "pc1_share", idx)[idx]
    block = block_structure_span(cka, kinds, pc1_share=pc1_share, analysed_kinds=analysed_kinds, **detector)
    return {"block_size": block_size(block), "max_pc1_share": float(np.nanmax(shares))}


def threshold_sweep(cka: np.ndarray, kinds: Sequence[str], thresholds: Sequence[float],
                    **kwargs) -> list[Block | None]:
    """The detector at each threshold, in order (other keyword arguments passed through)."""
    if "threshold" in kwargs:
        raise ValueError("threshold_sweep: pass the thresholds as `thresholds`, not `threshold=`")
    return [block_structure_span(cka, kinds, threshold=t, **kwargs) for t in thresholds]


def inside_outside(values: np.ndarray, block: Block | None, kinds: Sequence[str],
                   analysed_kinds: Sequence[str] = ("stream",)) -> tuple[float, float]:
    """Mean of a per-layer vector over analysed layers inside the block and outside it ((nan, all) if None)."""
    idx = analysed_indices(kinds, analysed_kinds)
    v = _layer_vector(values, len(kinds), "values", idx)
    if block is None:
        return float("nan"), float(v[idx].mean())
    if not (0 <= block.start <= block.end < len(kinds)):
        raise ValueError(f"block spans layers {block.start}..{block.end} but there are only {len(kinds)} "
                         f"layers: was it detected on a different model?")
    inside = (idx >= block.start) & (idx <= block.end)
    # an empty side (block from another layout) would give a silent NaN mean with a warning
    if not inside.any() or inside.all():
        raise ValueError(f"block {block.start}..{block.end} holds {int(inside.sum())} of the {idx.size} "
                         f"analysed layers; a block must hold some but not all: was it detected on these kinds?")
    return float(v[idx[inside]].mean()), float(v[idx[~inside]].mean())


def span_cka(cka: np.ndarray, block: Block, kinds: Sequence[str],
             analysed_kinds: Sequence[str] = ("stream",)) -> tuple[float, float]:
    """(mean CKA inside, mean CKA to the outside) of `block`'s analysed layers in another matrix of the same model.

    This is how the book re-measures a block after an intervention (e.g. removing the first PC): the
    layers stay those detected before, the numbers come from the new matrix.
    """
    idx, sym = _analysed_cka(cka, kinds, analysed_kinds)
    inside = (idx >= block.start) & (idx <= block.end)
    if inside.sum() < 2 or inside.all():
        raise ValueError(f"block {block.start}..{block.end} holds {int(inside.sum())} of the {idx.size} analysed "
                         f"layers; it needs at least two and not all: was it detected on this model?")
    pairs = sym[np.ix_(inside, inside)]
    k = int(inside.sum())
    mean_in = (pairs.sum() - np.trace(pairs)) / (k * (k - 1))
    return float(mean_in), float(sym[np.ix_(inside, ~inside)].mean())


def breaks(cka_inside: float, cka_outside: float, threshold: float, min_contrast: float,
           contrast_before: float | None = None) -> bool:
    """Whether a block no longer passes the detector's CKA conditions on its own layers (after an intervention),
    and, given the contrast before it, whether its contrast fell: a contrast that rises never counts as broken."""
    contrast = cka_inside - cka_outside
    if contrast_before is not None and not contrast < contrast_before:
        return False
    return not (cka_inside > threshold and contrast >= min_contrast)
