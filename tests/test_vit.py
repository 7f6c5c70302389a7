"""Chapter 10's Vision Transformer: its layers and hooks, its training options, its grid, protocol section and study."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from widedeep import experiments, models, profiles, protocol
from widedeep.analyses import vit as vit_study
from widedeep.analyses import verdicts
from widedeep.book import results, sentences
from widedeep.capture import Capture, capture_outputs
from widedeep.measures.cka import linear_cka, model_cka
from widedeep.measures.grams import layer_gram
from widedeep.train import TrainConfig, _optimizer, cosine_lr, scheduled_lr, train_or_load

RUN_NAMES = Path(__file__).parent / "data" / "run_names.json"
TINY_VIT = dict(arch="vit", depth=2, width=8, n_train=200, n_val=100, n_test=100, image_size=16, epochs=3,
                batch_size=50, lr=3e-3, optimizer="adamw", weight_decay=0.05, warmup_steps=2, eval_every=1)


def _fired(model, layers, images):
    order = []
    handles = [layer.module.register_forward_hook(lambda m, i, o, name=layer.name: order.append(name))
               for layer in layers]
    model(images)
    for handle in handles:
        handle.remove()
    return order


@pytest.mark.parametrize("depth, width", [(1, 4), (4, 16), (6, 32)])
def test_every_layer_fires_once_in_forward_order_and_is_its_own_module(depth, width):
    model = models.vit(depth, width).eval()
    layers = model.layers()
    assert _fired(model, layers, torch.rand(3, 1, 16, 16)) == [layer.name for layer in layers]
    assert len({id(layer.module) for layer in layers}) == len(layers)
    kinds = [layer.kind for layer in layers]
    assert kinds.count(models.STREAM) == depth + 1 and kinds.count(models.INSIDE) == 6 * depth
    assert kinds[:2] == [models.INPUT, models.STEM] and kinds[-3:] == [models.HEAD] * 3
    assert [layer.block for layer in layers if layer.kind == models.STREAM] == [-1, *range(depth)]
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_a_hook_sees_each_layer_s_true_output():
    torch.manual_seed(0)
    model = models.vit(3, 16).eval()
    images = torch.rand(5, 1, 16, 16)
    names = [layer.name for layer in model.layers()]
    outputs = dict(zip(names, capture_outputs(model, images, model.layers())))
    with torch.no_grad():
        stream = model.embed(model.tokens(model.patch(images)))
        assert torch.allclose(outputs["embed"], stream)
        for index, block in enumerate(model.blocks):
            stream = block(stream)
            assert torch.allclose(outputs[f"blocks.{index}.add2"], stream, atol=1e-6)
            # the residual additions are the sums of what the hooks saw on either side of them
            assert torch.allclose(outputs[f"blocks.{index}.add1"] + outputs[f"blocks.{index}.fc2"], stream, atol=1e-6)
        assert torch.allclose(outputs["logits"], model(images), atol=1e-6)
    assert outputs["blocks.0.act"].shape == (5, 16, 2 * 16) and outputs["pool"].shape == (5, 16)


def test_token_maps_flatten_per_example_as_conv_maps_do():
    """A (n, tokens, width) map is one row of tokens x width per example, as (n, c, h, w) is one row of c x h x w."""
    tokens = torch.randn(7, 16, 8, dtype=torch.float64)
    flat = tokens.reshape(7, -1)
    assert torch.allclose(layer_gram(tokens), layer_gram(flat))
    centred = flat - flat.mean(dim=0)
    assert torch.allclose(layer_gram(tokens), centred @ centred.T)
    conv = tokens.transpose(1, 2).reshape(7, 8, 4, 4)   # the same numbers as a channels x 4 x 4 map
    assert linear_cka(tokens, conv) == pytest.approx(1.0)


def test_cka_of_a_vit_with_itself_has_ones_on_the_diagonal():
    torch.manual_seed(0)
    model = models.vit(2, 8).eval()
    batches = [torch.rand(20, 1, 16, 16) for _ in range(3)]
    within, names, _ = model_cka(model, batches)
    assert len(names) == len(model.layers()) and np.allclose(np.diag(within), 1.0)
    twin = models.vit(2, 8).eval()
    twin.load_state_dict(model.state_dict())
    across, names_a, names_b = model_cka(model, batches, twin)   # two modules, the same weights
    assert names_a == names_b and np.allclose(np.diag(across), 1.0, atol=1e-6)
    assert np.allclose(across, within, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    ((4, 30), "multiple of its 4 heads"), ((0, 16), "depth must be a positive"), ((2, 16.5), "embedding dimension"),
    ((2, True), "embedding dimension"), ((2.0, 16), "depth must be a positive"),
])
def test_bad_vit_shapes_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        models.vit(*args)


def test_patches_must_tile_the_image():
    with pytest.raises(ValueError, match="does not tile a 16 px image"):
        models.vit(2, 8, patch_size=5)
    assert models.vit(2, 8, image_size=28, patch_size=7)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------
# Training options and names
# ---------------------------------------------------------------------------------------------

def test_no_resnet_run_name_changes_and_the_vits_are_appended():
    """The pinned names: each profile's runs before Chapter 10 keep their names and order, the ViTs come last."""
    pinned = json.loads(RUN_NAMES.read_text())
    for name, names in pinned.items():
        profile = profiles.load_profile(name)
        vits = [c.name() for c in experiments.vit_runs(profile)]
        assert names[len(names) - len(vits):] == vits and all("-vit" in n for n in vits)
        resnets = [c for c in experiments.required_runs(profile) if c.arch == "resnet"]
        assert [c.name() for c in resnets] == names[:len(names) - len(vits)]
        assert all(not {"arch", "patch_size", "heads", "mlp_ratio", "optimizer", "warmup_steps"} & set(c.stored())
                   for c in resnets)


