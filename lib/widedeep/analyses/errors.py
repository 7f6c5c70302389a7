"""Do wide and deep models of equal accuracy make different errors? Statistics over per-seed predictions.

Layer: analyses (plain functions over prediction arrays; below book support).

Inputs. For one configuration (an architecture at a data size), `predictions` is an integer array of
shape (seeds, examples): the predicted class of every test example by every independently trained
seed; `labels` (examples,) holds the true classes. Two configurations A and B are compared on the same
test set, with m_a and m_b seeds.

Example level (method.md §6, the paper's "distinctive error patterns"):

- the *correct fraction* of example i is p(i) = (number of seeds that classify i correctly) / seeds;
- for each example, Fisher's exact test (two-sided) on the 2x2 table
  [[c_a(i), m_a - c_a(i)], [c_b(i), m_b - c_b(i)]] (correct and wrong counts of A, then of B) asks
  whether A and B get it right equally often. Counts take (m_a + 1)(m_b + 1) values at most, so each
  distinct table is tested once (and cached across calls);
- Benjamini-Hochberg at false discovery rate `fdr` turns the p-values into q-values
  (scipy.stats.false_discovery_control); an example is *significant* when q <= fdr;
- the *seed-split null*: split one configuration's seeds at random into two disjoint halves of equal
  size (with an odd number of seeds, one randomly chosen seed sits out), test half against half the
  same way, and count the significant examples; repeated `splits` times, this is how many
  discoveries "two sets of seeds of the same model" make. A and B differ beyond seed noise when their
  count clearly exceeds this null.

Class level (the paper's ImageNet scenes-versus-consumer-goods finding, repeated on CIFAR):

- the *class accuracy* of a seed for class c is the fraction of test examples with label c that it
  classifies correctly (NaN for a class with no test examples);
- the *class difference* is mean over A's seeds minus mean over B's seeds, per class; its percentile
  bootstrap confidence interval resamples seeds with replacement within each configuration
  (n_boot times) and takes the (1 - level)/2 and (1 + level)/2 quantiles. Intervals are per class and
  not corrected for multiplicity: with 100 classes about 5 exclude 0 by chance at level 0.95, which is
  what the class-level split null shows. With few seeds they are also somewhat narrow (the bootstrap
  spread of a mean of m values is sqrt((m - 1)/m) of the true one, and percentiles are normal rather
  than t quantiles): with 10 seeds per side a 0.95 interval covers about 0.92, a 0.99 one about 0.97.

Accuracy match: overall test accuracy of each seed, the two means, their difference and a Welch
t-test p-value over seeds (scipy.stats.ttest_ind, equal_var=False), so a chapter can say how "equal"
the accuracies of the compared models are.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
from scipy import stats

from widedeep.analyses.verdicts import NOT_SHOWN, NOT_TESTABLE, SHOWN

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _check_labels(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """labels as a 1-D integer array in [0, num_classes) (or >= 0 without num_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (examples,); got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0; got a minimum of {labels.min()}")
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if labels.size and labels.max() >= num_classes:
            raise ValueError(f"labels must be < num_classes = {num_classes}; got a maximum of {labels.max()} "
                             f"(pass the dataset's number of classes)")
    return labels


def _check_predictions(predictions: np.ndarray, labels: np.ndarray, name: str = "predictions",
                       num_classes: int | None = None) -> np.ndarray:
    """predictions as a (seeds, examples) integer array whose examples match labels."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        hint = "; for softmax outputs of shape (seeds, examples, classes) pass .argmax(-1)" \
            if predictions.ndim == 3 else ""
        raise ValueError(f"{name} must be 2-D (seeds, examples); got shape {predictions.shape}{hint}")
    if not np.issubdtype(predictions.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices; got dtype {predictions.dtype} "
                         f"(pass the argmax of the outputs)")
    if predictions.shape[0] < 1:
        raise ValueError(f"{name} has no seeds (shape {predictions.shape})")
    if predictions.shape[1] != labels.shape[0]:
        raise ValueError(f"{name} has {predictions.shape[1]} examples (shape {predictions.shape}) but labels has "
                         f"{labels.shape[0]} (shape {labels.shape}); both must cover the same test set")
    if predictions.size and predictions.min() < 0:
        raise ValueError(f"{name} must be >= 0; got a minimum of {predictions.min()}")
    if num_classes is not None and predictions.size and predictions.max() >= num_classes:
        raise ValueError(f"{name} must be < num_classes = {num_classes}; got a maximum of {predictions.max()}")
    return predictions


def _check_fdr(fdr: float) -> None:
    """fdr must lie strictly between 0 and 1."""
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must be in (0, 1), e.g. 0.05; got {fdr}")


def _check_level(level: float) -> None:
    """level must lie strictly between 0 and 1."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")


