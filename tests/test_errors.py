"""Per-example and per-class error statistics find planted differences, and nothing between seeds of one model."""

import numpy as np
import pytest
from scipy import stats

from widedeep.analyses import errors

NUM_CLASSES = 10


def population(p_correct: np.ndarray, labels: np.ndarray, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """Predictions (seeds, examples): seeds get example i right with probability p_correct[i], else a wrong class."""
    correct = rng.random((seeds, labels.size)) < p_correct
    wrong = (labels + rng.integers(1, NUM_CLASSES, (seeds, labels.size))) % NUM_CLASSES
    return np.where(correct, labels, wrong)


def make_test_set(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and per-example correctness probabilities: mostly easy, some hard examples."""
    labels = np.arange(n) % NUM_CLASSES
    return labels, rng.beta(3.0, 0.7, n)


def bh_by_hand(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values by the textbook loop: q_(i) = min_{j >= i} p_(j) n / j, capped at 1."""
    n = p.size
    order = np.argsort(p)
    q_sorted = np.empty(n)
    running = 1.0
    for rank in range(n, 0, -1):
        running = min(running, p[order[rank - 1]] * n / rank)
        q_sorted[rank - 1] = running
    q = np.empty(n)
    q[order] = q_sorted
    return q


# ---------------------------------------------------------------------------------------------
# Example level
# ---------------------------------------------------------------------------------------------

def test_correct_fraction_counts_seeds_right_per_example():
    labels = np.array([0, 1, 2])
    predictions = np.array([[0, 1, 0], [0, 2, 0], [0, 1, 2], [1, 1, 0]])
    np.testing.assert_allclose(errors.correct_fraction(predictions, labels), [0.75, 0.75, 0.25])


def test_fisher_pvalues_match_scipy_per_table_and_test_each_table_once():
    rng = np.random.default_rng(1)
    n_a, n_b = 7, 5
    correct_a, correct_b = rng.integers(0, n_a + 1, 500), rng.integers(0, n_b + 1, 500)
    errors._fisher_p.cache_clear()
    p = errors.fisher_pvalues(correct_a, n_a, correct_b, n_b)
    distinct = len(set(zip(correct_a.tolist(), correct_b.tolist())))
    assert errors._fisher_p.cache_info().misses == distinct <= (n_a + 1) * (n_b + 1)
    for i in range(0, 500, 7):
        table = [[correct_a[i], n_a - correct_a[i]], [correct_b[i], n_b - correct_b[i]]]
        assert p[i] == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-12)


def test_example_tests_pvalues_are_fisher_on_correct_and_wrong_counts():
    rng = np.random.default_rng(2)
    labels, p_correct = make_test_set(60, rng)
    pred_a, pred_b = population(p_correct, labels, 6, rng), population(p_correct, labels, 4, rng)
    result = errors.example_tests(pred_a, pred_b, labels)
    for i in range(labels.size):
        c_a, c_b = int((pred_a[:, i] == labels[i]).sum()), int((pred_b[:, i] == labels[i]).sum())
        assert result["p_values"][i] == pytest.approx(stats.fisher_exact([[c_a, 6 - c_a], [c_b, 4 - c_b]]).pvalue)
    np.testing.assert_allclose(result["frac_a"], errors.correct_fraction(pred_a, labels))
    np.testing.assert_allclose(result["q_values"], stats.false_discovery_control(result["p_values"]))


def test_bh_matches_a_hand_computed_example():
    # sorted p: 0.005, 0.01, 0.03, 0.04, 0.5 -> p n / rank: 0.025, 0.025, 0.05, 0.05, 0.5 (already monotone)
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    np.testing.assert_allclose(errors.bh_qvalues(p), [0.025, 0.05, 0.05, 0.025, 0.5])
    # 0.9 * 2 / 1 = 1.8 is lowered to the next rank's 0.95 by the running minimum
    np.testing.assert_allclose(errors.bh_qvalues(np.array([0.9, 0.95])), [0.95, 0.95])


def test_bh_is_monotone_and_matches_the_textbook_loop():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(300), rng.random(50) * 1e-3, [1.0, 1.0, 0.0]])
    q = errors.bh_qvalues(p)
    np.testing.assert_allclose(q, bh_by_hand(p), rtol=1e-12)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-15)  # q follows the order of p
    assert np.all(q >= p - 1e-15) and np.all(q <= 1)


