"""Tests of widedeep.prune: deleted blocks are identities, the model comes back intact, repair never mutates it."""

from __future__ import annotations

import math

import pytest
import torch

from widedeep.analyses import deletion as prune
from widedeep.analyses.blocks import Block
from widedeep.data import ImageData
from widedeep.models import resnet

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(depth: int = 14, seed: int = 0):
    """A tiny trained-looking ResNet: random weights, random (non-default) BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    model = resnet(depth, 1, 10, in_channels=1)
    for bn in prune._batchnorms([model]):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _images(n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def _data(n: int = 24, seed: int = 0) -> ImageData:
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed + 1))
    return ImageData(_images(n, seed), labels, [str(c) for c in range(10)])


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@torch.no_grad()
def test_running_by_hand_equals_the_forward_pass():
    model, x = _model(), _images()
    torch.testing.assert_close(prune.run_blocks(model, prune.stem(model, x)), model(x), rtol=0, atol=0)


@torch.no_grad()
def test_a_deleted_block_is_an_identity():
    model, x = _model(), _images()
    assert prune.deletable_blocks(model) == [0, 1, 3, 5]  # ResNet-14: blocks 2 and 4 have stride 2
    blocks = model.residual_blocks()
    for deleted in ([1], [0, 3], [0, 1, 3, 5]):
        stream = prune.stem(model, x)
        for i, block in enumerate(blocks):
            stream = stream if i in deleted else block(stream)
        by_hand = model.logits(model.flatten(model.pool(stream)))
        with prune.deleted_blocks(model, deleted):
            assert all(blocks[i](stream) is stream for i in deleted)   # shape and values preserved
            torch.testing.assert_close(model(x), by_hand, rtol=0, atol=0)
            assert model(x).shape == (len(x), 10)


@torch.no_grad()
def test_deleting_nothing_changes_nothing_and_the_context_restores_the_model():
    model, x = _model(), _images()
    before, state = model(x), _state(model)
    with prune.deleted_blocks(model, []):
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    with prune.deleted_blocks(model, [1, 3]):
        assert not torch.equal(model(x), before)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"):
        with prune.deleted_blocks(model, [0, 5]):
            raise RuntimeError("boom")
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert not any("forward" in b.__dict__ for b in model.residual_blocks())
    assert _same_state(model, state)
    with prune.deleted_blocks(model, [1]):            # nested: the inner exit keeps the outer deletion
        with prune.deleted_blocks(model, [1, 3]):
            pass
        assert "forward" in model.residual_blocks()[1].__dict__
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_shape_changing_and_unknown_blocks_are_refused_before_anything_changes():
    model = _model()
    for bad in ([2], [0, 4], [6], [-1]):
        with pytest.raises(ValueError, match="cannot be deleted|out of range"):
            with prune.deleted_blocks(model, bad):
                pass
        assert not any("forward" in b.__dict__ for b in model.residual_blocks())


def test_membership_follows_each_blocks_output_layer():
    model = _model()
    names = [layer.name for layer in model.layers()]
    start, end = names.index("stages.1.1.relu2"), names.index("stages.2.1.relu2")
    block = Block(start, end, 3, 0.5, 0.95, 0.5, 0.45, None)
    assert prune.block_membership(model, block) == [False, False, False, True, True, True]
    assert prune.block_membership(model, None) == [False] * 6


def test_bn_repair_averages_batch_statistics_and_leaves_the_model_alone():
    model, images = _model(), _images(30)
    state = _state(model)
    repaired = prune.recompute_bn(model, images, batch_size=10, deleted=[1])
    assert _same_state(model, state) and not model.training
    assert not repaired.training and not any("forward" in b.__dict__ for b in repaired.residual_blocks())
    with torch.no_grad():
        first = model.conv(images)
    expected = torch.stack([first[i:i + 10].mean((0, 2, 3)) for i in range(0, 30, 10)]).mean(0)
    torch.testing.assert_close(repaired.bn.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert repaired.bn.momentum == model.bn.momentum


def test_single_deletion_sweep_equals_deleting_each_block_outright():
    model, test, repair = _model(), _data(24), _images(20, seed=3)
    state = _state(model)
    sweep = list(prune.deletion_logits(model, test.images, repair, batch_size=8))
    assert _same_state(model, state) and not model.training
    index, intact, repaired_intact = sweep[0]
    assert index is None
    torch.testing.assert_close(intact, prune.logits_without(model, test.images, [], 8))
    torch.testing.assert_close(repaired_intact, prune.logits_without(prune.recompute_bn(model, repair, 8), test.images))
    assert [i for i, _, _ in sweep[1:]] == prune.deletable_blocks(model)
    for i, plain, mended in sweep[1:]:
        torch.testing.assert_close(plain, prune.logits_without(model, test.images, [i], 8))
        repaired = prune.recompute_bn(model, repair, 8, deleted=[i])
        torch.testing.assert_close(mended, prune.logits_without(repaired, test.images, [i], 8))
        assert not torch.allclose(plain, intact) and not torch.allclose(mended, plain)  # the check has teeth
    result = prune.single_deletions(model, test, repair, batch_size=8)
    assert result["baseline_acc"] == prune._accuracy_under(model, test, [], 8)
    assert [r["block_index"] for r in result["deletions"]] == prune.deletable_blocks(model)


def test_deletion_effects_and_cumulative_curves():
    model, test, repair = _model(), _data(16), _images(16, seed=2)
    state = _state(model)
    inside = [False, False, False, True, True, True]
    effects = prune.deletion_effects(model, test, inside, repair, batch_size=16)
    assert _same_state(model, state)
    assert [(d["block_index"], d["inside_block"]) for d in effects["deletions"]] == [
        (0, False), (1, False), (3, True), (5, True)]
    # the per-example flips rebuild each deletion's accuracy change, and the score's per-example parts its mean
    assert effects["examples"] == 16
    for d in effects["deletions"]:
        assert (len(d["gained"]) - len(d["lost"])) / 16 == pytest.approx(d["delta_acc"])
    inside_mean, outside_mean = prune.mean_deltas(effects["deletions"])
    assert prune.example_scores(effects).mean() == pytest.approx(inside_mean - outside_mean)
    for key in ("cumulative_inside", "cumulative_outside"):
        curve = effects[key]
        assert [c["n_deleted"] for c in curve] == [0, 1, 2] and curve[0]["delta_acc"] == 0
        assert curve[0]["delta_acc_repaired"] == pytest.approx(effects["repair_only_delta"])
    assert set(effects["cumulative_inside"][-1]["blocks"]) == {3, 5}
    assert set(effects["cumulative_outside"][-1]["blocks"]) <= {0, 1}
    with pytest.raises(ValueError, match="flags"):
        prune.deletion_effects(model, test, inside[:-1], repair)
    nothing = prune.deletion_effects(model, test, [False] * 6, repair, batch_size=16)
    assert nothing["cumulative_inside"] == nothing["cumulative_outside"] == []


def test_cumulative_orders_are_seeded_equal_length_and_disjoint():
    inside = [False] * 4 + [True] * 6
    deletable = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    a_in, a_out = prune.cumulative_orders(inside, deletable, seed=0)
    assert (a_in, a_out) == prune.cumulative_orders(inside, deletable, seed=0)
    assert len(a_in) == len(a_out) == 3 and set(a_in) <= {4, 5, 6, 7, 8, 9} and set(a_out) == {0, 1, 2}
    assert [len(o) for o in prune.cumulative_orders(inside, deletable, max_steps=2)] == [2, 2]
    assert prune.cumulative_orders([False] * 10, deletable) == ([], [])


def test_verdicts():
    rows = [{"inside_block": True, "delta_acc": -0.01}, {"inside_block": True, "delta_acc": 0.0},
            {"inside_block": False, "delta_acc": -0.05}]
    assert prune.mean_deltas(rows) == pytest.approx((-0.005, -0.05))
    assert prune.cost_verdict(-0.005, -0.05) == prune.CHEAPER_INSIDE
    assert prune.cost_verdict(-0.05, -0.005) == prune.COSTLIER_INSIDE
    assert prune.cost_verdict(-0.01, -0.015) == prune.NO_DIFFERENCE
    assert prune.cost_verdict(float("nan"), -0.1) == prune.NOT_TESTABLE
    assert prune.curve_end([]) != prune.curve_end([])  # NaN
    assert prune.curve_end([{"delta_acc": 0}, {"delta_acc": -0.2}]) == -0.2


def test_a_difference_of_exactly_the_margin_counts():
    assert prune.cost_verdict(-0.785, -0.805, margin=0.02) == prune.CHEAPER_INSIDE
    assert prune.cost_verdict(-0.805, -0.785, margin=0.02) == prune.COSTLIER_INSIDE


def test_deletion_verdicts_read_single_and_cumulative_effects():
    effects = {"deletions": [{"inside_block": True, "delta_acc": -0.01, "delta_acc_repaired": -0.01},
                             {"inside_block": False, "delta_acc": -0.10, "delta_acc_repaired": -0.005}],
               "cumulative_inside": [{"delta_acc": 0.0, "delta_acc_repaired": 0.0},
                                     {"delta_acc": -0.3, "delta_acc_repaired": -0.02}],
               "cumulative_outside": [{"delta_acc": 0.0, "delta_acc_repaired": 0.0},
                                      {"delta_acc": -0.1, "delta_acc_repaired": -0.02}]}
    v = prune.deletion_verdicts(effects, margin=0.01)
    assert (v["single"], v["single_repaired"]) == (prune.CHEAPER_INSIDE, prune.NO_DIFFERENCE)
    assert (v["cumulative"], v["cumulative_repaired"]) == (prune.COSTLIER_INSIDE, prune.NO_DIFFERENCE)
    assert v["mean_delta_outside"] == -0.10 and v["cumulative_inside_end"] == -0.3
    empty = prune.deletion_verdicts({**effects, "cumulative_inside": [], "cumulative_outside": []})
    assert empty["cumulative"] == prune.NOT_TESTABLE


def test_position_control_averages_the_same_positions_in_models_without_a_block():
    own = [{"block_index": i, "inside_block": 3 <= i <= 5, "delta_acc": -0.01} for i in range(1, 8)]
    control_a = [{"block_index": i, "delta_acc": -0.1 * (i < 3), "inside_block": False} for i in range(1, 8)]
    control_b = [{"block_index": i, "delta_acc": -0.02, "inside_block": False} for i in (3, 7)]
    inside, outside = prune.position_control(own, [control_a, control_b])
    assert inside == pytest.approx((0 * 3 - 0.02) / 4)  # positions 3, 4, 5 of a and 3 of b
    assert outside == pytest.approx((-0.1 * 2 - 0.02) / 5)  # positions 1, 2, 6, 7 of a and 7 of b
    assert all(math.isnan(v) for v in prune.position_control(own, []))


def test_example_scores_need_both_sides_and_the_flips():
    row = lambda index, inside, lost, gained: {"block_index": index, "inside_block": inside, "lost": lost,
                                              "gained": gained, "delta_acc": (len(gained) - len(lost)) / 4}
    effects = {"examples": 4, "deletions": [row(0, False, [0, 1], []), row(1, False, [0], [3]), row(2, True, [], [])]}
    assert prune.example_scores(effects).tolist() == [1.0, 0.5, 0.0, -0.5]   # inside costs nothing, outside does
    assert prune.example_scores({**effects, "deletions": effects["deletions"][:2]}) is None   # no inside deletion
    old = {"deletions": [{k: v for k, v in d.items() if k not in ("lost", "gained")} for d in effects["deletions"]]}
    assert prune.example_scores(old) is None   # a record from before the flips
