"""The one vocabulary of verdicts: every verdict the analyses reach, the results files record and the claims show.

Layer: analyses (no imports; the analyses spell their verdicts with these constants, and
`widedeep.book.results` checks that every recorded verdict starts with one of them). A verdict is a
constant, or a constant followed by a qualifier (", but the accuracies are not matched", ": ..."),
so `head(verdict)` is always in `VERDICTS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
    verdict = SHOWN if direction * low > 0 and direction * high > 0 else \
        CONTRADICTED if direction * low < 0 and direction * high < 0 else NOT_SHOWN
    if n >= sign_flip_from:
        out["sign_flip_p"] = sign_flip_p(values, direction)
    return {**out, "interval": [low, high], "verdict": verdict}


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


def describe(result: dict) -> str:
    """'n = 5, mean +0.12 [+0.05, +0.19]' or 'k = 6 of n = 8 [0.35, 0.97]': a verdict's n and interval in words."""
    if result.get("n", 0) == 0:
        return "n = 0"
    if "k" in result:
        low, high = result["interval"]
        return f"k = {result['k']} of n = {result['n']}, [{low:.2f}, {high:.2f}] (null {result['null']:g})"
    text = f"n = {result['n']}, mean {result['mean']:+.3f}"
    if result.get("interval"):
        text += f" [{result['interval'][0]:+.3f}, {result['interval'][1]:+.3f}]"
    if result.get("sign_flip_p") is not None:
        text += f", sign-flip p = {result['sign_flip_p']:.3g}"
    return text