def test_identical_populations_make_no_more_discoveries_than_the_seed_split_null():
    rng = np.random.default_rng(4)
    labels, p_correct = make_test_set(2000, rng)
    pred_a, pred_b = population(p_correct, labels, 10, rng), population(p_correct, labels, 10, rng)
    observed = errors.example_tests(pred_a, pred_b, labels)["n_significant"]
    null = errors.seed_split_null(np.concatenate([pred_a, pred_b]), labels, splits=50, seed=0)
    assert null.shape == (50,)
    assert observed <= 2 and null.mean() <= 2
    assert observed <= null.max() + 2


def test_a_planted_difference_is_found_with_few_false_positives():
    rng = np.random.default_rng(5)
    labels, p_correct = make_test_set(2000, rng)
    planted = rng.choice(labels.size, 200, replace=False)
    p_a, p_b = p_correct.copy(), p_correct.copy()
    p_a[planted], p_b[planted] = 1.0, 0.0  # A always right, B always wrong on the planted examples
    pred_a, pred_b = population(p_a, labels, 10, rng), population(p_b, labels, 10, rng)
    result = errors.example_tests(pred_a, pred_b, labels, fdr=0.05)
    assert result["significant"][planted].all()
    rest = np.setdiff1d(np.arange(labels.size), planted)
    assert result["significant"][rest].sum() <= 5
    assert result["n_significant"] == int(result["significant"].sum()) >= 200
    # ... far beyond what two halves of A's own seeds produce
    assert errors.seed_split_null(pred_a, labels, splits=20).max() < 20


def test_half_splits_are_disjoint_equal_halves_and_seeded():
    splits = errors.half_splits(10, 30, seed=7)
    assert splits.shape == (30, 2, 5)
    for first, second in splits:
        assert len(set(first)) == len(set(second)) == 5 and not set(first) & set(second)
    np.testing.assert_array_equal(splits, errors.half_splits(10, 30, seed=7))
    assert len({tuple(sorted(first)) for first, _ in splits}) > 1
    odd = errors.half_splits(7, 20, seed=0)  # one seed sits out
    assert odd.shape == (20, 2, 3)
    assert all(len(set(first) | set(second)) == 6 for first, second in odd)


def test_seed_split_null_tests_half_against_half():
    rng = np.random.default_rng(6)
    labels, p_correct = make_test_set(300, rng)
    predictions = population(np.where(np.arange(300) < 40, 0.5, p_correct), labels, 8, rng)
    null = errors.seed_split_null(predictions, labels, splits=5, seed=3, fdr=0.2)
    expected = [errors.example_tests(predictions[f], predictions[s], labels, 0.2)["n_significant"]
                for f, s in errors.half_splits(8, 5, seed=3)]
    np.testing.assert_array_equal(null, expected)


def test_paired_split_tests_separate_a_planted_difference_from_the_null():
    rng = np.random.default_rng(8)
    labels, p_correct = make_test_set(1500, rng)
    planted = rng.choice(labels.size, 150, replace=False)
    p_other = p_correct.copy()
    p_other[planted] = 1.0 - np.round(p_correct[planted])  # the other side flips easy and hard examples
    pred_other, pred_null = population(p_other, labels, 8, rng), population(p_correct, labels, 16, rng)
    result = errors.paired_split_tests(pred_other, pred_null, labels, splits=10, seed=1)
    assert result["test_n_significant"].shape == result["null_n_significant"].shape == (10,)
    assert result["test_n_significant"].min() >= 50 and result["null_n_significant"].max() <= 3
    assert result["test_mean_abs_diff"].min() > result["null_mean_abs_diff"].max()
    assert errors.beyond_null(result["test_n_significant"], result["null_n_significant"])


def test_paired_split_tests_count_each_comparison_on_the_same_split():
    rng = np.random.default_rng(9)
    labels, p_correct = make_test_set(200, rng)
    pred_other, pred_null = population(p_correct, labels, 3, rng), population(p_correct, labels, 6, rng)
    result = errors.paired_split_tests(pred_other, pred_null, labels, splits=4, seed=2, fdr=0.5)
    for i, (first, second) in enumerate(errors.half_splits(6, 4, seed=2)):
        test = errors.example_tests(pred_other, pred_null[first], labels, 0.5)
        null = errors.example_tests(pred_null[second], pred_null[first], labels, 0.5)
        assert result["test_n_significant"][i] == test["n_significant"]
        assert result["null_n_significant"][i] == null["n_significant"]
        assert result["null_mean_abs_diff"][i] == pytest.approx(np.abs(null["frac_a"] - null["frac_b"]).mean())