def test_a_vit_config_names_its_family_and_hashes_its_options():
    config = TrainConfig(**TINY_VIT)
    assert config.name().startswith("fmnist16-vit2x8-n200-s0-")
    stored = config.stored()
    assert stored["arch"] == "vit" and stored["optimizer"] == "adamw" and "patch_size" not in stored
    assert TrainConfig(**{**TINY_VIT, "patch_size": 2}).name() != config.name()
    assert isinstance(config.build_model(), models.VisionTransformer)


@pytest.mark.parametrize("change, message", [
    ({"arch": "mlp"}, "arch must be one of"), ({"optimizer": "lamb"}, "optimizer must be one of"),
    ({"width": 10}, "multiple of its 4 heads"), ({"residual": False}, "ResNets only"),
    ({"warmup_steps": 12}, "warmup_steps must be"), ({"warmup_steps": -1}, "warmup_steps must be"),
    ({"patch_size": 3}, "does not tile"), ({"pc_reg_strength": 1.0}, "no ReLU layers"),
])
def test_bad_vit_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY_VIT, **change})


def test_a_resnet_refuses_the_vit_shape_options():
    with pytest.raises(ValueError, match="a ResNet run"):
        TrainConfig(depth=8, patch_size=2)


def test_warmup_rises_linearly_then_decays_by_cosine_and_no_warmup_is_the_old_schedule():
    plain = TrainConfig(**{**TINY_VIT, "warmup_steps": 0})
    assert all(scheduled_lr(plain, s) == cosine_lr(plain.lr, s, plain.total_steps) for s in range(plain.total_steps))
    config = TrainConfig(**{**TINY_VIT, "warmup_steps": 4})   # 12 steps: 4 of warmup, 8 of decay
    lrs = [scheduled_lr(config, s) for s in range(config.total_steps)]
    assert lrs[:4] == pytest.approx([config.lr * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[4] == pytest.approx(config.lr) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(config.lr * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_adamw_decays_the_kernels_only():
    config = TrainConfig(**TINY_VIT)
    model = config.build_model()
    optimizer = _optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, free = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and free["weight_decay"] == 0.0
    free_ids = {id(p) for p in free["params"]}
    assert id(model.embed.weight) in free_ids and id(model.blocks[0].norm1.weight) in free_ids
    assert id(model.blocks[0].fc1.weight) in {id(p) for p in decayed["params"]}


def test_a_vit_trains_loads_and_predicts_the_same(tmp_path, one_thread):
    config = TrainConfig(**TINY_VIT)
    run = train_or_load(config, tmp_path, device="cpu", progress=False)
    assert run.metrics["status"] == "complete" and math.isfinite(run.metrics["epochs"][-1]["train_loss"])
    assert run.metrics["epochs"][-1]["lr_end"] < config.lr / 10   # warmed up, then decayed to near 0
    again = train_or_load(config, tmp_path, device="cpu", progress=False, allow_train=False)
    images = torch.rand(4, 1, 16, 16)
    assert torch.equal(run.model(images), again.model(images))


# ---------------------------------------------------------------------------------------------
# Profiles, pipeline, protocol and results
# ---------------------------------------------------------------------------------------------

def test_the_vit_grid_pairs_the_reference_with_chapter_2_s_resnets():
    cpu = profiles.load_profile("cpu")
    grid = experiments.vit_grid(cpu)
    assert len(grid) == 5 * 2 * 3 and {c.arch for c in grid} == {"vit"}
    assert {(c.depth, c.width) for c in grid} == {(4, 32), (4, 64), (4, 96), (8, 32), (16, 32)}
    pairs = experiments.vit_resnet_pairs(cpu)
    assert [(v.seed, r.seed) for v, r in pairs] == [(0, 0), (1, 1), (2, 2)]
    assert all(v.n_train == r.n_train == 1000 and r.arch == "resnet" and v in grid for v, r in pairs)
    with pytest.raises(profiles.ProfileError, match="vit_seeds"):
        profiles.load_profile("cpu", {"vit_seeds": [0, 1, 2, 3, 4]})
    with pytest.raises(profiles.ProfileError, match="multiple of its 4 heads"):
        profiles.load_profile("cpu", {"vit_widths": [30]})


def test_the_protocol_section_parses_and_fixes_the_vit_keys():
    sections = protocol.read_sections()
    ids = list(sections)
    assert ids.index("chapter-10") == ids.index("amendments") - 1
    section = sections["chapter-10"]
    assert set(section.keys) == {k for k, (s, _) in profiles.KEYS.items() if s == "vit"}
    assert set(section.keys) <= set(profiles.KEYS) and set(section.keys) <= protocol.training_keys()
    assert "chapter-10" in protocol.training_sections()
    assert protocol.rules()["vit_max_core_hours_xeon"] == 1.5


def test_a_new_chapter_section_voids_no_run_trained_before_it_but_a_change_to_it_voids_its_runs(tmp_path):
    cpu = profiles.load_profile("cpu")
    text = protocol.page_path().read_text()
    start, end = text.index("## Chapter 10"), text.index("## Amendments")
    before = protocol.training_stamp(cpu, text[:start] + text[end:])     # the page before Chapter 10
    changed = text.replace("not tuned on these data", "tuned on these data")
    for name, stamp in (("resnet", before), ("vit", protocol.training_stamp(cpu, changed))):
        path = tmp_path / name / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"protocol": stamp}))
    offenders = protocol.check_records(tmp_path, cpu)
    assert [(Path(o["record"]).parent.name, o["sections"]) for o in offenders] == [("vit", ["chapter-10"])]


