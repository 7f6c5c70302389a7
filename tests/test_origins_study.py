"""Chapter 8's verdicts on hand-made statistics: each claim is judged on the seeds it can be judged on."""

import numpy as np

from widedeep.analyses import verdicts
from widedeep.analyses.origins_study import (CLAIMS, claims_verdicts, looks_sentence, regulariser_sentence,
                                             removal_sentence)

GAUSS = {"top_1pct": 0.08, "top_5pct": 0.25, "top_10pct": 0.44}


def removal_effect(drop_dominant: float) -> dict:
    return {"contrast_before": 0.5, "contrast_after_dominant": 0.5 - drop_dominant, "drop_dominant": drop_dominant,
            "drop_random_mean": 0.02, "drop_random_sd": 0.01, "drop_control": 0.05, "removed": 10}


def reg_row(seed: int, has_block: bool, had_block: bool) -> dict:
    return {"seed": seed, "has_block": has_block, "has_block_unregularised": had_block,
            "test_acc": 0.8, "test_acc_unregularised": 0.82}


def statistics(**changes) -> dict:
    """Two blocked seeds (a, b) that bear out every claim, and one seed without a block (c)."""
    base = {"blocked": ["a", "b"],
            "concentration": {"a": {**GAUSS, "top_5pct": 0.9}, "b": {**GAUSS, "top_5pct": 0.8}},
            "gaussian": GAUSS, "within": {"a": 0.7, "b": 0.6}, "across": {"b": 0.05, "c": 0.04},
            "chance": 0.03, "removal": {"a": removal_effect(0.4), "b": removal_effect(0.3)},
            "snapshots": {"a": [{"epoch": 10, "block_size": 0.3}, {"epoch": 40, "block_size": 0.5}],
                          "b": [{"epoch": 10, "block_size": 0.0}, {"epoch": 20, "block_size": 0.2},
                                {"epoch": 40, "block_size": 0.4}]},
            "regularised": {"0.2": [reg_row(0, False, True), reg_row(1, False, True), reg_row(2, False, False)]}}
    return {**base, **changes}


def test_two_seeds_that_bear_out_every_claim_are_only_suggestive():
    """Two blocked seeds can never show a claim (book/protocol.md): at most "suggestive (2 models)"."""
    assert claims_verdicts(**statistics()) == dict.fromkeys(CLAIMS, verdicts.suggestive(2))


def test_without_a_block_nothing_is_testable():
    assert claims_verdicts(**statistics(blocked=[])) == dict.fromkeys(CLAIMS, verdicts.NOT_TESTABLE)


def test_each_claim_falls_on_its_own_evidence():
    gaussian_like = {"a": {**GAUSS}, "b": {**GAUSS, "top_5pct": 0.9}}  # a: no more concentrated than noise
    assert claims_verdicts(**statistics(concentration=gaussian_like))["dominant_datapoints"] == verdicts.NOT_SHOWN  # 1 of 2
    assert claims_verdicts(**statistics(within={"a": 0.05, "b": 0.06}))["dominant_datapoints"] == verdicts.NOT_SHOWN
    assert claims_verdicts(**statistics(across={"b": 0.6, "c": 0.65}))["differ_across_seeds"] == verdicts.NOT_SHOWN
    # a drop no larger than random removals' mean + 2 sd does not break the block
    weak = {"a": removal_effect(0.03), "b": removal_effect(0.3)}
    assert claims_verdicts(**statistics(removal=weak))["removal_breaks_block"] == verdicts.NOT_SHOWN  # 1 of 2
    late = {"a": [{"epoch": 10, "block_size": 0.0}, {"epoch": 30, "block_size": 0.4}, {"epoch": 40, "block_size": 0.5}]}
    assert claims_verdicts(**statistics(snapshots=late))["forms_early"] == verdicts.NOT_SHOWN
    kept = {"0.2": [reg_row(0, True, True), reg_row(1, False, True)]}
    assert claims_verdicts(**statistics(regularised=kept))["regulariser_removes_block"] == verdicts.NOT_SHOWN  # 1 of 2
    # seeds without a block unregularised say nothing about removing one
    assert claims_verdicts(**statistics(regularised={"0.2": [reg_row(2, False, False)]}))[
        "regulariser_removes_block"] == verdicts.NOT_TESTABLE


def test_the_sentences_carry_the_computed_numbers():
    label = str.upper
    assert removal_sentence({"a": removal_effect(0.4)}, label) == "A: 0.50 to 0.10 (random 0.48 ± 0.01)"
    assert removal_sentence({}, label) == "no block to remove"
    images = {"a": {"brightness_top": 0.31, "brightness_rest": 0.25, "foreground_top": 0.6, "foreground_rest": 0.4}}
    assert looks_sentence(images, label) == "A: brightness 0.31 vs 0.25, foreground 0.60 vs 0.40"
    text = regulariser_sentence(statistics()["regularised"])
    assert text == f"threshold 0.2: blocks in 0 of 3 seeds (without: 2), test accuracy {np.mean([0.8] * 3):.3f} vs 0.820"
