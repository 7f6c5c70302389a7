"""Precision against seed spread: paired differences, the two effects, their verdict and bad inputs."""

import pytest

from widedeep.analyses import precision


def _rows(values, block_every=2):
    return [{"seed": s, "test_acc": v, "max_pc1_share": v / 2, "block_size": v / 4,
             "block": {} if s % block_every == 0 else None} for s, v in enumerate(values)]


def test_a_small_precision_effect_beside_a_large_seed_spread():
    result = precision.compare(_rows([0.70, 0.74, 0.78, 0.72]), _rows([0.701, 0.739, 0.782, 0.721]))
    acc = result["quantities"]["test_acc"]
    assert acc["precision_effect"] == pytest.approx(0.00125)
    assert acc["seed_effect"] > 0.02 and acc["ratio"] < 0.1 and acc["verdict"] == precision.SMALLER
    assert acc["difference"] == pytest.approx([-0.001, 0.001, -0.002, -0.001])
    assert result["block_presence_agrees"] == 4


def test_a_precision_effect_as_large_as_reseeding_is_reported():
    result = precision.compare(_rows([0.70, 0.71, 0.72]), _rows([0.72, 0.70, 0.71], block_every=3))
    assert result["quantities"]["test_acc"]["verdict"] == precision.NOT_SMALLER
    assert result["block_presence_agrees"] < 3


@pytest.mark.parametrize("low, exact, message", [
    (_rows([0.7, 0.8]), _rows([0.7]), "same seeds"),
    (_rows([0.7]), _rows([0.7]), "at least two seeds"),
    (_rows([0.7, 0.8]) + _rows([0.7]), _rows([0.7, 0.8]), "repeats a seed"),
])
def test_bad_inputs(low, exact, message):
    with pytest.raises(ValueError, match=message):
        precision.compare(low, exact)
