"""The chapters' multi-step computations, now in the library: grids, sweeps, verdicts, controls and records.

Planted inputs with known answers (analysed models from test_structure's planted layout, synthetic
predictions), so each verdict and sentence is checked without training a model.
"""

import dataclasses
import types

import numpy as np
import pytest
import torch

from test_structure import PARAMS, analysed, planted
from widedeep import experiments, labels, profiles
from widedeep.analyses import checks, deletion, first_pc, matching, runs, structure, trends
from widedeep.analyses import verdicts as v
from widedeep.book import claims, notebook, results, sentences, tables
from widedeep.studies import block_structure, pruning
from widedeep.studies import errors as errors_study
from widedeep.studies import stored
from widedeep.train import TrainConfig

SMOKE = profiles.load_profile("smoke")


# ---------------------------------------------------------------------------------------------
# Chapters 1-2: checks with known answers
# ---------------------------------------------------------------------------------------------

def test_cka_checks_on_random_data():
    generator = torch.Generator().manual_seed(0)
    x, invariances = checks.cka_invariances(generator, n=200, d=16)
    assert all(invariances[k] == pytest.approx(1, abs=1e-10) for k in checks.CKA_INVARIANT_TO)
    assert invariances["invertible linear map"] < 0.95 and invariances["independent noise"] < 0.3
    y = checks.correlated_layer(x, generator, width=8)
    full = pytest.importorskip("widedeep.measures.cka").linear_cka(x, y, debiased=True)
    errors = checks.minibatch_errors(x, y, full, (10, 200), trials=3, generator=generator)
    assert errors[200] == pytest.approx(0, abs=1e-10) and errors[10] > errors[200]  # one batch is the full estimate


def test_parameter_ratios_and_planted_layers():
    rows = [{"depth": 8, "width": w, "parameters": p} for w, p in ((1, 100), (2, 380))]
    assert checks.width_parameter_ratios(rows, 8, [1, 2]) == [(1, 1.0, 1.0), (2, 3.8, 4.0)]
    planted = checks.planted_layers(np.random.default_rng(0), samples=50)
    assert planted["a"].shape == planted["b"].shape == (11, 50) and not planted["a"][-1].any()
    np.testing.assert_allclose(planted["b"][:6], planted["mixing"] @ planted["shared"])


def test_summaries_and_sentences_of_chapter_1():
    rows = [{"test_acc": 0.8, "train_acc": 1.0}, {"test_acc": 0.6, "train_acc": 0.9}]
    assert tables.accuracy_summary(rows) == pytest.approx({"min_test_acc": 0.6, "max_test_acc": 0.8, "mean_gap": 0.25})
    assert tables.rising_sentence(0, 0).startswith("not tested here")
    assert tables.rising_sentence(2, 3) == "in 2 of the 3 (architecture, seed) series with more than one training-set size"


def test_labels_are_derived_in_one_place():
    config = TrainConfig(depth=20, width=2, n_train=500, seed=3, epochs=1, batch_size=50, n_val=200, n_test=1000)
    assert labels.run_label(config) == "ResNet-20 ×2, n=500, s3" == results.label(vars(config))
    assert labels.architecture_of(config) == "ResNet-20 ×2"
    assert labels.architecture_label(20, 1, residual=False) == "plain-20 ×1"


def test_glue_all_glues_every_value_without_display(monkeypatch):
    glued = []
    import myst_nb
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: glued.append((key, value, display)))
    notebook.glue_all({"a": 1, "b": "two"})
    assert glued == [("a", 1, False), ("b", "two", False)]
    assert notebook.Clock().elapsed() >= 0


def test_show_wraps_long_output_at_the_page_width(capsys):
    name = "fmnist16-resnet110x1-n500-s0-93fa3225"
    notebook.show("profile 'cpu':", ", ".join(f"key_{i} {i}" for i in range(30)), "model", name)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= notebook.WIDTH for line in lines)
    assert lines[1].startswith("  ") and any(name in line for line in lines)  # run names are not broken


# ---------------------------------------------------------------------------------------------
# Chapters 3-4: the block structure
# ---------------------------------------------------------------------------------------------

