"""Chapter 3's study (book/03_block_structure.md): when does the block appear?

Layer: studies (on `widedeep.analyses.structure`, `incidence` and `trends`). `models(profile)` reads
both schedule arms and the seed study, analysed for the block structure from their records; `study(
models, settings)` takes them and the profile's grid, short-arm and detector sections and returns
`BlockStructureResult`: every model's blocks, the trends of seed 0, the detector's sweeps, the law of
block incidence fitted on each arm (Firth logistic, and least squares on the continuous outcomes), the
arms compared, and claims 1 and 2 judged from the main arm's fit that carries them (presence where
estimable, else the maximum first-PC share). The main arm is held to the interpolation rule: a grid
model that misses it is left out of the law and counted. Its stored fields are
`results/<profile>/03_block_structure.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from widedeep import experiments
from widedeep.analyses import incidence, structure, trends, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.profiles import Detector, Grid, Profile, Short
from widedeep.studies import drawn, keyed
from widedeep.train import TrainConfig

CHAPTER = "03_block_structure"
FITS = ("incidence_fit", "continuous_fit", "block_size_fit")  # the laws fitted on each arm
SERIES = ("width", "depth")


@dataclass(frozen=True)
class Models:
    """Chapter 3's analysed runs: the main arm (the grid), the short arm and the seed study."""

    main: tuple[BlockAnalysis, ...]
    short: tuple[BlockAnalysis, ...]
    seed_study: tuple[BlockAnalysis, ...]


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 3 reads: both schedule arms and the seed study."""
    return experiments.block_models(profile)


def models(profile: Profile) -> Models:
    """The chapter's runs, analysed for the block structure from their records."""
    return Models(*(tuple(structure.analyse_all(arm, profile)) for arm in (
        experiments.training_grid(profile), experiments.short_arm_grid(profile), experiments.seed_study_grid(profile))))


@dataclass(frozen=True)
class Settings:
    """What Chapter 3 reads of a profile: the grid (series, data sizes, seeds, the rule), the short arm and the
    detector."""

    grid: Grid
    short: Short
    detector: Detector


def settings(profile: Profile) -> Settings:
    """Chapter 3's settings from a profile."""
    return Settings(profile.grid, profile.short, profile.detector)


@dataclass(frozen=True)
class SeriesLayout:
    """One series of the paper's figure: seed-0 models on a grid (rows n_train, most data on top), titled."""

    layout: list[list[BlockAnalysis | None]]
    row_labels: list[str]
    architectures: list[tuple[int, float]]
    titles: list[list[str]]


@dataclass(frozen=True)
class BlockStructureResult:
    """Chapter 3's results: the stored fields are `03_block_structure.json`'s keys, in order; the drawn ones feed
    the page."""

    detector: dict
    models: dict[str, dict]                 # the main arm, by run name
    short_arm: dict[str, dict]
    seed_study: dict[str, dict]
    trends: dict[str, str]                  # seed 0's capacity and data trends, with and without the first-PC rule
    threshold_sweep: dict
    arms_compared: list[dict]               # per depth-series cell both arms trained
    training_length_effect: dict[str, float]
    incidence_fit: dict | None              # the main arm's laws (None: one data size cannot separate the two)
    continuous_fit: dict | None
    block_size_fit: dict | None
    short_arm_incidence_fit: dict | None
    short_arm_continuous_fit: dict | None
    short_arm_block_size_fit: dict | None
    claims_fit: dict                        # which fit carries the claims, its verdicts, the models left out
    claims: dict[str, dict]                 # claims 1 and 2 as verdict objects
    analysed: Models = drawn()
    all_rows: list[dict] = drawn()          # the main arm's law rows, the models the rule leaves out included
    main_rows: list[dict] = drawn()         # ... without them (what the law is fitted on)
    short_rows: list[dict] = drawn()
    left_out: list[dict] = drawn()
    fits: dict | None = drawn()             # FITS -> incidence.LawFit of the main arm
    short_fits: dict | None = drawn()
    claim_key: str = drawn()                # the fit that carries the claims ("none" without one)
    claim_verdicts: dict | None = drawn()
    incidence_text: dict[str, str] = drawn()    # seed 0's incidence sentences (`trends.grid_verdicts`)
    series: dict[str, SeriesLayout] = drawn()

    def counts(self) -> dict[str, str]:
        """'k of n' models with a block in each arm."""
        return {arm: f"{sum(r['block'] is not None for r in rows)} of {len(rows)}"
                for arm, rows in (("main", self.main_rows), ("short", self.short_rows))}

    def rule_held(self) -> tuple[int, int, float]:
        """(main-arm models meeting the train-accuracy rule, models, lowest train accuracy); no rule: all."""
        accs = [r["train_acc"] for r in self.all_rows]
        return len(accs) - len(self.left_out), len(accs), min(accs)


