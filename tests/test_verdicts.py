"""The verdict vocabulary: one set of constants, composed verdicts keep their head, tallies and agreement."""

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