def test_grid_layout_sweep_and_trend_verdicts():
    blocked, plain = analysed(0), analysed(0, with_block=False, depth=20)
    plain = dataclasses.replace(plain, cka=np.eye(len(plain.names)) * 0.6 + 0.4)  # uniform: no block at any setting
    layout = structure.grid_layout([blocked, plain, analysed(1)], [(14, 1), (20, 1), (26, 1)], [1000, 500], seed=0)
    assert layout == [[None, None, None], [blocked, plain, None]]   # only seed 0, at its own n_train
    sweep = structure.threshold_sweep([blocked, plain], PARAMS)
    name = blocked.run.config.name()
    assert sweep[name] == {"with_pc1": [4], "cka_only": [4], "by_min_pc1": [4]}  # the planted 4-layer block
    assert sweep[plain.run.config.name()]["with_pc1"] == [0]
    assert structure.sweep_counts(sweep, [0.9], "with_pc1") == "1 at 0.9"
    rows = [{**blocked.summary(), "depth": 26}, plain.summary()]   # a deeper model with the block
    verdicts, incidence = trends.grid_verdicts(rows)
    assert verdicts["capacity"] == v.SHOWN and verdicts["data"] == v.NOT_SHOWN
    assert incidence["incidence"] == "at n_train = 500: ResNet-26 ×1 (1 of 2 models)"
    assert blocked.stream_cka.shape == (len(blocked.stream),) * 2


def planted_grid(profile, train_acc, with_block):
    """Every main-arm model of `profile` as a planted analysis, its train accuracy and block chosen per config."""
    models = []
    for config in experiments.training_grid(profile):
        run, cka, names, kinds, shares, _ = planted(config.depth)
        run.config = config
        run.metrics = {"final": {"test_acc": 0.8, "train_acc": train_acc(config)},
                       "parameters": int(1e4 * config.depth * config.width ** 2)}
        block, cka_only = structure.detect(cka, kinds, shares[:, 0], PARAMS) if with_block(config) else (None, None)
        models.append(structure.BlockAnalysis(run, cka, names, kinds, shares, block, cka_only))
    return models


def test_a_grid_model_that_misses_the_interpolation_rule_is_left_out_of_the_law():
    profile = profiles.with_values(SMOKE, n_trains=[250, 500, 1000], seeds=[0, 1], min_train_acc=0.99)
    missing = experiments.training_grid(profile)[4]
    grid = planted_grid(profile, lambda c: 0.95 if c == missing else 1.0,
                        lambda c: (c.depth == 14 or c.width == 2) == (c.n_train <= 500))
    models = block_structure.Models(tuple(grid), (), ())
    study = block_structure.study(models, block_structure.settings(profile))
    assert [r["name"] for r in study.left_out] == [missing.name()]
    assert missing.name() not in {r["name"] for r in study.main_rows} and len(study.main_rows) == len(grid) - 1
    assert study.rule_held() == (len(grid) - 1, len(grid), 0.95)
    assert {c["n"] for c in study.claims.values()} == {len(grid) - 1} and study.claims["capacity"]["left_out"] == 1
    assert study.fits["continuous_fit"].n_models == len(grid) - 1         # the law never saw it
    assert "train accuracy 0.950" in sentences.left_out_sentence(study.left_out)
    assert study.claims_fit["left_out"] == [missing.name()]
    assert tuple(stored(study)) == results.CHAPTERS[block_structure.CHAPTER].keys
    # the same models give an equal result whatever ran before (here: another study of them, without a rule)
    unruled = block_structure.study(models, block_structure.settings(profiles.with_values(profile, min_train_acc=None)))
    assert unruled.left_out == []                                          # without a rule (smoke) nothing is left out
    again = block_structure.study(models, block_structure.settings(profile))
    assert results._plain(stored(again)) == results._plain(stored(study))


