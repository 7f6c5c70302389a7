"""Block-structure detector: planted squares are found exactly, the conditions each reject what they should."""

import json
import math
import warnings

import numpy as np
import pytest

from widedeep.analyses import blocks
from widedeep.analyses.blocks import Block, analysed_indices, block_structure_span, inside_outside, threshold_sweep

M = 30  # analysed ("stream") layers in the synthetic layout


def layout(m: int = M) -> list[str]:
    """input, stem, then m x (inside, inside, stream), head: analysed layers interleaved with others."""
    return ["input", "stem"] + ["inside", "inside", "stream"] * m + ["head"]


def stream_index(j: int) -> int:
    """Full-matrix index of the j-th analysed layer in `layout`."""
    return 2 + 3 * j + 2


def smooth(m: int = M, tau: float = 5.0) -> np.ndarray:
    """Analysed-layer CKA with a smooth off-diagonal decay exp(-|i-j|/tau): no block anywhere."""
    i = np.arange(m)
    return np.exp(-np.abs(i[:, None] - i[None, :]) / tau)


def plant(s: np.ndarray, lo: int, hi: int, value: float) -> np.ndarray:
    """Copy of s with analysed layers lo..hi (inclusive) set to `value` among themselves (diagonal 1)."""
    s = s.copy()
    s[lo:hi + 1, lo:hi + 1] = value
    np.fill_diagonal(s, 1.0)
    return s


def embed(s: np.ndarray, garbage: bool = True) -> tuple[np.ndarray, list[str]]:
    """Full matrix of the interleaved layout with s on the analysed layers; junk (incl. NaN) elsewhere."""
    kinds = layout(s.shape[0])
    n = len(kinds)
    rng = np.random.default_rng(0)
    full = rng.uniform(-5, 5, size=(n, n)) if garbage else np.zeros((n, n))
    if garbage:
        full[0, :] = np.nan  # a NaN on a non-analysed layer must not matter
        full[:, 0] = np.inf
    idx = [stream_index(j) for j in range(s.shape[0])]
    full[np.ix_(idx, idx)] = s
    return full, kinds


