"""The capacity-versus-data law, fitted: does block structure follow capacity relative to the data?

Analyses layer. Each trained model is one observation with a capacity (its parameter count), a
training-set size `n_train` and the series it belongs to (the width series or the depth series).
Two outcomes are fitted on the same predictors, log(parameters), log(n_train) and a series term:

- **presence** (has a block, yes/no) by logistic regression with **Firth's penalty** (the Jeffreys
  prior, Firth 1993; Heinze & Schemper 2002). With few positives, all in some models, plain maximum
  likelihood separates and its coefficients run to infinity; Firth's estimates stay finite, are
  equivariant under linear changes of the predictors (so coefficients keep their log-scale meaning),
  and reduce to adding 1/2 to every cell of a 2 x 2 table. Intervals and tests are **profile
  penalised likelihood** ones (the Wald intervals are poor exactly where separation looms). The
  optimisation is SciPy's; nothing here is a hand-written optimiser.
- a **continuous** block measure (e.g. the maximum first-PC share) by ordinary least squares, with
  t intervals.

The paper's claims become tests of the fitted coefficients: capacity > 0, data < 0, and "relative to
data" as capacity + data = 0 (not rejected). A claim is *shown* when its interval excludes 0 in the
paper's direction, *contradicted* when it excludes 0 the other way, *not shown* otherwise; the
presence fit is *not estimable* when too few models are on one side to say anything.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize, stats

from widedeep.analyses.verdicts import CONTRADICTED, NOT_ESTIMABLE, NOT_SHOWN, SHOWN
# Fewer models than this on either side (with / without a block) and the presence fit is not estimable:
# with one or two events the penalty, not the data, sets the coefficients.
MIN_EVENTS = 3


@dataclass
class LawFit:
    """A fitted law: coefficients with intervals, the relative test, and what it rests on."""

    coefficients: dict[str, list[float]]   # name -> [estimate, low, high]
    relative_test_p: float | None           # H0: capacity + data = 0
    method: str
    level: float
    n_models: int
    estimable: bool = True
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The form results files keep."""
        out = {f"{name}_coef": value for name, value in self.coefficients.items()}
        out.update(relative_test_p=self.relative_test_p, method=self.method, level=self.level,
                   n_models=self.n_models, estimable=self.estimable)
        if self.reason:
            out["reason"] = self.reason
        out.update(self.extra)
        return out


class DesignError(ValueError):
    """A grid whose design cannot carry the law (its columns are linearly dependent)."""


def design(rows: Sequence[dict], series_key: str = "series", depth_series: str = "depth") -> tuple[np.ndarray, list[str]]:
    """Columns intercept, log(parameters), log(n_train), series (1 where depth grew) from model rows."""
    if not rows:
        raise DesignError("no models to fit a law on (e.g. an arm the profile does not train)")
    for row in rows:
        for key in ("parameters", "n_train", series_key):
            if key not in row:
                raise ValueError(f"model row {row.get('name', row)!r} lacks {key!r}; each row needs parameters, "
                                 f"n_train and {series_key}")
        if row["parameters"] <= 0 or row["n_train"] <= 0:
            raise ValueError(f"parameters and n_train must be positive; got {row['parameters']}, {row['n_train']}")
    x = np.array([[1.0, np.log(r["parameters"]), np.log(r["n_train"]), float(r[series_key] == depth_series)]
                  for r in rows])
    names = ["intercept", "capacity", "data", "series"]
    if len(set(x[:, 3])) < 2:  # one series only: its term is not identifiable
        x, names = x[:, :3], names[:3]
    return x, names


def _check_design(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"design has shape {x.shape} but there are {len(y)} outcomes")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("design and outcomes must be finite")
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise DesignError(f"the design's {x.shape[1]} columns are linearly dependent over {len(x)} models: vary "
                         f"capacity and n_train independently (e.g. at least two n_train values per architecture)")