def test_first_pc_summaries_broken_blocks_and_records():
    blocked, unblocked = analysed(0), analysed(1, with_block=False)
    summary = sentences.share_summary([blocked, unblocked])
    assert summary["n_blocked"] == "1 of 2" and summary["pc1_inside"] == "0.70" and summary["pc1_max"] == "0.70"
    assert first_pc.focus([blocked, unblocked]) == [blocked]
    assert first_pc.focus([unblocked]) == [unblocked]
    faded = np.where(blocked.stream_cka == 0.97, 0.6, blocked.stream_cka)
    effects = [structure.removal_effect(m, faded, PARAMS) for m in (blocked, unblocked)]
    tested, broken, change = first_pc.broken_blocks([blocked, unblocked], effects, PARAMS)
    assert tested == broken == [blocked] and change == pytest.approx([0.0])
    roles = {m.run.config.name(): {"role": "seed_study", "left_out": None} for m in (blocked, unblocked)}
    entries = first_pc.entries([blocked, unblocked], effects, {0: {1: (0.3, 0.9)}}, [blocked, unblocked], roles)
    assert entries[0]["cross_seed_cka_inside"] == 0.3 and "cross_seed_cka_inside" not in entries[1]
    assert entries[0]["cross_seed_pairs"] == {"1": [0.3, 0.9]} and entries[0]["role"] == "seed_study"
    assert entries[0]["span_from"] == "block" and entries[0]["block_after_pc1_removal"] is None
    assert sentences.split_sentence({0: (0.3, 0.9)}) == "seed 0: 0.30 inside its block vs 0.90 outside"
    assert sentences.split_sentence({}) == "no seed has a block"
    assert first_pc.mean_matched({(0, 1): np.diag([0.5, 1.0])}) == 0.75
    by_size = first_pc.by_data_size([blocked, unblocked], [500], seed=0)
    assert by_size == {"n_train = 500": [blocked]}
    assert "PC1 share inside block" in tables.pc_share_table([blocked, unblocked])
    assert tables.removal_table([blocked], effects[:1]).count("\n") == 2


# ---------------------------------------------------------------------------------------------
# Chapter 5: probes, deletions and their controls
# ---------------------------------------------------------------------------------------------

def probe_rows(m, accuracies):
    return [{"layer": name, "l2": 0.1, "train_acc": 1.0, "val_acc": a, "test_acc": a}
            for name, a in zip(m.stream_names, accuracies)]


def effects(inside_cost, outside_cost, inside, examples=10_000):
    """Deletion effects: every block but the first of each stage deletable, costs by side; each deletion loses the
    first examples (as many as its cost says), so the per-example flips agree with the accuracy changes."""
    deletions = [{"block_index": i, "delta_acc": inside_cost if inside[i] else outside_cost,
                  "delta_acc_repaired": 0.0, "inside_block": inside[i], "gained": [],
                  "lost": list(range(round(-(inside_cost if inside[i] else outside_cost) * examples)))}
                 for i in range(len(inside))]
    curve = [{"n_deleted": 0, "blocks": [], "delta_acc": 0.0, "delta_acc_repaired": 0.0}]
    return {"baseline_acc": 0.8, "repair_only_delta": 0.0, "deletions": deletions, "examples": examples,
            "cumulative_inside": curve + [{"n_deleted": 1, "blocks": [2], "delta_acc": inside_cost,
                                           "delta_acc_repaired": 0.0}],
            "cumulative_outside": curve + [{"n_deleted": 1, "blocks": [0], "delta_acc": outside_cost,
                                            "delta_acc_repaired": 0.0}]}


def pruning_result(monkeypatch, models, rows, costs, left_out=()):
    """Chapter 5's study on planted models whose records are `rows` (probe rows) and `costs` (deletion effects) by
    label; the models in `left_out` miss the interpolation rule (train accuracy 0.5 against 0.85)."""
    for m in models:
        m.run.layers, m.run.architecture = (lambda names=m.names: [None] * len(names)), None
        m.run.metrics["final"]["train_acc"] = 0.5 if m in left_out else 0.9
    label = {id(m.run): m.label for m in models}
    monkeypatch.setattr(runs, "run_probes", lambda run, layers, settings: rows[label[id(run)]])
    monkeypatch.setattr(runs, "run_deletions", lambda run, membership, settings: costs[label[id(run)]])
    monkeypatch.setattr(deletion, "block_membership", lambda architecture, span: [])
    roles = {m.run.config.name(): "grid" for m in models}
    return pruning.study(models, pruning.Settings(SMOKE.probes, SMOKE.deletion, 0.85, roles))


