"""Can a per-example test of two seed populations find anything? Power analysis and a filtered test.

Analyses layer. Two architectures A and B are trained with m_a and m_b seeds; example i is classified
correctly by c_a(i) of A's seeds and c_b(i) of B's. Fisher's exact test on the 2 x 2 table
[[c_a, m_a - c_a], [c_b, m_b - c_b]] conditions on its margins, so with few seeds most tables cannot
reach a small p-value at all, and Benjamini-Hochberg over thousands of examples needs many of them at
once. This module says how many seeds a test needs, and gives the test the power it can have:

- **attainable p-values**: for a margin (total correct t = c_a + c_b) the smallest p-value any table
  with that margin can give; overall, the floor 2 / C(2m, m) for m against m (smaller for m against 2m);
- **filtering on the margins** (Tarone 1990): before BH, drop the examples whose margin cannot reach
  significance. BH at level q never rejects a p-value above q, so an example whose smallest
  attainable p exceeds q (e.g. every seed of both sides right, or wrong) can be dropped and the others
  tested at BH's thresholds over fewer tests (`"attainable"`, the default). Gilbert's (2005) stricter
  version keeps only the tests attainable at q / K, with Tarone's K the smallest k that at most k
  tests can reach q / k (`"gilbert"`); built for a Bonferroni-like K, it can drop every test when
  many sit just above q / K, as with a few seeds. Either way the filter reads only the margins, which
  Fisher's test conditions on, so the null p-values of the kept tests stay valid and BH over them
  controls the false discovery rate (under independence across examples);
- **expected discoveries by simulation** under a stated alternative: each example has its own
  probability of being right under A and under B, estimated from observed populations and *shrunk*
  towards the population's mean by a beta-binomial fit (the raw fractions of a few seeds overstate
  the differences, and so the power). Counts are drawn binomially for m_a and m_b seeds and tested.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats


def _check_seeds(m: int, name: str) -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"{name} must be a positive number of seeds; got {m!r}")
    return int(m)


def _check_fdr(fdr: float) -> float:
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must lie in (0, 1); got {fdr!r}")
    return float(fdr)


@lru_cache(maxsize=64)
def _pvalue_table(m_a: int, m_b: int) -> np.ndarray:
    """Two-sided Fisher p-value of every table, indexed [c_a, c_b] (SciPy's definition)."""
    table = np.empty((m_a + 1, m_b + 1))
    for c_a in range(m_a + 1):
        for c_b in range(m_b + 1):
            table[c_a, c_b] = stats.fisher_exact([[c_a, m_a - c_a], [c_b, m_b - c_b]]).pvalue
    table.setflags(write=False)
    return table


def fisher_pvalue_table(m_a: int, m_b: int) -> np.ndarray:
    """Fisher p-values of all (m_a + 1) x (m_b + 1) tables of correct counts (cached, read-only)."""
    return _pvalue_table(_check_seeds(m_a, "m_a"), _check_seeds(m_b, "m_b"))


def min_p_by_margin(m_a: int, m_b: int) -> np.ndarray:
    """For each total of correct seeds t = 0 .. m_a + m_b, the smallest p-value a table with it can give."""
    table = fisher_pvalue_table(m_a, m_b)
    out = np.ones(m_a + m_b + 1)
    for c_a in range(m_a + 1):
        for c_b in range(m_b + 1):
            out[c_a + c_b] = min(out[c_a + c_b], table[c_a, c_b])
    return out


def p_floor(m_a: int, m_b: int) -> float:
    """The smallest p-value Fisher's test can give at all with m_a against m_b seeds."""
    return float(min_p_by_margin(m_a, m_b).min())


def bh_needed_at_floor(m_a: int, m_b: int, n_tests: int, fdr: float = 0.05) -> int:
    """How many of n_tests examples must all sit at the floor before BH declares any: ceil(floor n / q)."""
    _check_fdr(fdr)
    if n_tests < 1:
        raise ValueError(f"n_tests must be >= 1; got {n_tests}")
    return max(1, math.ceil(p_floor(m_a, m_b) * n_tests / fdr))


def tarone_k(min_p: np.ndarray, fdr: float) -> int:
    """Tarone's K: the smallest k with #{i : min_p(i) <= q / k} <= k (0 when no example can reach q)."""
    _check_fdr(fdr)
    min_p = np.sort(np.asarray(min_p, float))
    for k in range(1, len(min_p) + 1):
        if np.searchsorted(min_p, fdr / k, side="right") <= k:
            return k
    return len(min_p)


FILTERS = ("attainable", "gilbert", "none")


def filtered_bh(p_values: np.ndarray, min_p: np.ndarray, fdr: float = 0.05, method: str = "attainable") -> dict:
    """BH over the tests a margin filter keeps: attainable at q (default), at q / K (Gilbert), or all ("none")."""
    if method not in FILTERS:
        raise ValueError(f"filter method must be one of {FILTERS}; got {method!r}")
    p_values, min_p = np.asarray(p_values, float), np.asarray(min_p, float)
    if p_values.shape != min_p.shape:
        raise ValueError(f"p_values {p_values.shape} and min_p {min_p.shape} must have one value per example")
    if np.any(p_values + 1e-12 < min_p):
        raise ValueError("a p-value lies below its margin's smallest attainable p-value: min_p does not belong "
                         "to these tables")
    k = tarone_k(min_p, fdr)
    threshold = {"attainable": fdr, "gilbert": fdr / max(k, 1), "none": 1.0}[method]
    kept = min_p <= threshold
    significant = np.zeros(p_values.shape, bool)
    q_values = np.ones(p_values.shape)
    if kept.any():
        q_values[kept] = stats.false_discovery_control(p_values[kept], method="bh")
        significant[kept] = q_values[kept] <= fdr
    return {"kept": kept, "n_kept": int(kept.sum()), "tarone_k": k, "filter": method, "q_values": q_values,
            "significant": significant, "n_significant": int(significant.sum())}


def filtered_fisher_test(correct_a: np.ndarray, m_a: int, correct_b: np.ndarray, m_b: int,
                         fdr: float = 0.05, method: str = "attainable") -> dict:
    """Per-example Fisher tests of correct counts with a margin filter (see `filtered_bh`) before BH."""
    correct_a, correct_b = np.asarray(correct_a, int), np.asarray(correct_b, int)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"correct counts differ in shape: {correct_a.shape} and {correct_b.shape}")
    for counts, m, name in ((correct_a, m_a, "correct_a"), (correct_b, m_b, "correct_b")):
        if counts.size and (counts.min() < 0 or counts.max() > m):
            raise ValueError(f"{name} must count correct seeds in [0, {m}]")
    p_values = fisher_pvalue_table(m_a, m_b)[correct_a, correct_b]
    min_p = min_p_by_margin(m_a, m_b)[correct_a + correct_b]
    result = filtered_bh(p_values, min_p, fdr, method)
    result.update(p_values=p_values, min_p=min_p)
    return result


