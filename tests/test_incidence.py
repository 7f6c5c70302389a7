"""The capacity-versus-data law: Firth logistic and least-squares fits, their intervals, tests and verdicts."""

import numpy as np
import pytest
from scipy import stats

from widedeep.analyses import incidence
from widedeep.book import sentences


def _table(a, b, c, d):
    """Design and outcomes of a 2 x 2 table: x=1 has a events and b non-events, x=0 has c and d."""
    x = np.array([[1.0, 1.0]] * (a + b) + [[1.0, 0.0]] * (c + d))
    y = np.array([1.0] * a + [0.0] * b + [1.0] * c + [0.0] * d)
    return x, y


def test_firth_on_a_two_by_two_table_adds_one_half_to_every_cell_even_when_separated():
    for a, b, c, d in [(5, 0, 2, 6), (7, 3, 2, 8), (4, 1, 0, 5)]:
        x, y = _table(a, b, c, d)
        fit = incidence.firth_logit(x, y)
        expected = np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))
        assert fit["beta"][1] == pytest.approx(expected, abs=1e-6)
        assert np.all(np.isfinite(fit["intervals"]))
        low, high = fit["intervals"][1]
        assert low < fit["beta"][1] < high


def test_firth_solves_its_modified_score_and_its_interval_ends_sit_on_the_cut_off():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(60), rng.normal(size=60), rng.normal(size=60)])
    y = (rng.random(60) < 1 / (1 + np.exp(-(0.3 + 1.5 * x[:, 1] - x[:, 2])))).astype(float)
    fit = incidence.firth_logit(x, y)
    assert np.abs(incidence._firth_gradient(fit["beta"], x, y)).max() < 1e-5
    cut = stats.chi2.ppf(0.95, 1) / 2
    for j in range(3):
        for end in fit["intervals"][j]:
            _, value = incidence._maximise(x, y, {j: end}, fit["beta"])
            assert fit["max_penalised_loglik"] - value == pytest.approx(cut, abs=1e-4)


def test_firth_recovers_a_planted_law_and_approaches_maximum_likelihood_with_much_data():
    rng = np.random.default_rng(1)
    n = 4000
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + 1.2 * x[:, 1])))).astype(float)
    fit = incidence.firth_logit(x, y)
    assert fit["beta"] == pytest.approx([-0.5, 1.2], abs=0.15)
    from scipy import optimize

    ml = optimize.minimize(lambda b: -np.sum(y * (x @ b) - np.logaddexp(0, x @ b)), np.zeros(2)).x
    assert fit["beta"] == pytest.approx(ml, abs=5e-3)
    low, high = fit["intervals"][1]
    assert low < 1.2 < high and high - low < 0.4


def _rows(law, n_per_cell=6, seed=0):
    """Model rows over a width and a depth series x four n_train, presence drawn from `law`."""
    rng = np.random.default_rng(seed)
    rows = []
    for n_train in (250, 500, 1000, 2000):
        for parameters, series in [(2.7e5, "width"), (1.1e6, "width"), (4.3e6, "width"), (8.6e5, "depth"),
                                   (1.7e6, "depth")]:
            for _ in range(n_per_cell):
                logit = law(np.log(parameters), np.log(n_train))
                rows.append({"parameters": parameters, "n_train": n_train, "series": series,
                             "has_block": bool(rng.random() < 1 / (1 + np.exp(-logit))),
                             "max_pc1": 0.1 + 0.05 * (np.log(parameters) - np.log(n_train)) + rng.normal(0, 0.02)})
    return rows


def test_presence_law_relative_to_data_is_shown_when_planted_and_rejected_when_not():
    relative = incidence.fit_presence(_rows(lambda lp, ln: 2.0 * (lp - ln) - 14.0, n_per_cell=20))
    verdicts = incidence.law_verdicts(relative)
    assert verdicts == {"capacity": "shown", "data": "shown", "relative": "shown"}, relative.as_dict()
    assert relative.relative_test_p > 0.05
    capacity_only = incidence.fit_presence(_rows(lambda lp, ln: 2.5 * lp - 34.0, n_per_cell=20))
    assert capacity_only.relative_test_p < 0.01
    assert incidence.law_verdicts(capacity_only)["relative"] == "contradicted"
    assert incidence.law_verdicts(capacity_only)["data"] == "not shown"


def test_presence_is_not_estimable_with_too_few_blocks_and_says_why():
    rows = _rows(lambda lp, ln: -50.0)
    rows[0]["has_block"] = rows[5]["has_block"] = True
    fit = incidence.fit_presence(rows)
    assert not fit.estimable and "2 of" in fit.reason
    assert incidence.law_verdicts(fit) == dict.fromkeys(("capacity", "data", "relative"), "not estimable")
    assert fit.as_dict()["estimable"] is False


def test_continuous_law_matches_scipy_least_squares_and_finds_the_planted_slopes():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=40)
    ys = 1.0 + 0.7 * xs + rng.normal(0, 0.3, size=40)
    fit = incidence.ols(np.column_stack([np.ones(40), xs]), ys)
    reference = stats.linregress(xs, ys)
    assert fit["beta"][1] == pytest.approx(reference.slope)
    half = stats.t.ppf(0.975, 38) * reference.stderr
    assert fit["intervals"][1] == pytest.approx([reference.slope - half, reference.slope + half])
    law = incidence.fit_continuous(_rows(lambda lp, ln: 0.0), "max_pc1")
    assert law.coefficients["capacity"][0] == pytest.approx(0.05, abs=0.01)
    assert law.coefficients["data"][0] == pytest.approx(-0.05, abs=0.01)
    assert incidence.law_verdicts(law) == {"capacity": "shown", "data": "shown", "relative": "shown"}