def expected_stats(s: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    """Independent mean_cka (off-diagonal, inside) and outside_cka of analysed run lo..hi."""
    inside = np.arange(lo, hi + 1)
    outside = np.setdiff1d(np.arange(s.shape[0]), inside)
    sq = s[np.ix_(inside, inside)]
    mean_cka = sq[~np.eye(len(inside), dtype=bool)].mean()
    return mean_cka, s[np.ix_(inside, outside)].mean()


def test_planted_square_is_found_exactly_with_its_statistics():
    s = plant(smooth(), 10, 19, 0.97)
    full, kinds = embed(s)
    block = block_structure_span(full, kinds)
    assert block is not None
    assert (block.start, block.end) == (stream_index(10), stream_index(19)) == (34, 61)
    assert block.n_layers == 10 and block.fraction == pytest.approx(10 / 30)
    mean_cka, outside_cka = expected_stats(s, 10, 19)
    assert block.mean_cka == pytest.approx(0.97) == pytest.approx(mean_cka)
    assert block.outside_cka == pytest.approx(outside_cka)
    assert block.contrast == pytest.approx(mean_cka - outside_cka)
    assert block.mean_pc1 is None


def test_no_block_on_the_smooth_matrix():
    full, kinds = embed(smooth())
    assert block_structure_span(full, kinds) is None
    # ... although a lax enough detector does fire on it: the defaults are what reject it
    assert block_structure_span(full, kinds, threshold=0.5, min_contrast=0.1) is not None


def test_threshold_matters():
    full, kinds = embed(plant(smooth(), 10, 19, 0.93))
    found = block_structure_span(full, kinds, threshold=0.9)
    assert found is not None and (found.start, found.end) == (stream_index(10), stream_index(19))
    assert block_structure_span(full, kinds, threshold=0.95) is None


def test_contrast_rejects_a_square_as_bright_as_its_surroundings():
    s = np.full((M, M), 0.95)
    s = plant(s, 10, 19, 0.99)
    full, kinds = embed(s)
    assert block_structure_span(full, kinds) is None  # mean 0.99 > 0.9 but contrast 0.04 < 0.2
    # a small enough min_contrast admits it (0.035: one more layer would dilute the contrast to 0.033)
    found = block_structure_span(full, kinds, min_contrast=0.035)
    assert found is not None and (found.start, found.end) == (stream_index(10), stream_index(19))


def test_min_pc1_keeps_or_rejects_the_planted_square():
    full, kinds = embed(plant(smooth(), 10, 19, 0.97))
    shares = np.full(len(kinds), 0.99)  # garbage on non-analysed layers: must not count
    streams = analysed_indices(kinds)
    shares[streams] = 0.3
    shares[streams[10:20]] = 0.8
    kept = block_structure_span(full, kinds, pc1_share=shares, min_pc1=0.5)
    assert kept is not None and (kept.start, kept.end) == (stream_index(10), stream_index(19))
    assert kept.mean_pc1 == pytest.approx(0.8)
    shares[streams[10:20]] = 0.3
    assert block_structure_span(full, kinds, pc1_share=shares, min_pc1=0.5) is None
    # shares without min_pc1 are reported, not used as a condition
    reported = block_structure_span(full, kinds, pc1_share=shares)
    assert reported is not None and reported.mean_pc1 == pytest.approx(0.3)


def test_whole_network_bright_is_not_a_block_but_all_but_one_is():
    full, kinds = embed(np.full((M, M), 0.97))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # excluded by definition, not by a 0/0 outside mean turning into NaN
        assert block_structure_span(full, kinds) is None
    s = np.full((M, M), 0.97)
    s[-1, :] = s[:, -1] = 0.1
    s[-1, -1] = 1.0
    block = block_structure_span(*embed(s))
    assert block is not None and block.n_layers == M - 1
    assert (block.start, block.end) == (stream_index(0), stream_index(M - 2))


def test_longest_of_two_squares_wins_wherever_it_is():
    s = plant(plant(smooth(), 2, 7, 0.99), 12, 23, 0.95)
    block = block_structure_span(*embed(s))
    assert (block.start, block.end) == (stream_index(12), stream_index(23))
    s = plant(plant(smooth(), 2, 13, 0.95), 20, 25, 0.99)
    block = block_structure_span(*embed(s))
    assert (block.start, block.end) == (stream_index(2), stream_index(13))


def test_ties_go_to_the_brighter_then_the_earlier_square():
    s = plant(plant(smooth(), 2, 7, 0.93), 15, 20, 0.97)
    block = block_structure_span(*embed(s))
    assert (block.start, block.end) == (stream_index(15), stream_index(20))
    s = plant(plant(smooth(), 2, 7, 0.97), 15, 20, 0.97)
    block = block_structure_span(*embed(s))
    assert (block.start, block.end) == (stream_index(2), stream_index(7))


def test_inside_layers_never_enter_the_statistics():
    s = plant(smooth(), 10, 19, 0.97)
    with_garbage = block_structure_span(*embed(s, garbage=True))
    without = block_structure_span(*embed(s, garbage=False))
    only_streams = block_structure_span(s, ["stream"] * M)
    assert with_garbage == without
    assert with_garbage.as_dict() | {"start": 0, "end": 0} == only_streams.as_dict() | {"start": 0, "end": 0}
    assert (only_streams.start, only_streams.end) == (10, 19)


def test_asymmetric_input_is_symmetrised():
    s = plant(smooth(), 10, 19, 0.97)
    rng = np.random.default_rng(1)
    noisy = s + np.triu(rng.uniform(-0.05, 0.05, size=s.shape), 1)
    kinds = ["stream"] * M
    a, b = block_structure_span(noisy, kinds), block_structure_span(noisy.T, kinds)
    c = block_structure_span((noisy + noisy.T) / 2, kinds)
    assert a == b == c
    assert a.mean_cka != pytest.approx(0.97, abs=1e-6)  # the noise did reach the statistics


def brute_force(s: np.ndarray, threshold: float, min_contrast: float, min_layers: int):
    """Reference detector: loop over all runs, direct means, the documented order of preference."""
    m = s.shape[0]
    s = (s + s.T) / 2
    best = None
    for p in range(m):
        for q in range(p + min_layers - 1, m):
            k = q - p + 1
            if k == m:
                continue
            mean_cka, outside_cka = expected_stats(s, p, q)
            run = s[p:q + 1, p:q + 1]
            layer_cka = (run.sum(axis=1) - np.diag(run)) / (k - 1)
            if layer_cka.min() > threshold and mean_cka - outside_cka >= min_contrast:
                key = (k, round(mean_cka, 9), -p)
                if best is None or key > best[0]:
                    best = (key, (p, q))
    return None if best is None else best[1]


@pytest.mark.parametrize("seed", range(12))
def test_matches_a_brute_force_reference_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(5, 14))
    s = smooth(m, tau=rng.uniform(1, 4)) + rng.uniform(0, 0.05, size=(m, m))
    for _ in range(int(rng.integers(0, 3))):
        lo = int(rng.integers(0, m - 2))
        hi = int(rng.integers(lo + 1, m))
        s = plant(s, lo, hi, rng.uniform(0.85, 0.99))
    for threshold in (0.7, 0.85, 0.9):
        for min_layers in (2, 3):
            got = block_structure_span(s, ["stream"] * m, threshold=threshold, min_contrast=0.1,
                                       min_layers=min_layers)
            want = brute_force(s, threshold, 0.1, min_layers)
            assert (None if got is None else (got.start, got.end)) == want
            if got is not None:
                mean_cka, outside_cka = expected_stats((s + s.T) / 2, got.start, got.end)
                assert got.mean_cka == pytest.approx(mean_cka) and got.outside_cka == pytest.approx(outside_cka)