INSIDE = [False, True, True, False, False, False]
FLAT = [0.5, 0.6, 0.8, 0.8, 0.81, 0.8, 0.9]       # stream layers 2..5 are the block: a plateau
RISING = [0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9]


def test_pruning_study_judges_plateau_position_and_deletion_cost(monkeypatch):
    blocked, control = analysed(0), analysed(1, with_block=False)
    for m in (blocked, control):
        m.run.test_acc = 0.8
    rows = {blocked.label: probe_rows(blocked, FLAT), control.label: probe_rows(control, RISING)}
    costs = {blocked.label: effects(-0.01, -0.10, INSIDE), control.label: effects(-0.09, -0.10, INSIDE)}
    study = pruning_result(monkeypatch, [blocked, control], rows, costs)
    assert study.with_block == [blocked.label] and study.controls == []
    shown, note = sentences.pruning_focus(study, "smoke")
    assert shown == [blocked, control] and note.startswith("1 of 2 models have a block")
    # one blocked model: every verdict is at most "suggestive (1 model)" (book/protocol.md)
    texts = sentences.pruning_probes(study)
    assert texts["probe_verdict"] == v.suggestive(1) and study.model_verdicts[blocked.label]["probe"] == v.PLATEAU
    assert study.model_verdicts[blocked.label]["probe_change"] == pytest.approx(0.01)
    position = sentences.pruning_probe_position(study)
    assert position["probe_specific"] == v.suggestive(1)   # the control rises 0.10 across the same layers
    assert position["probe_headline"] == "suggestive (1 model), specificity suggestive (1 model) (n = 1)"
    assert pruning.inside_stream(blocked, blocked.block)[2:6] == [True] * 4
    assert not any(pruning.inside_stream(control, None))
    assert sentences.pruning_deletions(study)["single_verdict"] == v.suggestive(1)
    assert study.deletion_scores[blocked.label]["score"] == pytest.approx(0.09)
    assert study.deletion_scores[blocked.label]["se"] == pytest.approx((0.09 * 0.91 / 10_000) ** 0.5, rel=0.25)
    texts = sentences.pruning_position(study)
    # Inside costs 0.01 in the blocked model and 0.09 at the same positions without a block: beyond position.
    assert texts["position_verdict"] == v.suggestive(1) and study.position[blocked.label]["control_inside"] == -0.09
    assert study.position[blocked.label]["beyond_position"] == pytest.approx(0.09 - (-0.09 + 0.10))
    assert sentences.pruning_cumulative(study)["cumulative_verdict"] == v.suggestive(1)
    assert set(study.verdicts) == set(sentences.FOUND) and all(v.head(x) for x in study.verdicts.values())
    record = stored(study)
    name, control_name = blocked.run.config.name(), control.run.config.name()
    assert list(record["models"]) == [name, control_name]
    assert record["position_control"][name]["controls"] == [control_name]
    assert record["probe_position_control"] == {name: {control_name: pytest.approx(0.8 - 0.65)}}
    assert {"probe", "probe_plateau", "probe_specific", "deletion", "deletion_beyond_position"} <= set(
        record["claims"])
    results.validate({"schema_version": results.SCHEMA_VERSION,
                      "provenance": dict.fromkeys(results.PROVENANCE_KEYS, ""), **results._plain(record)}, "05_pruning")
    assert "mean Δ in / out" in tables.deletion_table(study) and "CKA-only" not in tables.spans_table(study)
    # the same records give an equal result whatever ran before (here: a study of other models in between)
    pruning_result(monkeypatch, [blocked], rows, costs)
    again = pruning_result(monkeypatch, [blocked, control], rows, costs)
    assert results._plain({**stored(again), "timing_s": {}}) == results._plain({**record, "timing_s": {}})


