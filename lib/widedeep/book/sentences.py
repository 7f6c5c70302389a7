"""The values a chapter's prose quotes, worded from its study's typed result (never computed here).

Layer: book support (on `widedeep.studies`). Each function takes a study's result and returns
{glue name: text} for `notebook.glue_all`; the numbers and verdicts come from the result, this
module only formats them.
"""

from __future__ import annotations

import numpy as np

from widedeep.analyses import errors, power
from widedeep.studies.errors import ErrorsResult


def spread(values: np.ndarray, digits: int) -> str:
    """Median and range over splits: '12 (range 3–20)'."""
    return f"{np.median(values):.{digits}f} (range {np.min(values):.{digits}f}–{np.max(values):.{digits}f})"


def exceeds(flag: bool) -> str:
    """'exceeds' or 'does not exceed', as the prose compares a statistic with its null."""
    return "exceeds" if flag else "does not exceed"


# ---------------------------------------------------------------------------------------------
# Chapter 6: wide and deep errors
# ---------------------------------------------------------------------------------------------

def errors_accuracy(result: ErrorsResult) -> dict[str, str]:
    """Mean validation accuracies over seeds (the match), their gap and Welch p-value; test accuracies beside."""
    m, test, sides = result.accuracy_match, result.accuracy_match["test"], result.populations.sides
    return {"wide_model": sides["wide"].architecture, "deep_model": sides["deep"].architecture,
            "acc_wide": f"{m['acc_a']:.3f} ± {m['std_a']:.3f}", "acc_deep": f"{m['acc_b']:.3f} ± {m['std_b']:.3f}",
            "acc_gap": f"{m['diff']:+.3f}", "acc_p": f"{m['p_value']:.2g}",
            "matched": "matched" if m["matched"] else "not matched",
            "match_tolerance": f"{result.section.match_tolerance:g}",
            "test_acc_wide": f"{test['acc_a']:.3f}", "test_acc_deep": f"{test['acc_b']:.3f}"}


def errors_examples(result: ErrorsResult) -> dict[str, str]:
    """The example-level tests over paired half-splits, against the null of two halves of the deep seeds."""
    s, paired, level = result.section, result.paired, result.example_level
    wide, deep = (result.populations.test[side] for side in ("wide", "deep"))
    return {"fdr": f"{s.fdr:g}", "splits": str(s.splits), "null_percentile": f"{100 * s.null_quantile:g}th percentile",
            "test_discoveries": spread(paired["test_n_significant"], 0),
            "null_discoveries": spread(paired["null_n_significant"], 0),
            "test_abs_diff": spread(paired["test_mean_abs_diff"], 3),
            "null_abs_diff": spread(paired["null_mean_abs_diff"], 3),
            "beyond_discoveries": exceeds(level["beyond_null_discoveries"]),
            "beyond_difference": exceeds(level["beyond_null_difference"]),
            "example_verdict": result.verdicts["example_level_half_splits"],
            "m": str(result.m), "n_examples": f"{result.populations.labels.size:,}",
            "all_seeds_discoveries": str(result.all_seeds["n_significant"]),
            "all_seeds": f"{wide.shape[0]} wide against {deep.shape[0]} deep"}


def errors_count_demand(result: ErrorsResult) -> dict[str, str]:
    """Whether a discovery count can exceed zero at this size: the p floor against BH's first threshold."""
    floor, fdr, n = result.p_floor, result.section.fdr, result.populations.labels.size
    first_threshold = fdr / n  # what BH asks of the smallest p-value alone
    return {"p_floor": f"{floor:.2g}", "first_threshold": f"{first_threshold:.2g}",
            "floor_examples": f"{errors.bh_examples_needed(floor, n, fdr):,}",
            "count_demand": "a demanding statistic" if floor > first_threshold else "within reach"}


def errors_power(result: ErrorsResult) -> dict[str, str]:
    """The power curve: discoveries expected at this population size, the size that reaches the wanted count."""
    s, curve, enough = result.section, result.power["curve"], result.power["smallest_population"]
    wide_seeds = result.populations.test["wide"].shape[0]
    here = min(curve, key=lambda p: abs(p["m_a"] - wide_seeds))
    return {"power_m": str(wide_seeds), "power_wanted": f"{s.power_wanted:g}",
            "power_here": f"{here['expected_discoveries']:.1f} (at m = {here['m_a']})",
            "power_enough": (f"{enough} wide and {2 * enough} deep seeds" if enough is not None
                             else f"more than {max(s.power_seeds)} wide seeds (no point of the curve reaches it)"),
            "power_null": f"{max(p['expected_false_discoveries_under_null'] for p in curve):.2f}"}


def errors_main(result: ErrorsResult) -> dict[str, str]:
    """The main test of all seeds against its half-split calibration."""
    main = result.main_test
    wide, deep = (result.populations.test[side].shape[0] for side in ("wide", "deep"))
    return {"main_found": str(main["n_significant"]), "main_kept": f"{main['n_kept']:,}",
            "main_floor": f"{power.p_floor(wide, deep):.2g}", "split_floor": f"{power.p_floor(result.m, result.m):.2g}",
            "calibration": spread(result.calibration, 0), "main_verdict": main["verdict"],
            "main_beyond": exceeds(result.main_beyond)}


def class_list(classes, found: dict) -> str:
    """The classes whose interval excludes zero, with the sign of the difference."""
    names = [f"{classes[c]} ({found['diff'][c]:+.3f})" for c in np.flatnonzero(found["excludes_zero"])]
    return ", ".join(names) or "none"


def errors_classes(result: ErrorsResult) -> dict[str, str]:
    """The class-level numbers, judged like the examples (paired half-splits against the null's quantile)."""
    classes, level, paired = result.populations.classes, result.class_level, result.paired_class
    k, by_class, null_class = len(classes), result.by_class, result.null_class
    return {"level": f"{result.section.level:.0%}", "n_classes": str(k),
            "classes_excluding": f"{int(by_class['excludes_zero'].sum())} of {k}",
            "class_list": class_list(classes, by_class),
            "classes_excluding_null": f"{int(null_class['excludes_zero'].sum())} of {k}",
            "class_list_null": class_list(classes, null_class), "class_verdict": result.verdicts["class_level"],
            "largest_class_gap": f"{np.max(np.abs(by_class['diff'])):.3f}",
            "largest_null_gap": f"{np.max(np.abs(null_class['diff'])):.3f}",
            "class_test_counts": spread(paired["test_n_excluding"], 0),
            "class_null_counts": spread(paired["null_n_excluding"], 0),
            "class_test_diff": spread(paired["test_mean_abs_diff"], 3),
            "class_null_diff": spread(paired["null_mean_abs_diff"], 3),
            "class_beyond_count": exceeds(level["beyond_null_count"]),
            "class_beyond_mean": exceeds(level["beyond_null_difference"])}
