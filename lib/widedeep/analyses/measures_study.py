"""Chapter 9's study: does the block depend on the lens? Ten similarity measures on the seed study's models.

Layer: analyses (on `measure_tests` for the field's tests of a measure, `structure` for each model's
CKA block, the measures layer for the measures themselves). Every measure sees the same analysis
images (the first `measures_examples` test images) and every `measures_stride`-th residual-stream
layer of every seed of the seed study.

The measures are `widedeep.measures.lenses`: each splits into a summary of one layer (a Gram, a basis,
a dissimilarity matrix, neighbour lists) and a cheap comparison of two summaries, so every layer of
every seed is summarised once per lens and the many pairs below only compare summaries. Their
results are records (`VERSIONS`, every lens in one record of a run or a pair of seeds), so the
layers are captured from a model only where a record is missing.
Where features outnumber examples, the CCA family reduces each side to its top principal
components (`widedeep.measures.similarity.principal_basis`): SVCCA keeps those holding 99% of the
variance, mean CCA and PWCCA all, each capped at n / 4 directions, because every canonical
correlation reaches 1 once the two sides' dimensions add up to n.

The tests, per measure:
- identification: for each analysed layer of one seed, is its best match in another seed the same
  layer (Kornblith et al. 2019)? The share of layers, both directions, over every pair of seeds, and
  over the pairs of block-free seeds alone (a block's layers look alike, so at most one is identified);
- calibrated best match: that best match against the same maximum with the other seed's examples
  shuffled, (best - null) / (1 - null) (Groger et al. 2026);
- sensitivity (Ding et al. 2021): delete a layer's top-k PCs in the first seed, run the rest of the
  network on the perturbed layer, and correlate (Spearman) the measure's fall 1 - s(X, X_k) with the
  fall of the model's own accuracy on the analysis images; specificity: the similarity between two
  seeds' same layer (the same function, different weights) beside the similarity after the deletion
  that costs the most accuracy;
- outliers (Davari et al. 2022): a fraction of the examples translated along one random direction
  by c times the layer's spread, each measure's change against the unperturbed layer and its neighbour;
- the block under every lens: for each seed with a (CKA) block, the measure's mean similarity
  inside the block's layers minus from them to the others, against the same statistic over every
  run of as many consecutive layers in the seeds without a block: seen when above the null's
  `measures_null_quantile`.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from widedeep import profiles, records
from widedeep.analyses import measure_tests, runs, structure, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.capture import capture_outputs
from widedeep.measures.lenses import Lens, lenses
from widedeep.profiles import Profile

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
    return measure_tests.similarity_matrix(lens.compare, sides(lens, layers_a), sides(lens, layers_b))


def identification(cross: np.ndarray) -> float:
    """Layer identification in both directions (rows of A in B, rows of B in A)."""
    return (measure_tests.identification_accuracy(cross) + measure_tests.identification_accuracy(cross.T)) / 2


def shuffled_best_match(lens: Lens, layer: np.ndarray, sides_b: list, draws: int, seed: int = 0) -> np.ndarray:
    """Per draw: the layer's best match among B's summaries with the examples of one side shuffled.

    It is `measure_tests.shuffled_best_match` (B's examples shuffled), computed by shuffling the layer's
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
    null = np.array([shuffled_best_match(lens, x, sides_b, draws, seed + i).mean() for i, x in enumerate(layers_a)])
    score = measure_tests.calibrated_score(best, null)
    return {"best": float(best.mean()), "null": float(null.mean()), "calibrated": float(np.nanmean(score))}


def deletion_similarities(lens: Lens, layers: dict[str, np.ndarray], ks: list[int]) -> dict[str, list[float]]:
    """Per layer: the lens's similarity between the layer and itself with its top-k PCs deleted, per k."""
    out = {}
    for name, x in layers.items():
        side = lens.prepare(x)
        out[name] = [lens.compare(side, lens.prepare(measure_tests.remove_top_pcs(x, k).reshape(x.shape)))
                     for k in ks]
    return out


def sensitivity(similarities: dict[str, list[float]], drops: dict[str, list[float]], seed_similarity: float) -> dict:
    """Spearman of the lens's fall with the accuracy's fall over every (layer, k); seed vs the costliest deletion."""
    sims = np.concatenate([similarities[n] for n in drops])
    falls = np.concatenate([drops[n] for n in drops])
    costliest = float(sims[np.argmax(falls)])
    return {"rho": measure_tests.rank_agreement(1 - sims, falls), "seed_similarity": seed_similarity,
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
            moved = lens.prepare(measure_tests.translate_outliers(x, f, c).reshape(x.shape))
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
        null = np.concatenate([measure_tests.run_contrasts(m, length) for m in free])
        contrast = measure_tests.inside_outside_contrast(matrix, inside)
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
            removed = measure_tests.remove_top_pcs(flat, k)
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


class MeasuresStudy:
    """Every seed of the seed study under every lens: the field's tests of a measure and the block test."""

    def __init__(self, profile: Profile):
        self.profile, self.settings = profile, profile.measures
        self.models = structure.analyse_all(profiles.seed_study_grid(profile), profile)
        data = runs.cka_images(self.models[0].run, self.settings.examples)
        self.images, self.labels, self.examples = data.images, data.labels, runs.examples_key(data)
        self.positions = np.arange(0, len(self.models[0].stream), self.settings.stride)
        self.layer_names = [self.models[0].stream_names[i] for i in self.positions]
        self._layers: dict[str, list[np.ndarray]] = {}   # captured only on a record miss
        self.lens_settings = {"knn_k": self.settings.knn_k, "eps": profile.subspace.eps[-1]}
        self.lenses = lenses(**self.lens_settings)
        self.blocked = [m for m in self.models if m.block is not None]
        self.free = [m for m in self.models if m.block is None]
        self._self: dict[str, dict[str, np.ndarray]] = {}               # run name -> lens -> matrix
        self._cross: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (first, other) -> lens -> matrix
        self._sides: dict[tuple[str, str], list] = {}

    def layers(self, m: BlockAnalysis) -> list[np.ndarray]:
        """m's analysed layers over the images, float32 as captured (a deep seed's layers at 500 images would take
        gigabytes in float64); captured from its model on first use, only where a record is missing."""
        if self.name(m) not in self._layers:
            self._layers[self.name(m)] = [x.float().numpy() for x in capture_outputs(
                m.run.model, self.images, self.layer_names, batch_size=250)]
        return self._layers[self.name(m)]

    def recorded(self, m: BlockAnalysis, kind: str, compute, **settings) -> dict[str, np.ndarray]:
        """An `.npz` record of `kind` in m's run folder on this study's images, layers and lenses."""
        key = {"examples": self.examples, "layers": self.layer_names, "lenses": list(self.lenses),
               **self.lens_settings, **settings}
        return m.run.record(kind, VERSIONS[kind], key, compute)

    def sides(self, lens: str, m: BlockAnalysis) -> list:
        """m's analysed layers summarised under one lens (computed once)."""
        key = (lens, self.name(m))
        if key not in self._sides:
            self._sides[key] = sides(self.lenses[lens], self.layers(m))
        return self._sides[key]

    def name(self, m: BlockAnalysis) -> str:
        return m.run.config.name()

    def inside(self, m: BlockAnalysis) -> np.ndarray:
        """The analysed layers inside m's block."""
        span = m.on_stream(m.block)
        return (self.positions >= span.start) & (self.positions <= span.end)

    @one_blas_thread
    def self_matrix(self, lens: str, m: BlockAnalysis) -> np.ndarray:
        """m's analysed layers against each other under the lens (every lens recorded at once)."""
        key = self.name(m)
        if key not in self._self:
            self._self[key] = self.recorded(m, "lenses_self", lambda: {name: measure_tests.similarity_matrix(
                self.lenses[name].compare, self.sides(name, m), self.sides(name, m))
                for name in by_measure(self.lenses, "self-similarity")})
        return self._self[key][lens]

    @one_blas_thread
    def cross(self, lens: str, other: BlockAnalysis, first: BlockAnalysis | None = None) -> np.ndarray:
        """The lens between one seed's analysed layers (default: the first seed's) and another seed's (a pair
        record in the first seed's folder, every lens at once)."""
        first = self.models[0] if first is None else first
        key = (self.name(first), self.name(other))
        if key not in self._cross:
            self._cross[key] = self.recorded(first, "lenses_cross", lambda: {name: measure_tests.similarity_matrix(
                self.lenses[name].compare, self.sides(name, first), self.sides(name, other))
                for name in by_measure(self.lenses, "cross-similarity")}, b=self.name(other))
        return self._cross[key][lens]

    # -- the field's tests -------------------------------------------------------------------------

    def seed_pairs(self, block_free: bool = False) -> list[tuple[BlockAnalysis, BlockAnalysis]]:
        """Every pair of seeds (or of seeds without a block, whose layers a block cannot make unique)."""
        seeds = self.free if block_free else self.models
        return list(itertools.combinations(seeds, 2))

    @one_blas_thread
    def identification(self, block_free: bool = False) -> dict[str, float | None]:
        """Per lens: layer identification over every pair of seeds (mean; or of block-free seeds), None without a pair.

        Chance is 1 / the number of analysed layers: a layer picked at random is the same layer that often.
        """
        pairs = self.seed_pairs(block_free)
        steps = by_measure(self.lenses, "identification" + (" (block-free seeds)" if block_free else ""))
        return {lens: float(np.mean([identification(self.cross(lens, b, a)) for a, b in pairs]))
                if pairs else None for lens in steps}

    @one_blas_thread
    def neighbour_similarity(self, lens: str = "linear CKA") -> float:
        """The lens's mean similarity between consecutive analysed layers of the block-free seeds (all, if none)."""
        return measure_tests.neighbour_similarity([self.self_matrix(lens, m) for m in self.free or self.models])

    @one_blas_thread
    def calibration(self) -> dict[str, dict]:
        """Per lens: mean best match, its shuffled null and the calibrated score (first seed vs the second)."""
        if len(self.models) < 2:
            return {}
        a, b = self.models[:2]

        def compute():
            return {lens: np.array(list(calibrated(v, self.layers(a), self.sides(lens, b), self.cross(lens, b),
                                                   self.settings.draws).values()))
                    for lens, v in by_measure(self.lenses.items(), "calibration")}

        stored = self.recorded(a, "lenses_calibration", compute, b=self.name(b), draws=self.settings.draws, seed=0)
        return {lens: dict(zip(("best", "null", "calibrated"), map(float, stored[lens]))) for lens in self.lenses}

    def deletion_layers(self) -> list[int]:
        """Evenly spaced analysed layers (indices) whose top PCs are deleted."""
        count = min(self.settings.deletion_layers, len(self.positions))
        return sorted(set(np.linspace(0, len(self.positions) - 1, count).round().astype(int).tolist()))

    @one_blas_thread
    def accuracy_drops(self) -> dict[str, list[float]]:
        """Per deletion layer: the first seed's accuracy drop on the analysis images per k (recorded)."""
        chosen = [self.layer_names[i] for i in self.deletion_layers()]

        def compute():
            model = self.models[0].run.model.eval()
            clean = accuracy_with_layer(model, self.images, self.labels)
            return {"clean": np.array(clean), "drops": np.array([
                [clean - accuracy_with_layer(model, self.images, self.labels, name, k) for k in self.settings.pc_ks]
                for name in chosen])}

        stored = self.recorded(self.models[0], "accuracy_drops", compute, chosen=chosen, ks=self.settings.pc_ks)
        self.clean_accuracy = float(stored["clean"])
        return {name: [float(d) for d in row] for name, row in zip(chosen, stored["drops"])}

    @one_blas_thread
    def sensitivity(self, drops: dict[str, list[float]]) -> dict[str, dict]:
        """Per lens: Ding et al.'s rank correlation and the seed-vs-deletion margin."""
        first, names = self.models[0], [self.layer_names[i] for i in self.deletion_layers()]

        def compute():
            chosen = {self.layer_names[i]: self.layers(first)[i] for i in self.deletion_layers()}
            return {lens: np.array(list(deletion_similarities(self.lenses[lens], chosen, self.settings.pc_ks).values()))
                    for lens in by_measure(self.lenses, "sensitivity")}

        stored = self.recorded(first, "lenses_deletion", compute, chosen=names, ks=self.settings.pc_ks)
        out = {}
        for lens in self.lenses:
            seed = (float(np.mean([np.diag(self.cross(lens, self.models[1]))[i] for i in self.deletion_layers()]))
                    if len(self.models) > 1 else float("nan"))
            sims = {name: [float(v) for v in row] for name, row in zip(names, stored[lens])}
            out[lens] = {**sensitivity(sims, drops, seed), "similarities": sims}
        return out

    def outlier_layer(self) -> int:
        return len(self.positions) // 2

    @one_blas_thread
    def outliers(self) -> dict[str, dict]:
        """Per lens: Davari et al.'s changes at the middle analysed layer of the first seed (neighbour: the next)."""
        first, i, s = self.models[0], self.outlier_layer(), self.settings
        j = i + 1 if i + 1 < len(self.layer_names) else i - 1   # the neighbour

        def compute():
            layers = self.layers(first)
            changes = {lens: outlier_changes(self.lenses[lens], layers[i], layers[j], s.outlier_fractions,
                                             s.outlier_scales) for lens in by_measure(self.lenses, "outliers")}
            return {f"{lens}|{part}": np.array(c[part]) for lens, c in changes.items()
                    for part in ("self_change", "neighbour_change")}

        stored = self.recorded(first, "lenses_outliers", compute, layer=self.layer_names[i],
                               neighbour=self.layer_names[j], fractions=s.outlier_fractions, scales=s.outlier_scales)
        out = {}
        for lens in self.lenses:
            self_change, neighbour_change = (stored[f"{lens}|{part}"] for part in ("self_change", "neighbour_change"))
            out[lens] = {"self_change": self_change.tolist(), "neighbour_change": neighbour_change.tolist(),
                         "max_self_change": float(np.max(self_change)),
                         "max_neighbour_change": float(np.max(neighbour_change))}
        return out

    # -- the block under every lens ----------------------------------------------------------------

    @one_blas_thread
    def block(self) -> tuple[dict[str, dict], dict[str, str]]:
        """Per lens: each blocked seed's contrast against the block-free seeds' runs, and the verdict."""
        details, found = {}, {}
        for lens in by_measure(self.lenses, "block"):
            blocked = {self.name(m): (self.self_matrix(lens, m), self.inside(m)) for m in self.blocked}
            free = [self.self_matrix(lens, m) for m in self.free] if self.blocked else []
            details[lens], found[lens] = block_contrast(blocked, free, self.settings.null_quantile)
        return details, found

    def shown_model(self) -> BlockAnalysis:
        """The model whose heatmaps the chapter shows: the first with a block, else the first seed."""
        return (self.blocked or self.models)[0]

    @one_blas_thread
    def heatmaps(self) -> dict[str, np.ndarray]:
        """The shown model's self-similarity matrix under every lens."""
        return {lens: self.self_matrix(lens, self.shown_model()) for lens in self.lenses}

    def shown_span(self) -> tuple[int, int] | None:
        """The shown model's block as (first, last) analysed-layer index, None without one."""
        m = self.shown_model()
        if m.block is None or not self.inside(m).any():
            return None
        where = np.flatnonzero(self.inside(m))
        return int(where[0]), int(where[-1])


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


def lens_sentence(block_verdicts: dict[str, str]) -> str:
    """Which measures see the block ('seen by ...; not by ...'), or why none could be judged."""
    verdict, seen, unseen = lens_claim(block_verdicts)
    if verdict == verdicts.NOT_TESTABLE:
        return next(iter(block_verdicts.values()))
    return f"seen by {', '.join(seen) or 'none'}; not by {', '.join(unseen) or 'none'}"
