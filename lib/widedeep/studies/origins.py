"""Chapter 8's study (book/08_origins.md): where the block comes from.

Layer: studies (on `widedeep.analyses.origins` for the statistics, the records and the claims, and
`structure` for each model's block). `models(profile)` reads the seed study, its snapshots and its
regularised twins, analysed for the block structure from their records; `study(models, settings)`
takes them and the profile's `Origins` section and returns `OriginsResult`: each blocked seed's
dominant datapoints (their share of the first PC against Gaussian scores, their overlap across the
block's layers and across seeds), removing them on held-out halves against random, outside-layer and
other-seed controls, what they look like, the block over training, the regulariser swept over
thresholds, and the follow-up's five claims judged by book/protocol.md. What the statistics read is
recorded per run and snapshot; the full Grams are computed only where a record is missing. Its stored
fields are `results/<profile>/08_origins.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from widedeep import experiments
from widedeep.analyses import origins, runs, structure
from widedeep.analyses.origins import VERSIONS, layer_shares, shares_contributions, stream_span
from widedeep.analyses.structure import BlockAnalysis
from widedeep.profiles import Origins, Profile
from widedeep.studies import drawn, keyed, section_values
from widedeep.train import TrainConfig

CHAPTER = "08_origins"


@dataclass(frozen=True)
class Models:
    """Chapter 8's analysed runs: the seed study, each seed at its snapshot epochs, and its regularised twins."""

    seeds: tuple[BlockAnalysis, ...]
    snapshots: Mapping[tuple[str, int], BlockAnalysis]           # (run name, epoch) -> the snapshot, analysed
    regularised: Mapping[float, tuple[BlockAnalysis, ...]]       # threshold -> the twins, in seed order


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 8 reads: the seed study and its regularised twins."""
    return experiments.seed_study_grid(profile) + [c for twins in experiments.regularised_grid(profile).values()
                                                for c in twins]


def models(profile: Profile) -> Models:
    """The chapter's runs and snapshots, analysed for the block structure from their records (a snapshot's
    weights are loaded only where one of its records is missing)."""
    seeds = tuple(structure.analyse_all(experiments.seed_study_grid(profile), profile))
    snapshots = {(m.run.config.name(), epoch): structure.analyse_snapshot(m.run, epoch, profile)
                 for m in seeds for epoch in m.run.config.snapshot_epochs}
    regularised = {threshold: tuple(structure.analyse_all(twins, profile))
                   for threshold, twins in experiments.regularised_grid(profile).items()}
    return Models(seeds, snapshots, regularised)


@dataclass(frozen=True)
class OriginsResult:
    """Chapter 8's results: the stored fields are `08_origins.json`'s keys, in order; the drawn ones feed the page."""

    settings: dict                              # the profile's origins_* keys
    models: dict[str, dict]                     # the seed study, by run name
    concentration: dict[str, dict]              # per blocked seed: the first PC's share carried by its top 1/5/10%
    gaussian: dict[str, float]                  # the same shares for Gaussian scores
    within_model_overlap: dict[str, float]      # per blocked seed: Jaccard of the top sets of its block's layers
    across_seed_overlap: dict[str, float]       # per other seed: Jaccard with the first blocked seed's top set
    chance_overlap: float                       # two random sets'
    removal: dict[str, dict]                    # per blocked seed: the contrast after removing them, and controls
    dominant_images: dict[str, dict]            # per blocked seed: its top images, their classes, brightness, area
    snapshots: dict[str, list[dict]]            # per seed: block size and first PC at each snapshot and the end
    regularised: dict[str, list[dict]]          # per threshold: each twin beside its unregularised seed
    verdicts: dict[str, str]
    claims: dict[str, dict]
    analysed: Models = drawn()
    blocked: tuple[BlockAnalysis, ...] = drawn()
    images: torch.Tensor = drawn()              # the analysis images, their labels and class names
    labels: np.ndarray = drawn()
    classes: list[str] = drawn()

    def label(self, name: str) -> str:
        """A seed's label by its run name."""
        return {m.run.config.name(): m.label for m in self.analysed.seeds}[name]