def test_identical_sides_are_not_beyond_the_null():
    rng = np.random.default_rng(10)
    labels, p_correct = make_test_set(1500, rng)
    pred_other, pred_null = population(p_correct, labels, 6, rng), population(p_correct, labels, 12, rng)
    result = errors.paired_split_tests(pred_other, pred_null, labels, splits=20, seed=0)
    assert not errors.beyond_null(result["test_mean_abs_diff"], result["null_mean_abs_diff"])


@pytest.mark.parametrize("p_value, n_tests, fdr", [(0.0022, 10_000, 0.05), (1e-6, 10_000, 0.05), (0.01, 500, 0.1)])
def test_bh_examples_needed_is_where_bh_starts_to_reject(p_value, n_tests, fdr):
    needed = errors.bh_examples_needed(p_value, n_tests, fdr)

    def discoveries(k: int) -> int:  # k tests tied at p_value, the rest at 1
        p = np.ones(n_tests)
        p[:k] = p_value
        return int((errors.bh_qvalues(p) <= fdr).sum())

    assert discoveries(needed) == needed
    if needed > 1:
        assert discoveries(needed - 1) == 0
    with pytest.raises(ValueError, match="p-value"):
        errors.bh_examples_needed(1.5, n_tests, fdr)


def test_beyond_null_compares_the_median_with_a_null_quantile():
    null = np.arange(100)
    assert errors.beyond_null([96, 97, 98], null) and not errors.beyond_null([90, 99, 1], null)
    assert not errors.beyond_null([94], null, quantile=0.95)
    with pytest.raises(ValueError, match="at least one"):
        errors.beyond_null([], null)


@pytest.mark.parametrize("count, mean, matched, expected", [
    (True, True, True, errors.SHOWN), (True, False, True, errors.SHOWN),
    (False, True, True, errors.NOT_SHOWN + ": the mean difference exceeds the null, but no test singles out more "
                        "classes than it"),
    (False, False, True, errors.NOT_SHOWN),
    (True, True, False, errors.NOT_TESTABLE + ": the accuracies are not matched on the validation split"),
    (False, False, False, errors.NOT_TESTABLE + ": the accuracies are not matched on the validation split"),
])
def test_difference_verdict(count, mean, matched, expected):
    assert errors.difference_verdict(count, mean, matched, unit="classes") == expected


def test_a_pair_matched_on_test_accuracy_only_is_not_matched():
    """The pre-protocol pair was chosen on test accuracy; matching reads the validation split alone."""
    rng = np.random.default_rng(0)
    val_labels, test_labels = rng.integers(0, 10, 400), rng.integers(0, 10, 400)

    def population(val_acc, test_acc, seeds):
        """Predictions right on the first val_acc / test_acc share of examples, one row per seed."""
        val = np.tile(np.where(np.arange(400) < val_acc * 400, val_labels, (val_labels + 1) % 10), (seeds, 1))
        test = np.tile(np.where(np.arange(400) < test_acc * 400, test_labels, (test_labels + 1) % 10), (seeds, 1))
        return val, test

    (val_a, test_a), (val_b, test_b) = population(0.80, 0.74, 3), population(0.70, 0.74, 6)
    assert errors.accuracy_match(test_a, test_b, test_labels)["diff"] == pytest.approx(0)   # equal on test ...
    matched, match = errors.pair_matched(val_a, val_b, val_labels, tolerance=0.01)
    assert not matched and match["diff"] == pytest.approx(0.10)                 # ... not on validation
    assert errors.difference_verdict(True, True, matched).startswith(errors.NOT_TESTABLE)


def test_difference_verdict_names_the_level():
    assert "more examples than" in errors.difference_verdict(False, True, True)
    assert "more classes than" in errors.difference_verdict(False, True, True, unit="classes")


# ---------------------------------------------------------------------------------------------
# Class level
# ---------------------------------------------------------------------------------------------

def test_class_accuracy_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predictions = np.array([[0, 1, 1, 1, 0, 2], [0, 0, 0, 0, 0, 0]])
    acc = errors.class_accuracy(predictions, labels, num_classes=4)
    np.testing.assert_allclose(acc[:, :3], [[0.5, 2 / 3, 1.0], [1.0, 0.0, 0.0]])
    assert np.isnan(acc[:, 3]).all()  # class 3 has no test examples