def cell_title(hit: int, total: int) -> str:
    """'block 2/3' style incidence over a cell's seeds."""
    return f"block {hit}/{total}"


def fit_laws(rows: list[dict]) -> dict | None:
    """The laws, or None when the rows cannot separate capacity from data (e.g. one n_train)."""
    try:
        return incidence.fit_laws(rows)
    except ValueError:
        return None


def series_layout(main: list[BlockAnalysis], all_rows: list[dict], grid: Grid, series: str) -> SeriesLayout:
    """Seed-0 heatmaps of one series (rows n_train, most data on top), its labels and incidence titles."""
    archs = experiments.width_series(grid) if series == "width" else experiments.depth_series(grid)
    n_trains = sorted(grid.n_trains, reverse=True)
    cells = incidence.cell_incidence(all_rows)
    titles = [[cell_title(*cells[(d, float(w), n)]) if (d, float(w), n) in cells else "" for d, w in archs]
              for n in n_trains]
    return SeriesLayout(structure.grid_layout(main, archs, n_trains, grid.seeds[0]),
                        [f"n_train = {n}" for n in n_trains], archs, titles)


def arms_compared(main_rows: list[dict], short_rows: list[dict], grid: Grid, short: Short) -> list[dict]:
    """Per depth-series cell in both arms: steps, mean maximum first-PC share, block size and incidence."""
    out = []
    width = grid.depth_series_width
    for depth in short.depths:
        for n_train in sorted(grid.n_trains):
            entry = {"depth": depth, "width": width, "n_train": n_train}
            for arm, rows in (("main", main_rows), ("short", short_rows)):
                cell = [r for r in rows if (r["depth"], r["width"], r["n_train"]) == (depth, width, n_train)]
                if not cell:
                    continue
                entry[arm] = {"steps": cell[0]["steps"], "seeds": len(cell),
                              "with_block": sum(r["block"] is not None for r in cell),
                              "max_pc1_share": float(np.mean([r["max_pc1_share"] for r in cell])),
                              "block_size": float(np.mean([r["block_size"] for r in cell])),
                              "train_acc": float(np.mean([r["train_acc"] for r in cell])),
                              "test_acc": float(np.mean([r["test_acc"] for r in cell]))}
            if "main" in entry and "short" in entry:
                out.append(entry)
    return out


def training_length_effect(cells: list[dict]) -> dict[str, float]:
    """Mean over the compared cells of short minus main: maximum first-PC share, block size, test accuracy."""
    if not cells:
        return {}
    return {key: float(np.mean([c["short"][key] - c["main"][key] for c in cells]))
            for key in ("max_pc1_share", "block_size", "test_acc")}


def claim_fit(fits: dict | None) -> tuple[str, dict | None]:
    """Which main-arm fit carries the claims: presence where estimable, else the continuous outcome."""
    if fits is None:
        return "none", None
    key = "incidence_fit" if fits["incidence_fit"].estimable else "continuous_fit"
    return key, incidence.law_verdicts(fits[key])