def inside(m: BlockAnalysis, span_of: BlockAnalysis | None = None) -> np.ndarray:
    """Residual-stream layers inside `span_of`'s block (default: m's own), as a boolean mask."""
    block = (span_of or m).on_stream((span_of or m).block)
    mask = np.zeros(len(m.stream), bool)
    mask[block.start:block.end + 1] = True
    return mask


def study(models: Models, settings: Origins) -> OriginsResult:
    """Chapter 8 on the seed study: dominant datapoints, their removal, their look, the block over training and
    under the regulariser, and the follow-up's claims."""
    seeds, f = list(models.seeds), settings.fraction
    data = runs.cka_images(seeds[0].run, settings.examples)
    images, labels, classes = data.images, data.labels.numpy(), list(data.classes)
    blocked = [m for m in seeds if m.block is not None]
    without = [m for m in seeds if m.block is None]
    final_grams: dict[str, list[np.ndarray]] = {}   # a final model's stream Grams, kept for its removal record

    def grams(m: BlockAnalysis) -> list[np.ndarray]:
        """m's residual-stream Grams over the images (float64, from its model; computed only on a record miss)."""
        if all(m is not final for final in seeds):
            return origins.stream_grams(m, images)      # a snapshot's (~0.4 GB each at cpu): not kept
        if m.run.name not in final_grams:
            final_grams[m.run.name] = origins.stream_grams(m, images)
        return final_grams[m.run.name]

    def recorded(m: BlockAnalysis, kind: str, compute, suffix: str = ".npz", **key):
        """A record of `kind` in m's run folder on these images and m's stream layers."""
        return m.run.record(kind, VERSIONS[kind], {"examples": runs.examples_key(data), "layers": m.stream_names,
                                                   **key}, compute, suffix)

    def pc1_shares(m: BlockAnalysis) -> np.ndarray:
        """(stream layers, examples): each example's share of each stream layer's first PC (recorded)."""
        return recorded(m, "origins_pc1", lambda: {"shares": origins.stream_pc1_shares(grams(m))})["shares"]

    def contributions(m: BlockAnalysis, span_of: BlockAnalysis | None = None) -> np.ndarray:
        """Each example's share of the first PC, averaged over the block's layers (another model's span allowed)."""
        return shares_contributions(pc1_shares(m), inside(m, span_of))

    def removal_effect(m: BlockAnalysis, mask: np.ndarray, outside_layer: int, other: BlockAnalysis | None) -> dict:
        """m's removal effect with its controls (the outside layer's dominant examples, `other` seed's), from Grams."""
        own = grams(m)
        choose, measure = origins.split_halves(len(labels), seed=0)
        effect = origins.removal_effect(own, mask, f, 0, settings.draws, control_scores=origins.cross_half_projections(
            own[outside_layer], choose, measure))
        effect["control"] = f"dominant examples of the outside layer {m.stream_names[outside_layer]}"
        if other is not None:
            scores = np.mean([origins.cross_half_projections(g, choose, measure)
                              for g, i in zip(grams(other), mask) if i], axis=0)
            seed_effect = origins.removal_effect(own, mask, f, 0, 1, control_scores=scores)
            effect["drop_other_seed"] = seed_effect["drop_control"]
            effect["other_seed"] = other.run.config.name()
        effect.pop("dominant_positions")
        return effect

    # which examples dominate, and how much
    concentration = {m.run.config.name(): {f"top_{int(100 * t)}pct": origins.top_share(contributions(m), t)
                                           for t in origins.TOP_FRACTIONS} for m in blocked}
    gaussian = {f"top_{int(100 * t)}pct": origins.gaussian_top_share(t) for t in origins.TOP_FRACTIONS}
    within = {}
    for m in blocked:
        sets = [origins.top_set(shares, f) for shares in layer_shares(pc1_shares(m), inside(m))]
        pairs = [origins.jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
        within[m.run.config.name()] = float(np.mean(pairs)) if pairs else float("nan")
    across = {}
    if blocked:
        reference = blocked[0]
        mine = origins.top_set(contributions(reference), f)
        across = {m.run.config.name(): origins.jaccard(mine, origins.top_set(contributions(m, reference), f))
                  for m in seeds if m is not reference}
    chance = origins.chance_jaccard(f, len(labels))

    # removing them, against random removals and the two controls
    removal = {}
    for m in blocked:
        mask = inside(m)
        outside_layer = int(np.flatnonzero(~mask)[np.argmax(m.pc1_share[m.stream][~mask])])
        other = without[0] if without else None
        removal[m.run.config.name()] = recorded(
            m, "origins_removal", lambda: removal_effect(m, mask, outside_layer, other), ".json", inside=mask.tolist(),
            outside_layer=m.stream_names[outside_layer], fraction=f, draws=settings.draws, seed=0,
            other=None if other is None else other.run.name)

    # what they look like
    statistics, dominant_images = origins.image_statistics(images), {}
    for m in blocked:
        top = origins.top_set(contributions(m), f)
        rest = np.setdiff1d(np.arange(len(labels)), top)
        order = top[np.argsort(-contributions(m)[top])]
        dominant_images[m.run.config.name()] = {
            "indices": order[: settings.top_images].tolist(),
            "class_counts": np.bincount(labels[top], minlength=len(classes)).tolist(),
            **{f"{k}_top": float(v[top].mean()) for k, v in statistics.items()},
            **{f"{k}_rest": float(v[rest].mean()) for k, v in statistics.items()}}

    # the block during training
    snapshots = {}
    for m in seeds:
        final_scores = contributions(m) if m.block is not None else None
        rows = []
        for epoch in m.run.config.snapshot_epochs:
            snap = models.snapshots[(m.run.config.name(), epoch)]
            row = {"epoch": epoch, **snap.block_measures(), "span": stream_span(snap)}
            if final_scores is not None:
                scores = shares_contributions(pc1_shares(snap), inside(m))
                row["overlap_with_final"] = origins.jaccard(origins.top_set(scores, f),
                                                            origins.top_set(final_scores, f))
            rows.append(row)
        rows.append({"epoch": m.run.config.total_epochs, **m.block_measures(), "span": stream_span(m),
                     **({"overlap_with_final": 1.0} if final_scores is not None else {})})
        snapshots[m.run.config.name()] = rows

    # the intervention: each regularised twin beside its unregularised seed
    base = {m.run.config.seed: m for m in seeds}
    regularised = {f"{threshold:g}": [
        {"seed": r.run.config.seed, "test_acc": r.run.test_acc,
         "test_acc_unregularised": base[r.run.config.seed].run.test_acc, **r.block_measures(),
         **{f"{k}_unregularised": v for k, v in base[r.run.config.seed].block_measures().items()},
         "has_block": r.block is not None, "has_block_unregularised": base[r.run.config.seed].block is not None}
        for r in twins] for threshold, twins in models.regularised.items()}

    # the follow-up's claims, judged on the blocked seeds
    names = [m.run.config.name() for m in blocked]
    sets = {}
    for m in blocked:   # (seed, stream layer) -> its dominant set, at each layer of each blocked seed's block
        shares = pc1_shares(m)   # recorded u_1(i)^2 per stream layer: the same top sets as the Grams'
        for i in np.flatnonzero(inside(m)):
            sets[(m.run.config.seed, int(i))] = origins.top_set(layer_shares(shares[i:i + 1], np.ones(1, bool))[0], f)
    sets = {key: value for key, value in sets.items()   # the layers inside the blocks of at least two seeds
            if sum(other[1] == key[1] for other in sets) >= 2}
    claims = origins.judge(names, concentration, gaussian, within, chance, removal,
                           {n: rows for n, rows in snapshots.items() if n in names}, regularised, sets)
    return OriginsResult(
        settings=section_values(settings), models=keyed([m.summary() for m in seeds]), concentration=concentration,
        gaussian=gaussian, within_model_overlap=within, across_seed_overlap=across, chance_overlap=chance,
        removal=removal, dominant_images=dominant_images, snapshots=snapshots, regularised=regularised,
        verdicts={k: v["verdict"] for k, v in claims.items()}, claims=claims, analysed=models, blocked=tuple(blocked),
        images=images, labels=labels, classes=classes)


RESULT = OriginsResult
MODEL_TABLES = ("models",)
VERDICTS = ("verdicts.*",)
