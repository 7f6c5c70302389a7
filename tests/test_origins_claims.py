"""Chapter 8's verdicts on hand-made statistics: each claim is judged on the seeds it can be judged on."""

import numpy as np

import pytest

from widedeep import protocol
from widedeep.analyses import origins, verdicts
from widedeep.analyses.origins import CLAIMS, claims_verdicts, formed_early, judge
from widedeep.book.sentences import looks_sentence, regulariser_sentence, removal_sentence

GAUSS = {"top_1pct": 0.08, "top_5pct": 0.25, "top_10pct": 0.44}


def removal_effect(drop_dominant: float, drop_random: float = 0.02) -> dict:
    return {"contrast_before": 0.5, "contrast_after_dominant": 0.5 - drop_dominant, "drop_dominant": drop_dominant,
            "drop_random_mean": drop_random, "drop_random_sd": 0.01, "drop_control": 0.05, "removed": 10}


def reg_row(seed: int, has_block: bool, had_block: bool) -> dict:
    return {"seed": seed, "has_block": has_block, "has_block_unregularised": had_block,
            "test_acc": 0.8, "test_acc_unregularised": 0.82}


def own_sets(seeds, layers, size=10, n=200, seed=0):
    """Each seed's dominant set is its own at every layer (a few examples swapped per layer): seed labels
    carry the information."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in seeds:
        base = rng.choice(n, size, replace=False)
        for layer in layers:
            chosen = base.copy()
            chosen[rng.integers(size)] = rng.integers(n)
            out[(s, layer)] = np.unique(chosen)
    return out


def layer_sets(seeds, layers, size=10, n=200, seed=0):
    """Each layer has its dominant set, the same in every seed (a few swapped): the seed labels carry nothing."""
    rng = np.random.default_rng(seed)
    bases = {layer: rng.choice(n, size, replace=False) for layer in layers}
    out = {}
    for s in seeds:
        for layer in layers:
            chosen = bases[layer].copy()
            chosen[rng.integers(size)] = rng.integers(n)
            out[(s, layer)] = np.unique(chosen)
    return out


SEEDS = ["a", "b", "c", "d"]


def spans(*rows):
    """Snapshot rows (epoch, span) ending with the final model's."""
    return [{"epoch": epoch, "block_size": 0.0 if span is None else 0.3, "span": span} for epoch, span in rows]


def statistics(**changes) -> dict:
    """Four blocked seeds (a-d) that bear out every claim."""
    base = {"blocked": SEEDS,
            "concentration": {n: {**GAUSS, "top_5pct": 0.9} for n in SEEDS},
            "gaussian": GAUSS, "within": dict.fromkeys(SEEDS, 0.7), "chance": 0.03,
            "removal": {n: removal_effect(0.3 + 0.02 * i) for i, n in enumerate(SEEDS)},
            "snapshots": {n: spans((10, [3, 8]), (20, [2, 8]), (40, [2, 9])) for n in SEEDS},
            "regularised": {"0.2": [reg_row(i, False, True) for i in range(4)] + [reg_row(9, False, False)]},
            "sets": own_sets(range(4), range(2, 9))}
    return {**base, **changes}


RULES = {**protocol.rules(), "origins_permutations": 499}


def judged(**changes) -> dict:
    return claims_verdicts(**statistics(**changes), rules=RULES)


def test_four_seeds_that_bear_out_every_claim_are_judged_under_the_protocol():
    found = judge(**statistics(), rules=RULES)
    assert {k: v["verdict"] for k, v in found.items()} == {
        "dominant_datapoints": "partly shown",   # 4 of 4: Clopper-Pearson lower bound 0.40, not above 0.5
        "differ_across_seeds": "shown", "removal_breaks_block": "shown", "forms_early": "partly shown",
        "regulariser_removes_block": "partly shown"}
    assert found["differ_across_seeds"]["p"] == 1 / 500 and found["differ_across_seeds"]["seeds"] == 4
    assert found["removal_breaks_block"]["n"] == 4 and found["removal_breaks_block"]["interval"][0] > 0
    assert all(v["rule"].startswith("book/protocol.md, Chapter 8") for v in found.values())