def claims(fits: dict | None, n: int, left_out: int) -> dict[str, dict]:
    """Claims 1 and 2 as verdict objects (book/protocol.md, Chapter 3): the capacity and data coefficients of
    the fit that carries the claims with their intervals, and "relative to data" with its likelihood-ratio p;
    n is the models fitted, and the grid models the interpolation rule left out are counted."""
    key, found = claim_fit(fits)
    fit = fits[key] if found else None
    common = {"n": n, "fit": key, "left_out": left_out, "left_out_why": "grid models below the interpolation rule"}
    rule = (f"book/protocol.md, Chapter 3: the {key.replace('_', ' ')}'s" if found else
            "book/protocol.md, Chapter 3 (no law fitted: the grid cannot separate capacity from data):")
    out = {}
    for name, sign in (("capacity", "> 0"), ("data", "< 0")):
        value = fit.coefficients.get(name) if fit is not None and fit.estimable else None
        out[name] = verdicts.claim({**common, "verdict": found[name] if found else verdicts.NOT_TESTABLE,
                                    "mean": None if value is None else value[0],
                                    "interval": None if value is None else [value[1], value[2]]},
                                   f"{rule} {name} coefficient {sign}, profile-likelihood interval")
    out["relative"] = verdicts.claim({**common, "verdict": found["relative"] if found else verdicts.NOT_TESTABLE,
                                      "interval": None, "lr_test_p": None if fit is None else fit.relative_test_p},
                                     f"{rule} capacity and data shown, capacity + data = 0 not rejected")
    return out


def study(models: Models, settings: Settings) -> BlockStructureResult:
    """Chapter 3 on both arms and the seed study: blocks, trends, sweeps, the fitted laws and claims 1 and 2."""
    g, detector = settings.grid, settings.detector
    main, short, seeds = list(models.main), list(models.short), list(models.seed_study)
    all_rows = incidence.law_rows([m.summary() for m in main], g.width_series_depth, g.depth_series_width)
    left_out = structure.misses_rule(all_rows, g.min_train_acc)   # the interpolation rule (book/protocol.md)
    main_rows = [r for r in all_rows if r not in left_out]
    short_rows = incidence.law_rows([m.summary() for m in short], g.width_series_depth, g.depth_series_width)
    fits, short_fits = fit_laws(main_rows), fit_laws(short_rows)
    seed0_trends, incidence_text = trends.grid_verdicts([r for r in main_rows if r["seed"] == g.seeds[0]])
    sweep = structure.threshold_sweep(main + short, detector)
    compared = arms_compared(main_rows, short_rows, g, settings.short)
    laws = {}
    for arm, arm_fits, rows in (("", fits, main_rows), ("short_arm_", short_fits, short_rows)):
        record = incidence.law_record(arm_fits, rows) if arm_fits is not None else {}
        laws.update({arm + key: record.get(key) for key in FITS})   # None: the arm cannot separate the two
    key, found = claim_fit(fits)
    return BlockStructureResult(
        detector=detector.settings(), models=keyed([m.summary() for m in main]),
        short_arm=keyed([m.summary() for m in short]), seed_study=keyed([m.summary() for m in seeds]),
        trends=seed0_trends,
        threshold_sweep={"thresholds": detector.thresholds, "min_pc1s": detector.min_pc1s,
                         "stream_layers_in_block": sweep},
        arms_compared=compared, training_length_effect=training_length_effect(compared), **laws,
        claims_fit={"fit": key, "verdicts": found or {}, "left_out": [r["name"] for r in left_out]},
        claims=claims(fits, len(main_rows), len(left_out)),
        analysed=models, all_rows=all_rows, main_rows=main_rows, short_rows=short_rows, left_out=left_out, fits=fits,
        short_fits=short_fits, claim_key=key, claim_verdicts=found, incidence_text=incidence_text,
        series={s: series_layout(main, all_rows, g, s) for s in SERIES})


RESULT = BlockStructureResult
MODEL_TABLES = ("models", "short_arm", "seed_study")
VERDICTS = ("trends.*", "claims_fit.verdicts.*") + tuple(f"{arm}{fit}_fit.verdicts.*" for arm in ("", "short_arm_")
                                                  for fit in ("incidence", "continuous", "block_size"))
