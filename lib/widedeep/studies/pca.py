"""Chapter 4's study (book/04_pca.md): what a block is made of, and whether seeds agree inside it.

Layer: studies (on `widedeep.analyses.first_pc` and `structure`). `study(models, settings)` takes the
analysed runs of both schedule arms and the seed study (`structure.BlockAnalysis`, read from records)
and returns `PcaResult`: the first-PC shares inside and outside each block, the block under CKA once
every layer's first PC is removed, the seed study's cross-seed CKA inside and outside each seed's
block, and claims 3 and 4 judged by the protocol's rules. Its stored fields are
`results/<profile>/04_pca.json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from widedeep import experiments
from widedeep.analyses import first_pc, structure
from widedeep.analyses.structure import BlockAnalysis
from widedeep.profiles import CKA, Detector, Profile
from widedeep.studies import drawn, keyed
from widedeep.train import TrainConfig

CHAPTER = "04_pca"


@dataclass(frozen=True)
class Settings:
    """What Chapter 4 reads of a profile: the CKA estimator's data, the detector, the interpolation rule, and
    which part each run plays in the protocol's claims (`structure.roles`) with the seed study's run names."""

    cka: CKA
    detector: Detector
    min_train_acc: float | None
    roles: Mapping[str, str]
    seed_study: tuple[str, ...]


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 4 reads: both schedule arms and the seed study."""
    return experiments.block_models(profile)


def models(profile: Profile) -> list[BlockAnalysis]:
    """Both schedule arms and the seed study, analysed for the block structure from their records."""
    return structure.analyse_all(configs(profile), profile)


def settings(profile: Profile) -> Settings:
    """Chapter 4's settings from a profile."""
    return Settings(profile.cka, profile.detector, profile.grid.min_train_acc, structure.roles(profile),
                    tuple(c.name() for c in experiments.seed_study_grid(profile)))


@dataclass(frozen=True)
class PcaResult:
    """Chapter 4's results: the stored fields are `04_pca.json`'s keys, in order; the drawn ones feed its figures."""

    models: dict[str, dict]                      # run name -> block, shares, removal effect, role, cross-seed CKA
    detector: dict                               # the detector's settings
    blocks_broken: list[str]                     # run names whose block fails once the first PC is removed
    cross_seed_matched_stream_mean: float        # mean same-layer CKA across the seed study's pairs
    claims: dict[str, dict]                      # claims 3 and 4 as verdict objects
    analysed: tuple[BlockAnalysis, ...] = drawn()          # the models, in the order given
    seed_models: tuple[BlockAnalysis, ...] = drawn()       # the seed study's models among them
    removed: dict[str, np.ndarray] = drawn()               # run name -> stream CKA without the first PC
    pc1_similarity: dict[str, np.ndarray] = drawn()        # run name of a focus model -> first-PC similarity map
    effects: tuple[dict, ...] = drawn()                    # per model: `structure.removal_effect`
    tested: tuple[BlockAnalysis, ...] = drawn()            # models with a block
    outside_change: tuple[float, ...] = drawn()            # per tested block: change of its CKA to the outside
    cross: dict[tuple[int, int], np.ndarray] = drawn()     # (seed, seed) -> stream CKA between the two seeds
    cross_split: dict[int, tuple[float, float]] = drawn()  # seed with a block -> CKA inside, outside it

    def focus(self) -> list[BlockAnalysis]:
        """The models the page draws at full size: those with a block, else the most dominant first PC."""
        return [m for m in self.analysed if m.run.config.name() in self.pc1_similarity]

    @property
    def broken(self) -> list[BlockAnalysis]:
        """The tested models whose block breaks once the first PC is removed."""
        return [m for m in self.tested if m.run.config.name() in self.blocks_broken]


def study(models: Sequence[BlockAnalysis], settings: Settings) -> PcaResult:
    """Chapter 4 on analysed runs: first-PC shares, the first PC removed, cross-seed CKA, claims 3 and 4."""
    models = list(models)
    seed_models = [m for m in models if m.run.config.name() in settings.seed_study]
    removed = {m.run.config.name(): first_pc.without_first_pc(m, settings.cka) for m in models}
    similarity = {m.run.config.name(): first_pc.pc1_similarity(m, settings.cka) for m in first_pc.focus(models)}
    effects = [structure.removal_effect(m, removed[m.run.config.name()], settings.detector) for m in models]
    tested, broken, outside_change = first_pc.broken_blocks(models, effects, settings.detector)
    cross = first_pc.cross_seed(seed_models, settings.cka)
    eligible = structure.eligibility_by_role(models, dict(settings.roles), settings.min_train_acc)
    entries = first_pc.entries(models, effects, structure.cross_seed_pairs(seed_models, cross), seed_models,
                               eligible)
    return PcaResult(models=keyed(entries), detector=settings.detector.settings(),
                     blocks_broken=[m.run.config.name() for m in broken],
                     cross_seed_matched_stream_mean=first_pc.mean_matched(cross),
                     claims=first_pc.claims(entries, settings.detector.min_pc1),
                     analysed=tuple(models), seed_models=tuple(seed_models), removed=removed,
                     pc1_similarity=similarity, effects=tuple(effects), tested=tuple(tested),
                     outside_change=tuple(outside_change),
                     cross=cross, cross_split=structure.cross_seed_split(seed_models, cross))


RESULT = PcaResult
MODEL_TABLES = ("models",)
VERDICTS = ()
