"""The field's own tests of a similarity measure, run on representations of this book's models.

(Below them: the same tests under every lens of `widedeep.measures.lenses` on trained runs, Chapter 9's
record kinds, the block under every lens and its claim; `widedeep.studies.measures` combines them.)

Analyses layer. A *measure* is any function `measure(x, y) -> float` over two (examples x features)
representations of the same examples, larger meaning more similar (e.g. the ones in
`widedeep.measures.similarity`, or linear CKA). The tests ask of a measure, not of a network:

- **layer identification** (Kornblith et al. 2019): for each layer of one seed, is the most similar
  layer of another seed the same layer? The accuracy over layers;
- **calibration** against width and maxima (Groger et al. 2026): a layer's best match among another
  seed's layers, beside the same maximum computed after shuffling the other seed's examples (which
  destroys any correspondence but keeps each layer's width and spectrum). The calibrated score is
  (best - null) / (1 - null), so 0 is what chance gives a layer of that shape and 1 is a perfect match;
- **specificity and sensitivity** (Ding et al. 2021): deleting a layer's top principal components
  changes what the network computes; a good measure falls as the accuracy falls, while another seed
  (same function, different weights) stays high. `remove_top_pcs` makes the perturbed layer and
  `rank_agreement` scores how well a measure's fall tracks the accuracy drops;
- **outlier sensitivity** (Davari et al. 2022): translate a few examples (1-5%) far along one random
  direction, c times the layer's standard deviation; a measure that is robust barely moves, while
  CKA tends to a limit set by that fraction.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats
from threadpoolctl import threadpool_limits

from widedeep import records
from widedeep.analyses import verdicts
from widedeep.measures.lenses import Lens

Measure = Callable[[np.ndarray, np.ndarray], float]


def _features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"a representation must be (examples, features...); got shape {x.shape}")
    return x.reshape(len(x), -1)


def similarity_matrix(measure: Measure, layers_a: Sequence, layers_b: Sequence) -> np.ndarray:
    """The (len(a), len(b)) matrix of measure(a_i, b_j)."""
    return np.array([[measure(a, b) for b in layers_b] for a in layers_a])


def identification_accuracy(matrix: np.ndarray) -> float:
    """The share of rows whose largest entry sits on the diagonal (layer i of A best matches layer i of B)."""
    matrix = np.asarray(matrix, float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"layer identification compares the same layers of two seeds: need a square matrix, "
                         f"got {matrix.shape}")
    return float(np.mean(np.argmax(matrix, axis=1) == np.arange(len(matrix))))


def shuffled_best_match(measure: Measure, layer, others: Sequence, draws: int = 5, seed: int = 0) -> np.ndarray:
    """The best match of `layer` among `others` after shuffling the others' examples, per draw.

    The examples (first axis) are shuffled and the trailing axes kept, so a measure that reads a
    layer's shape (the subspace match's channels) sees the shuffled layer as it saw the original.
    """
    layer = np.asarray(layer)
    _features(layer)  # checks the shape
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for d in range(draws):
        order = rng.permutation(len(layer))
        out[d] = max(measure(layer, np.asarray(o)[order]) for o in others)
    return out


def calibrated_best_match(measure: Measure, layers_a: Sequence, layers_b: Sequence, draws: int = 5,
                          seed: int = 0) -> dict:
    """Per layer of A: best match in B, its shuffled-examples null (mean over draws), and the calibrated score."""
    best = similarity_matrix(measure, layers_a, layers_b).max(axis=1)
    null = np.array([shuffled_best_match(measure, a, layers_b, draws, seed + i).mean()
                     for i, a in enumerate(layers_a)])
    return {"best": best, "null": null, "calibrated": calibrated_score(best, null)}


def calibrated_score(best: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(best - null) / (1 - null): 0 at what chance gives a layer of that shape, 1 at a perfect match (NaN at null 1)."""
    best, null = np.asarray(best, float), np.asarray(null, float)
    return np.where(null < 1, (best - null) / np.where(null < 1, 1 - null, 1), np.nan)