def test_the_vits_fit_chapter_10_s_budget():
    cpu = profiles.load_profile("cpu")
    xeon, zen1 = protocol.vit_cost(cpu, "xeon"), protocol.vit_cost(cpu, "zen1")
    assert xeon["train_core_hours"] + xeon["analysis_core_hours"] <= protocol.rules()["vit_max_core_hours_xeon"]
    assert zen1["largest_run_hours"] <= protocol.rules()["max_run_core_hours_slowest_cpu"]
    assert set(xeon["runs"]) == {c.name() for c in experiments.vit_runs(cpu)}
    # a ViT's efficiency is measured against the ResNet curve on one machine; it is below a ResNet's here
    assert 0 < protocol.vit_efficiency(0.01) < 1


def test_vit_flops_are_counted_and_grow_with_depth_and_width():
    small = protocol.train_flops_per_image(4, 32, arch="vit")
    assert protocol.train_flops_per_image(8, 32, arch="vit") == pytest.approx(2 * small, rel=0.1)
    assert 3 < protocol.train_flops_per_image(4, 64, arch="vit") / small < 4.5
    # a training step is ~3 forward passes of ~2 FLOPs per weight and token
    params = models.parameter_count(models.vit(4, 32))
    assert 0.6 < small / (3 * 2 * params * 16) < 1.6


def test_results_take_vit_run_names_and_label_them():
    config = experiments.vit_grid(profiles.load_profile("smoke"))[0]
    entry = {"depth": config.depth, "width": config.width, "n_train": config.n_train, "seed": config.seed,
             "arch": "vit"}
    document = {"schema_version": results.SCHEMA_VERSION, "provenance": {k: "x" for k in results.PROVENANCE_KEYS},
                **{k: {} for k in results.CHAPTERS["10_vit"].keys},
                "models": {config.name(): entry}, "verdicts": {"uniform": "suggestive (1 model)"},
                "claims": {"uniform": verdicts.claim(verdicts.paired_verdict([0.1], +1), "Chapter 10, V3")}}
    results.validate(document, "10_vit")
    assert results.label(entry) == "ViT-4 d8, n=500, s0"
    with pytest.raises(results.SchemaError, match="not the model its name names"):
        results.validate({**document, "models": {config.name(): {**entry, "depth": 8}}}, "10_vit")


# ---------------------------------------------------------------------------------------------
# The study's statistics
# ---------------------------------------------------------------------------------------------

