"""Power of the per-example test: attainable p-values, Tarone-Gilbert filtering, beta-binomial shrinkage, simulation."""

import numpy as np
import pytest
from scipy import stats

from widedeep.analyses import power


@pytest.mark.parametrize("m", [2, 3, 6, 8])
def test_the_floor_for_m_against_m_is_two_over_the_central_binomial(m):
    assert power.p_floor(m, m) == pytest.approx(power.floor_m_against_m(m))
    assert power.p_floor(m, 2 * m) < power.p_floor(m, m)  # twice the seeds on one side lowers the floor


def test_smallest_attainable_p_per_margin():
    min_p = power.min_p_by_margin(6, 12)
    assert min_p[0] == pytest.approx(1) and min_p[-1] == pytest.approx(1)  # one table only: all wrong / all right
    assert min_p.min() == pytest.approx(power.p_floor(6, 12))
    table = power.fisher_pvalue_table(6, 12)
    assert table[6, 0] == pytest.approx(stats.fisher_exact([[6, 0], [0, 12]]).pvalue)
    with pytest.raises(ValueError, match="read-only"):
        table[0, 0] = 0.5


def test_bh_needs_hundreds_at_the_floor_with_six_seeds_a_side():
    needed = power.bh_needed_at_floor(6, 6, 10_000, 0.05)
    assert needed == 433  # 2 / C(12, 6) x 10000 / 0.05, rounded up
    assert power.bh_needed_at_floor(12, 24, 10_000, 0.05) == 1


def test_filtering_finds_planted_differences_that_plain_bh_cannot():
    # 9500 examples every seed gets right (untestable), 470 noisy ones, 30 with all of A right and all of B wrong.
    rng = np.random.default_rng(0)
    m_a, m_b = 4, 8
    c_a = np.concatenate([np.full(9500, m_a), rng.binomial(m_a, 0.6, 470), np.full(30, m_a)])
    c_b = np.concatenate([np.full(9500, m_b), rng.binomial(m_b, 0.6, 470), np.zeros(30, int)])
    result = power.filtered_fisher_test(c_a, m_a, c_b, m_b, 0.05)
    plain = stats.false_discovery_control(result["p_values"], method="bh") <= 0.05
    assert plain.sum() == 0  # at the floor 1/C(12, 4), BH over 10000 tests needs ~400 such examples
    assert result["significant"][-30:].all()
    assert not result["kept"][:9500].any()  # the all-right examples are filtered out
    gilbert = power.filtered_fisher_test(c_a, m_a, c_b, m_b, 0.05, method="gilbert")
    assert gilbert["n_kept"] <= gilbert["tarone_k"]  # Tarone's K bounds what it keeps ...
    assert gilbert["n_significant"] <= result["n_significant"]  # ... and with 4 + 8 seeds it is stricter


def test_tarone_k_is_the_smallest_consistent_count():
    min_p = np.array([1e-4] * 3 + [0.02] * 10 + [1.0] * 100)
    k = power.tarone_k(min_p, 0.05)
    assert np.sum(min_p <= 0.05 / k) <= k
    assert np.sum(min_p <= 0.05 / (k - 1)) > k - 1


def test_the_filtered_test_keeps_its_false_discovery_rate_under_the_null():
    rng = np.random.default_rng(1)
    rates = rng.beta(2.0, 0.6, size=3000)
    for method in ("attainable", "gilbert"):
        null = power.expected_discoveries(rates, rates, 8, 16, fdr=0.05, draws=150, seed=2, method=method)
        assert null["p_at_least_one"] <= 0.1  # under the complete null FDR = P(any discovery)


def test_beta_binomial_fit_recovers_a_planted_prior_and_shrinks_towards_the_mean():
    rng = np.random.default_rng(3)
    counts = rng.binomial(10, rng.beta(3.0, 1.5, size=20_000))
    a, b = power.fit_beta_binomial(counts, 10)
    assert a == pytest.approx(3.0, rel=0.1) and b == pytest.approx(1.5, rel=0.1)
    shrunk = power.shrunk_rates(counts, 10)
    raw = counts / 10
    mean = a / (a + b)
    assert np.all(np.abs(shrunk - mean) <= np.abs(raw - mean) + 1e-12)
    assert shrunk.min() > 0 and shrunk.max() < 1


def test_expected_discoveries_grow_with_the_population_and_pick_its_size():
    rng = np.random.default_rng(4)
    rates_b = rng.beta(4.0, 1.0, size=2000)
    rates_a = rates_b.copy()
    rates_a[:100] = np.clip(rates_b[:100] - 0.6, 0.01, 1)  # 100 examples A gets far more often wrong
    curve = power.power_curve(rates_a, rates_b, [2, 6, 12], ratio=2, draws=30, seed=5)
    means = [p["expected_discoveries"] for p in curve]
    assert means[0] < means[1] < means[2]
    assert curve[0]["p_floor"] > curve[2]["p_floor"]
    assert all(p["expected_false_discoveries_under_null"] < 1 for p in curve)
    assert power.smallest_population(curve, wanted=means[1]) == 6
    assert power.smallest_population(curve, wanted=1e9) is None


@pytest.mark.parametrize("call, message", [
    (lambda: power.p_floor(0, 3), "positive number of seeds"),
    (lambda: power.filtered_fisher_test([7], 6, [0], 12), r"\[0, 6\]"),
    (lambda: power.expected_discoveries([0.5, 1.2], [0.5, 0.5], 3, 6), "probabilities"),
    (lambda: power.bh_needed_at_floor(3, 3, 100, 1.5), "fdr"),
    (lambda: power.filtered_bh([0.01], [0.5]), "below its margin"),
    (lambda: power.filtered_bh([0.5], [0.01], method="tarone"), "filter method"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