def firth_penalised_loglik(beta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Log-likelihood plus half the log-determinant of the Fisher information (the Jeffreys prior)."""
    eta = x @ beta
    loglik = np.sum(y * eta - np.logaddexp(0.0, eta))
    # p(1 - p) without cancellation, floored so the information stays finite far out where separation pulls
    w = np.clip(np.exp(-np.abs(eta) - 2 * np.logaddexp(0.0, -np.abs(eta))), 1e-300, None)
    sign, logdet = np.linalg.slogdet(x.T @ (x * w[:, None]))
    return loglik + 0.5 * logdet if sign > 0 else -np.inf


def _firth_gradient(beta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Firth's modified score: X^T (y - p + h (1/2 - p)), h the hat diagonal."""
    p = stats.logistic.cdf(x @ beta)
    w = p * (1 - p)
    xw = x * np.sqrt(w)[:, None]
    info = xw.T @ xw
    hat = np.einsum("ij,jk,ik->i", xw, np.linalg.pinv(info), xw)
    return x.T @ (y - p + hat * (0.5 - p))


def _maximise(x: np.ndarray, y: np.ndarray, fixed: dict[int, float] | None = None,
              start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Maximise the penalised likelihood over the free coefficients (some held at `fixed` values)."""
    fixed = fixed or {}
    free = [j for j in range(x.shape[1]) if j not in fixed]
    beta0 = np.zeros(x.shape[1]) if start is None else start.copy()
    for j, value in fixed.items():
        beta0[j] = value

    def full(b_free):
        beta = beta0.copy()
        beta[free] = b_free
        return beta

    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        # BFGS's line search may probe far into the separated direction; it backs off by itself.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = optimize.minimize(lambda b: -firth_penalised_loglik(full(b), x, y), beta0[free],
                                   jac=lambda b: -_firth_gradient(full(b), x, y)[free], method="BFGS",
                                   options={"gtol": 1e-9, "maxiter": 1000})
    beta = full(result.x)
    return beta, firth_penalised_loglik(beta, x, y)


def firth_logit(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> dict:
    """Firth-penalised logistic fit: estimates, profile penalised likelihood intervals, maximum."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    _check_design(x, y)
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise ValueError("presence outcomes must be 0 or 1")
    beta, top = _maximise(x, y)
    cut = stats.chi2.ppf(level, 1) / 2
    intervals = []
    for j in range(x.shape[1]):
        def drop(value, j=j):  # how far the profile falls below the maximum, less the cut-off
            return top - _maximise(x, y, {j: value}, beta)[1] - cut

        ends = []
        for direction in (-1, 1):
            step = max(1.0, abs(beta[j]))
            far = beta[j] + direction * step
            for _ in range(60):  # widen until the profile has fallen past the cut-off
                if drop(far) > 0:
                    break
                step *= 2
                far = beta[j] + direction * step
            else:
                ends.append(direction * np.inf)
                continue
            ends.append(optimize.brentq(drop, *sorted((beta[j], far)), xtol=1e-8))
        intervals.append(ends)
    return {"beta": beta, "intervals": np.array(intervals), "max_penalised_loglik": top}


def firth_linear_test(x: np.ndarray, y: np.ndarray, contrast: Sequence[float], beta: np.ndarray | None = None,
                      top: float | None = None) -> float:
    """p-value of H0: contrast . beta = 0 by the penalised likelihood ratio (chi-squared, 1 df)."""
    x, y, c = np.asarray(x, float), np.asarray(y, float), np.asarray(contrast, float)
    if beta is None or top is None:
        beta, top = _maximise(x, y)
    # Reparameterise so the contrast is one coordinate: beta = T gamma with gamma_k = c . beta.
    k = int(np.argmax(np.abs(c)))
    basis = np.eye(len(c))
    basis[k] = c
    t_inv = basis                      # gamma = basis @ beta
    z = x @ np.linalg.inv(t_inv)
    gamma = t_inv @ beta
    # The penalty moves by a constant under reparameterisation; compare both fits on the same design.
    full = firth_penalised_loglik(gamma, z, y)
    _, restricted = _maximise(z, y, {k: 0.0}, gamma)
    statistic = max(0.0, 2 * (full - restricted))
    return float(stats.chi2.sf(statistic, 1))


def ols(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> dict:
    """Least squares with t intervals, the residual variance and the coefficient covariance."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    _check_design(x, y)
    dof = len(y) - x.shape[1]
    if dof < 1:
        raise ValueError(f"{len(y)} models cannot fit {x.shape[1]} coefficients with any residual: train more models")
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    sigma2 = residual @ residual / dof
    cov = sigma2 * np.linalg.inv(x.T @ x)
    half = stats.t.ppf(0.5 + level / 2, dof) * np.sqrt(np.diag(cov))
    return {"beta": beta, "intervals": np.stack([beta - half, beta + half], 1), "cov": cov, "dof": dof,
            "r2": 1 - residual @ residual / max(((y - y.mean()) ** 2).sum(), 1e-300)}


def ols_linear_test(fit: dict, contrast: Sequence[float]) -> float:
    """Two-sided t-test p-value of H0: contrast . beta = 0."""
    c = np.asarray(contrast, float)
    value, var = c @ fit["beta"], c @ fit["cov"] @ c
    return float(2 * stats.t.sf(abs(value) / np.sqrt(var), fit["dof"])) if var > 0 else float("nan")


def _relative_contrast(names: list[str]) -> list[float]:
    return [1.0 if n in ("capacity", "data") else 0.0 for n in names]


def fit_presence(rows: Sequence[dict], outcome: str = "has_block", level: float = 0.95,
                 series_key: str = "series") -> LawFit:
    """Firth logistic law of block presence over model rows (not estimable with too few events)."""
    x, names = design(rows, series_key)
    y = np.array([float(bool(r[outcome])) for r in rows])
    events, non_events = int(y.sum()), int(len(y) - y.sum())
    method = ("Firth-penalised logistic regression (Jeffreys prior) on log(parameters), log(n_train)"
              + (", series" if "series" in names else "") + "; profile penalised likelihood intervals and "
              "likelihood-ratio test")
    if min(events, non_events) < MIN_EVENTS:
        nan3 = [float("nan")] * 3
        return LawFit({n: nan3 for n in names[1:]}, None, method, level, len(rows), estimable=False,
                      reason=f"{events} of {len(rows)} models have a block; at least {MIN_EVENTS} with and "
                             f"{MIN_EVENTS} without are needed", extra={"events": events})
    fit = firth_logit(x, y, level)
    coefficients = {n: [float(fit["beta"][j]), *map(float, fit["intervals"][j])] for j, n in enumerate(names) if j}
    p = firth_linear_test(x, y, _relative_contrast(names), fit["beta"], fit["max_penalised_loglik"])
    return LawFit(coefficients, p, method, level, len(rows),
                  extra={"events": events, "intercept": float(fit["beta"][0]), "outcome": outcome})


def fit_continuous(rows: Sequence[dict], outcome: str, level: float = 0.95, series_key: str = "series") -> LawFit:
    """Least-squares law of a continuous block measure over model rows."""
    x, names = design(rows, series_key)
    y = np.array([float(r[outcome]) for r in rows])
    fit = ols(x, y, level)
    coefficients = {n: [float(fit["beta"][j]), *map(float, fit["intervals"][j])] for j, n in enumerate(names) if j}
    method = (f"ordinary least squares of {outcome} on log(parameters), log(n_train)"
              + (", series" if "series" in names else "") + "; t intervals and t-test")
    return LawFit(coefficients, ols_linear_test(fit, _relative_contrast(names)), method, level, len(rows),
                  extra={"outcome": outcome, "r2": float(fit["r2"]), "intercept": float(fit["beta"][0])})


def direction_verdict(interval: Sequence[float], expected_sign: int) -> str:
    """shown / contradicted / not shown for a coefficient [estimate, low, high] the paper expects of one sign."""
    estimate, low, high = interval
    if not np.all(np.isfinite([low, high])) and np.isnan(estimate):
        return NOT_ESTIMABLE
    if expected_sign * low > 0 and expected_sign * high > 0:
        return SHOWN
    if expected_sign * low < 0 and expected_sign * high < 0:
        return CONTRADICTED
    return NOT_SHOWN


def law_verdicts(fit: LawFit, alpha: float | None = None) -> dict[str, str]:
    """The paper's three claims judged on one fit: capacity > 0, data < 0, capacity + data = 0."""
    if not fit.estimable:
        return {"capacity": NOT_ESTIMABLE, "data": NOT_ESTIMABLE, "relative": NOT_ESTIMABLE}
    alpha = 1 - fit.level if alpha is None else alpha
    capacity = direction_verdict(fit.coefficients["capacity"], +1)
    data = direction_verdict(fit.coefficients["data"], -1)
    # "Relative to data" needs both effects shown, and then their sum not rejected as non-zero; a rejected
    # sum beside a shown effect contradicts it (capacity and data do not trade one for one).
    p = fit.relative_test_p
    if p is not None and p <= alpha and SHOWN in (capacity, data):
        relative = CONTRADICTED
    elif capacity == data == SHOWN and p is not None:
        relative = SHOWN
    else:
        relative = NOT_SHOWN
    return {"capacity": capacity, "data": data, "relative": relative}


def predict(fit: LawFit, parameters: np.ndarray, n_train: np.ndarray, depth_series: bool = False) -> np.ndarray:
    """The fitted law at given capacities and data sizes: a probability for presence, a value otherwise."""
    if not fit.estimable:
        raise ValueError(f"the fit is not estimable ({fit.reason}); there is no law to draw")
    eta = (fit.extra["intercept"] + fit.coefficients["capacity"][0] * np.log(parameters)
           + fit.coefficients["data"][0] * np.log(n_train))
    if "series" in fit.coefficients and depth_series:
        eta = eta + fit.coefficients["series"][0]
    return 1 / (1 + np.exp(-eta)) if fit.method.startswith("Firth") else eta


def series_of(depth: int, width: float, width_series_depth: int, depth_series_width: float) -> str:
    """'width' for the width series (its base model included), 'depth' for the models that grew in depth."""
    if depth == width_series_depth:
        return "width"
    if width == depth_series_width:
        return "depth"
    raise ValueError(f"ResNet-{depth} x{width:g} is on neither series (width series depth {width_series_depth}, "
                     f"depth series width {depth_series_width:g})")


def law_rows(summaries: Sequence[dict], width_series_depth: int, depth_series_width: float) -> list[dict]:
    """Model summaries with their series attached: the rows the laws are fitted on."""
    return [{**row, "series": series_of(row["depth"], row["width"], width_series_depth, depth_series_width),
             "has_block": row["block"] is not None} for row in summaries]


def fit_laws(rows: Sequence[dict], level: float = 0.95) -> dict[str, LawFit]:
    """The three laws: presence (Firth), maximum first-PC share (the primary continuous outcome) and block size."""
    return {"incidence_fit": fit_presence(rows, level=level),
            "continuous_fit": fit_continuous(rows, "max_pc1_share", level),
            "block_size_fit": fit_continuous(rows, "block_size", level)}


def law_record(fits: dict[str, LawFit], rows: Sequence[dict]) -> dict:
    """The results-file form of the fits, each with the paper's verdicts and the seeds per cell it rests on."""
    seeds = {f"{d}x{w:g}@{n}": total for (d, w, n), (_, total) in cell_incidence(rows).items()}
    return {key: {**fit.as_dict(), "verdicts": law_verdicts(fit), "n_seeds_per_cell": seeds}
            for key, fit in fits.items()}


def cell_incidence(rows: Sequence[dict]) -> dict[tuple[int, float, int], tuple[int, int]]:
    """(depth, width, n_train) -> (models with a block, models) over the seeds of each cell."""
    out: dict[tuple[int, float, int], list[int]] = {}
    for row in rows:
        key = (row["depth"], float(row["width"]), row["n_train"])
        hit, total = out.get(key, (0, 0))
        out[key] = (hit + (row["block"] is not None), total + 1)
    return out


def expected_law(rows: Sequence[dict], capacity: float, data: float, mean_rate: float, draws: int = 40,
                 seed: int = 0, level: float = 0.95) -> dict:
    """What the presence law can detect on a grid: blocks drawn from a true law (coefficients `capacity` per
    log-parameter and `data` per log-n_train, intercept giving `mean_rate` of the grid a block), each draw
    fitted as Chapter 3 fits it; the median interval of each coefficient, the share of draws each verdict
    takes, and how many draws were not estimable."""
    if not 0 < mean_rate < 1 or draws < 1:
        raise ValueError(f"mean_rate must lie in (0, 1) and draws be positive; got {mean_rate}, {draws}")
    x, _ = design(rows)
    _check_design(x, np.zeros(len(x)))
    slope = capacity * (x[:, 1] - x[:, 1].mean()) + data * (x[:, 2] - x[:, 2].mean())
    intercept = optimize.brentq(lambda b: np.mean(1 / (1 + np.exp(-(b + slope)))) - mean_rate, -50, 50)
    p = 1 / (1 + np.exp(-(intercept + slope)))
    rng = np.random.default_rng(seed)
    intervals = {"capacity": [], "data": []}
    outcomes = {"capacity": [], "data": []}
    for _ in range(draws):
        has = rng.random(len(rows)) < p
        fit = fit_presence([{**r, "has_block": bool(h)} for r, h in zip(rows, has)], level=level)
        verdicts = law_verdicts(fit)
        for name in intervals:
            outcomes[name].append(verdicts[name])
            if fit.estimable:
                intervals[name].append(fit.coefficients[name][1:])
    out = {"draws": draws, "not_estimable": outcomes["capacity"].count(NOT_ESTIMABLE)}
    for name in intervals:
        found = np.array(intervals[name]) if intervals[name] else np.full((1, 2), np.nan)
        out[name] = {"median_interval": np.median(found, axis=0).tolist(),
                     "shown": outcomes[name].count(SHOWN) / draws}
    return out
