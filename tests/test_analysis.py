"""The per-model analysis maps blocks between full and residual-stream coordinates and reports them faithfully."""

import types

import numpy as np
import pytest

from widedeep import analysis, blocks
from widedeep.models import resnet
from widedeep.train import TrainConfig

PARAMS = {"block_threshold": 0.9, "block_min_contrast": 0.2, "block_min_pc1": 0.45}


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