def fit_beta_binomial(counts: np.ndarray, m: int) -> tuple[float, float]:
    """Maximum-likelihood Beta(a, b) of per-example rates behind counts out of m seeds (beta-binomial)."""
    m = _check_seeds(m, "m")
    counts = np.asarray(counts, int)
    if counts.size == 0 or counts.min() < 0 or counts.max() > m:
        raise ValueError(f"counts must be correct-seed counts in [0, {m}]")
    histogram = np.bincount(counts, minlength=m + 1)
    support = np.arange(m + 1)

    def nll(log_ab):
        a, b = np.exp(log_ab)
        return -np.sum(histogram * stats.betabinom.logpmf(support, m, a, b))

    mean = (counts.mean() + 0.5) / (m + 1)
    result = optimize.minimize(nll, np.log([mean * 2, (1 - mean) * 2]), method="Nelder-Mead",
                               options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    a, b = np.exp(result.x)
    return float(a), float(b)


def shrunk_rates(counts: np.ndarray, m: int) -> np.ndarray:
    """Each example's posterior mean rate (c + a) / (m + a + b) under the population's beta-binomial fit."""
    a, b = fit_beta_binomial(counts, m)
    return (np.asarray(counts, float) + a) / (m + a + b)


def expected_discoveries(rates_a: np.ndarray, rates_b: np.ndarray, m_a: int, m_b: int, fdr: float = 0.05,
                         draws: int = 200, seed: int = 0, method: str = "attainable") -> dict:
    """Mean (and spread) of the filtered test's discoveries when example i is right with rate_a(i) / rate_b(i)."""
    rates_a, rates_b = np.asarray(rates_a, float), np.asarray(rates_b, float)
    if rates_a.shape != rates_b.shape or rates_a.ndim != 1:
        raise ValueError("rates_a and rates_b must be 1-D with one rate per example")
    if np.any((rates_a < 0) | (rates_a > 1) | (rates_b < 0) | (rates_b > 1)):
        raise ValueError("rates must be probabilities in [0, 1]")
    m_a, m_b = _check_seeds(m_a, "m_a"), _check_seeds(m_b, "m_b")
    rng = np.random.default_rng(seed)
    counts = np.empty(draws, int)
    for d in range(draws):
        result = filtered_fisher_test(rng.binomial(m_a, rates_a), m_a, rng.binomial(m_b, rates_b), m_b, fdr, method)
        counts[d] = result["n_significant"]
    return {"mean": float(counts.mean()), "sd": float(counts.std(ddof=1)) if draws > 1 else 0.0,
            "p_at_least_one": float((counts > 0).mean()), "counts": counts}


def power_curve(rates_a: np.ndarray, rates_b: np.ndarray, seeds_a: Sequence[int], ratio: int = 2,
                fdr: float = 0.05, draws: int = 100, seed: int = 0, method: str = "attainable") -> list[dict]:
    """For each m in seeds_a (A's seeds; B has ratio x m): floor, BH's need at the floor, expected discoveries."""
    n_tests = len(np.asarray(rates_a))
    curve = []
    for m in seeds_a:
        simulated = expected_discoveries(rates_a, rates_b, m, ratio * m, fdr, draws, seed, method)
        null = expected_discoveries(rates_b, rates_b, m, ratio * m, fdr, max(draws // 4, 1), seed + 1, method)
        curve.append({"m_a": int(m), "m_b": int(ratio * m), "p_floor": p_floor(m, ratio * m),
                      "bh_needed_at_floor": bh_needed_at_floor(m, ratio * m, n_tests, fdr),
                      "expected_discoveries": simulated["mean"], "sd_discoveries": simulated["sd"],
                      "p_at_least_one": simulated["p_at_least_one"],
                      "expected_false_discoveries_under_null": null["mean"]})
    return curve


def smallest_population(curve: Sequence[dict], wanted: float = 5.0) -> int | None:
    """The fewest seeds of A whose expected discoveries reach `wanted` (None if no point of the curve does)."""
    for point in sorted(curve, key=lambda p: p["m_a"]):
        if point["expected_discoveries"] >= wanted:
            return point["m_a"]
    return None


def floor_m_against_m(m: int) -> float:
    """The closed form 2 / C(2m, m) of the floor for m against m seeds (checks `p_floor`)."""
    return 2.0 / special.comb(2 * m, m, exact=True)
