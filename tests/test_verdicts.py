"""The verdict vocabulary: one set of constants, composed verdicts keep their head, tallies and agreement."""

import numpy as np
import pytest

from widedeep.analyses import verdicts
from widedeep.analyses import verdicts as v


def test_tally_and_agreement():
    per_model = {"A": "plateau", "B": "rises", "C": "plateau"}
    assert v.tally(per_model) == "plateau in 2 of 3 (A, C); rises in 1 of 3 (B)"
    assert v.tally({}) == "no model to judge"
    assert v.agreement(per_model.values(), v.PLATEAU) == v.PARTLY_SHOWN
    assert v.agreement([v.PLATEAU], v.PLATEAU) == "suggestive (1 model)"   # one model is never "shown"
    assert v.agreement([v.RISES], v.PLATEAU) == v.NOT_SHOWN
    assert v.agreement([], v.PLATEAU) == v.NOT_TESTABLE


def test_fraction_verdict():
    assert [v.fraction_verdict(h, 3) for h in (3, 1, 0)] == [v.SHOWN, v.PARTLY_SHOWN, v.NOT_SHOWN]
    assert v.fraction_verdict(0, 0) == v.NOT_TESTABLE


def test_head_finds_the_constant_a_composed_verdict_starts_with():
    assert v.head("shown in aggregate, though no test singles out more examples than the null") == \
        v.SHOWN_IN_AGGREGATE
    assert v.head("shown, but the accuracies are not matched") == v.SHOWN
    assert v.head("not specific to the block: across the same layers, 2 of 3 plateau too") == v.NOT_SPECIFIC
    assert v.head("not testable (no model with a block)") == v.NOT_TESTABLE
    assert v.head("cheaper inside") == v.CHEAPER_INSIDE
    assert v.head("showing off") is None and v.head("probably") is None and v.head(0.5) is None


def test_clopper_pearson_is_the_exact_interval():
    low, high = verdicts.clopper_pearson(8, 8)
    assert low == pytest.approx(0.025 ** (1 / 8)) and high == 1.0   # all of n: the lower bound solves p^n = 0.025
    assert verdicts.clopper_pearson(0, 5)[0] == 0.0
    with pytest.raises(ValueError, match="hits"):
        verdicts.clopper_pearson(4, 3)


def test_smallest_share_shown_needs_the_lower_bound_above_the_null():
    assert verdicts.smallest_share_shown(8, 0.5) == 8          # 7 of 8: lower bound 0.47
    assert verdicts.smallest_share_shown(5, 0.5) is None       # 5 of 5: lower bound 0.48
    assert verdicts.smallest_share_shown(20, 0.5) == 15
    assert verdicts.clopper_pearson(15, 20)[0] > 0.5 >= verdicts.clopper_pearson(14, 20)[0]


def test_t_interval_and_its_half_width():
    mean, low, high = verdicts.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(verdicts.t_half_width(3) * 1.0)
    assert verdicts.t_half_width(3) == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        verdicts.t_interval([1.0])


def test_one_model_is_never_shown():
    """The pre-protocol bug: fraction_verdict(1, 1) was "shown"."""
    assert verdicts.fraction_verdict(1, 1) == "suggestive (1 model)"
    assert verdicts.fraction_verdict(2, 2) == "suggestive (2 models)" and verdicts.fraction_verdict(1, 2) == "not shown"
    assert verdicts.fraction_verdict(3, 3) == "shown"
    assert verdicts.head("suggestive (2 models)") == verdicts.SUGGESTIVE
    assert verdicts.share_verdict(1, 1)["verdict"] == "suggestive (1 model)"
    assert verdicts.paired_verdict([0.4], +1)["verdict"] == "suggestive (1 model)"
    assert verdicts.paired_verdict([0.4, -0.1], +1)["verdict"] == "not shown"


def test_share_verdict_needs_the_lower_bound_above_the_null():
    assert verdicts.share_verdict(8, 8)["verdict"] == "shown"
    seven = verdicts.share_verdict(7, 8)
    assert seven["verdict"] == "partly shown" and seven["n"] == 8 and seven["interval"][0] < 0.5
    assert verdicts.share_verdict(0, 8)["verdict"] == "not shown"
    assert verdicts.share_verdict(0, 0)["verdict"] == "not testable"


def test_paired_verdict_reads_the_t_interval_in_the_papers_direction():
    up = verdicts.paired_verdict([0.10, 0.12, 0.15, 0.11, 0.09], +1)
    assert up["verdict"] == "shown" and up["interval"][0] > 0 and up["sign_flip_p"] == 1 / 32
    assert verdicts.paired_verdict([0.10, 0.12, 0.15, 0.11, 0.09], -1)["verdict"] == "contradicted"
    assert verdicts.paired_verdict([0.1, -0.1, 0.05], +1)["verdict"] == "not shown"
    assert verdicts.paired_verdict([0.1, 0.2, 0.3], +1)["sign_flip_p"] is None   # fewer than 5 models
    with pytest.raises(ValueError, match="direction"):
        verdicts.paired_verdict([0.1], 0)


