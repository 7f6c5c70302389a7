"""Chapter 6's study (book/06_errors.md): do wide and deep models of equal accuracy make different errors?

Layer: studies (on the statistics of `widedeep.analyses.errors` and `power`). `populations(profile)`
reads the two populations' records (every seed's test and validation predictions, read from the
run records: nothing is trained here); `study(populations, settings)` takes them and the profile's
`Errors` section and returns `ErrorsResult`: the accuracy match on the validation split, the
example-level tests over paired half-splits, the power curve, the main test of all seeds against
its half-split calibration, and the class-level intervals, each verdict from the numbers it rests
on, in one fixed order. Its stored fields are `results/<profile>/06_errors.json`; the sentences the
page quotes are built from it in `widedeep.book.sentences`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from widedeep import experiments, records
from widedeep.analyses import errors, power, runs, verdicts
from widedeep.labels import architecture_of
from widedeep.profiles import Errors, Profile
from widedeep.studies import drawn, section_values
from widedeep.train import TrainConfig

CHAPTER = "06_errors"
SIDES = experiments.ERROR_SIDES   # ("wide", "deep")


@dataclass(frozen=True)
class Side:
    """One population as the page shows it: its architecture and every seed with its test accuracy."""

    architecture: str            # 'ResNet-20 ×2'
    depth: int
    width: float
    n_train: int
    seeds: tuple[int, ...]
    test_acc: tuple[float, ...]
    parameters: int | None

    def entry(self) -> dict:
        """The side's entry in the results file."""
        return {"depth": self.depth, "width": self.width, "n_train": self.n_train, "seeds": list(self.seeds),
                "test_acc": list(self.test_acc), "mean_test_acc": float(np.mean(self.test_acc))}