def test_two_seeds_that_bear_out_every_claim_are_only_suggestive_or_not_testable():
    two = {"blocked": SEEDS[:2], "concentration": {n: {**GAUSS, "top_5pct": 0.9} for n in SEEDS[:2]},
           "within": dict.fromkeys(SEEDS[:2], 0.7), "removal": {n: removal_effect(0.3) for n in SEEDS[:2]},
           "snapshots": {n: spans((10, [3, 8]), (40, [2, 9])) for n in SEEDS[:2]},
           "regularised": {"0.2": [reg_row(0, False, True), reg_row(1, False, True)]},
           "sets": own_sets(range(2), range(2, 9))}
    found = judged(**two)
    assert found["differ_across_seeds"].startswith("not testable") and "three blocked seeds" in found[
        "differ_across_seeds"]
    assert {k: v for k, v in found.items() if k != "differ_across_seeds"} == dict.fromkeys(
        ["dominant_datapoints", "removal_breaks_block", "forms_early", "regulariser_removes_block"],
        verdicts.suggestive(2))


def test_without_a_block_nothing_is_testable():
    assert judged(blocked=[], concentration={}, within={}, removal={}, snapshots={}, sets={}) == dict.fromkeys(
        CLAIMS, verdicts.NOT_TESTABLE)


def test_a_permutation_null_is_not_rejected_when_seed_labels_carry_no_information():
    """Sets that depend on the layer and not on the seed: within-seed overlap across layers is no larger than
    the permuted labels give, so the claim is not shown."""
    result = origins.seed_label_permutation_test(layer_sets(range(4), range(2, 9)), 999)
    assert result["p"] > 0.5 and result["statistic"] < 0
    assert judged(sets=layer_sets(range(4), range(2, 9)))["differ_across_seeds"] == verdicts.NOT_SHOWN
    rng = np.random.default_rng(3)   # independent random sets: nothing to find either
    noise = {(s, layer): rng.choice(200, 10, replace=False) for s in range(4) for layer in range(2, 9)}
    assert origins.seed_label_permutation_test(noise, 999)["p"] > 0.05
    assert judged(sets=noise)["differ_across_seeds"] == verdicts.NOT_SHOWN


def test_a_snapshot_block_that_does_not_overlap_the_final_one_has_not_formed_early():
    elsewhere = spans((10, [12, 15]), (20, [11, 15]), (40, [2, 8]))   # a block early, but on other layers
    assert not formed_early(elsewhere, 0.5)
    assert formed_early(spans((10, [3, 8]), (40, [2, 8])), 0.5)       # 6 of 7 layers shared
    assert not formed_early(spans((10, None), (30, [2, 8]), (40, [2, 8])), 0.5)   # the overlap came after half
    assert origins.span_jaccard([0, 3], [2, 5]) == pytest.approx(2 / 6) and origins.span_jaccard(None, [1, 2]) == 0
    late = {n: elsewhere for n in SEEDS}
    assert judged(snapshots=late)["forms_early"] == verdicts.NOT_SHOWN


def test_each_claim_falls_on_its_own_evidence():
    gaussian_like = {n: {**GAUSS} for n in SEEDS}   # no more concentrated than noise
    assert judged(concentration=gaussian_like)["dominant_datapoints"] == verdicts.NOT_SHOWN
    assert judged(within=dict.fromkeys(SEEDS, 0.05))["dominant_datapoints"] == verdicts.NOT_SHOWN
    # random removals cost as much as the dominant ones: the paired effect is not shown
    even = {n: removal_effect(0.3 + 0.05 * (-1) ** i, 0.3) for i, n in enumerate(SEEDS)}
    assert judged(removal=even)["removal_breaks_block"] == verdicts.NOT_SHOWN
    kept = {"0.2": [reg_row(i, i == 0, True) for i in range(4)], "0.3": [reg_row(1, True, True)]}
    assert judge(**statistics(regularised=kept), rules=RULES)["regulariser_removes_block"]["k"] == 2  # seeds 2, 3
    # seeds without a block unregularised say nothing about removing one
    assert judged(regularised={"0.2": [reg_row(9, False, False)]})["regulariser_removes_block"] == \
        verdicts.NOT_TESTABLE


def test_the_sentences_carry_the_computed_numbers():
    label = str.upper
    assert removal_sentence({"a": removal_effect(0.4)}, label) == "A: 0.50 to 0.10 (random 0.48 ± 0.01)"
    assert removal_sentence({}, label) == "no block to remove"
    images = {"a": {"brightness_top": 0.31, "brightness_rest": 0.25, "foreground_top": 0.6, "foreground_rest": 0.4}}
    assert looks_sentence(images, label) == "A: brightness 0.31 vs 0.25, foreground 0.60 vs 0.40"
    text = regulariser_sentence({"0.2": [reg_row(0, False, True), reg_row(1, False, True), reg_row(2, False, False)]})
    assert text == f"threshold 0.2: blocks in 0 of 3 seeds (without: 2), test accuracy {np.mean([0.8] * 3):.3f} vs 0.820"