def class_populations(rng: np.random.Generator, planted_class: int = 3, planted: float = 0.2, seeds: int = 20):
    """A and B (`seeds` each) at 0.75 accuracy on every class except planted_class, where A is `planted` better."""
    labels = np.arange(5000) % NUM_CLASSES
    p_b = np.full(labels.size, 0.75)
    p_a = np.where(labels == planted_class, 0.75 + planted, 0.75)
    return labels, population(p_a, labels, seeds, rng), population(p_b, labels, seeds, rng)


def test_class_difference_finds_the_planted_class_and_only_it():
    # A percentile bootstrap over few seeds is a little narrow (about 0.5% per class outside at 0.999 with 20
    # seeds), so the check that all 9 unchanged classes contain 0 uses a high level.
    rng = np.random.default_rng(8)
    labels, pred_a, pred_b = class_populations(rng)
    result = errors.class_difference(pred_a, pred_b, labels, NUM_CLASSES, n_boot=2000, seed=0, level=0.999)
    acc_a = errors.class_accuracy(pred_a, labels, NUM_CLASSES)
    acc_b = errors.class_accuracy(pred_b, labels, NUM_CLASSES)
    np.testing.assert_allclose(result["diff"], acc_a.mean(0) - acc_b.mean(0))
    assert result["ci_low"][3] < 0.2 < result["ci_high"][3]  # contains the planted difference
    assert result["ci_low"][3] > 0                           # and excludes 0
    others = np.arange(NUM_CLASSES) != 3
    assert np.all(result["ci_low"][others] < 0) and np.all(result["ci_high"][others] > 0)
    np.testing.assert_array_equal(result["excludes_zero"], ~others)
    assert np.all(result["ci_low"] <= result["diff"]) and np.all(result["diff"] <= result["ci_high"])


def test_class_difference_is_seeded_and_wider_at_higher_level():
    rng = np.random.default_rng(9)
    labels, pred_a, pred_b = class_populations(rng)
    narrow = errors.class_difference(pred_a, pred_b, labels, NUM_CLASSES, n_boot=500, seed=1, level=0.8)
    again = errors.class_difference(pred_a, pred_b, labels, NUM_CLASSES, n_boot=500, seed=1, level=0.8)
    wide = errors.class_difference(pred_a, pred_b, labels, NUM_CLASSES, n_boot=500, seed=1, level=0.99)
    np.testing.assert_array_equal(narrow["ci_low"], again["ci_low"])
    assert np.all(wide["ci_high"] - wide["ci_low"] > narrow["ci_high"] - narrow["ci_low"])


def test_class_split_null_compares_disjoint_halves_of_one_configuration():
    rng = np.random.default_rng(10)
    labels, pred_a, _ = class_populations(rng)
    null = errors.class_split_null(pred_a, labels, NUM_CLASSES, n_boot=500, seed=4)
    first, second = null["halves"]
    assert len(first) == len(second) == 10 and not set(first) & set(second)
    direct = errors.class_difference(pred_a[first], pred_a[second], labels, NUM_CLASSES, n_boot=500, seed=4)
    np.testing.assert_allclose(null["diff"], direct["diff"])
    np.testing.assert_allclose(null["ci_low"], direct["ci_low"])
    assert np.abs(null["diff"]).max() < 0.05  # the planted class is the same in both halves


# ---------------------------------------------------------------------------------------------
# Accuracy match
# ---------------------------------------------------------------------------------------------

def test_paired_class_splits_find_a_planted_class_beyond_the_null():
    rng = np.random.default_rng(11)
    labels, p_correct = make_test_set(2000, rng)
    p_other = np.where(labels == 3, np.minimum(p_correct + 0.4, 1.0), p_correct)  # class 3 is much easier
    pred_other, pred_null = population(p_other, labels, 6, rng), population(p_correct, labels, 12, rng)
    result = errors.paired_class_splits(pred_other, pred_null, labels, NUM_CLASSES, splits=10, n_boot=200)
    assert result["test_n_excluding"].shape == result["null_n_excluding"].shape == (10,)
    assert result["test_n_excluding"].min() >= 1  # the planted class, every time
    assert errors.beyond_null(result["test_mean_abs_diff"], result["null_mean_abs_diff"])
    same = errors.paired_class_splits(population(p_correct, labels, 6, rng), pred_null, labels, NUM_CLASSES,
                                      splits=20, n_boot=200)
    assert not errors.beyond_null(same["test_mean_abs_diff"], same["null_mean_abs_diff"])