def test_inside_outside_on_a_known_vector():
    kinds = layout()
    values = np.arange(len(kinds), dtype=float)
    values[0] = np.nan  # non-analysed: ignored
    block = Block(start=stream_index(10), end=stream_index(19), n_layers=10, fraction=1 / 3,
                  mean_cka=0.97, outside_cka=0.1, contrast=0.87, mean_pc1=None)
    inside, outside = inside_outside(values, block, kinds)
    streams = np.array([stream_index(j) for j in range(M)], dtype=float)
    assert inside == pytest.approx(streams[10:20].mean())
    assert outside == pytest.approx(np.concatenate([streams[:10], streams[20:]]).mean())
    none_in, none_out = inside_outside(values, None, kinds)
    assert math.isnan(none_in) and none_out == pytest.approx(streams.mean())


def test_threshold_sweep_length_and_monotonicity():
    full, kinds = embed(plant(smooth(), 10, 19, 0.97))
    thresholds = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.96, 0.98, 1.0]
    blocks = threshold_sweep(full, kinds, thresholds, min_contrast=0.1)
    assert len(blocks) == len(thresholds)
    sizes = [0 if b is None else b.n_layers for b in blocks]
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] > 10 and sizes[thresholds.index(0.9)] == 10 and sizes[-2:] == [0, 0]
    assert blocks[thresholds.index(0.9)] == block_structure_span(full, kinds, threshold=0.9, min_contrast=0.1)


def test_as_dict_is_json_ready():
    full, kinds = embed(plant(smooth(), 10, 19, 0.97))
    shares = np.full(len(kinds), np.float32(0.7))
    block = block_structure_span(full, kinds, pc1_share=shares, min_pc1=0.5)
    d = block.as_dict()
    assert set(d) == {"start", "end", "n_layers", "fraction", "mean_cka", "outside_cka", "contrast", "mean_pc1"}
    assert all(type(v) in (int, float) for v in d.values())
    assert json.loads(json.dumps(d)) == d
    no_shares = block_structure_span(full, kinds).as_dict()
    assert no_shares["mean_pc1"] is None and json.loads(json.dumps(no_shares)) == no_shares


def _base():
    return embed(plant(smooth(), 10, 19, 0.97))


@pytest.mark.parametrize("mutate, match", [
    (lambda c, k: (c[:, :-1], k, {}), "square"),
    (lambda c, k: (c[0], k, {}), "square"),
    (lambda c, k: (c, k[:-1], {}), "kinds lists"),
    (lambda c, k: (c, k, {"pc1_share": np.ones(len(k) - 1)}), "pc1_share.*length"),
    (lambda c, k: (c, k, {"min_pc1": 0.5}), "min_pc1 was given without pc1_share"),
    (lambda c, k: (c, k, {"min_layers": 1}), "min_layers"),
    (lambda c, k: (c, k, {"threshold": 0.0}), r"threshold.*\(0, 1\]"),
    (lambda c, k: (c, k, {"threshold": 1.5}), r"threshold.*\(0, 1\]"),
    (lambda c, k: (c, k, {"analysed_kinds": ("block",)}), "no layer has an analysed kind"),
])
def test_invalid_inputs_raise_clear_errors(mutate, match):
    cka, kinds, kwargs = mutate(*_base())
    with pytest.raises(ValueError, match=match):
        block_structure_span(cka, kinds, **kwargs)


def test_non_finite_analysed_entries_name_the_layer():
    cka, kinds = _base()
    cka[stream_index(7), stream_index(3)] = np.nan
    with pytest.raises(ValueError, match=rf"cka\[{stream_index(7)}, {stream_index(3)}\] is NaN or inf"):
        block_structure_span(cka, kinds)
    cka, kinds = _base()
    shares = np.full(len(kinds), 0.5)
    shares[stream_index(5)] = np.inf
    with pytest.raises(ValueError, match=f"pc1_share: NaN or inf at analysed layer index {stream_index(5)}"):
        block_structure_span(cka, kinds, pc1_share=shares, min_pc1=0.4)


def test_analysed_indices():
    kinds = ["input", "stem", "inside", "stream", "inside", "stream", "head"]
    assert analysed_indices(kinds).tolist() == [3, 5]
    assert analysed_indices(kinds, ("stem", "stream")).tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="no layer has an analysed kind"):
        analysed_indices(["input", "head"])