def _check_min_seeds(predictions: np.ndarray, name: str, minimum: int, why: str) -> None:
    """At least `minimum` seeds, or a ValueError that says why they are needed."""
    if predictions.shape[0] < minimum:
        raise ValueError(f"{name} has {predictions.shape[0]} seed(s) but {why} needs >= {minimum}; "
                         f"train more seeds of this configuration")


# ---------------------------------------------------------------------------------------------
# Example level
# ---------------------------------------------------------------------------------------------


def correct_fraction(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The fraction of seeds that classify each example correctly, shape (examples,)."""
    labels = _check_labels(labels)
    predictions = _check_predictions(predictions, labels)
    return (predictions == labels).mean(axis=0)


@lru_cache(maxsize=1 << 16)
def _fisher_p(correct_a: int, wrong_a: int, correct_b: int, wrong_b: int) -> float:
    """Two-sided Fisher exact p-value of [[correct_a, wrong_a], [correct_b, wrong_b]], cached."""
    return float(stats.fisher_exact([[correct_a, wrong_a], [correct_b, wrong_b]]).pvalue)


def fisher_pvalues(correct_a: np.ndarray, n_a: int, correct_b: np.ndarray, n_b: int) -> np.ndarray:
    """Two-sided Fisher p-value per example from correct counts out of n_a and n_b seeds; each distinct table once."""
    correct_a, correct_b = np.asarray(correct_a, dtype=int), np.asarray(correct_b, dtype=int)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"correct_a and correct_b must have the same shape; got {correct_a.shape} and "
                         f"{correct_b.shape}")
    for counts, n, name in ((correct_a, n_a, "correct_a"), (correct_b, n_b, "correct_b")):
        if counts.size and (counts.min() < 0 or counts.max() > n):
            raise ValueError(f"{name} must count correct seeds in [0, {n}]; got values in "
                             f"[{counts.min()}, {counts.max()}]")
    code = correct_a * (n_b + 1) + correct_b  # one integer per distinct table
    unique, inverse = np.unique(code, return_inverse=True)
    p_unique = np.array([_fisher_p(int(c // (n_b + 1)), int(n_a - c // (n_b + 1)),
                                   int(c % (n_b + 1)), int(n_b - c % (n_b + 1))) for c in unique], dtype=float)
    return p_unique[inverse].reshape(correct_a.shape)


def bh_qvalues(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): min over j >= rank of p_(j) * n / j, capped at 1."""
    p_values = np.asarray(p_values, dtype=float)
    if p_values.size == 0:
        return p_values.copy()
    return stats.false_discovery_control(p_values, method="bh")


def example_tests(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, fdr: float = 0.05) -> dict:
    """Per-example Fisher tests of A against B with BH at fdr: correct fractions, p, q, significant mask and count."""
    _check_fdr(fdr)
    labels = _check_labels(labels)
    pred_a = _check_predictions(pred_a, labels, "pred_a")
    pred_b = _check_predictions(pred_b, labels, "pred_b")
    correct_a = (pred_a == labels).sum(axis=0)
    correct_b = (pred_b == labels).sum(axis=0)
    p_values = fisher_pvalues(correct_a, pred_a.shape[0], correct_b, pred_b.shape[0])
    q_values = bh_qvalues(p_values)
    significant = q_values <= fdr
    return {
        "frac_a": correct_a / pred_a.shape[0],   # p_A(i): fraction of A's seeds right on example i
        "frac_b": correct_b / pred_b.shape[0],   # p_B(i)
        "p_values": p_values,                    # two-sided Fisher exact p-value per example
        "q_values": q_values,                    # Benjamini-Hochberg adjusted
        "significant": significant,              # q <= fdr
        "n_significant": int(significant.sum()),
    }


def half_splits(n_seeds: int, splits: int, seed: int = 0) -> np.ndarray:
    """Seed indices of random disjoint equal halves, shape (splits, 2, n_seeds // 2); an odd seed sits out."""
    if n_seeds < 2:
        raise ValueError(f"a half-split needs >= 2 seeds; got {n_seeds}; train more seeds of this configuration")
    if splits < 1:
        raise ValueError(f"splits must be >= 1; got {splits}")
    rng = np.random.default_rng(seed)
    half = n_seeds // 2
    perms = np.stack([rng.permutation(n_seeds) for _ in range(splits)])
    return perms[:, :2 * half].reshape(splits, 2, half)


def seed_split_null(predictions: np.ndarray, labels: np.ndarray, splits: int = 100, seed: int = 0,
                    fdr: float = 0.05) -> np.ndarray:
    """n_significant of example_tests between random half-splits of one configuration's seeds, shape (splits,)."""
    _check_fdr(fdr)
    labels = _check_labels(labels)
    predictions = _check_predictions(predictions, labels)
    _check_min_seeds(predictions, "predictions", 2, "a half-split of seeds")
    return np.array([example_tests(predictions[first], predictions[second], labels, fdr)["n_significant"]
                     for first, second in half_splits(predictions.shape[0], splits, seed)], dtype=int)


def paired_split_tests(pred_other: np.ndarray, pred_null: np.ndarray, labels: np.ndarray, splits: int = 100,
                       seed: int = 0, fdr: float = 0.05) -> dict:
    """Per random half-split of the null side's 2m seeds: the other side's m seeds against one half, and half against half.

    Both comparisons are m seeds against m seeds on the same split, so their discovery counts (and
    mean |p_A(i) - p_B(i)|) are directly comparable: the second is the seed-to-seed null of the first.
    """
    _check_fdr(fdr)
    labels = _check_labels(labels)
    pred_other = _check_predictions(pred_other, labels, "pred_other")
    pred_null = _check_predictions(pred_null, labels, "pred_null")
    _check_min_seeds(pred_null, "pred_null", 2, "a half-split of seeds")
    half = pred_null.shape[0] // 2
    if pred_other.shape[0] != half:
        raise ValueError(f"pred_other has {pred_other.shape[0]} seeds but each half of pred_null's "
                         f"{pred_null.shape[0]} has {half}; train twice as many seeds on the null side as on the other")
    out = {key: np.empty(splits) for key in ("test_n_significant", "null_n_significant",
                                            "test_mean_abs_diff", "null_mean_abs_diff")}
    for i, (first, second) in enumerate(half_splits(pred_null.shape[0], splits, seed)):
        for kind, pred_a in (("test", pred_other), ("null", pred_null[second])):
            result = example_tests(pred_a, pred_null[first], labels, fdr)
            out[f"{kind}_n_significant"][i] = result["n_significant"]
            out[f"{kind}_mean_abs_diff"][i] = np.abs(result["frac_a"] - result["frac_b"]).mean()
    out["test_n_significant"] = out["test_n_significant"].astype(int)
    out["null_n_significant"] = out["null_n_significant"].astype(int)
    return out


def bh_examples_needed(p_value: float, n_tests: int, fdr: float) -> int:
    """How many of `n_tests` tests must all reach `p_value` before Benjamini-Hochberg declares any: k >= p n / q."""
    _check_fdr(fdr)
    if not 0 <= p_value <= 1 or n_tests < 1:
        raise ValueError(f"need a p-value in [0, 1] and n_tests >= 1, got {p_value} and {n_tests}")
    # BH rejects the k smallest p-values when the k-th is <= k q / n: k tied values at p pass once k >= p n / q.
    return max(1, math.ceil(p_value * n_tests / fdr))


def beyond_null(test: np.ndarray, null: np.ndarray, quantile: float = 0.95) -> bool:
    """Whether the median of the test statistic over splits exceeds the null's `quantile` (a one-sided check)."""
    test, null = np.asarray(test, dtype=float), np.asarray(null, dtype=float)
    if test.size == 0 or null.size == 0:
        raise ValueError("beyond_null needs at least one test and one null value")
    return bool(np.median(test) > np.quantile(null, quantile))


def difference_verdict(beyond_count: bool, beyond_mean: bool, matched: bool, unit: str = "examples") -> str:
    """The paper's claim at one level (book/protocol.md, Chapter 6): shown when the count of significant tests
    exceeds the seed-split null, not shown otherwise (a mean difference beyond the null alone is reported as a
    qualifier, not a verdict: "shown in aggregate" is withdrawn); not testable when the pair is not matched on
    validation accuracy, since the paper's claim is about models of equal accuracy."""
    if not matched:
        return f"{NOT_TESTABLE}: the accuracies are not matched on the validation split"
    if beyond_count:
        return SHOWN
    if beyond_mean:
        return f"{NOT_SHOWN}: the mean difference exceeds the null, but no test singles out more {unit} than it"
    return NOT_SHOWN


def pair_matched(val_pred_a: np.ndarray, val_pred_b: np.ndarray, val_labels: np.ndarray,
                 tolerance: float) -> tuple[bool, dict]:
    """Whether two populations are matched (mean validation accuracies within `tolerance`), with the match."""
    match = accuracy_match(val_pred_a, val_pred_b, val_labels)
    return bool(abs(match["diff"]) <= tolerance), match


# ---------------------------------------------------------------------------------------------
# Class level
# ---------------------------------------------------------------------------------------------


def class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-seed accuracy on each class's test examples, shape (seeds, classes); NaN for a class with no examples."""
    labels = _check_labels(labels, num_classes)
    predictions = _check_predictions(predictions, labels, num_classes=num_classes)
    correct = (predictions == labels).astype(float)
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    sums = np.stack([np.bincount(labels, weights=row, minlength=num_classes) for row in correct])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _bootstrap_difference(acc_a: np.ndarray, acc_b: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """Mean difference of per-seed class accuracies with a percentile bootstrap over seeds in each group.

    `scipy.stats.bootstrap` with two independent samples resamples each side's seeds with replacement,
    every class at once (axis 0 is the seed axis).
    """
    def difference(a, b, axis):
        return a.mean(axis=axis) - b.mean(axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class every seed gets right: a degenerate, zero-width CI
        result = stats.bootstrap((acc_a, acc_b), difference, n_resamples=n_boot, method="percentile",
                                 confidence_level=level, axis=0, vectorized=True,
                                 rng=np.random.default_rng(seed))
    ci_low, ci_high = result.confidence_interval.low, result.confidence_interval.high
    ci_low, ci_high = np.where(np.isnan(ci_low), difference(acc_a, acc_b, 0), ci_low), \
        np.where(np.isnan(ci_high), difference(acc_a, acc_b, 0), ci_high)
    return {
        "diff": acc_a.mean(axis=0) - acc_b.mean(axis=0),  # per class: mean over A's seeds - mean over B's
        "ci_low": ci_low,
        "ci_high": ci_high,
        "excludes_zero": (ci_low > 0) | (ci_high < 0),    # per class, uncorrected for multiplicity
    }


def class_difference(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, num_classes: int,
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Per-class accuracy difference A - B with percentile bootstrap CIs that resample seeds within each side."""
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, e.g. 1000; got {n_boot}")
    labels = _check_labels(labels, num_classes)
    pred_a = _check_predictions(pred_a, labels, "pred_a", num_classes)
    pred_b = _check_predictions(pred_b, labels, "pred_b", num_classes)
    _check_min_seeds(pred_a, "pred_a", 2, "a bootstrap over seeds")
    _check_min_seeds(pred_b, "pred_b", 2, "a bootstrap over seeds")
    return _bootstrap_difference(class_accuracy(pred_a, labels, num_classes),
                                 class_accuracy(pred_b, labels, num_classes), n_boot, seed, level)


def class_split_null(predictions: np.ndarray, labels: np.ndarray, num_classes: int, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """class_difference between the two halves of half_splits(seeds, 1, seed), plus the halves' seed indices."""
    labels = _check_labels(labels, num_classes)
    predictions = _check_predictions(predictions, labels, num_classes=num_classes)
    _check_min_seeds(predictions, "predictions", 4, "a half-split with a bootstrap in each half")
    first, second = half_splits(predictions.shape[0], 1, seed)[0]
    result = class_difference(predictions[first], predictions[second], labels, num_classes, n_boot, seed, level)
    result["halves"] = (first, second)
    return result


def paired_class_splits(pred_other: np.ndarray, pred_null: np.ndarray, labels: np.ndarray, num_classes: int,
                        splits: int = 100, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Per random half-split of the null side's 2m seeds, other vs half and half vs half: classes whose interval
    excludes zero, and the mean |class-accuracy difference| over classes.

    The class-level twin of `paired_split_tests`: both comparisons are m seeds against m seeds on the
    same split, so the other side is judged against two sets of seeds of one model (whose intervals
    share the same few-seed narrowness). With few classes the counts are coarse (one planted class
    moves them by one, about what the null's false exclusions do); the mean difference is the
    omnibus statistic.
    """
    labels = _check_labels(labels, num_classes)
    pred_other = _check_predictions(pred_other, labels, "pred_other", num_classes)
    pred_null = _check_predictions(pred_null, labels, "pred_null", num_classes)
    _check_min_seeds(pred_null, "pred_null", 4, "a half-split with a bootstrap in each half")
    half = pred_null.shape[0] // 2
    if pred_other.shape[0] != half:
        raise ValueError(f"pred_other has {pred_other.shape[0]} seeds but each half of pred_null's "
                         f"{pred_null.shape[0]} has {half}; train twice as many seeds on the null side as on the other")
    out = {f"{kind}_{key}": [] for kind in ("test", "null") for key in ("n_excluding", "mean_abs_diff")}
    for i, (first, second) in enumerate(half_splits(pred_null.shape[0], splits, seed)):
        for kind, pred_a in (("test", pred_other), ("null", pred_null[second])):
            result = class_difference(pred_a, pred_null[first], labels, num_classes, n_boot, seed + i, level)
            out[f"{kind}_n_excluding"].append(int(result["excludes_zero"].sum()))
            out[f"{kind}_mean_abs_diff"].append(float(np.nanmean(np.abs(result["diff"]))))
    return {key: np.array(values, dtype=int if key.endswith("n_excluding") else float) for key, values in out.items()}


# ---------------------------------------------------------------------------------------------
# Accuracy match
# ---------------------------------------------------------------------------------------------


def accuracy_match(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> dict:
    """Mean accuracy of A and B over seeds on the given split, A - B, and the Welch t-test p-value (NaN if both
    have no spread)."""
    labels = _check_labels(labels)
    pred_a = _check_predictions(pred_a, labels, "pred_a")
    pred_b = _check_predictions(pred_b, labels, "pred_b")
    _check_min_seeds(pred_a, "pred_a", 2, "a t-test over seeds")
    _check_min_seeds(pred_b, "pred_b", 2, "a t-test over seeds")
    acc_a = (pred_a == labels).mean(axis=1)
    acc_b = (pred_b == labels).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_value = float(stats.ttest_ind(acc_a, acc_b, equal_var=False).pvalue)
    return {
        "acc_a": float(acc_a.mean()),
        "acc_b": float(acc_b.mean()),
        "diff": float(acc_a.mean() - acc_b.mean()),
        "std_a": float(acc_a.std(ddof=1)),  # across seeds
        "std_b": float(acc_b.std(ddof=1)),
        "p_value": p_value,
    }
