"""The per-model analysis maps blocks between full and residual-stream coordinates and reports them faithfully."""

import types

import numpy as np
import pytest

from widedeep.analyses import blocks
from widedeep.analyses import structure as analysis
from widedeep.models import resnet
from widedeep.profiles import Detector
from widedeep.train import TrainConfig

PARAMS = Detector(threshold=0.9, min_contrast=0.2, min_pc1=0.45, thresholds=[0.9], min_pc1s=[0.45])


def planted(depth: int = 14):
    """A ResNet's layer list with a bright, first-PC-dominated square over residual-stream layers 2..5."""
    layers = resnet(depth, 1, 10, 1).layers()
    names, kinds = [l.name for l in layers], [l.kind for l in layers]
    stream = np.flatnonzero(np.asarray(kinds) == "stream")
    cka = np.full((len(names), len(names)), 0.4)
    cka[np.ix_(stream[2:6], stream[2:6])] = 0.97
    np.fill_diagonal(cka, 1.0)
    shares = np.full((len(names), 3), np.nan)
    shares[stream, 0] = 0.2
    shares[stream[2:6], 0] = 0.7
    shares[stream, 1:] = 0.05
    config = TrainConfig(depth=depth, width=1, n_train=500, epochs=1, batch_size=50, n_test=1000, n_val=200)
    run = types.SimpleNamespace(config=config, metrics={"final": {"test_acc": 0.8, "train_acc": 0.9}})
    return run, cka, names, kinds, shares, stream


def test_detect_applies_the_profile_and_the_first_pc_rule():
    run, cka, names, kinds, shares, stream = planted()
    block, cka_only = analysis.detect(cka, kinds, shares[:, 0], PARAMS)
    assert (block.start, block.end) == (stream[2], stream[5]) and block.mean_pc1 == pytest.approx(0.7)
    assert (cka_only.start, cka_only.end) == (stream[2], stream[5]) and cka_only.mean_pc1 is None
    low = shares[:, 0].copy()
    low[stream] = 0.2
    block, cka_only = analysis.detect(cka, kinds, low, PARAMS)
    assert block is None and cka_only is not None  # the first-PC rule is what rejects it


def test_stream_coordinates_spans_and_summary():
    run, cka, names, kinds, shares, stream = planted()
    block, cka_only = analysis.detect(cka, kinds, shares[:, 0], PARAMS)
    m = analysis.BlockAnalysis(run, cka, names, kinds, shares, block, cka_only)
    on_stream = m.on_stream(block)
    assert (on_stream.start, on_stream.end) == (2, 5) and on_stream.n_layers == block.n_layers
    assert m.stream_names == [names[i] for i in stream]
    last = len(stream) - 1
    assert m.relative_span(block) == pytest.approx((2 / last, 5 / last))
    assert m.tested_block() == (block, "block")
    assert m.span_name(block) == f"{names[stream[2]]} … {names[stream[5]]}" and m.span_name(None) == "—"
    summary = m.summary()
    assert summary["pc1_share_inside"] == pytest.approx(0.7) and summary["pc1_share_outside"] == pytest.approx(0.2)
    assert summary["max_pc1_share"] == pytest.approx(0.7) and summary["n_stream_layers"] == len(stream)
    assert summary["block"] == block.as_dict()
    # The stream-only matrix gives the same block statistics in stream coordinates.
    sub = cka[np.ix_(stream, stream)]
    assert blocks.span_cka(sub, on_stream, ["stream"] * len(stream)) == pytest.approx((block.mean_cka,
                                                                                       block.outside_cka))


def test_tested_block_falls_back_to_the_cka_only_control():
    run, cka, names, kinds, shares, stream = planted()
    _, cka_only = analysis.detect(cka, kinds, shares[:, 0], PARAMS)
    m = analysis.BlockAnalysis(run, cka, names, kinds, shares, None, cka_only)
    assert m.tested_block() == (cka_only, "cka_only")
    assert analysis.BlockAnalysis(run, cka, names, kinds, shares, None, None).tested_block() == (None, None)
    assert m.on_stream(None) is None and m.relative_span(None) is None


