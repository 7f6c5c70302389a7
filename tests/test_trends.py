"""The paper's two trends (capacity, data size) are judged correctly from block presence on a grid."""

import pytest

from widedeep.analyses import trends


def grid(blocked: set[tuple[int, float, int]]) -> list[dict]:
    """Width series at depth 20 (x1, x2, x4) and depth series at width 1 (20, 56, 110), at two n_train."""
    archs = [(20, 1), (20, 2), (20, 4), (56, 1), (110, 1)]
    return [{"depth": d, "width": w, "n_train": n, "has_block": (d, w, n) in blocked}
            for n in (500, 2000) for d, w in archs]


def test_presence_pattern():
    assert trends.presence_pattern([False, False, True, True]) == "rises"
    assert trends.presence_pattern([False, True, False]) == "falls"
    assert trends.presence_pattern([True, False]) == "falls"
    assert trends.presence_pattern([False, False]) == "flat"
    assert trends.presence_pattern([True, True]) == "flat"


def test_the_papers_picture_shows_both_trends():
    # Blocks in the biggest models, and at less data also in mid-sized ones.
    rows = grid({(20, 4, 2000), (110, 1, 2000), (20, 2, 500), (20, 4, 500), (56, 1, 500), (110, 1, 500)})
    capacity, capacity_patterns = trends.capacity_trend(rows)
    data, data_patterns = trends.data_trend(rows)
    assert capacity == trends.SHOWN and data == trends.SHOWN
    assert capacity_patterns["n_train 2000, depth 20"] == "rises"
    assert data_patterns["ResNet-20 ×2"] == "rises" and data_patterns["ResNet-20 ×4"] == "flat"


def test_no_block_anywhere_cannot_show_a_trend():
    rows = grid(set())
    assert trends.capacity_trend(rows)[0] == trends.NOT_SHOWN
    assert trends.data_trend(rows)[0] == trends.NOT_SHOWN


def test_a_block_only_in_a_small_model_contradicts_capacity():
    rows = grid({(20, 1, 500)})
    assert trends.capacity_trend(rows)[0] == trends.CONTRADICTED
    assert trends.data_trend(rows)[0] == trends.SHOWN  # present at 500, absent at 2000


def test_a_block_only_with_more_data_contradicts_the_data_trend():
    rows = grid({(110, 1, 2000)})
    assert trends.data_trend(rows)[0] == trends.CONTRADICTED
    assert trends.capacity_trend(rows)[0] == trends.SHOWN


def test_repeated_architectures_are_refused():
    rows = grid(set())
    with pytest.raises(ValueError, match="several seeds"):
        trends.capacity_trend(rows + rows[:1])


def test_incidence_sentence_lists_blocked_models_per_n_train():
    sentence = trends.incidence_sentence(grid({(110, 1, 500)}))
    assert sentence == "at n_train = 2000: none of 5 models; at n_train = 500: ResNet-110 ×1 (1 of 5 models)"