@dataclass(frozen=True)
class Populations:
    """What Chapter 6 reads of its runs: each side's seeds and predictions (seeds x examples), and the labels."""

    sides: dict[str, Side]
    test: dict[str, np.ndarray]          # side -> predicted class per seed and test example
    val: dict[str, np.ndarray]           # side -> the same on the validation split (the accuracy match)
    labels: np.ndarray                   # test labels
    val_labels: np.ndarray
    classes: tuple[str, ...]


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 6 reads: the seeds of the wide-shallow and of the deep-narrow model."""
    return [c for side in experiments.errors_grid(profile).values() for c in side]


def populations(profile: Profile) -> Populations:
    """The profile's two populations read through their records (every seed's predictions are a record)."""
    grid = experiments.errors_grid(profile)
    members = {side: records.load_runs(profile, seeds) for side, seeds in grid.items()}
    splits = grid["wide"][0].splits()
    test, val = splits.test, splits.val
    sides = {side: Side(architecture_of(grid[side][0]), grid[side][0].depth, grid[side][0].width,
                        grid[side][0].n_train, tuple(r.config.seed for r in runs_), tuple(r.test_acc for r in runs_),
                        runs_[0].metrics.get("parameters")) for side, runs_ in members.items()}
    predictions = {name: {side: np.stack([runs.run_predictions(r, split) for r in runs_])
                          for side, runs_ in members.items()} for name, split in (("test", test), ("val", val))}
    return Populations(sides, predictions["test"], predictions["val"], test.labels.numpy(), val.labels.numpy(),
                       tuple(test.classes))


@dataclass(frozen=True)
class ErrorsResult:
    """Chapter 6's results: the stored fields are `06_errors.json`'s keys, in order; the drawn ones feed the page."""

    settings: dict                       # the profile's errors_* keys
    wide: dict                           # each side: architecture coordinates, seeds, test accuracies
    deep: dict
    accuracy_match: dict                 # validation accuracies matched within the tolerance; test beside them
    power: dict                          # the power curve and the smallest population that reaches the wanted count
    main_test: dict                      # all seeds, margins filtered, against the half-split calibration
    example_level: dict                  # paired half-splits: wide vs half, half vs half
    class_level: dict                    # per-class intervals, the null's, and over paired half-splits
    verdicts: dict
    claims: dict
    section: Errors = drawn()                            # the settings the study ran under
    populations: Populations = drawn()
    m: int = drawn()                                     # seeds a side in every half-split comparison
    first_split: dict[str, np.ndarray] = drawn()         # correct fractions: wide, and the halves of one deep split
    paired: dict = drawn()                               # `errors.paired_split_tests`
    all_seeds: dict = drawn()                            # `errors.example_tests` of all seeds (no comparable null)
    main: dict = drawn()                                 # `power.filtered_fisher_test` of all seeds
    calibration: np.ndarray = drawn()                    # discoveries of half against half, per split
    main_beyond: bool = drawn()                          # the main test's count beyond the calibration's quantile
    scatter: dict = drawn()                              # the paper's example-level figure, panel -> (x, y, found)
    by_class: dict = drawn()
    null_class: dict = drawn()
    paired_class: dict = drawn()

    @property
    def p_floor(self) -> float:
        """The smallest two-sided Fisher p-value m seeds a side can give: all right against all wrong."""
        return float(errors.fisher_pvalues(np.array([self.m]), self.m, np.array([0]), self.m)[0])


def _half_split_counts(deep: np.ndarray, labels: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple:
    """Seeds of each half of the deep population that classify each example correctly."""
    return tuple((deep[half] == labels).sum(axis=0) for half in (first, second))


def study(populations: Populations, settings: Errors) -> ErrorsResult:
    """Chapter 6 on two populations of seeds: the match, examples, power, the main test and classes, judged."""
    s, p = settings, populations
    wide, deep, labels = p.test["wide"], p.test["deep"], p.labels
    m = deep.shape[0] // 2
    matched, match = errors.pair_matched(p.val["wide"], p.val["deep"], p.val_labels, s.match_tolerance)
    test_match = errors.accuracy_match(wide, deep, labels)   # reported, never matched on

    # example level: every paired half-split, wide against one half and half against half
    paired = errors.paired_split_tests(wide, deep, labels, splits=s.splits, seed=0, fdr=s.fdr)
    beyond_discoveries = errors.beyond_null(paired["test_n_significant"], paired["null_n_significant"],
                                            s.null_quantile)
    beyond_difference = errors.beyond_null(paired["test_mean_abs_diff"], paired["null_mean_abs_diff"],
                                           s.null_quantile)
    example_verdict = errors.difference_verdict(beyond_discoveries, beyond_difference, matched)
    all_seeds = errors.example_tests(wide, deep, labels, s.fdr)
    first, second = errors.half_splits(deep.shape[0], 1, seed=0)[0]
    first_split = {"wide": errors.correct_fraction(wide, labels),
                   "deep_1": errors.correct_fraction(deep[first], labels),
                   "deep_2": errors.correct_fraction(deep[second], labels)}

    # power: the curve over population sizes under shrunk per-example rates
    counts = {"wide": (wide == labels).sum(axis=0), "deep": (deep == labels).sum(axis=0)}
    rates = {side: power.shrunk_rates(counts[side], p.test[side].shape[0]) for side in counts}
    curve = power.power_curve(rates["wide"], rates["deep"], s.power_seeds, ratio=2, fdr=s.fdr, draws=s.power_draws,
                              seed=0)
    enough = power.smallest_population(curve, s.power_wanted)

    # the main test: all seeds of both sides, margins filtered, calibrated by half against half
    main = power.filtered_fisher_test(counts["wide"], wide.shape[0], counts["deep"], deep.shape[0], s.fdr)
    calibration = np.array([power.filtered_fisher_test(a, len(one), b, len(other), s.fdr)["n_significant"]
                            for one, other in errors.half_splits(deep.shape[0], s.splits, seed=1)
                            for a, b in [_half_split_counts(deep, labels, one, other)]])
    beyond = main["n_significant"] > np.quantile(calibration, s.null_quantile)
    main_verdict = errors.difference_verdict(beyond, beyond_difference, matched)
    one, other = errors.half_splits(deep.shape[0], 1, seed=1)[0]
    a, b = _half_split_counts(deep, labels, one, other)
    halves = power.filtered_fisher_test(a, len(one), b, len(other), s.fdr)["significant"]
    scatter = {f"{p.sides['wide'].architecture} vs {p.sides['deep'].architecture}":
               (counts["wide"] / wide.shape[0], counts["deep"] / deep.shape[0], main["significant"]),
               "deep half 1 vs deep half 2": (a / len(one), b / len(other), halves)}

    # class level: per-class intervals, the null's, and both over every paired half-split
    k = len(p.classes)
    by_class = errors.class_difference(wide, deep, labels, k, n_boot=s.n_boot, seed=0, level=s.level)
    null_class = errors.class_split_null(deep, labels, k, n_boot=s.n_boot, seed=0, level=s.level)
    pc = errors.paired_class_splits(wide, deep, labels, k, splits=s.splits, n_boot=s.n_boot, seed=0, level=s.level)
    class_beyond_count = errors.beyond_null(pc["test_n_excluding"], pc["null_n_excluding"], s.null_quantile)
    class_beyond_mean = errors.beyond_null(pc["test_mean_abs_diff"], pc["null_mean_abs_diff"], s.null_quantile)
    class_verdict = errors.difference_verdict(class_beyond_count, class_beyond_mean, matched, unit="classes")

    return ErrorsResult(
        settings=section_values(s), wide=p.sides["wide"].entry(), deep=p.sides["deep"].entry(),
        accuracy_match={**match, "split": "validation", "tolerance": s.match_tolerance, "matched": matched,
                        "test": test_match},
        power={"curve": curve, "populations": {"wide": wide.shape[0], "deep": deep.shape[0]},
               "smallest_population": enough, "wanted": s.power_wanted,
               "alternative": "per-example rates shrunk towards each population's mean by a beta-binomial fit",
               "filter": main["filter"]},
        main_test={"n_significant": main["n_significant"], "n_kept": main["n_kept"],
                   "p_floor": power.p_floor(wide.shape[0], deep.shape[0]),
                   "calibration_n_significant": calibration, "verdict": main_verdict},
        example_level={
            "n_significant": float(np.median(paired["test_n_significant"])),
            "n_significant_per_split": paired["test_n_significant"],
            "null_n_significant": paired["null_n_significant"], "fdr": s.fdr,
            "mean_abs_diff_per_split": paired["test_mean_abs_diff"],
            "null_mean_abs_diff": paired["null_mean_abs_diff"], "null_quantile": s.null_quantile,
            "mean_abs_diff_median": float(np.median(paired["test_mean_abs_diff"])),
            "null_mean_abs_diff_quantile": float(np.quantile(paired["null_mean_abs_diff"], s.null_quantile)),
            "n_significant_all_seeds": all_seeds["n_significant"],
            "beyond_null_discoveries": beyond_discoveries, "beyond_null_difference": beyond_difference},
        class_level={
            "classes": list(p.classes), "diff": by_class["diff"], "ci_low": by_class["ci_low"],
            "ci_high": by_class["ci_high"], "null_diff": null_class["diff"], "null_ci_low": null_class["ci_low"],
            "null_ci_high": null_class["ci_high"], "level": s.level,
            "n_excluding_zero": int(by_class["excludes_zero"].sum()),
            "null_n_excluding_zero": int(null_class["excludes_zero"].sum()),
            "paired_n_excluding_per_split": pc["test_n_excluding"], "paired_null_n_excluding": pc["null_n_excluding"],
            "paired_mean_abs_diff_per_split": pc["test_mean_abs_diff"],
            "paired_null_mean_abs_diff": pc["null_mean_abs_diff"],
            "beyond_null_count": class_beyond_count, "beyond_null_difference": class_beyond_mean},
        verdicts={"example_level": main_verdict, "example_level_half_splits": example_verdict,
                  "class_level": class_verdict},
        claims={"example_level": verdicts.claim(
            {"verdict": main_verdict, "n": int(wide.shape[0] + deep.shape[0]), "interval": None, "unit": "seeds",
             "discoveries": int(main["n_significant"]),
             "calibration_quantile": float(np.quantile(calibration, s.null_quantile)), "matched": bool(matched)},
            "book/protocol.md, Chapter 6: Fisher's exact test per example over all seeds, BH at errors_fdr; "
            "shown when the discoveries exceed the half-split calibration's errors_null_quantile quantile, "
            "not testable when the pair is not matched on validation accuracy")},
        section=s, populations=p, m=m, first_split=first_split, paired=paired, all_seeds=all_seeds, main=main,
        calibration=calibration, main_beyond=bool(beyond), scatter=scatter, by_class=by_class,
        null_class=null_class, paired_class=pc)


RESULT = ErrorsResult
MODEL_TABLES = ()
VERDICTS = ("verdicts.*", "main_test.verdict")
