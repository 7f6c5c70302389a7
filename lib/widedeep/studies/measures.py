"""Chapter 9's study (book/09_measures.md): does the block depend on the lens?

Layer: studies (on `widedeep.analyses.measure_tests` for the field's tests of a measure under every lens
and the record kinds, `structure` for each model's CKA block, `widedeep.measures.lenses` for the
measures). `models(profile)` reads the seed study, analysed from its records; `study(models, settings)`
takes them and the measures section (with the subspace match's loosest ε) and returns
`MeasuresResult`: every lens put through layer identification (all seeds, and block-free ones), a
calibrated best match, sensitivity and specificity to deleting top PCs, outliers, and asked whether it
sees the CKA block against same-length runs in block-free seeds. Every measure sees the same analysis
images and every `measures_stride`-th residual-stream layer of every seed; what it computes is a
record (every lens in one record of a run or a pair), so layers are captured from a model only where
a record is missing. Its stored fields are `results/<profile>/09_measures.json`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from widedeep import experiments
from widedeep.analyses import measure_tests as tests
from widedeep.analyses import runs, structure
from widedeep.analyses.measure_tests import VERSIONS, by_measure, one_blas_thread
from widedeep.analyses.structure import BlockAnalysis
from widedeep.capture import capture_outputs
from widedeep.measures.lenses import lenses
from widedeep.profiles import Measures, Profile
from widedeep.studies import drawn, keyed, section_values
from widedeep.train import TrainConfig

CHAPTER = "09_measures"
REFERENCE = "linear CKA"   # the lens whose block the others are asked to see


@dataclass(frozen=True)
class Settings:
    """What Chapter 9 reads of a profile: the measures section and the subspace match's loosest ε (its lens)."""

    measures: Measures
    match_eps: float