def neighbour_similarity(matrices: Sequence[np.ndarray]) -> float:
    """A measure's mean similarity between consecutive layers (the first off-diagonal) of self-similarity matrices."""
    values = np.concatenate([np.diag(np.asarray(m, float), 1) for m in matrices])
    if values.size == 0:
        raise ValueError("need at least one self-similarity matrix of two or more layers")
    return float(values.mean())


def remove_top_pcs(x, k: int) -> np.ndarray:
    """The representation with its top-k principal components (over these examples) projected out."""
    x = _features(x)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer; got {k!r}")
    mean = x.mean(axis=0)
    xc = x - mean
    if k == 0:
        return x.copy()
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    top = vt[:k]
    return xc - (xc @ top.T) @ top + mean


def translate_outliers(x, fraction: float, scale: float, seed: int = 0) -> np.ndarray:
    """Move a random `fraction` of examples by `scale` x the layer's feature std along one random unit direction."""
    x = _features(x)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1); got {fraction!r}")
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(x))))
    chosen = rng.choice(len(x), count, replace=False)
    direction = rng.normal(size=x.shape[1])
    direction /= np.linalg.norm(direction)
    # The typical spread of an example's distance from the mean, so `scale` reads in the layer's own units.
    spread = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
    moved = x.copy()
    moved[chosen] += scale * spread * direction
    return moved


def rank_agreement(similarity_drops: Sequence[float], accuracy_drops: Sequence[float]) -> float:
    """Spearman correlation between a measure's fall and the accuracy's fall over perturbations (Ding et al.)."""
    a, b = np.asarray(similarity_drops, float), np.asarray(accuracy_drops, float)
    if a.shape != b.shape or a.size < 3:
        raise ValueError("need at least three perturbations with one similarity drop and one accuracy drop each")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def inside_outside_contrast(matrix: np.ndarray, inside: Sequence[bool]) -> float:
    """A measure's mean similarity among a block's layers minus its mean from them to the other layers."""
    matrix, inside = np.asarray(matrix, float), np.asarray(inside, bool)
    if inside.sum() < 2 or (~inside).sum() < 1:
        raise ValueError("a contrast needs >= 2 layers inside the block and >= 1 outside")
    within = matrix[np.ix_(inside, inside)]
    return float(within[~np.eye(len(within), dtype=bool)].mean() - matrix[np.ix_(inside, ~inside)].mean())


def run_contrasts(matrix: np.ndarray, length: int) -> np.ndarray:
    """The inside-outside contrast of every contiguous run of `length` layers (the null for a block of that length)."""
    n = len(matrix)
    if not 2 <= length < n:
        raise ValueError(f"run length must lie in [2, {n - 1}]; got {length}")
    index = np.arange(n)
    return np.array([inside_outside_contrast(matrix, (index >= start) & (index < start + length))
                     for start in range(n - length + 1)])


# ---------------------------------------------------------------------------------------------
# Every measure as a lens (`widedeep.measures.lenses`) on trained runs: Chapter 9's record kinds, the tests
# computed from each layer's summary under a lens, the block under every lens and its claim
# ---------------------------------------------------------------------------------------------

# Chapter 9's record kinds, every lens in one record of a run or a pair: bump one when its numbers would change.
VERSIONS = records.register_kinds({"lenses_self": 1, "lenses_cross": 1, "lenses_calibration": 1,
                                   "lenses_deletion": 1, "lenses_outliers": 1, "accuracy_drops": 1})


def one_blas_thread(function):
    """Run `function` on one BLAS thread: thousands of small SVDs are up to 70x slower when OpenBLAS
    threads compete for two busy cores (measured), and no faster on free ones."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return wrapper


def by_measure(names, step: str):
    """`names` with a progress bar (one tick a measure): each test is minutes per measure at the cpu profile."""
    from tqdm.auto import tqdm
    return tqdm(list(names), desc=step, unit="measure", leave=False)


def sides(lens: Lens, layers: list) -> list:
    """Each layer's summary under the lens (the per-layer work, done once)."""
    return [lens.prepare(x) for x in layers]


def cross_matrix(lens: Lens, layers_a: list, layers_b: list) -> np.ndarray:
    """The lens's (len(a), len(b)) similarity matrix, each layer prepared once."""
    return similarity_matrix(lens.compare, sides(lens, layers_a), sides(lens, layers_b))