def test_accuracy_match_reports_means_and_a_welch_test():
    rng = np.random.default_rng(11)
    labels, p_correct = make_test_set(1000, rng)
    pred_a, pred_b = population(p_correct, labels, 8, rng), population(p_correct, labels, 6, rng)
    pred_worse = population(p_correct - 0.1, labels, 6, rng)
    same = errors.accuracy_match(pred_a, pred_b, labels)
    acc_a, acc_b = (pred_a == labels).mean(1), (pred_b == labels).mean(1)
    assert same["acc_a"] == pytest.approx(acc_a.mean()) and same["acc_b"] == pytest.approx(acc_b.mean())
    assert same["diff"] == pytest.approx(acc_a.mean() - acc_b.mean())
    assert same["p_value"] == pytest.approx(stats.ttest_ind(acc_a, acc_b, equal_var=False).pvalue)
    assert abs(same["diff"]) < 0.02 and same["p_value"] > 0.01
    worse = errors.accuracy_match(pred_a, pred_worse, labels)
    assert worse["diff"] == pytest.approx(0.1, abs=0.02) and worse["p_value"] < 1e-6


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

LABELS = np.arange(20) % NUM_CLASSES
PRED = np.tile(LABELS, (4, 1))


@pytest.mark.parametrize("call, match", [
    (lambda: errors.example_tests(PRED, PRED[:, :10], LABELS), r"pred_b has 10 examples \(shape \(4, 10\)\)"),
    (lambda: errors.correct_fraction(PRED, LABELS[:15]), r"20 examples .* labels has 15 \(shape \(15,\)\)"),
    (lambda: errors.correct_fraction(PRED[0], LABELS), "2-D"),
    (lambda: errors.correct_fraction(np.zeros((4, 20, 10)), LABELS), r"argmax"),
    (lambda: errors.correct_fraction(PRED.astype(float), LABELS), "integer"),
    (lambda: errors.correct_fraction(PRED, LABELS - 1), "labels must be >= 0"),
    (lambda: errors.class_accuracy(PRED, LABELS, num_classes=5), "labels must be < num_classes = 5"),
    (lambda: errors.class_accuracy(PRED, LABELS, num_classes=0), "num_classes must be >= 1"),
    (lambda: errors.class_difference(PRED, PRED, LABELS + 10, NUM_CLASSES), "num_classes = 10"),
    (lambda: errors.seed_split_null(PRED[:1], LABELS), r"1 seed\(s\) .* needs >= 2"),
    (lambda: errors.half_splits(1, 10), ">= 2 seeds"),
    (lambda: errors.half_splits(4, 0), "splits must be >= 1"),
    (lambda: errors.class_split_null(PRED[:3], LABELS, NUM_CLASSES), "needs >= 4"),
    (lambda: errors.class_difference(PRED[:1], PRED, LABELS, NUM_CLASSES), "pred_a has 1 seed"),
    (lambda: errors.accuracy_match(PRED, PRED[:1], LABELS), "pred_b has 1 seed"),
    (lambda: errors.example_tests(PRED, PRED, LABELS, fdr=0.0), r"fdr must be in \(0, 1\)"),
    (lambda: errors.example_tests(PRED, PRED, LABELS, fdr=1.0), r"fdr must be in \(0, 1\)"),
    (lambda: errors.seed_split_null(PRED, LABELS, fdr=5), r"fdr must be in \(0, 1\)"),
    (lambda: errors.class_difference(PRED, PRED, LABELS, NUM_CLASSES, level=1.0), r"level must be in \(0, 1\)"),
    (lambda: errors.class_difference(PRED, PRED, LABELS, NUM_CLASSES, n_boot=0), "n_boot must be >= 1"),
    (lambda: errors.fisher_pvalues(np.array([3]), 2, np.array([0]), 2), r"correct_a must count .* \[0, 2\]"),
    (lambda: errors.paired_split_tests(PRED, PRED, LABELS), r"pred_other has 4 seeds .* has 2; train twice"),
    (lambda: errors.paired_split_tests(PRED[:1], PRED[:1], LABELS), r"pred_null has 1 seed"),
])
def test_invalid_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