def test_span_cka_remeasures_a_detected_block_in_another_matrix():
    kinds = ["stream", "inside"] * 8
    matrix = np.full((16, 16), 0.3)
    stream = np.arange(0, 16, 2)
    matrix[np.ix_(stream[2:6], stream[2:6])] = 0.95
    np.fill_diagonal(matrix, 1.0)
    block = blocks.block_structure_span(matrix, kinds)
    assert (block.start, block.end) == (4, 10)
    inside, outside = blocks.span_cka(matrix, block, kinds)
    assert inside == pytest.approx(block.mean_cka) and outside == pytest.approx(block.outside_cka)
    # The same layers in a matrix where the square has faded: the numbers follow the new matrix.
    faded = np.where(matrix == 0.95, 0.5, matrix)
    inside_after, outside_after = blocks.span_cka(faded, block, kinds)
    assert inside_after == pytest.approx(0.5) and outside_after == pytest.approx(0.3)
    assert not blocks.breaks(inside, outside, 0.9, 0.2)
    assert blocks.breaks(inside_after, outside_after, 0.9, 0.2)
    assert blocks.breaks(0.95, 0.9, 0.9, 0.2)  # still bright, but no longer stands out


def test_span_cka_refuses_a_block_from_another_layout():
    kinds = ["stream"] * 6
    block = blocks.Block(start=0, end=5, n_layers=6, fraction=1.0, mean_cka=1.0, outside_cka=0.0,
                         contrast=1.0, mean_pc1=None)
    with pytest.raises(ValueError, match="not all"):
        blocks.span_cka(np.eye(6), block, kinds)


def test_every_layer_must_belong_to_the_square():
    # A bright 10-layer square plus two dim neighbours: a mean-based rule would absorb them (the mean
    # stays above the threshold), the per-layer rule stops at the square's edge.
    s = plant(smooth(M, tau=2.0), 10, 19, 0.99)
    s[np.ix_([9, 20], range(10, 20))] = s[np.ix_(range(10, 20), [9, 20])] = 0.8
    kinds = ["stream"] * M
    block = block_structure_span(s, kinds, threshold=0.9, min_contrast=0.2)
    assert (block.start, block.end) == (10, 19)
    mean_with_neighbours, _ = expected_stats((s + s.T) / 2, 9, 20)
    assert mean_with_neighbours > 0.9  # what a mean-only rule would have accepted as a 12-layer block


def test_every_layer_must_pass_the_first_pc_rule():
    s = plant(smooth(M, tau=2.0), 10, 19, 0.97)
    kinds = ["stream"] * M
    shares = np.full(M, 0.8)
    shares[12] = 0.3  # one layer without a dominant PC splits the block: the mean (0.75) would not
    block = block_structure_span(s, kinds, pc1_share=shares, min_pc1=0.5, min_layers=3)
    assert (block.start, block.end) == (13, 19)


def test_block_measures_grow_with_the_planted_square_and_read_the_largest_first_pc_share():
    kinds = layout()
    shares = np.full(len(kinds), 0.2)
    sizes = []
    for hi in (12, 16, 21):
        full, _ = embed(plant(smooth(), 10, hi, 0.97))
        for j in range(10, hi + 1):
            shares[stream_index(j)] = 0.6
        shares[0] = 0.99  # a non-analysed layer's share never counts
        measures = blocks.block_measures(full, kinds, shares, threshold=0.9, min_contrast=0.2, min_pc1=0.45)
        assert measures["max_pc1_share"] == pytest.approx(0.6)
        sizes.append(measures["block_size"])
    assert sizes == pytest.approx([3 / 30, 7 / 30, 12 / 30])
    full, _ = embed(smooth())
    none = blocks.block_measures(full, kinds, np.full(len(kinds), 0.2), threshold=0.9, min_contrast=0.2,
                                 min_pc1=0.45)
    assert none == {"block_size": 0.0, "max_pc1_share": pytest.approx(0.2)}
    assert blocks.block_size(None) == 0.0


def test_a_contrast_that_rises_under_an_intervention_is_never_broken():
    """Pre-protocol ResNet-110 n500: its contrast rose from 0.28 to 0.34 under PC removal and counted as broken."""
    assert blocks.breaks(0.80, 0.46, 0.9, 0.2)                              # inside below 0.9: fails the detector
    assert not blocks.breaks(0.80, 0.46, 0.9, 0.2, contrast_before=0.28)   # ... but its contrast rose
    assert blocks.breaks(0.80, 0.70, 0.9, 0.2, contrast_before=0.28)       # fell and fails: broken