def analysed(seed: int = 0, with_block: bool = True, depth: int = 14, n_train: int = 500):
    """A BlockAnalysis of the planted layout (blocked or not) for a given seed."""
    run, cka, names, kinds, shares, stream = planted(depth)
    run.config = TrainConfig(depth=depth, width=1, n_train=n_train, seed=seed, epochs=1, batch_size=50, n_test=1000,
                             n_val=200)
    block, cka_only = analysis.detect(cka, kinds, shares[:, 0], PARAMS) if with_block else (None, None)
    return analysis.BlockAnalysis(run, cka, names, kinds, shares, block, cka_only)


def test_removal_effect_remeasures_the_block_and_redetects_in_full_coordinates():
    m = analysed()
    stream_cka = m.cka[np.ix_(m.stream, m.stream)]
    faded = np.where(stream_cka == 0.97, 0.6, stream_cka)
    effect = analysis.removal_effect(m, faded, PARAMS)
    assert effect["span_from"] == "block"
    assert (effect["cka_inside_before"], effect["cka_outside_before"]) == pytest.approx((0.97, 0.4))
    assert (effect["cka_inside_after"], effect["cka_outside_after"]) == pytest.approx((0.6, 0.4))
    assert effect["block_after_pc1_removal"] is None
    unchanged = analysis.removal_effect(m, stream_cka, PARAMS)["block_after_pc1_removal"]
    assert (unchanged.start, unchanged.end) == (m.block.start, m.block.end)  # full-network indices
    nothing = analysis.removal_effect(analysed(with_block=False), stream_cka, PARAMS)
    assert nothing["span_from"] is None and np.isnan(nothing["cka_inside_before"])


def test_cross_seed_split_uses_each_seeds_own_block():
    a, b = analysed(0), analysed(1, with_block=False)
    n = len(a.stream)
    cross = np.full((n, n), 0.2)
    np.fill_diagonal(cross, 0.9)
    cross[np.arange(2, 6), np.arange(2, 6)] = 0.3  # the seeds disagree exactly inside seed 0's block
    split = analysis.cross_seed_split([a, b], {(0, 1): cross})
    assert set(split) == {0} and split[0] == pytest.approx((0.3, 0.9))
    pairs = analysis.cross_seed_pairs([a, b, analysed(2, with_block=False)], {(0, 1): cross, (2, 0): cross})
    assert set(pairs) == {0} and set(pairs[0]) == {1, 2}   # seed 0 second in its pair with seed 2


def test_position_controls_are_the_unblocked_models_of_that_architecture_and_n_train():
    blocked, control, other_depth = analysed(0), analysed(1, with_block=False), analysed(2, False, depth=20)
    other_data = analysed(3, with_block=False, n_train=1000)
    assert analysis.same_architecture_without_block(blocked, [blocked, control, other_depth, other_data]) == [control]


def test_a_grid_model_that_misses_the_interpolation_rule_is_left_out():
    assert analysis.left_out({"train_acc": 0.995}, "grid", 0.99) is None
    assert analysis.left_out({"train_acc": 0.97}, "grid", 0.99).startswith("misses the interpolation rule")
    assert analysis.left_out({"train_acc": 0.5}, "grid", None) is None          # no rule (smoke)
    assert analysis.left_out({"train_acc": 0.7}, "seed_study", 0.99) is None    # below the rule by design
    assert analysis.left_out({"train_acc": 1.0}, "short_arm", 0.99).startswith("short arm")
    rows = [{"train_acc": 0.995}, {"train_acc": 0.98}]
    assert analysis.misses_rule(rows, 0.99) == [rows[1]] and analysis.misses_rule(rows, None) == []
