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
# Probe accuracy across a block
PLATEAU, RISES, FALLS, NO_BLOCK = "plateau", "rises", "falls", "no block"
# Whether a plateau belongs to the block or to its position
SPECIFIC, NOT_SPECIFIC = "specific to the block", "not specific to the block"
# Deleting residual blocks inside against outside the block
CHEAPER_INSIDE, NO_DIFFERENCE, COSTLIER_INSIDE = "cheaper inside", "no clear difference", "costlier inside"

VERDICTS = (SHOWN, PARTLY_SHOWN, NOT_SHOWN, SHOWN_IN_AGGREGATE, CONTRADICTED, NOT_TESTABLE, NOT_RUN, NOT_ESTIMABLE,
            PLATEAU, RISES, FALLS, NO_BLOCK, SPECIFIC, NOT_SPECIFIC, CHEAPER_INSIDE, NO_DIFFERENCE,
            COSTLIER_INSIDE)


def head(verdict: str) -> str | None:
    """The constant a verdict starts with (the longest that fits), or None if it is not spelled with one."""
    if not isinstance(verdict, str):
        return None
    fitting = [v for v in VERDICTS if verdict == v or verdict.startswith((v + ",", v + ":", v + " ("))]
    return max(fitting, key=len, default=None)


def fraction_verdict(hits: int, total: int) -> str:
    """shown (all of `total`), partly shown (some), not shown (none), not testable (nothing to test)."""
    if total == 0:
        return NOT_TESTABLE
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
