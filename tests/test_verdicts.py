"""The verdict vocabulary: one set of constants, composed verdicts keep their head, tallies and agreement."""

from widedeep.analyses import verdicts as v


def test_tally_and_agreement():
    per_model = {"A": "plateau", "B": "rises", "C": "plateau"}
    assert v.tally(per_model) == "plateau in 2 of 3 (A, C); rises in 1 of 3 (B)"
    assert v.tally({}) == "no model to judge"
    assert v.agreement(per_model.values(), v.PLATEAU) == v.PARTLY_SHOWN
    assert v.agreement([v.PLATEAU], v.PLATEAU) == v.SHOWN
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
