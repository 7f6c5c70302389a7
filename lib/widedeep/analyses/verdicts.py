"""The one vocabulary of verdicts: every verdict the analyses reach, the results files record and the claims show.

Layer: analyses (no imports; the analyses spell their verdicts with these constants, and
`widedeep.book.results` checks that every recorded verdict starts with one of them). A verdict is a
constant, or a constant followed by a qualifier (", but the accuracies are not matched", ": ..."),
so `head(verdict)` is always in `VERDICTS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import stats

# Whether a finding of the paper holds on these runs
SHOWN, PARTLY_SHOWN, NOT_SHOWN = "shown", "partly shown", "not shown"
SHOWN_IN_AGGREGATE = "shown in aggregate"   # the mean difference exceeds the null, no single test does
CONTRADICTED = "contradicted"               # a trend goes the other way
NOT_TESTABLE = "not testable"               # nothing to test it on (e.g. no model has a block)
NOT_RUN = "not run"                         # the chapter has no results for this profile
NOT_ESTIMABLE = "not estimable"             # a fitted law with too few events on one side to say anything
SUGGESTIVE = "suggestive"                   # one or two models go the paper's way: "suggestive (2 models)"
# Probe accuracy across a block
PLATEAU, RISES, FALLS, NO_BLOCK = "plateau", "rises", "falls", "no block"
# Whether a plateau belongs to the block or to its position
SPECIFIC, NOT_SPECIFIC = "specific to the block", "not specific to the block"
# Deleting residual blocks inside against outside the block
CHEAPER_INSIDE, NO_DIFFERENCE, COSTLIER_INSIDE = "cheaper inside", "no clear difference", "costlier inside"

VERDICTS = (SHOWN, PARTLY_SHOWN, NOT_SHOWN, SHOWN_IN_AGGREGATE, CONTRADICTED, NOT_TESTABLE, NOT_RUN, NOT_ESTIMABLE,
            SUGGESTIVE,
            PLATEAU, RISES, FALLS, NO_BLOCK, SPECIFIC, NOT_SPECIFIC, CHEAPER_INSIDE, NO_DIFFERENCE,
            COSTLIER_INSIDE)


def head(verdict: str) -> str | None:
    """The constant a verdict starts with (the longest that fits), or None if it is not spelled with one."""
    if not isinstance(verdict, str):
        return None
    fitting = [v for v in VERDICTS if verdict == v or verdict.startswith((v + ",", v + ":", v + " ("))]
    return max(fitting, key=len, default=None)


def suggestive(models: int) -> str:
    """'suggestive (2 models)': the most one or two models can give."""
    return f"{SUGGESTIVE} ({models} model{'s' if models != 1 else ''})"


def fraction_verdict(hits: int, total: int, min_models: int = 3) -> str:
    """shown (all of `total`), partly shown (some), not shown (none), not testable (nothing to test); with fewer
    than `min_models` items, at most suggestive (never shown)."""
    if total == 0:
        return NOT_TESTABLE
    if total < min_models:
        return suggestive(total) if hits == total else NOT_SHOWN
    return SHOWN if hits == total else PARTLY_SHOWN if hits else NOT_SHOWN


def agreement(verdicts: Iterable[str], expected: str) -> str:
    """Whether per-model verdicts bear out the paper's `expected` one (fraction_verdict of the hits)."""
    verdicts = list(verdicts)
    return fraction_verdict(sum(v == expected for v in verdicts), len(verdicts))