def test_a_deletion_score_with_a_standard_error_over_the_bound_is_left_out_and_counted(monkeypatch):
    models = [analysed(s) for s in range(4)]
    rows = {m.label: probe_rows(m, FLAT) for m in models}
    costs = {m.label: effects(-0.01, -0.10, INSIDE, examples=10_000 if m.run.config.seed else 100)
             for m in models}   # seed 0 scored on 100 examples: standard error ~0.03
    study = pruning_result(monkeypatch, models, rows, costs)
    claim = study.named_claims["deletion"]
    assert study.deletion_scores[models[0].label]["se"] > 0.005 and not study.deletion_scores[models[0].label]["kept"]
    assert claim["n"] == 3 and claim["left_out"] == 1 and claim["over_se"] == [models[0].label]
    assert claim["verdict"] == v.SHOWN   # the three kept models agree exactly
    assert "1 with a standard error over 0.005" in claim["left_out_why"]
    # every model has a block: nothing to control position with
    assert study.named_claims["deletion_beyond_position"]["verdict"] == "not testable: no position control"
    noisy = pruning_result(monkeypatch, models, rows, {m.label: effects(-0.01, -0.10, INSIDE, examples=100)
                                                       for m in models})
    assert noisy.named_claims["deletion"]["n"] == 0 and noisy.named_claims["deletion"]["left_out"] == 4
    assert noisy.named_claims["deletion_beyond_position"]["verdict"].endswith("within its standard-error bound")


def test_the_probe_row_states_the_plateau_and_its_control_in_one_headline(monkeypatch):
    blocked = [analysed(s) for s in range(3)]
    controls = [analysed(s, with_block=False) for s in range(3, 5)]
    costs = {m.label: effects(-0.01, -0.10, INSIDE) for m in blocked + controls}
    rows = {m.label: probe_rows(m, [x + 0.001 * i for x in FLAT]) for i, m in enumerate(blocked)}
    plateau_too = rows | {m.label: probe_rows(m, FLAT) for m in controls}   # the controls plateau there too
    study = pruning_result(monkeypatch, blocked + controls, plateau_too, costs)
    assert study.named_claims["probe_plateau"]["verdict"] == v.SHOWN
    assert study.named_claims["probe"]["verdict"] == "shown, not specific to the block (n = 3)"
    rising = rows | {m.label: probe_rows(m, [x + 0.002 * i for x in RISING]) for i, m in enumerate(controls)}
    study = pruning_result(monkeypatch, blocked + controls, rising, costs)
    assert study.named_claims["probe"]["verdict"] == "shown, specific to the block (n = 3)"
    alone = pruning_result(monkeypatch, blocked, rising, costs)   # no model without a block: no control
    assert alone.named_claims["probe"]["verdict"] == "shown, control not testable (n = 3)"


def test_a_grid_model_below_the_interpolation_rule_is_not_judged(monkeypatch):
    models = [analysed(s) for s in range(4)]
    study = pruning_result(monkeypatch, models, {m.label: probe_rows(m, FLAT) for m in models},
                           {m.label: effects(-0.01, -0.10, INSIDE) for m in models}, left_out=models[:1])
    assert study.named_claims["probe_plateau"]["n"] == 3 and study.named_claims["probe_plateau"]["left_out"] == 1


# ---------------------------------------------------------------------------------------------
# Chapter 6: populations
# ---------------------------------------------------------------------------------------------

def error_populations(shift: int) -> errors_study.Populations:
    """Synthetic predictions: 4 deep seeds right on the first 150 of 200 examples, 2 wide seeds that also get
    `shift` of the last 50 right and as many of the first 150 wrong (validation: the same predictions)."""
    labels_ = np.arange(200) % 10
    wrong = (labels_ + 1) % 10
    deep = np.stack([np.where(np.arange(200) < 150, labels_, wrong)] * 4)
    wide_row = deep[0].copy()
    wide_row[150:150 + shift], wide_row[:shift] = labels_[150:150 + shift], wrong[:shift]
    wide = np.stack([wide_row] * 2)
    sides = {"wide": errors_study.Side("ResNet-8 ×2", 8, 2, 500, (0, 1), (0.75, 0.75), 10),
             "deep": errors_study.Side("ResNet-14 ×1", 14, 1, 500, (0, 1, 2, 3), (0.75,) * 4, 10)}
    predictions = {"wide": wide, "deep": deep}
    return errors_study.Populations(sides, predictions, predictions, labels_, labels_, tuple(str(c) for c in range(10)))


