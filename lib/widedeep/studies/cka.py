"""Chapter 2's study (book/02_cka.md): CKA checked on data with a known answer, then read on trained networks.

Layer: studies (on `widedeep.analyses.checks`, `heatmaps` and the run records of `analyses.runs`).
`models(profile)` reads the chapter's runs (Chapter 2's base model over its seeds, its plain control,
the grid's widest and deepest model) from their records; `study(models, settings)` takes them and
the profile's `CKA` section and returns `CkaResult`: CKA's invariances and its minibatch estimator on
random data (drawn from one generator in a fixed order), the within-model heatmaps of the residual
and the plain net with their checkerboard contrast, the cross-seed heatmaps and the wide-versus-deep
one. Its stored fields are `results/<profile>/02_cka.json`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from widedeep import experiments, records
from widedeep.analyses import checks, heatmaps, runs
from widedeep.analyses.structure import batching
from widedeep.measures import cka
from widedeep.profiles import CKA, Profile
from widedeep.studies import drawn
from widedeep.train import TrainConfig

CHAPTER = "02_cka"
BATCH_SIZES = (25, 50, 100, 250)   # the minibatch estimator's batch sizes on random data ...
PARTITIONS = 20                    # ... each over this many random partitions of the examples


@dataclass(frozen=True)
class Models:
    """Chapter 2's runs: the base model's seeds, its plain control, and the grid's widest and deepest model."""

    seeds: tuple[records.Run, ...]
    plain: records.Run
    wide: records.Run
    deep: records.Run


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 2 reads: the base model's seeds and plain control, the widest and the deepest model."""
    return experiments.cka_base_grid(profile) + list(experiments.wide_and_deep(profile))


def models(profile: Profile) -> Models:
    """The chapter's runs, read through their records."""
    *seeds, plain = records.load_runs(profile, experiments.cka_base_grid(profile))
    wide, deep = records.load_runs(profile, list(experiments.wide_and_deep(profile)))
    return Models(tuple(seeds), plain, wide, deep)


@dataclass(frozen=True)
class CkaResult:
    """Chapter 2's results: the stored fields are `02_cka.json`'s keys, in order; the drawn ones feed the page."""

    cka_examples: int
    cka_batch_size: int
    cka_passes: int
    property_checks: dict[str, float]                 # linear CKA of random X with transformed copies of itself
    minibatch_error_by_batch_size: dict[int, float]   # mean |minibatch - full| over random partitions
    checkerboard_contrast: dict[str, float]           # residual and plain: stream-to-stream minus stream-to-inside
    cross_seed_matched_mean_per_pair: np.ndarray      # per seed pair: mean CKA of each layer with its counterpart
    wide_vs_deep_relative_depth_mean: float           # mean CKA at equal relative depth
    run_roles: dict                                   # run names of the residual, plain, wide and deep models
    models: Models = drawn()
    one_batch: tuple[float, float] = drawn()          # minibatch CKA of one batch, debiased full-data CKA
    within: dict[str, np.ndarray] = drawn()           # residual, plain -> all-layer heatmap
    pairs: tuple[tuple[records.Run, records.Run], ...] = drawn()
    cross_seed: tuple[np.ndarray, ...] = drawn()      # per seed pair: the cross-model heatmap
    matched: np.ndarray = drawn()                     # (pairs, layers): each layer against its counterpart
    wide_deep: np.ndarray = drawn()
    relative: np.ndarray = drawn()                    # CKA at equal relative depth of the wide and the deep model

    @property
    def checkerboard_verdict(self) -> str:
        """Whether the residual net shows a checkerboard the plain net lacks."""
        return heatmaps.checkerboard_verdict(**self.checkerboard_contrast)


def study(models: Models, settings: CKA) -> CkaResult:
    """Chapter 2: CKA's checks on random data (one generator, seeded 0), then on the chapter's trained runs."""
    generator = torch.Generator().manual_seed(0)
    x, invariances = checks.cka_invariances(generator)
    y = checks.correlated_layer(x, generator)
    engine = cka.MinibatchCKA()
    engine.update([x, y])
    full = cka.linear_cka(x, y, debiased=True)
    minibatch = checks.minibatch_errors(x, y, full, BATCH_SIZES, PARTITIONS, generator)

    base = models.seeds[0]
    images = runs.cka_images(base, settings.examples)
    within = {"residual": runs.run_cka(base, images, **batching(settings)),
              "plain": runs.run_cka(models.plain, images, **batching(settings))}
    contrast = {name: heatmaps.checkerboard_contrast(within[name], run.layers())
                for name, run in (("residual", base), ("plain", models.plain))}
    pairs = tuple(itertools.combinations(models.seeds, 2))
    cross_seed = tuple(runs.run_cka(a, images, run_b=b, **batching(settings)) for a, b in pairs)
    matched = np.array([heatmaps.matched_layer_similarity(m) for m in cross_seed])
    wide_deep = runs.run_cka(models.wide, images, run_b=models.deep, **batching(settings))
    relative = heatmaps.relative_depth_similarity(wide_deep)
    roles = {"residual": base, "plain": models.plain, "wide": models.wide, "deep": models.deep}
    return CkaResult(
        cka_examples=settings.examples, cka_batch_size=settings.batch_size, cka_passes=settings.passes,
        property_checks=invariances, minibatch_error_by_batch_size=minibatch, checkerboard_contrast=contrast,
        cross_seed_matched_mean_per_pair=matched.mean(axis=1), wide_vs_deep_relative_depth_mean=float(relative.mean()),
        run_roles={**{k: r.config.name() for k, r in roles.items()}, "seeds": [s.config.name() for s in models.seeds]},
        models=models, one_batch=(engine.compute()[0, 1], full), within=within, pairs=pairs, cross_seed=cross_seed,
        matched=matched, wide_deep=wide_deep, relative=relative)


RESULT = CkaResult
MODEL_TABLES = ()
VERDICTS = ()
