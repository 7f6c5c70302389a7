"""Heatmap summaries, cached analyses and the CKA batch order."""

import numpy as np
import pytest
import torch

from widedeep import data, store
from widedeep.analyses import heatmaps
from widedeep.models import INSIDE, STREAM


def test_checkerboard_contrast_on_a_planted_checkerboard():
    kinds = [STREAM, INSIDE, INSIDE, STREAM, INSIDE, STREAM]
    stream = np.array([k == STREAM for k in kinds])
    matrix = np.full((6, 6), 0.3)
    matrix[np.ix_(stream, stream)] = 0.9
    np.fill_diagonal(matrix, 1.0)
    assert heatmaps.checkerboard_contrast(matrix, kinds) == pytest.approx(0.6)
    assert heatmaps.checkerboard_contrast(np.full((6, 6), 0.5), kinds) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="layer kinds"):
        heatmaps.checkerboard_contrast(matrix, kinds[:-1])


def test_checkerboard_verdict_distinguishes_the_cases():
    assert heatmaps.checkerboard_verdict(0.3, 0.0).startswith("a clear checkerboard")
    assert "both nets" in heatmaps.checkerboard_verdict(0.3, 0.28)
    assert heatmaps.checkerboard_verdict(-0.01, -0.02).startswith("no clear checkerboard")
    assert heatmaps.checkerboard_verdict(-0.2, 0.0).startswith("the opposite")


def test_matched_and_relative_depth_similarity():
    matrix = np.arange(16.0).reshape(4, 4)
    assert heatmaps.matched_layer_similarity(matrix).tolist() == [0, 5, 10, 15]
    rectangular = np.arange(12.0).reshape(3, 4)
    assert heatmaps.relative_depth_similarity(rectangular, points=2).tolist() == [0.0, 11.0]
    with pytest.raises(ValueError, match="square"):
        heatmaps.matched_layer_similarity(rectangular)


def test_cached_npz_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"m": np.eye(3)}

    first = store.cached_npz(tmp_path / "c.npz", compute)
    second = store.cached_npz(tmp_path / "c.npz", compute)
    assert calls == [1] and np.array_equal(first["m"], second["m"])


def test_cached_json_computes_once_and_returns_what_it_stored(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"rows": ({"acc": np.float64(0.5), "missing": float("nan")},), "n": np.int64(3)}

    first = store.cached_json(tmp_path / "c.json", compute)
    second = store.cached_json(tmp_path / "c.json", compute)
    assert calls == [1] and first == second == {"rows": [{"acc": 0.5, "missing": None}], "n": 3}


def test_shuffled_passes_are_seeded_full_and_unaugmented():
    images = torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2)
    dataset = data.ImageData(images, torch.arange(10), [])
    first = [y.tolist() for _, y in data.shuffled_passes(dataset, 4, passes=2, seed=3)]
    again = [y.tolist() for _, y in data.shuffled_passes(dataset, 4, passes=2, seed=3)]
    assert first == again and len(first) == 4 and all(len(b) == 4 for b in first)
    assert first[:2] != first[2:]  # each pass reshuffles
    for x, y in data.shuffled_passes(dataset, 4, passes=1):
        assert torch.equal(x, images[y])  # no augmentation
