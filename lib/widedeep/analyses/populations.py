"""Do wide and deep models of equal accuracy make different errors? (Chapter 6) — the study over two
populations of seeds, judged against the seed-split null of the deep model's own seeds.

Layer: analyses (on the statistics of `widedeep.analyses.errors` and the run caches of `runs`; below
book support). `ErrorStudy` trains (or loads) the profile's two populations, takes every seed's
test predictions from the run store, and computes step by step what the chapter shows: the accuracy
match, the example-level tests over paired half-splits, the smallest p-value the seed counts allow,
and the class-level intervals; each step returns the sentences the chapter quotes, and `record()`
the results payload.
"""

from __future__ import annotations

import numpy as np

from widedeep import profiles, records
from widedeep.analyses import errors, power, runs, verdicts
from widedeep.labels import architecture_of
from widedeep.profiles import Profile


def spread(values: np.ndarray, digits: int) -> str:
    """Median and range over splits: '12 (range 3–20)'."""
    return f"{np.median(values):.{digits}f} (range {np.min(values):.{digits}f}–{np.max(values):.{digits}f})"


def exceeds(flag: bool) -> str:
    return "exceeds" if flag else "does not exceed"


class ErrorStudy:
    """Chapter 6 on a profile: a wide-shallow and a deep-narrow population, their errors against the null's."""

    def __init__(self, profile: Profile):
        self.profile, self.settings = profile, profile.errors
        self.grid = profiles.errors_grid(profile)
        self.populations = {side: records.load_runs(profile, configs) for side, configs in self.grid.items()}
        splits = self.grid["wide"][0].splits()
        test, val = splits.test, splits.val
        self.labels, self.classes = test.labels.numpy(), list(test.classes)
        self.val_labels = val.labels.numpy()
        predictions = {side: np.stack([runs.run_predictions(run, test) for run in members])
                       for side, members in self.populations.items()}
        self.wide, self.deep = predictions["wide"], predictions["deep"]   # (seeds, examples) each
        # Accuracies are matched on the validation split, never on the test set the tests then use.
        self.val_predictions = {side: np.stack([runs.run_predictions(run, val) for run in members])
                                for side, members in self.populations.items()}
        self.m = self.deep.shape[0] // 2   # seeds a side in every half-split comparison

    def describe(self, side: str) -> str:
        """'ResNet-20 ×2': the architecture of one side."""
        return architecture_of(self.grid[side][0])

    # -- accuracy --------------------------------------------------------------------------------

    def accuracy_match(self) -> dict[str, str]:
        """Mean validation accuracies over seeds (the match), their gap and Welch p-value; test accuracies beside."""
        self.matched, self.match = errors.pair_matched(self.val_predictions["wide"], self.val_predictions["deep"],
                                                       self.val_labels, self.settings.match_tolerance)
        self.test_match = errors.accuracy_match(self.wide, self.deep, self.labels)   # reported, never matched on
        m = self.match
        return {"wide_model": self.describe("wide"), "deep_model": self.describe("deep"),
                "acc_wide": f"{m['acc_a']:.3f} ± {m['std_a']:.3f}",
                "acc_deep": f"{m['acc_b']:.3f} ± {m['std_b']:.3f}",
                "acc_gap": f"{m['diff']:+.3f}", "acc_p": f"{m['p_value']:.2g}",
                "matched": "matched" if self.matched else "not matched",
                "match_tolerance": f"{self.settings.match_tolerance:g}",
                "test_acc_wide": f"{self.test_match['acc_a']:.3f}", "test_acc_deep": f"{self.test_match['acc_b']:.3f}"}

    # -- power -----------------------------------------------------------------------------------

    def correct_counts(self) -> dict[str, np.ndarray]:
        """Seeds of each side that classify each test example correctly."""
        return {"wide": (self.wide == self.labels).sum(axis=0), "deep": (self.deep == self.labels).sum(axis=0)}

    def power_analysis(self) -> dict[str, str]:
        """The power curve over population sizes under the alternative of shrunk per-example rates."""
        s, counts = self.settings, self.correct_counts()
        self.rates = {side: power.shrunk_rates(counts[side], len(self.populations[side])) for side in counts}
        self.curve = power.power_curve(self.rates["wide"], self.rates["deep"], s.power_seeds, ratio=2, fdr=s.fdr,
                                       draws=s.power_draws, seed=0)
        self.enough = power.smallest_population(self.curve, s.power_wanted)
        here = min(self.curve, key=lambda p: abs(p["m_a"] - self.wide.shape[0]))
        return {"power_m": str(self.wide.shape[0]), "power_wanted": f"{s.power_wanted:g}",
                "power_here": f"{here['expected_discoveries']:.1f} (at m = {here['m_a']})",
                "power_enough": (f"{self.enough} wide and {2 * self.enough} deep seeds" if self.enough is not None
                                 else f"more than {max(s.power_seeds)} wide seeds (no point of the curve reaches it)"),
                "power_null": f"{max(p['expected_false_discoveries_under_null'] for p in self.curve):.2f}"}

    def scatter_pairs(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The paper's example-level figure: wide against deep (main test), and two halves of the deep seeds."""
        counts, s = self.correct_counts(), self.settings
        first, second = errors.half_splits(self.deep.shape[0], 1, seed=1)[0]
        a, b = ((self.deep[half] == self.labels).sum(axis=0) for half in (first, second))
        null = power.filtered_fisher_test(a, len(first), b, len(second), s.fdr)["significant"]
        return {f"{self.describe('wide')} vs {self.describe('deep')}":
                    (counts["wide"] / self.wide.shape[0], counts["deep"] / self.deep.shape[0], self.main["significant"]),
                f"deep half 1 vs deep half 2": (a / len(first), b / len(second), null)}

    # -- the main test: all seeds of both sides, filtered ----------------------------------------

    def main_test(self) -> dict[str, str]:
        """m wide seeds against all 2m deep seeds, margins filtered before BH; half-splits of the deep side as calibration."""
        s, counts = self.settings, self.correct_counts()
        m_w, m_d = self.wide.shape[0], self.deep.shape[0]
        self.main = power.filtered_fisher_test(counts["wide"], m_w, counts["deep"], m_d, s.fdr)
        calibration = []
        for first, second in errors.half_splits(m_d, s.splits, seed=1):
            a, b = ((self.deep[half] == self.labels).sum(axis=0) for half in (first, second))
            calibration.append(power.filtered_fisher_test(a, len(first), b, len(second), s.fdr)["n_significant"])
        self.calibration = np.array(calibration)
        found = self.main["n_significant"]
        beyond = found > np.quantile(self.calibration, s.null_quantile)
        self.main_verdict = (errors.difference_verdict(beyond, self.beyond_difference, self.matched)
                             if hasattr(self, "beyond_difference") else verdicts.NOT_TESTABLE)
        return {"main_found": str(found), "main_kept": f"{self.main['n_kept']:,}",
                "main_floor": f"{power.p_floor(m_w, m_d):.2g}", "split_floor": f"{power.p_floor(self.m, self.m):.2g}",
                "calibration": spread(self.calibration, 0), "main_verdict": self.main_verdict,
                "main_beyond": exceeds(beyond)}

    # -- example level ---------------------------------------------------------------------------

    def first_split(self) -> dict[str, np.ndarray]:
        """Correct fractions per example of the wide seeds and of both halves of one split of the deep seeds."""
        first, second = errors.half_splits(self.deep.shape[0], 1, seed=0)[0]
        return {"wide": errors.correct_fraction(self.wide, self.labels),
                "deep_1": errors.correct_fraction(self.deep[first], self.labels),
                "deep_2": errors.correct_fraction(self.deep[second], self.labels)}

    def example_level(self) -> dict[str, str]:
        """Fisher tests with BH over every paired half-split: wide vs one half (test), half vs half (null)."""
        s = self.settings
        self.paired = paired = errors.paired_split_tests(self.wide, self.deep, self.labels, splits=s.splits, seed=0,
                                                         fdr=s.fdr)
        self.beyond_discoveries = errors.beyond_null(paired["test_n_significant"], paired["null_n_significant"],
                                                     s.null_quantile)
        self.beyond_difference = errors.beyond_null(paired["test_mean_abs_diff"], paired["null_mean_abs_diff"],
                                                    s.null_quantile)
        self.example_verdict = errors.difference_verdict(self.beyond_discoveries, self.beyond_difference, self.matched)
        self.all_seeds = errors.example_tests(self.wide, self.deep, self.labels, s.fdr)
        return {"fdr": f"{s.fdr:g}", "splits": str(s.splits),
                "null_percentile": f"{100 * s.null_quantile:g}th percentile",
                "test_discoveries": spread(paired["test_n_significant"], 0),
                "null_discoveries": spread(paired["null_n_significant"], 0),
                "test_abs_diff": spread(paired["test_mean_abs_diff"], 3),
                "null_abs_diff": spread(paired["null_mean_abs_diff"], 3),
                "beyond_discoveries": exceeds(self.beyond_discoveries),
                "beyond_difference": exceeds(self.beyond_difference), "example_verdict": self.example_verdict,
                "m": str(self.m), "n_examples": f"{self.labels.size:,}",
                "all_seeds_discoveries": str(self.all_seeds["n_significant"]),
                "all_seeds": f"{self.wide.shape[0]} wide against {self.deep.shape[0]} deep"}

    def p_floor(self) -> float:
        """The smallest two-sided Fisher p-value m seeds a side can give: all right against all wrong."""
        return float(errors.fisher_pvalues(np.array([self.m]), self.m, np.array([0]), self.m)[0])

    def count_demand(self) -> dict[str, str]:
        """Whether a discovery count can exceed zero at this size: the p floor against BH's first threshold."""
        floor, fdr, n = self.p_floor(), self.settings.fdr, self.labels.size
        first_threshold = fdr / n  # what BH asks of the smallest p-value alone
        return {"p_floor": f"{floor:.2g}", "first_threshold": f"{first_threshold:.2g}",
                "floor_examples": f"{errors.bh_examples_needed(floor, n, fdr):,}",
                "count_demand": "a demanding statistic" if floor > first_threshold else "within reach"}

    # -- class level -----------------------------------------------------------------------------

    def class_level(self) -> None:
        """Per-class differences wide − deep with bootstrap intervals, the same between halves of the deep seeds,
        and both over every paired half-split."""
        s, k = self.settings, len(self.classes)
        self.by_class = errors.class_difference(self.wide, self.deep, self.labels, k, n_boot=s.n_boot, seed=0,
                                                level=s.level)
        self.null_class = errors.class_split_null(self.deep, self.labels, k, n_boot=s.n_boot, seed=0, level=s.level)
        self.paired_class = errors.paired_class_splits(self.wide, self.deep, self.labels, k, splits=s.splits,
                                                       n_boot=s.n_boot, seed=0, level=s.level)

    def class_list(self, result: dict) -> str:
        """The classes whose interval excludes zero, with the sign of the difference."""
        names = [f"{self.classes[c]} ({result['diff'][c]:+.3f})" for c in np.flatnonzero(result["excludes_zero"])]
        return ", ".join(names) or "none"

    def class_texts(self) -> dict[str, str]:
        """The class-level numbers, judged like the examples (paired half-splits against the null's quantile)."""
        s, k, paired = self.settings, len(self.classes), self.paired_class
        self.class_beyond_count = errors.beyond_null(paired["test_n_excluding"], paired["null_n_excluding"],
                                                     s.null_quantile)
        self.class_beyond_mean = errors.beyond_null(paired["test_mean_abs_diff"], paired["null_mean_abs_diff"],
                                                    s.null_quantile)
        self.class_verdict = errors.difference_verdict(self.class_beyond_count, self.class_beyond_mean, self.matched,
                                                       unit="classes")
        return {"level": f"{s.level:.0%}", "n_classes": str(k),
                "classes_excluding": f"{int(self.by_class['excludes_zero'].sum())} of {k}",
                "class_list": self.class_list(self.by_class),
                "classes_excluding_null": f"{int(self.null_class['excludes_zero'].sum())} of {k}",
                "class_list_null": self.class_list(self.null_class), "class_verdict": self.class_verdict,
                "largest_class_gap": f"{np.max(np.abs(self.by_class['diff'])):.3f}",
                "largest_null_gap": f"{np.max(np.abs(self.null_class['diff'])):.3f}",
                "class_test_counts": spread(paired["test_n_excluding"], 0),
                "class_null_counts": spread(paired["null_n_excluding"], 0),
                "class_test_diff": spread(paired["test_mean_abs_diff"], 3),
                "class_null_diff": spread(paired["null_mean_abs_diff"], 3),
                "class_beyond_count": exceeds(self.class_beyond_count),
                "class_beyond_mean": exceeds(self.class_beyond_mean)}

    # -- the record ------------------------------------------------------------------------------

    def side_entry(self, side: str) -> dict:
        """One population: its architecture, data size, seeds and their test accuracies."""
        config, members = self.grid[side][0], self.populations[side]
        return {"depth": config.depth, "width": config.width, "n_train": config.n_train,
                "seeds": [r.config.seed for r in members], "test_acc": [r.test_acc for r in members],
                "mean_test_acc": float(np.mean([r.test_acc for r in members]))}

    def record(self) -> dict:
        """The chapter's results payload (`widedeep.book.results`)."""
        s, paired, pc = self.settings, self.paired, self.paired_class
        by_class, null_class = self.by_class, self.null_class
        return {
            "settings": self.profile.section_values("errors"), "wide": self.side_entry("wide"),
            "deep": self.side_entry("deep"),
            "accuracy_match": {**self.match, "split": "validation", "tolerance": s.match_tolerance,
                               "matched": self.matched, "test": self.test_match},
            "power": {"curve": self.curve, "populations": {"wide": self.wide.shape[0], "deep": self.deep.shape[0]},
                      "smallest_population": self.enough, "wanted": s.power_wanted,
                      "alternative": "per-example rates shrunk towards each population's mean by a beta-binomial fit",
                      "filter": self.main["filter"]},
            "main_test": {"n_significant": self.main["n_significant"], "n_kept": self.main["n_kept"],
                          "p_floor": power.p_floor(self.wide.shape[0], self.deep.shape[0]),
                          "calibration_n_significant": self.calibration, "verdict": self.main_verdict},
            "example_level": {
                "n_significant": float(np.median(paired["test_n_significant"])),
                "n_significant_per_split": paired["test_n_significant"],
                "null_n_significant": paired["null_n_significant"], "fdr": s.fdr,
                "mean_abs_diff_per_split": paired["test_mean_abs_diff"],
                "null_mean_abs_diff": paired["null_mean_abs_diff"], "null_quantile": s.null_quantile,
                "mean_abs_diff_median": float(np.median(paired["test_mean_abs_diff"])),
                "null_mean_abs_diff_quantile": float(np.quantile(paired["null_mean_abs_diff"], s.null_quantile)),
                "n_significant_all_seeds": self.all_seeds["n_significant"],
                "beyond_null_discoveries": self.beyond_discoveries, "beyond_null_difference": self.beyond_difference},
            "class_level": {
                "classes": self.classes, "diff": by_class["diff"], "ci_low": by_class["ci_low"],
                "ci_high": by_class["ci_high"], "null_diff": null_class["diff"], "null_ci_low": null_class["ci_low"],
                "null_ci_high": null_class["ci_high"], "level": s.level,
                "n_excluding_zero": int(by_class["excludes_zero"].sum()),
                "null_n_excluding_zero": int(null_class["excludes_zero"].sum()),
                "paired_n_excluding_per_split": pc["test_n_excluding"],
                "paired_null_n_excluding": pc["null_n_excluding"],
                "paired_mean_abs_diff_per_split": pc["test_mean_abs_diff"],
                "paired_null_mean_abs_diff": pc["null_mean_abs_diff"],
                "beyond_null_count": self.class_beyond_count, "beyond_null_difference": self.class_beyond_mean},
            "verdicts": {"example_level": self.main_verdict, "example_level_half_splits": self.example_verdict,
                         "class_level": self.class_verdict},
            "claims": {"example_level": verdicts.claim(
                {"verdict": self.main_verdict, "n": int(self.wide.shape[0] + self.deep.shape[0]), "interval": None,
                 "unit": "seeds", "discoveries": int(self.main["n_significant"]),
                 "calibration_quantile": float(np.quantile(self.calibration, s.null_quantile)),
                 "matched": bool(self.matched)},
                "book/protocol.md, Chapter 6: Fisher's exact test per example over all seeds, BH at errors_fdr; "
                "shown when the discoveries exceed the half-split calibration's errors_null_quantile quantile, "
                "not testable when the pair is not matched on validation accuracy")}}