def identification(cross: np.ndarray) -> float:
    """Layer identification in both directions (rows of A in B, rows of B in A)."""
    return (identification_accuracy(cross) + identification_accuracy(cross.T)) / 2


def lens_shuffled_best_match(lens: Lens, layer: np.ndarray, sides_b: list, draws: int, seed: int = 0) -> np.ndarray:
    """Per draw: the layer's best match among B's summaries with the examples of one side shuffled.

    It is `shuffled_best_match` (B's examples shuffled) under a lens, computed by shuffling the layer's
    instead: every measure is unchanged when both sides' examples are permuted together, so
    s(x, b[order]) = s(x[order^-1], b), and B's summaries are reused rather than rebuilt per draw.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for d in range(draws):
        inverse = np.argsort(rng.permutation(len(layer)))
        shuffled = lens.prepare(np.asarray(layer)[inverse])
        out[d] = max(lens.compare(shuffled, b) for b in sides_b)
    return out


def calibrated(lens: Lens, layers_a: list, sides_b: list, cross: np.ndarray, draws: int, seed: int = 0) -> dict:
    """Per layer of A: its best match in B (`cross`), the shuffled-examples null of that maximum, and
    the calibrated score (best - null) / (1 - null); means over layers."""
    best = cross.max(axis=1)
    null = np.array([lens_shuffled_best_match(lens, x, sides_b, draws, seed + i).mean()
                     for i, x in enumerate(layers_a)])
    score = calibrated_score(best, null)
    return {"best": float(best.mean()), "null": float(null.mean()), "calibrated": float(np.nanmean(score))}


def deletion_similarities(lens: Lens, layers: dict[str, np.ndarray], ks: list[int]) -> dict[str, list[float]]:
    """Per layer: the lens's similarity between the layer and itself with its top-k PCs deleted, per k."""
    out = {}
    for name, x in layers.items():
        side = lens.prepare(x)
        out[name] = [lens.compare(side, lens.prepare(remove_top_pcs(x, k).reshape(x.shape)))
                     for k in ks]
    return out


def sensitivity(similarities: dict[str, list[float]], drops: dict[str, list[float]], seed_similarity: float) -> dict:
    """Spearman of the lens's fall with the accuracy's fall over every (layer, k); seed vs the costliest deletion."""
    sims = np.concatenate([similarities[n] for n in drops])
    falls = np.concatenate([drops[n] for n in drops])
    costliest = float(sims[np.argmax(falls)])
    return {"rho": rank_agreement(1 - sims, falls), "seed_similarity": seed_similarity,
            "costliest_deletion_similarity": costliest, "specificity_margin": seed_similarity - costliest}


def outlier_changes(lens: Lens, x: np.ndarray, neighbour: np.ndarray, fractions: list[float],
                    scales: list[float]) -> dict:
    """Per (fraction, scale): 1 - s(X, X moved) and |s(X moved, neighbour) - s(X, neighbour)| (Davari et al.)."""
    side, neighbour_side = lens.prepare(x), lens.prepare(neighbour)
    base = lens.compare(side, neighbour_side)
    self_change, neighbour_change = [], []
    for f in fractions:
        rows_self, rows_nb = [], []
        for c in scales:
            moved = lens.prepare(translate_outliers(x, f, c).reshape(x.shape))
            rows_self.append(1 - lens.compare(side, moved))
            rows_nb.append(abs(lens.compare(moved, neighbour_side) - base))
        self_change.append(rows_self)
        neighbour_change.append(rows_nb)
    return {"self_change": self_change, "neighbour_change": neighbour_change,
            "max_self_change": float(np.max(self_change)), "max_neighbour_change": float(np.max(neighbour_change))}


