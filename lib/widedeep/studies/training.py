"""Chapter 1's study (book/01_training.md): the grid trained to the stated rule, and the precision side study.

Layer: studies (on `widedeep.analyses.precision` and `structure`). `models(profile)` reads the main arm's
runs from their records (trained beforehand by the pipeline: `pipeline.ensure`), and the seed study in
both precisions, analysed, where its bfloat16 runs are recorded or trainable here; `study(models,
settings)` takes them and returns `TrainingResult`: each model's summary, which models meet the
interpolation rule, and the side study (each quantity's precision effect against the seed spread).
Its stored fields are `results/<profile>/01_training.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

from widedeep import experiments, records
from widedeep.analyses import precision, structure
from widedeep.analyses.structure import BlockAnalysis
from widedeep.profiles import Profile
from widedeep.studies import drawn, keyed
from widedeep.train import TrainConfig, run_summary

CHAPTER = "01_training"


@dataclass(frozen=True)
class Models:
    """Chapter 1's runs: the main arm, and the seed study in the main and the reference precision (None where
    its bfloat16 runs are neither recorded nor trainable on this machine, `missing` of them)."""

    grid: tuple[records.Run, ...]
    side_study: tuple[tuple[BlockAnalysis, ...], tuple[BlockAnalysis, ...]] | None
    missing: int


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 1 reads: the main arm, the seed study and its precision side study's own runs."""
    return experiments.training_grid(profile) + experiments.seed_study_grid(profile) + experiments.side_study_runs(profile)


def models(profile: Profile) -> Models:
    """The chapter's runs, read through their records (the side study analysed where it can be)."""
    missing = precision.runs_missing_here(profile)
    side = None if missing else tuple(tuple(structure.analyse_all(arm, profile)) for arm in (
        experiments.seed_study_grid(profile), experiments.precision_reference_grid(profile)))
    return Models(tuple(records.load_runs(profile, experiments.training_grid(profile))), side, len(missing))


@dataclass(frozen=True)
class Settings:
    """What Chapter 1 reads of a profile: every value it ran under (its results keep them) and the rule."""

    parameters: dict                 # `Profile.public()`: every key and the profile's name, no machine paths
    min_train_acc: float | None


def settings(profile: Profile) -> Settings:
    """Chapter 1's settings from a profile."""
    return Settings(profile.public(), profile.grid.min_train_acc)


@dataclass(frozen=True)
class TrainingResult:
    """Chapter 1's results: the stored fields are `01_training.json`'s keys, in order; the drawn ones feed the page."""

    parameters: dict                 # the profile the models trained under
    models: dict[str, dict]          # each model's summary (`train.run_summary`), by run name
    rule: dict                       # the interpolation rule: how many models meet it, and which miss it
    precision_check: dict | None     # the side study (`precision.compare`), None where it was not run here
    runs: tuple[records.Run, ...] = drawn()
    rows: list[dict] = drawn()       # the summaries, in the grid's order, with their run names
    missed: list[dict] = drawn()     # the rows below the rule
    missing: int = drawn()           # the side study's bfloat16 runs that cannot train here


def study(models: Models, settings: Settings) -> TrainingResult:
    """Chapter 1: every model's summary, the rule checked per model, and the precision side study."""
    rows = [run_summary(run) for run in models.grid]
    missed = structure.misses_rule(rows, settings.min_train_acc)
    check = None if models.side_study is None else precision.compare(
        *[[m.summary() for m in arm] for arm in models.side_study],
        names=tuple(arm[0].run.config.precision for arm in models.side_study))
    return TrainingResult(
        parameters=settings.parameters, models=keyed(rows),
        rule={"min_train_acc": settings.min_train_acc, "met": len(rows) - len(missed), "models": len(rows),
              "missed": [r["name"] for r in missed]},
        precision_check=check, runs=models.grid, rows=rows, missed=missed, missing=models.missing)


RESULT = TrainingResult
MODEL_TABLES = ("models",)
VERDICTS = ()