def test_a_grid_that_cannot_separate_capacity_from_data_is_refused_clearly():
    rows = [{"parameters": p, "n_train": 500, "series": "width", "has_block": i % 2 == 0, "max_pc1": 0.2}
            for i, p in enumerate([1e5, 2e5, 4e5, 8e5] * 2)]
    with pytest.raises(ValueError, match="linearly dependent"):
        incidence.fit_continuous(rows, "max_pc1")
    with pytest.raises(ValueError, match="lacks 'n_train'"):
        incidence.design([{"parameters": 1e5, "series": "width"}])


def test_direction_verdicts():
    assert incidence.direction_verdict([1.0, 0.2, 2.0], +1) == "shown"
    assert incidence.direction_verdict([-1.0, -2.0, -0.2], +1) == "contradicted"
    assert incidence.direction_verdict([0.1, -0.5, 0.7], -1) == "not shown"
    assert incidence.direction_verdict([-1.0, -2.0, -0.2], -1) == "shown"


def test_law_rows_record_and_prediction():
    summaries = [{"depth": d, "width": w, "n_train": n, "parameters": 1e5 * w * w * d / 20, "seed": s,
                  "block": {} if (d >= 56 and n <= 500) else None, "max_pc1_share": 0.2 + 0.001 * d - 1e-5 * n,
                  "block_size": 0.0}
                 for d, w in [(20, 1), (20, 2), (20, 4), (56, 1), (110, 1)] for n in (250, 500, 1000, 2000)
                 for s in (0, 1)]
    rows = incidence.law_rows(summaries, 20, 1)
    assert {r["series"] for r in rows if r["depth"] == 20} == {"width"}
    assert {r["series"] for r in rows if r["depth"] > 20} == {"depth"}
    with pytest.raises(ValueError, match="neither series"):
        incidence.series_of(56, 2, 20, 1)
    fits = incidence.fit_laws(rows)
    record = incidence.law_record(fits, rows)
    assert record["incidence_fit"]["n_seeds_per_cell"]["110x1@250"] == 2
    assert record["incidence_fit"]["estimable"] and record["incidence_fit"]["verdicts"]["data"] == "shown"
    p_small = incidence.predict(fits["incidence_fit"], np.array([4e5]), np.array([250]), depth_series=True)
    p_large = incidence.predict(fits["incidence_fit"], np.array([4e5]), np.array([2000]), depth_series=True)
    assert 0 < p_large[0] < p_small[0] < 1
    assert incidence.cell_incidence(rows)[(110, 1.0, 250)] == (2, 2)


def test_the_expected_law_finds_a_steep_law_and_refuses_a_grid_without_data_sizes():
    rows = [{"parameters": p, "n_train": n, "series": "width"} for p in (1e5, 4e5, 1.6e6, 6.4e6)
            for n in (250, 500, 1000, 2000) for _ in range(3)]
    steep = incidence.expected_law(rows, 4.0, -4.0, 0.4, draws=6, seed=1)
    flat = incidence.expected_law(rows, 0.0, 0.0, 0.4, draws=6, seed=1)
    assert steep["capacity"]["shown"] > flat["capacity"]["shown"]
    assert steep["capacity"]["median_interval"][0] > 0 > steep["data"]["median_interval"][1]
    with pytest.raises(incidence.DesignError, match="linearly dependent"):
        incidence.expected_law([{**r, "n_train": 500} for r in rows], 1.0, -1.0, 0.4, draws=2)


def test_chapter_3_sets_the_interval_it_got_beside_the_one_the_protocol_expected():

    expected = {1.5: {"capacity": {"median_interval": [0.4, 2.9], "shown": 0.65}}}
    got = incidence.LawFit({"capacity": [1.2, 0.1, 2.5], "data": [-1.0, -2.0, 0.1]}, 0.7, "firth", 0.95, 32)
    text = sentences.law_against_expected({"incidence_fit": got}, expected, 1.5)
    assert "[+0.40, +2.90] (width 2.50)" in text and "shown in 65% of its simulated runs" in text
    assert text.endswith("this run's is [+0.10, +2.50] (width 2.40)")
    lost = incidence.LawFit({}, None, "firth", 0.95, 32, estimable=False, reason="no model has a block")
    assert sentences.law_against_expected({"incidence_fit": lost}, expected, 1.5).endswith(
        "not estimable (no model has a block)")
    assert "cannot separate" in sentences.law_against_expected(None, None, 1.5)


def test_the_training_length_sentence_reads_the_effect_or_says_what_was_not_compared():
    """The cpu protocol cuts the short arm: the page must then say so, not glue missing numbers."""
    effect = {"max_pc1_share": -0.05, "block_size": 0.125, "test_acc": -0.01}
    text = sentences.training_length(effect, "2 of 6", "capacity +0.100 [-0.2, +0.4]", 6)
    assert "by -0.050" in text and "block size by +0.125" in text and "test accuracy by -0.010" in text
    assert text.startswith("With the short schedule 2 of 6 models have a block")
    assert text.endswith("(maximum first-PC share): capacity +0.100 [-0.2, +0.4].")
    apart = sentences.training_length({}, "1 of 3", "not fitted", 3)   # a short arm on cells the main arm lacks
    assert "1 of 3 models have a block" in apart and "No cell was trained under both schedules" in apart
    assert "no model with the short schedule" in sentences.training_length({}, "0 of 0", "not fitted", 0)