def test_the_token_norm_ratio_finds_a_planted_outlier_token():
    tokens = torch.ones(3, 16, 4)
    tokens[1, 5] *= 10
    assert vit_study.token_ratio(tokens).tolist() == pytest.approx([1.0, 10.0, 1.0])
    with pytest.raises(ValueError, match="token map"):
        vit_study.token_ratio(torch.ones(3, 4, 2, 2))


def test_token_ratios_through_hooks_match_the_outputs():
    torch.manual_seed(0)
    model = models.vit(2, 8).eval()
    images = torch.rand(6, 1, 16, 16)
    names = ["embed", "blocks.1.add2"]
    with Capture(model, names, lambda _, output: vit_study.token_ratio(output)) as capture:
        hooked = capture(images)
    for ratio, output in zip(hooked, capture_outputs(model, images, names)):
        norms = output.norm(dim=-1)
        assert torch.allclose(ratio, norms.max(1).values / norms.median(1).values)


def test_uniformity_and_best_matches_on_planted_heatmaps():
    assert vit_study.uniformity(np.ones((4, 4))) == 1.0
    assert vit_study.uniformity(np.eye(3)) == 0.0
    assert vit_study.uniformity(np.array([[1, 0.2], [0.4, 1]])) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="square"):
        vit_study.uniformity(np.ones((2, 3)))
    diagonal = np.eye(3) + 0.1
    assert vit_study.best_match_depths(diagonal).tolist() == [0.0, 0.5, 1.0]


def test_shuffled_examples_give_a_null_near_zero_and_identical_layers_one():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 30)))
    y = x @ torch.as_tensor(rng.normal(size=(30, 30)))
    grams = [layer_gram(x), layer_gram(y)]
    raw = vit_study.shuffled_cka(grams, grams, None)
    assert np.allclose(np.diag(raw), 1.0)
    null = vit_study.shuffled_cka(grams, grams, rng.permutation(200))
    assert np.abs(null).max() < 0.05


def test_a_verdict_is_described_with_its_n_and_interval():
    result = verdicts.paired_verdict([0.1, 0.2, 0.3, 0.4, 0.5], +1)
    text = sentences.vit_describe(result)
    assert text.startswith("shown: n = 5, mean +0.300 [") and "sign-flip p = 0.0312" in text
    assert sentences.vit_describe(result, verdict=False) == text.removeprefix("shown: ")
    assert sentences.vit_describe(verdicts.paired_verdict([0.1, 0.2], +1)) == "suggestive (2 models): n = 2, mean +0.150"
    assert sentences.vit_describe(verdicts.paired_verdict([], +1)) == "not testable: n = 0"
    left = {**verdicts.paired_verdict([0.1, 0.2, 0.3], +1), "left_out": 2, "left_out_why": "below the rule"}
    assert sentences.vit_describe(left).endswith("; 2 left out (below the rule)")


def test_the_grid_orders_vits_and_resnets_by_their_measured_cost():
    """The grid starts the costliest run first; a ViT's relative cost follows the rates the benchmark measured."""
    from scipy import stats

    from widedeep import grid

    bench = json.loads((Path(__file__).parents[1] / protocol.VIT_BENCHMARK).read_text())["models"]
    base = experiments.cka_base_grid(profiles.load_profile("cpu"))[0]
    costs, measured = [], []
    for entry in bench.values():
        shape = {"arch": "vit", "optimizer": "adamw", "warmup_steps": 10} if entry["arch"] == "vit" else {}
        config = TrainConfig.from_dict({**base.stored(), **shape, "depth": entry["depth"], "width": entry["width"]})
        costs.append(grid.training_cost(config))
        measured.append(1 / entry["median"])
    assert stats.spearmanr(costs, measured).statistic > 0.8


def test_with_no_vit_meeting_the_rule_the_law_says_why_and_nothing_is_judged():
    from widedeep.studies import vit as chapter

    law = chapter.fit_law([], 0.95)
    assert law["verdicts"] == dict.fromkeys(("capacity", "data", "relative"), verdicts.NOT_TESTABLE)
    assert sentences.law_sentence(law["fits"].get("incidence_fit"), law["reason"]) == (
        "not fitted (no ViT meets the interpolation rule)")
    claims = chapter.claims(law, verdicts.paired_verdict([], +1), verdicts.paired_verdict([], +1), 0, 30)
    assert all(c["verdict"] == verdicts.NOT_TESTABLE for c in claims.values())
    assert all(claims[k]["left_out"] == 30 and claims[k]["n"] == 0 for k in ("capacity", "data", "relative"))