def tally(verdicts: dict[str, str]) -> str:
    """Per-model verdicts as one sentence: 'plateau in 2 of 3 (A, B); rises in 1 of 3 (C)' ('no model to judge')."""
    if not verdicts:
        return "no model to judge"
    parts = []
    for verdict in dict.fromkeys(verdicts.values()):
        names = [name for name, v in verdicts.items() if v == verdict]
        parts.append(f"{verdict} in {len(names)} of {len(verdicts)} ({', '.join(names)})")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Intervals (the protocol's tests, book/protocol.md): scipy.stats, never hand-written
# ---------------------------------------------------------------------------------------------

def clopper_pearson(hits: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a share hits/total."""
    if total < 1 or not 0 <= hits <= total:
        raise ValueError(f"a share needs 0 <= hits <= total and total >= 1; got {hits} of {total}")
    interval = stats.binomtest(hits, total).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def smallest_share_shown(total: int, null: float, level: float = 0.95, min_hits: int = 3) -> int | None:
    """The fewest hits of `total` whose Clopper-Pearson lower bound exceeds `null` (at least `min_hits`), or None."""
    return next((k for k in range(min_hits, total + 1) if clopper_pearson(k, total, level)[0] > null), None)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean of per-unit values (at least 2 of them)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"a t-interval needs at least 2 finite values; got {values.tolist()}")
    mean = float(values.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def t_half_width(units: int, level: float = 0.95) -> float:
    """Half-width of the t-interval of a mean over `units`, in units of the per-unit standard deviation."""
    if units < 2:
        raise ValueError(f"a t-interval needs at least 2 units; got {units}")
    return float(stats.t.ppf(0.5 + level / 2, units - 1) / np.sqrt(units))


def share_verdict(hits: int, total: int, null: float = 0.5, level: float = 0.95, min_models: int = 3) -> dict:
    """A share claim (book/protocol.md): shown when hits >= min_models and the Clopper-Pearson lower bound exceeds
    `null`; partly shown with some hits; not shown with none; at most suggestive with one or two models."""
    if total == 0:
        return {"verdict": NOT_TESTABLE, "n": 0, "k": 0, "interval": None, "null": null, "test": "none"}
    low, high = clopper_pearson(hits, total, level)
    if total < min_models:
        verdict = suggestive(total) if hits == total else NOT_SHOWN
    elif hits >= min_models and low > null:
        verdict = SHOWN
    else:
        verdict = PARTLY_SHOWN if hits else NOT_SHOWN
    return {"verdict": verdict, "n": total, "k": hits, "interval": [low, high], "null": null,
            "test": f"Clopper-Pearson {level:.0%}"}


def sign_flip_p(values: Sequence[float], direction: int) -> float:
    """Exact one-sided sign-flip p-value of the mean in `direction` (+1 or -1), every sign pattern enumerated."""
    values = np.asarray(values, dtype=float)
    result = stats.permutation_test((direction * values,), np.mean, permutation_type="samples",
                                    alternative="greater", n_resamples=np.inf)
    return float(result.pvalue)


def paired_verdict(values: Sequence[float], direction: int, level: float = 0.95, min_models: int = 3,
                   sign_flip_from: int = 5) -> dict:
    """A paired effect (book/protocol.md): one difference per model; shown when the t-interval excludes 0 in
    `direction` (+1: above, -1: below), contradicted when it excludes 0 the other way, not shown otherwise; at
    most suggestive with one or two models. The exact sign-flip p is reported from `sign_flip_from` models on."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1 (the paper's sign of the effect); got {direction!r}")
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    n = len(values)
    out = {"n": n, "mean": float(np.mean(values)) if values else None, "interval": None, "sign_flip_p": None,
           "direction": "> 0" if direction > 0 else "< 0", "test": f"t-interval {level:.0%}"}
    if n == 0:
        return {**out, "verdict": NOT_TESTABLE}
    if n < min_models:
        return {**out, "verdict": suggestive(n) if all(direction * v > 0 for v in values) else NOT_SHOWN}
    mean, low, high = t_interval(values, level)
    verdict = _interval_verdict(low, high, direction)
    if n >= sign_flip_from:
        out["sign_flip_p"] = sign_flip_p(values, direction)
    return {**out, "interval": [low, high], "verdict": verdict}


def _interval_verdict(low: float, high: float, direction: int) -> str:
    """shown when [low, high] excludes 0 in `direction`, contradicted when it excludes 0 the other way, else not shown."""
    if direction * low > 0 and direction * high > 0:
        return SHOWN
    return CONTRADICTED if direction * low < 0 and direction * high < 0 else NOT_SHOWN


def seed_bootstrap(seeds: Sequence, statistic: Callable[[list], float | np.ndarray], resamples: int,
                   level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap over seeds: `statistic(drawn seeds)` on `resamples` draws of len(seeds) seeds with
    replacement (scipy.stats.bootstrap draws them; both members of a pair come with their seed).

    The statistic may be undefined on a draw (NaN: e.g. every drawn seed the same, so no pair): such draws are
    dropped and counted, and the interval is the percentile interval of the others (scipy's own percentile
    interval when none is dropped). It may return a vector (one value per layer): the interval is per entry.
    Returns {"estimate", "interval" ([low, high], arrays for a vector), "undefined"}.
    """
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError(f"a bootstrap over seeds needs at least 2 seeds; got {len(seeds)}")

    def on_indices(indices):
        return statistic([seeds[int(i)] for i in indices])

    with warnings.catch_warnings():   # degenerate or NaN draws: handled below, not by scipy's BCa machinery
        warnings.simplefilter("ignore")
        result = stats.bootstrap((np.arange(len(seeds)),), on_indices, vectorized=False, n_resamples=resamples,
                                 method="percentile", confidence_level=level, rng=np.random.default_rng(seed))
    draws = np.atleast_2d(result.bootstrap_distribution)          # (outputs, resamples)
    defined = np.all(np.isfinite(draws), axis=0)
    if not defined.any():
        raise ValueError("the statistic is undefined on every bootstrap draw")
    low, high = np.percentile(draws[:, defined], [50 * (1 - level), 50 * (1 + level)], axis=1)
    estimate = np.asarray(statistic(seeds), dtype=float)
    if estimate.ndim == 0:
        low, high = float(low[0]), float(high[0])
    return {"estimate": estimate, "interval": [low, high], "undefined": int((~defined).sum())}


def pair_bootstrap_verdict(values: dict[tuple, float], blocked: Sequence, seeds: Sequence, direction: int,
                           resamples: int, level: float = 0.95, min_models: int = 3, seed: int = 0) -> dict:
    """A pair statistic over seeds (book/protocol.md, Chapter 4): `values[(s, t)]` for each blocked seed s and
    every other seed t. Per blocked seed, the mean over the other seeds; the claim's mean is their mean, and its
    interval is a bootstrap over seeds (`seed_bootstrap`): a draw keeps each drawn copy of a blocked seed with its
    drawn partners of another seed. Shown when the interval excludes 0 in `direction`, contradicted the other
    way; at most suggestive with one or two blocked seeds."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1 (the paper's sign of the effect); got {direction!r}")
    blocked = [s for s in blocked if s in seeds]
    per_seed = {s: float(np.mean([values[(s, t)] for t in seeds if t != s])) for s in blocked}
    n = len(per_seed)
    out = {"n": n, "mean": float(np.mean(list(per_seed.values()))) if n else None, "interval": None,
           "per_seed": per_seed, "direction": "> 0" if direction > 0 else "< 0",
           "test": f"bootstrap over {len(seeds)} seeds, {resamples} resamples, {level:.0%}"}
    if n == 0:
        return {**out, "verdict": NOT_TESTABLE}
    if n < min_models:
        return {**out, "verdict": suggestive(n) if all(direction * v > 0 for v in per_seed.values()) else NOT_SHOWN}

    def statistic(drawn: list) -> float:
        copies = [np.mean(partners) for s in drawn if s in per_seed
                  for partners in [[values[(s, t)] for t in drawn if t != s]] if partners]
        return float(np.mean(copies)) if copies else np.nan

    boot = seed_bootstrap(seeds, statistic, resamples, level, seed)
    low, high = boot["interval"]
    return {**out, "interval": [low, high], "undefined_resamples": boot["undefined"],
            "verdict": _interval_verdict(low, high, direction)}


def bootstrap_se(values: Sequence[float], resamples: int, seed: int = 0) -> float:
    """The bootstrap standard error of the mean of per-example `values` (scipy.stats.bootstrap, seeded)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"a bootstrap standard error needs at least 2 values; got shape {values.shape}")
    with warnings.catch_warnings():   # constant values: a degenerate distribution, standard error 0
        warnings.simplefilter("ignore")
        result = stats.bootstrap((values,), np.mean, n_resamples=resamples, method="percentile",
                                 rng=np.random.default_rng(seed))
    return float(result.standard_error)


def bound_verdict(values: Sequence[float], bound: float, level: float = 0.95, min_models: int = 3) -> dict:
    """A per-model statistic that must stay small (book/protocol.md, Chapter 5's plateau): shown when the
    t-interval's upper bound is at most `bound`; not shown when the lower bound exceeds it, or when the interval
    straddles it; at most suggestive (every model at most `bound`) with one or two models."""
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    n = len(values)
    out = {"n": n, "mean": float(np.mean(values)) if values else None, "interval": None, "bound": bound,
           "test": f"t-interval {level:.0%}, upper bound <= {bound:g}"}
    if n == 0:
        return {**out, "verdict": NOT_TESTABLE}
    if n < min_models:
        return {**out, "verdict": suggestive(n) if all(v <= bound + 1e-9 for v in values) else NOT_SHOWN}
    mean, low, high = t_interval(values, level)
    return {**out, "interval": [low, high], "verdict": SHOWN if high <= bound + 1e-9 else NOT_SHOWN}


def combine(*parts: str) -> str:
    """One verdict of a claim with several halves: shown when every part is, partly shown when some are, else the
    weakest (not testable when none could be tested)."""
    heads = [head(p) for p in parts]
    if all(h == SHOWN for h in heads):
        return SHOWN
    if any(h == SHOWN for h in heads):
        return PARTLY_SHOWN
    if all(h == NOT_TESTABLE for h in heads):
        return NOT_TESTABLE
    if any(h == SUGGESTIVE for h in heads):
        return next(p for p in parts if head(p) == SUGGESTIVE)
    return CONTRADICTED if CONTRADICTED in heads else NOT_SHOWN


def claim(result: dict, rule: str, **extra) -> dict:
    """A verdict object as the results files keep it: the verdict, its n, k or mean, interval and test, and
    the rule of book/protocol.md it was judged by (`extra`: e.g. the models left out and why)."""
    if head(result.get("verdict")) is None or "n" not in result:
        raise ValueError(f"a verdict object needs a verdict spelled with widedeep.analyses.verdicts and its n; "
                         f"got {result!r}")
    return {**result, "interval": result.get("interval"), "rule": rule, **extra}


def describe(result: dict) -> str:
    """'n = 5, mean +0.12 [+0.05, +0.19]' or 'k = 6 of n = 8 [0.35, 0.97]': a verdict's n and interval in words
    (with the models left out, where a rule left some out)."""
    left_out = result.get("left_out") or 0
    suffix = f"; {left_out} left out ({result.get('left_out_why', 'by the protocol')})" if left_out else ""
    if result.get("n", 0) == 0:
        return "n = 0" + suffix
    if "k" in result:
        text = f"k = {result['k']} of n = {result['n']}" + (f" {result['unit']}" if result.get("unit") else "")
        if result.get("interval"):
            low, high = result["interval"]
            text += f", [{low:.2f}, {high:.2f}]"
        if result.get("null") is not None:
            text += f" (null {result['null']:g})"
        if result.get("p") is not None:
            text += f", p = {result['p']:.3g}"
        return text + suffix
    text = f"n = {result['n']}" + (f" {result['unit']}" if result.get("unit") else "")
    if result.get("discoveries") is not None:
        text += (f", {result['discoveries']} discoveries against the calibration's quantile "
                 f"{result['calibration_quantile']:g}")
    if result.get("mean") is not None:
        text += f", mean {result['mean']:+.3f}"
    if result.get("interval"):
        text += f" [{result['interval'][0]:+.3f}, {result['interval'][1]:+.3f}]"
    if result.get("p") is not None:
        text += f", permutation p = {result['p']:.3g}"
    if result.get("sign_flip_p") is not None:
        text += f", sign-flip p = {result['sign_flip_p']:.3g}"
    return text + suffix