def pairs_of(seeds, blocked, value):
    """values[(s, t)] for each blocked seed s and every other seed t, from value(s, t)."""
    return {(s, t): value(s, t) for s in blocked for t in seeds if t != s}


def test_pair_bootstrap_excludes_zero_when_every_pair_agrees_and_covers_it_when_pairs_are_noisy():
    seeds, blocked = list(range(8)), [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    steady = pairs_of(seeds, blocked, lambda s, t: -0.30 + 0.01 * rng.standard_normal())
    result = verdicts.pair_bootstrap_verdict(steady, blocked, seeds, -1, resamples=500)
    assert result["verdict"] == "shown" and result["n"] == 4 and result["interval"][1] < 0
    # the same mean, but each pair's value is dominated by noise of either sign: the interval must cover 0
    noisy = pairs_of(seeds, blocked, lambda s, t: -0.05 + 0.8 * rng.standard_normal())
    result = verdicts.pair_bootstrap_verdict(noisy, blocked, seeds, -1, resamples=500)
    assert result["interval"][0] < 0 < result["interval"][1] and result["verdict"] == "not shown"
    assert "bootstrap over 8 seeds, 500 resamples" in result["test"]


def test_pair_bootstrap_redraws_seeds_not_pairs():
    """A seed that is an outlier in every pair it belongs to moves the interval as one unit: with seed 7 far off,
    resampling seeds (not the 4 x 7 pairs as if independent) gives a wider interval than the pairs' t-interval."""
    seeds, blocked = list(range(8)), [0, 1, 2, 3]
    values = pairs_of(seeds, blocked, lambda s, t: -0.2 + (1.0 if t == 7 else 0.0) + 0.01 * s)
    result = verdicts.pair_bootstrap_verdict(values, blocked, seeds, -1, resamples=1000)
    _, low, high = verdicts.t_interval(list(values.values()))
    assert result["interval"][1] - result["interval"][0] > high - low


def test_pair_bootstrap_with_fewer_than_three_blocked_seeds_is_at_most_suggestive():
    seeds = [0, 1, 2]
    values = pairs_of(seeds, [0, 1], lambda s, t: -0.3)
    result = verdicts.pair_bootstrap_verdict(values, [0, 1], seeds, -1, resamples=100)
    assert result["verdict"] == "suggestive (2 models)" and result["interval"] is None
    assert verdicts.pair_bootstrap_verdict({}, [], seeds, -1, resamples=100)["verdict"] == "not testable"


def test_seed_bootstrap_drops_and_counts_draws_where_the_statistic_is_undefined():
    def spread(drawn):   # undefined when every drawn seed is the same one
        return np.nan if len(set(drawn)) == 1 else float(np.std(drawn))
    result = verdicts.seed_bootstrap([0, 1, 2], spread, resamples=2000)
    assert 150 < result["undefined"] < 300 and np.isfinite(result["interval"]).all()   # about 3/27 of the draws
    vector = verdicts.seed_bootstrap([0, 1, 2, 3], lambda d: np.array([np.mean(d), -np.mean(d)]), resamples=300)
    assert np.allclose(vector["interval"][0], -vector["interval"][1][::-1])


def test_bootstrap_se_is_the_standard_error_of_the_mean():
    values = np.random.default_rng(1).choice([-1.0, 0.0, 1.0], size=1000, p=[0.05, 0.9, 0.05])
    se = verdicts.bootstrap_se(values, resamples=2000)
    assert se == pytest.approx(values.std() / np.sqrt(len(values)), rel=0.1)
    assert verdicts.bootstrap_se(np.zeros(50), resamples=100) == 0.0


def test_bound_verdict_needs_the_upper_bound_under_the_tolerance():
    assert verdicts.bound_verdict([0.005, 0.01, 0.008, 0.006], 0.02)["verdict"] == "shown"
    straddles = verdicts.bound_verdict([0.0, 0.04, 0.01, 0.03], 0.02)
    assert straddles["verdict"] == "not shown" and straddles["interval"][0] < 0.02 < straddles["interval"][1]
    assert verdicts.bound_verdict([0.05, 0.06, 0.07], 0.02)["verdict"] == "not shown"
    assert verdicts.bound_verdict([0.01], 0.02)["verdict"] == "suggestive (1 model)"


def test_a_verdict_object_carries_its_rule_and_what_was_left_out():
    result = verdicts.claim(verdicts.paired_verdict([0.1, 0.2, 0.15], +1), "Chapter 5: deletion", left_out=2,
                            left_out_why="standard error over 0.005")
    assert result["rule"] == "Chapter 5: deletion" and result["n"] == 3
    assert verdicts.describe(result).endswith("; 2 left out (standard error over 0.005)")
    with pytest.raises(ValueError, match="verdict"):
        verdicts.claim({"verdict": "probably", "n": 3}, "x")