def test_error_study_finds_planted_differences_and_records_them():
    same = errors_study.study(error_populations(0), SMOKE.errors)
    different = errors_study.study(error_populations(40), SMOKE.errors)
    assert sentences.errors_accuracy(same)["matched"] == "matched" == sentences.errors_accuracy(different)["matched"]
    assert same.verdicts["example_level_half_splits"] == v.NOT_SHOWN   # identical seeds everywhere: nothing to find
    text = sentences.errors_examples(different)
    assert text["beyond_difference"] == "exceeds" and v.head(text["example_verdict"]) in (v.SHOWN, v.NOT_SHOWN)
    assert different.p_floor == pytest.approx(2 / 6)   # m = 2: all right against all wrong
    assert sentences.errors_count_demand(different)["count_demand"] == "a demanding statistic"
    power_texts = sentences.errors_power(different)
    assert float(power_texts["power_null"]) < 1
    assert different.power["curve"][0]["m_a"] == SMOKE.errors.power_seeds[0]
    assert power_texts["power_holds"].startswith("This run holds 2 wide seeds")

    main = sentences.errors_main(different)
    # 2 wide against 4 deep seeds: the floor 1/C(6, 2) lies above q, so no example is even testable.
    assert main["main_found"] == "0" and main["main_kept"] == "0" and v.head(main["main_verdict"]) in v.VERDICTS
    assert set(different.scatter) == {"ResNet-8 ×2 vs ResNet-14 ×1", "deep half 1 vs deep half 2"}
    assert sentences.errors_main(same)["main_found"] == "0"
    assert v.head(sentences.errors_classes(different)["class_verdict"]) in v.VERDICTS
    record = stored(different)
    assert record["wide"]["depth"] == 8 and record["verdicts"]["example_level_half_splits"] == text["example_verdict"]
    assert record["verdicts"]["example_level"] == main["main_verdict"]
    assert record["settings"] == SMOKE.section_values("errors")
    results.validate({"schema_version": results.SCHEMA_VERSION,
                      "provenance": dict.fromkeys(results.PROVENANCE_KEYS, ""), **results._plain(record)}, "06_errors")
    assert "test accuracy per seed" in tables.populations_table(different.populations)


def test_the_power_sentence_says_when_the_run_holds_too_few_seeds():
    assert "fewer than the 6" in sentences.power_holds(3, 6, 32) and "underpowered" in sentences.power_holds(3, 6, 32)
    assert sentences.power_holds(6, 6, 32) == "This run holds 6 wide seeds, at least the 6 the curve asks for."
    assert "no population up to 32 wide seeds" in sentences.power_holds(3, None, 32)


def test_error_study_gives_its_verdicts_whatever_ran_before():
    """The main verdict rests on the example-level difference, computed inside the one call (no call order)."""
    first = errors_study.study(error_populations(40), SMOKE.errors)
    errors_study.study(error_populations(0), SMOKE.errors)
    again = errors_study.study(error_populations(40), SMOKE.errors)
    np.testing.assert_equal(stored(first), stored(again))
    assert v.head(first.verdicts["example_level"]) != v.NOT_TESTABLE   # judged, not "not testable" for want of a step


# ---------------------------------------------------------------------------------------------
# Chapter 7 and the claims
# ---------------------------------------------------------------------------------------------

def test_match_sentences_and_the_chapter_4_sentence(tmp_path):
    assert sentences.rank_sentence(-0.8).startswith("the two measures rank the layers alike")
    assert sentences.rank_sentence(0.7) == "they rank the layers in opposite orders"
    assert sentences.truncation_sentence(0.97, 0.2).endswith("loses most neurons")
    assert "react alike" in sentences.truncation_sentence(0.97, 0.9)
    assert claims.block_uniqueness(tmp_path).endswith("(its results are not here yet)")
    table = claims.claims_table([{"claim": "c", "verdict": "shown", "evidence": "e", "figure": "f",
                                  "chapter": "03_block_structure"}])
    assert "**shown**" in table and "[Chapter 3](03_block_structure.md)" in table