def settings(profile: Profile) -> Settings:
    """Chapter 9's settings from a profile."""
    return Settings(profile.measures, profile.subspace.eps[-1])


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 9 reads: the seed study."""
    return experiments.seed_study_grid(profile)


def models(profile: Profile) -> list[BlockAnalysis]:
    """The seed study, analysed for the block structure from its records."""
    return structure.analyse_all(experiments.seed_study_grid(profile), profile)


@dataclass(frozen=True)
class MeasuresResult:
    """Chapter 9's results: the stored fields are `09_measures.json`'s keys, in order; the drawn ones feed the page."""

    settings: dict                               # the profile's measures_* keys
    models: dict[str, dict]                      # the seed study, by run name
    layers: list[str]                            # the analysed residual-stream layers
    identification: dict[str, float | None]      # per lens: layer identification over every pair of seeds
    identification_block_free: dict[str, float | None]
    calibration: dict[str, dict]                 # per lens: best match, its shuffled null, the calibrated score
    accuracy_drops: dict[str, list[float]]       # per deletion layer: the first seed's accuracy drop per k
    sensitivity: dict[str, dict]                 # per lens: Ding et al.'s rank correlation and specificity margin
    outliers: dict[str, dict]                    # per lens: Davari et al.'s changes
    block: dict[str, dict]                       # per lens: each blocked seed's contrast against the null
    table: list[dict]                            # one row per lens (the page's table)
    verdicts: dict[str, str]                     # per lens: does it see the block
    claim: dict                                  # whether the other measures see it, and which
    claims: dict[str, dict]
    seeds: tuple[BlockAnalysis, ...] = drawn()
    blocked: tuple[BlockAnalysis, ...] = drawn()
    lens_names: tuple[str, ...] = drawn()
    n_images: int = drawn()
    neighbour_cka: float = drawn()               # linear CKA between consecutive layers of block-free seeds
    clean_accuracy: float = drawn()              # the first seed's accuracy on the analysis images
    shown: BlockAnalysis = drawn()               # the model whose heatmaps the page shows
    heatmaps: dict[str, np.ndarray] = drawn()    # per lens: the shown model's self-similarity
    shown_span: tuple[int, int] | None = drawn()   # its block as (first, last) analysed layer


def study(models: list[BlockAnalysis], settings: Settings) -> MeasuresResult:
    """Chapter 9 on the seed study: the field's tests of every measure, and the CKA block under each."""
    s, seeds = settings.measures, list(models)
    data = runs.cka_images(seeds[0].run, s.examples)
    images, labels, examples = data.images, data.labels, runs.examples_key(data)
    positions = np.arange(0, len(seeds[0].stream), s.stride)
    layer_names = [seeds[0].stream_names[i] for i in positions]
    lens_settings = {"knn_k": s.knn_k, "eps": settings.match_eps}
    lens = lenses(**lens_settings)
    blocked = [m for m in seeds if m.block is not None]
    free = [m for m in seeds if m.block is None]
    captured: dict[str, list[np.ndarray]] = {}                   # captured only on a record miss
    summaries: dict[tuple[str, str], list] = {}
    self_matrices: dict[str, dict[str, np.ndarray]] = {}         # run name -> lens -> matrix
    cross_matrices: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def name(m: BlockAnalysis) -> str:
        return m.run.config.name()

    def layers(m: BlockAnalysis) -> list[np.ndarray]:
        """m's analysed layers over the images, float32 as captured (float64 would take gigabytes on a deep seed)."""
        if name(m) not in captured:
            captured[name(m)] = [x.float().numpy() for x in capture_outputs(m.run.model, images, layer_names,
                                                                             batch_size=250)]
        return captured[name(m)]

    def recorded(m: BlockAnalysis, kind: str, compute, **key) -> dict[str, np.ndarray]:
        """An `.npz` record of `kind` in m's run folder on these images, layers and lenses."""
        return m.run.record(kind, VERSIONS[kind], {"examples": examples, "layers": layer_names, "lenses": list(lens),
                                                   **lens_settings, **key}, compute)

    def sides(lens_name: str, m: BlockAnalysis) -> list:
        """m's analysed layers summarised under one lens (computed once)."""
        if (lens_name, name(m)) not in summaries:
            summaries[(lens_name, name(m))] = tests.sides(lens[lens_name], layers(m))
        return summaries[(lens_name, name(m))]

    def inside(m: BlockAnalysis) -> np.ndarray:
        """The analysed layers inside m's block."""
        span = m.on_stream(m.block)
        return (positions >= span.start) & (positions <= span.end)

    @one_blas_thread
    def self_matrix(lens_name: str, m: BlockAnalysis) -> np.ndarray:
        """m's analysed layers against each other under the lens (every lens recorded at once)."""
        if name(m) not in self_matrices:
            self_matrices[name(m)] = recorded(m, "lenses_self", lambda: {k: tests.similarity_matrix(
                lens[k].compare, sides(k, m), sides(k, m)) for k in by_measure(lens, "self-similarity")})
        return self_matrices[name(m)][lens_name]

    @one_blas_thread
    def cross(lens_name: str, other: BlockAnalysis, first: BlockAnalysis | None = None) -> np.ndarray:
        """The lens between one seed's analysed layers (default: the first seed's) and another seed's (a pair
        record in the first seed's folder, every lens at once)."""
        first = seeds[0] if first is None else first
        if (name(first), name(other)) not in cross_matrices:
            cross_matrices[(name(first), name(other))] = recorded(first, "lenses_cross", lambda: {
                k: tests.similarity_matrix(lens[k].compare, sides(k, first), sides(k, other))
                for k in by_measure(lens, "cross-similarity")}, b=name(other))
        return cross_matrices[(name(first), name(other))][lens_name]

    @one_blas_thread
    def identification(block_free: bool = False) -> dict[str, float | None]:
        """Per lens: layer identification over every pair of seeds (or of block-free seeds), None without a pair."""
        pairs = list(itertools.combinations(free if block_free else seeds, 2))
        steps = by_measure(lens, "identification" + (" (block-free seeds)" if block_free else ""))
        return {k: float(np.mean([tests.identification(cross(k, b, a)) for a, b in pairs])) if pairs else None
                for k in steps}

    @one_blas_thread
    def calibration() -> dict[str, dict]:
        """Per lens: mean best match, its shuffled null and the calibrated score (first seed vs the second)."""
        if len(seeds) < 2:
            return {}
        a, b = seeds[:2]

        def compute():
            return {k: np.array(list(tests.calibrated(v, layers(a), sides(k, b), cross(k, b), s.draws).values()))
                    for k, v in by_measure(lens.items(), "calibration")}

        stored = recorded(a, "lenses_calibration", compute, b=name(b), draws=s.draws, seed=0)
        return {k: dict(zip(("best", "null", "calibrated"), map(float, stored[k]))) for k in lens}

    count = min(s.deletion_layers, len(positions))
    deleted = sorted(set(np.linspace(0, len(positions) - 1, count).round().astype(int).tolist()))
    chosen = [layer_names[i] for i in deleted]

    @one_blas_thread
    def accuracy_drops() -> tuple[float, dict[str, list[float]]]:
        """The first seed's accuracy on the analysis images, and per deletion layer its drop per k (recorded)."""
        def compute():
            model = seeds[0].run.model.eval()
            clean = tests.accuracy_with_layer(model, images, labels)
            return {"clean": np.array(clean), "drops": np.array([
                [clean - tests.accuracy_with_layer(model, images, labels, layer, k) for k in s.pc_ks]
                for layer in chosen])}

        stored = recorded(seeds[0], "accuracy_drops", compute, chosen=chosen, ks=s.pc_ks)
        return float(stored["clean"]), {layer: [float(d) for d in row] for layer, row in zip(chosen, stored["drops"])}

    @one_blas_thread
    def sensitivity(drops: dict[str, list[float]]) -> dict[str, dict]:
        """Per lens: Ding et al.'s rank correlation and the seed-vs-deletion margin."""
        first = seeds[0]

        def compute():
            perturbed = {layer_names[i]: layers(first)[i] for i in deleted}
            return {k: np.array(list(tests.deletion_similarities(lens[k], perturbed, s.pc_ks).values()))
                    for k in by_measure(lens, "sensitivity")}

        stored = recorded(first, "lenses_deletion", compute, chosen=chosen, ks=s.pc_ks)
        out = {}
        for k in lens:
            seed = (float(np.mean([np.diag(cross(k, seeds[1]))[i] for i in deleted])) if len(seeds) > 1
                    else float("nan"))
            sims = {layer: [float(v) for v in row] for layer, row in zip(chosen, stored[k])}
            out[k] = {**tests.sensitivity(sims, drops, seed), "similarities": sims}
        return out

    @one_blas_thread
    def outliers() -> dict[str, dict]:
        """Per lens: Davari et al.'s changes at the middle analysed layer of the first seed (neighbour: the next)."""
        first, i = seeds[0], len(positions) // 2
        j = i + 1 if i + 1 < len(layer_names) else i - 1   # the neighbour

        def compute():
            x = layers(first)
            changes = {k: tests.outlier_changes(lens[k], x[i], x[j], s.outlier_fractions, s.outlier_scales)
                       for k in by_measure(lens, "outliers")}
            return {f"{k}|{part}": np.array(c[part]) for k, c in changes.items()
                    for part in ("self_change", "neighbour_change")}

        stored = recorded(first, "lenses_outliers", compute, layer=layer_names[i], neighbour=layer_names[j],
                          fractions=s.outlier_fractions, scales=s.outlier_scales)
        out = {}
        for k in lens:
            self_change, neighbour_change = (stored[f"{k}|{part}"] for part in ("self_change", "neighbour_change"))
            out[k] = {"self_change": self_change.tolist(), "neighbour_change": neighbour_change.tolist(),
                      "max_self_change": float(np.max(self_change)),
                      "max_neighbour_change": float(np.max(neighbour_change))}
        return out

    @one_blas_thread
    def block() -> tuple[dict[str, dict], dict[str, str]]:
        """Per lens: each blocked seed's contrast against the block-free seeds' runs, and the verdict."""
        details, found = {}, {}
        for k in by_measure(lens, "block"):
            inside_blocks = {name(m): (self_matrix(k, m), inside(m)) for m in blocked}
            free_matrices = [self_matrix(k, m) for m in free] if blocked else []
            details[k], found[k] = tests.block_contrast(inside_blocks, free_matrices, s.null_quantile)
        return details, found

    identified, calibrated = identification(), calibration()
    identified_free = identification(block_free=True)
    neighbour_cka = one_blas_thread(tests.neighbour_similarity)([self_matrix(REFERENCE, m) for m in free or seeds])
    clean, drops = accuracy_drops()
    sensitive = sensitivity(drops)
    moved = outliers()
    details, found = block()
    shown = (blocked or seeds)[0]
    heatmaps = one_blas_thread(lambda: {k: self_matrix(k, shown) for k in lens})()
    span = None
    if shown.block is not None and inside(shown).any():
        where = np.flatnonzero(inside(shown))
        span = int(where[0]), int(where[-1])
    verdict, seen, unseen = tests.lens_claim(found)
    return MeasuresResult(
        settings=section_values(s), models=keyed([m.summary() for m in seeds]), layers=layer_names,
        identification=identified, identification_block_free=identified_free, calibration=calibrated,
        accuracy_drops=drops, sensitivity=sensitive, outliers=moved, block=details,
        table=tests.summary_rows(identified, calibrated, sensitive, moved, found, details), verdicts=found,
        claim={"verdict": verdict, "seen_by": seen, "not_seen_by": unseen},
        claims={"seen_by_other_measures": tests.lens_claim_object(details, found)},
        seeds=tuple(seeds), blocked=tuple(blocked), lens_names=tuple(lens), n_images=len(labels),
        neighbour_cka=neighbour_cka, clean_accuracy=clean, shown=shown, heatmaps=heatmaps, shown_span=span)


RESULT = MeasuresResult
MODEL_TABLES = ("models",)
VERDICTS = ("verdicts.*", "claim.verdict")