def block_contrast(blocked: dict[str, tuple[np.ndarray, np.ndarray]], free: list[np.ndarray],
                   quantile: float) -> tuple[dict[str, dict], str]:
    """Each blocked model's inside-outside contrast against same-length runs of the block-free matrices.

    `blocked[name] = (self-similarity matrix, inside mask)`. Returns per model the contrast, the
    null's quantile and whether it is seen, and the lens's verdict over the models.
    """
    if not blocked:
        return {}, verdicts.NOT_TESTABLE + ": no seed has a block"
    if not free:
        return {}, verdicts.NOT_TESTABLE + ": no seed without a block to compare with"
    out = {}
    for name, (matrix, inside) in blocked.items():
        length = int(np.sum(inside))
        if length < 2 or length == len(inside) or length >= min(len(m) for m in free):
            continue
        null = np.concatenate([run_contrasts(m, length) for m in free])
        contrast = inside_outside_contrast(matrix, inside)
        threshold = float(np.quantile(null, quantile))
        out[name] = {"contrast": contrast, "null_quantile": threshold, "null_max": float(null.max()),
                     "layers": length, "seen": bool(contrast > threshold)}
    if not out:
        return out, verdicts.NOT_TESTABLE + ": no block spans 2 or more analysed layers with some outside"
    return out, verdicts.share_verdict(sum(e["seen"] for e in out.values()), len(out))["verdict"]


def lens_claim(block_verdicts: dict[str, str], reference: str = "linear CKA") -> tuple[str, list[str], list[str]]:
    """Whether the measures other than `reference` see the block: verdict, the measures that do, those that don't."""
    others = {k: v for k, v in block_verdicts.items() if k != reference}
    judged = {k: v for k, v in others.items() if verdicts.head(v) != verdicts.NOT_TESTABLE}
    seen = [k for k, v in judged.items() if v == verdicts.SHOWN]
    unseen = [k for k in judged if k not in seen]
    if not judged:
        return verdicts.NOT_TESTABLE, seen, unseen
    return verdicts.fraction_verdict(len(seen), len(judged), min_models=1), seen, unseen  # measures, not models


def lens_claim_object(details: dict[str, dict], block_verdicts: dict[str, str],
                      reference: str = "linear CKA") -> dict:
    """Claim 14 (book/protocol.md, Chapter 9) as a verdict object: over the measures other than `reference`
    that could be judged, k of them see the block (each a share claim over the blocked seeds, whose k of n and
    Clopper-Pearson interval are kept per measure); the models are the seed study's seeds."""
    verdict, seen, unseen = lens_claim(block_verdicts, reference)
    measures = {}
    for lens in seen + unseen:
        hits, total = sum(e["seen"] for e in details[lens].values()), len(details[lens])
        measures[lens] = {"verdict": block_verdicts[lens], "k": hits, "n": total,
                          "interval": list(verdicts.clopper_pearson(hits, total)) if total else None}
    return verdicts.claim({"verdict": verdict, "n": len(measures), "k": len(seen), "interval": None,
                           "unit": "measures", "measures": measures, "seen_by": seen, "not_seen_by": unseen},
                          "book/protocol.md, Chapter 9: each other measure's share of blocked seeds whose contrast "
                          "beats the block-free seeds' runs (null share_null); shown when every measure is")


def accuracy_with_layer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        layer: str | None = None, k: int = 0) -> float:
    """The model's accuracy on `images` (one batch) with `layer`'s output stripped of its top-k PCs (over them)."""
    handle = None
    if layer is not None and k > 0:
        def hook(module, inputs, output):
            flat = output.detach().cpu().double().flatten(1).numpy()
            removed = remove_top_pcs(flat, k)
            return torch.from_numpy(removed).to(output.dtype).to(output.device).reshape(output.shape)
        handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            logits = model(images.to(device))
    finally:
        if handle is not None:
            handle.remove()
    return float((logits.argmax(1).cpu() == labels.cpu()).float().mean())


def summary_rows(identified: dict, calibration: dict, sensitivity: dict, outliers: dict,
                 block_verdicts: dict, details: dict) -> list[dict]:
    """One row per lens for the chapter's table (None where a test could not run)."""
    rows = []
    for lens in block_verdicts:
        contrasts = [e["contrast"] for e in details.get(lens, {}).values()]
        rows.append({"measure": lens, "identification": identified.get(lens),
                     "calibrated": calibration.get(lens, {}).get("calibrated"),
                     "rho": sensitivity.get(lens, {}).get("rho"),
                     "specificity_margin": sensitivity.get(lens, {}).get("specificity_margin"),
                     "outlier_change": outliers.get(lens, {}).get("max_self_change"),
                     "block_contrast": float(np.mean(contrasts)) if contrasts else None,
                     "block": block_verdicts[lens]})
    return rows
