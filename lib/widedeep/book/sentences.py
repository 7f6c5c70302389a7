"""The values a chapter's prose quotes, worded from its study's typed result (never computed here).

Layer: book support (on `widedeep.studies`). Each function takes a study's result and returns
{glue name: text} for `notebook.glue_all`; the numbers and verdicts come from the result, this
module only formats them.
"""

from __future__ import annotations

import numpy as np

from widedeep import protocol
from widedeep.analyses import errors, measure_tests, power, runs, verdicts, vit
from widedeep.labels import entry_label
from widedeep.measures import subspace
from widedeep.studies.errors import ErrorsResult
from widedeep.studies.pruning import PruningResult, specificity
from widedeep.studies.subspace_match import SubspaceMatchResult
from widedeep.studies.vit import VitResult


def spread(values: np.ndarray, digits: int) -> str:
    """Median and range over splits: '12 (range 3–20)'."""
    return f"{np.median(values):.{digits}f} (range {np.min(values):.{digits}f}–{np.max(values):.{digits}f})"


def exceeds(flag: bool) -> str:
    """'exceeds' or 'does not exceed', as the prose compares a statistic with its null."""
    return "exceeds" if flag else "does not exceed"


# ---------------------------------------------------------------------------------------------
# Chapter 6: wide and deep errors
# ---------------------------------------------------------------------------------------------

def errors_accuracy(result: ErrorsResult) -> dict[str, str]:
    """Mean validation accuracies over seeds (the match), their gap and Welch p-value; test accuracies beside."""
    m, test, sides = result.accuracy_match, result.accuracy_match["test"], result.populations.sides
    return {"wide_model": sides["wide"].architecture, "deep_model": sides["deep"].architecture,
            "acc_wide": f"{m['acc_a']:.3f} ± {m['std_a']:.3f}", "acc_deep": f"{m['acc_b']:.3f} ± {m['std_b']:.3f}",
            "acc_gap": f"{m['diff']:+.3f}", "acc_p": f"{m['p_value']:.2g}",
            "matched": "matched" if m["matched"] else "not matched",
            "match_tolerance": f"{result.section.match_tolerance:g}",
            "test_acc_wide": f"{test['acc_a']:.3f}", "test_acc_deep": f"{test['acc_b']:.3f}"}


def errors_examples(result: ErrorsResult) -> dict[str, str]:
    """The example-level tests over paired half-splits, against the null of two halves of the deep seeds."""
    s, paired, level = result.section, result.paired, result.example_level
    wide, deep = (result.populations.test[side] for side in ("wide", "deep"))
    return {"fdr": f"{s.fdr:g}", "splits": str(s.splits), "null_percentile": f"{100 * s.null_quantile:g}th percentile",
            "test_discoveries": spread(paired["test_n_significant"], 0),
            "null_discoveries": spread(paired["null_n_significant"], 0),
            "test_abs_diff": spread(paired["test_mean_abs_diff"], 3),
            "null_abs_diff": spread(paired["null_mean_abs_diff"], 3),
            "beyond_discoveries": exceeds(level["beyond_null_discoveries"]),
            "beyond_difference": exceeds(level["beyond_null_difference"]),
            "example_verdict": result.verdicts["example_level_half_splits"],
            "m": str(result.m), "n_examples": f"{result.populations.labels.size:,}",
            "all_seeds_discoveries": str(result.all_seeds["n_significant"]),
            "all_seeds": f"{wide.shape[0]} wide against {deep.shape[0]} deep"}


def errors_count_demand(result: ErrorsResult) -> dict[str, str]:
    """Whether a discovery count can exceed zero at this size: the p floor against BH's first threshold."""
    floor, fdr, n = result.p_floor, result.section.fdr, result.populations.labels.size
    first_threshold = fdr / n  # what BH asks of the smallest p-value alone
    return {"p_floor": f"{floor:.2g}", "first_threshold": f"{first_threshold:.2g}",
            "floor_examples": f"{errors.bh_examples_needed(floor, n, fdr):,}",
            "count_demand": "a demanding statistic" if floor > first_threshold else "within reach"}


def errors_power(result: ErrorsResult) -> dict[str, str]:
    """The power curve: discoveries expected at this population size, the size that reaches the wanted count."""
    s, curve, enough = result.section, result.power["curve"], result.power["smallest_population"]
    wide_seeds = result.populations.test["wide"].shape[0]
    here = min(curve, key=lambda p: abs(p["m_a"] - wide_seeds))
    return {"power_m": str(wide_seeds), "power_wanted": f"{s.power_wanted:g}",
            "power_here": f"{here['expected_discoveries']:.1f} (at m = {here['m_a']})",
            "power_enough": (f"{enough} wide and {2 * enough} deep seeds" if enough is not None
                             else f"more than {max(s.power_seeds)} wide seeds (no point of the curve reaches it)"),
            "power_null": f"{max(p['expected_false_discoveries_under_null'] for p in curve):.2f}",
            "power_holds": power_holds(wide_seeds, enough, max(s.power_seeds))}


def power_holds(wide_seeds: int, enough: int | None, largest: int) -> str:
    """Whether the run holds the wide seeds the power curve asks for, said plainly either way."""
    if enough is None:
        return (f"This run holds {wide_seeds} wide seeds; no population up to {largest} wide seeds reaches the "
                f"wanted discoveries, so the example-level test here cannot be expected to find the effect.")
    if wide_seeds < enough:
        return (f"This run holds {wide_seeds} wide seeds, fewer than the {enough} the curve asks for: by this "
                f"analysis' own account its example-level test is underpowered, and a negative answer says little.")
    return f"This run holds {wide_seeds} wide seeds, at least the {enough} the curve asks for."


def errors_main(result: ErrorsResult) -> dict[str, str]:
    """The main test of all seeds against its half-split calibration."""
    main = result.main_test
    wide, deep = (result.populations.test[side].shape[0] for side in ("wide", "deep"))
    return {"main_found": str(main["n_significant"]), "main_kept": f"{main['n_kept']:,}",
            "main_floor": f"{power.p_floor(wide, deep):.2g}", "split_floor": f"{power.p_floor(result.m, result.m):.2g}",
            "calibration": spread(result.calibration, 0), "main_verdict": main["verdict"],
            "main_beyond": exceeds(result.main_beyond)}


def class_list(classes, found: dict) -> str:
    """The classes whose interval excludes zero, with the sign of the difference."""
    names = [f"{classes[c]} ({found['diff'][c]:+.3f})" for c in np.flatnonzero(found["excludes_zero"])]
    return ", ".join(names) or "none"


def errors_classes(result: ErrorsResult) -> dict[str, str]:
    """The class-level numbers, judged like the examples (paired half-splits against the null's quantile)."""
    classes, level, paired = result.populations.classes, result.class_level, result.paired_class
    k, by_class, null_class = len(classes), result.by_class, result.null_class
    return {"level": f"{result.section.level:.0%}", "n_classes": str(k),
            "classes_excluding": f"{int(by_class['excludes_zero'].sum())} of {k}",
            "class_list": class_list(classes, by_class),
            "classes_excluding_null": f"{int(null_class['excludes_zero'].sum())} of {k}",
            "class_list_null": class_list(classes, null_class), "class_verdict": result.verdicts["class_level"],
            "largest_class_gap": f"{np.max(np.abs(by_class['diff'])):.3f}",
            "largest_null_gap": f"{np.max(np.abs(null_class['diff'])):.3f}",
            "class_test_counts": spread(paired["test_n_excluding"], 0),
            "class_null_counts": spread(paired["null_n_excluding"], 0),
            "class_test_diff": spread(paired["test_mean_abs_diff"], 3),
            "class_null_diff": spread(paired["null_mean_abs_diff"], 3),
            "class_beyond_count": exceeds(level["beyond_null_count"]),
            "class_beyond_mean": exceeds(level["beyond_null_difference"])}


# ---------------------------------------------------------------------------------------------
# Chapter 7: the subspace match beside CKA
# ---------------------------------------------------------------------------------------------

def rank_sentence(rank_corr: float) -> str:
    """What a Spearman correlation of mean CKA with the ε for half the neurons says (high CKA, low ε: alike)."""
    if rank_corr <= -0.5:
        return "the two measures rank the layers alike (more similar under CKA, closer subspaces)"
    return "they rank the layers in opposite orders" if rank_corr >= 0.5 else "the rankings are only loosely related"


def truncation_sentence(top_cka: float, top_match: float) -> str:
    """How the measures react to keeping only a layer's top directions: 'hardly notices' is CKA >= 0.95, 'loses
    most neurons' a match below one half."""
    hardly_notices, loses_most = top_cka >= 0.95, top_match < 0.5
    return f"CKA is {top_cka:.3f} and the match {top_match:.2f}: " + (
        "CKA, which weights directions by their variance, hardly notices, while the match, which asks every neuron "
        "to lie within ε of the other span, loses most neurons" if hardly_notices and loses_most else
        "the match loses most neurons, and CKA drops too" if loses_most else
        "on this layer the two measures react alike")


def subspace_across_seeds(result: SubspaceMatchResult) -> dict[str, str]:
    """Every pair's scores by ε, linear CKA of the same layers, and the range of the ε for half the neurons."""
    eps, layers = result.eps, result.layers
    low_eps, half = result.scores[:, :, 0].mean(0), result.half_eps.mean(0)
    lowest, highest = int(np.nanargmin(half)), int(np.nanargmax(half))
    return {"examples": str(result.section.examples),
            "score_by_eps": ", ".join(f"{s:.2f} at ε = {e:g}" for e, s in zip(eps, result.by_eps)),
            "cka_mean": f"{result.cka.mean():.2f}", "cka_min": f"{result.cka.min():.2f}",
            "low_eps": f"{eps[0]:g}", "low_eps_range": f"{low_eps.min():.2f}–{low_eps.max():.2f}",
            "half_eps_range": f"{half[lowest]:.2f} ({layers[lowest]}) to {half[highest]:.2f} ({layers[highest]})"}


def subspace_verdict(result: SubspaceMatchResult) -> dict[str, str]:
    """Wang et al.'s finding, layer by layer, at the loosest ε: the verdict and the layers that escape it."""
    claim, layers = result.claim, result.layers
    loosest = int(np.argmax(result.eps))
    bounds = claim.get("layer_intervals") or [[np.nan, np.nan]] * len(layers)
    high = [f"{name} ({score:.2f}, upper bound {bound[1]:.2f})" for name, score, bound in
            zip(layers, result.scores[:, :, loosest].mean(0), bounds) if not bound[1] < 0.5]
    return {"wang_verdict": claim["verdict"], "low_layers": f"{claim.get('k', 0)} of {len(layers)}",
            "loose_eps": f"{result.eps[loosest]:g}", "wang_n": verdicts.describe(claim),
            "high_layers": ", ".join(high) or "none"}


def subspace_sampling(result: SubspaceMatchResult) -> dict[str, str]:
    """The authors' sampling against the exact Grams."""
    s = result.section
    return {"n_samples": f"{s.samples:,}", "n_draws": str(s.draws), "paper_samples": f"{subspace.PAPER_SAMPLES:,}",
            "paper_draws": str(subspace.PAPER_DRAWS),
            "sampling_gap": f"{result.gap.mean():.3f} (largest {result.gap.max():.3f})"}


def subspace_simple(result: SubspaceMatchResult) -> dict[str, str]:
    """Simple-match sizes in the layers of the first pair whose maximum match is not empty."""
    candidates = np.flatnonzero(result.simple_scores > 0)
    sizes = [s for per_layer in result.simple_sizes.values() for s in per_layer]
    return {"simple_eps_text": f"{result.section.simple_eps:g}",
            "simple_candidates": f"{candidates.size} of {len(result.layers)}",
            "simple_summary": f"median {np.median(sizes):.0f}, range {min(sizes)}–{max(sizes)} neurons"
            if sizes else "none (the maximum matches are empty)"}


def subspace_disagreement(result: SubspaceMatchResult) -> dict[str, str]:
    """The rank correlation over layers and the two measures on one transformed real layer."""
    (mix_cka, _), (top_cka, top_match) = result.checks.values()
    return {"rank_corr": f"{result.rank_corr:+.2f}", "rank_sentence": rank_sentence(result.rank_corr),
            "mix_cka": f"{mix_cka:.2f}", "trunc_keep": f"{result.kept} of {result.layer_channels}",
            "probe_layer": result.layer, "energy_kept": f"{result.section.energy_kept:.0%}",
            "trunc_sentence": truncation_sentence(top_cka, top_match)}


def subspace_block(result: SubspaceMatchResult) -> dict[str, str]:
    """Each blocked seed's block under the match, inside against outside, in one sentence."""
    sentences = []
    for name, b in result.block.items():
        farther = b["half_eps_inside"] > b["half_eps_outside"]
        sentences.append(
            f"{result.block_labels[name]} matches the other seeds in {b['score_inside']:.2f} of the neurons inside "
            f"its block and {b['score_outside']:.2f} outside (ε = {b['eps']:g}); half the neurons match at ε = "
            f"{b['half_eps_inside']:.2f} inside against {b['half_eps_outside']:.2f} outside, so the block's "
            "subspaces are " + ("farther from the other seeds' than the rest of the network's" if farther else
                                "no farther from the other seeds' than the rest of the network's"))
    return {"block_sentence": "; ".join(sentences) + " (Chapter 4 asks the same question under CKA)"
            if sentences else "no seed has a block, so this profile cannot ask"}


# ---------------------------------------------------------------------------------------------
# Chapter 3: the block structure
# ---------------------------------------------------------------------------------------------

def coefficient_text(fits: dict | None, key: str) -> str:
    """'capacity 0.012 [-0.01, 0.03], data ...' of one fitted law, or why there is none."""
    if fits is None:
        return "not fitted: the arm cannot separate capacity from data"
    fit = fits[key]
    if not fit.estimable:
        return f"not estimable ({fit.reason})"
    parts = [f"{name} {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for name, v in fit.coefficients.items()]
    return ", ".join(parts) + f"; capacity + data = 0: p = {fit.relative_test_p:.3g}"


def training_length(effect: dict[str, float], counts_short: str, fit_short: str, short_models: int) -> str:
    """What the short schedule changes, averaged over the cells both arms trained; a profile may cut the short
    arm for its budget (the cpu protocol does), or train it on cells the main arm lacks, and the page says so."""
    if not short_models:
        return ("This run trains no model with the short schedule (the profile cuts that arm; see the protocol), "
                "so it says nothing about training length.")
    if effect:
        changes = {key: f"{effect[key]:+.3f}" for key in ("max_pc1_share", "block_size", "test_acc")}
        compared = (f"Averaged over the cells both arms trained, the short schedule changes the maximum first-PC "
                    f"share by {changes['max_pc1_share']}, the block size by {changes['block_size']} and test "
                    f"accuracy by {changes['test_acc']}.")
    else:
        compared = "No cell was trained under both schedules, so no difference between them is computed."
    return (f"With the short schedule {counts_short} models have a block. {compared} The law on the short arm "
            f"(maximum first-PC share): {fit_short}.")


def law_against_expected(fits: dict | None, expected: dict | None, effect: float) -> str:
    """The presence law's capacity interval this run got, beside the median interval the protocol expected of
    its grid under a true law of `effect` per log unit (`protocol_page.detection_summary`'s simulation)."""
    if expected is None:
        return "the protocol expected no interval: its grid cannot separate capacity from data"
    low, high = expected[effect]["capacity"]["median_interval"]
    said = (f"the protocol expected a median 95% interval of [{low:+.2f}, {high:+.2f}] (width {high - low:.2f}) "
            f"for the capacity coefficient under a true law of ±{effect:g} per log unit, shown in "
            f"{expected[effect]['capacity']['shown']:.0%} of its simulated runs")
    if fits is None or not fits["incidence_fit"].estimable:
        why = "the arm cannot separate capacity from data" if fits is None else fits["incidence_fit"].reason
        return f"{said}; this run's presence law is not estimable ({why})"
    _, got_low, got_high = fits["incidence_fit"].coefficients["capacity"]
    return f"{said}; this run's is [{got_low:+.2f}, {got_high:+.2f}] (width {got_high - got_low:.2f})"


def left_out_sentence(rows: list[dict]) -> str:
    """'none' or the grid models the interpolation rule leaves out of the law, with their train accuracy."""
    return "; ".join(f"{entry_label(r)} (train accuracy {r['train_acc']:.3f})" for r in rows) or "none"


# ---------------------------------------------------------------------------------------------
# Chapter 5: probes and deletions
# ---------------------------------------------------------------------------------------------

MAX_FOCUS = 6  # models with a block drawn in Chapter 5's figures
FOUND = {"probe_plateau": "probe accuracy plateaus across the block",
         "probe_plateau_specific_to_block": "compared with the same layers without a block, the plateau is",
         "single_deletion_cheaper_inside": "single deletions cost less inside the block",
         "single_deletion_cheaper_inside_beyond_position": "beyond what their position explains",
         "single_deletion_cheaper_inside_repaired": "the same after the BatchNorm repair",
         "cumulative_deletion_cheaper_inside": "several deletions cost less inside"}


def signed(value: float) -> str:
    """+0.012 style, or a dash where there is nothing to measure (NaN)."""
    return f"{value:+.3f}" if np.isfinite(value) else "—"


def pruning_tally(result: PruningResult, key: str, labels: list[str] | None = None) -> str:
    """The per-model verdicts on `key` as one sentence (models with a block by default)."""
    return verdicts.tally({k: result.model_verdicts[k][key]
                           for k in (result.with_block if labels is None else labels)})


def pruning_focus(result: PruningResult, profile_name: str) -> tuple[list, str]:
    """The models the figures show and a sentence saying why: those with a block (and one without, for
    contrast), or, where none has one, the model with the largest first-PC share."""
    models, blocked = list(result.analysed), list(result.blocked)
    if blocked:
        contrast = max([m for m in models if m.block is None], key=lambda m: (len(m.stream), m.run.test_acc),
                       default=None)
        shown = blocked[:MAX_FOCUS]
        note = (f"{len(blocked)} of {len(models)} models have a block; the figures show "
                f"{', '.join(m.label for m in shown)}" +
                (f", and for contrast {contrast.label}, which has none." if contrast else "."))
        return shown + ([contrast] if contrast else []), note
    fallback = max(models, key=lambda m: np.nanmax(m.pc1_share[m.stream]))
    span, _ = result.spans[fallback.label]
    note = (f"No model of the {profile_name!r} profile has a block under the book's definition, so the "
            f"paper's two claims cannot be tested on a block here. The figures show instead {fallback.label}, "
            f"the model with the largest first-PC share ({np.nanmax(fallback.pc1_share[fallback.stream]):.2f}), "
            + (f"with its CKA-only block ({fallback.span_name(span)}) shaded as a control."
               if span is not None else "which has no CKA-only block either: nothing is shaded."))
    return [fallback], note


def pruning_settings(result: PruningResult) -> dict[str, str]:
    """The probe and deletion settings as the prose quotes them (test and repair images as counted)."""
    p, d, first = result.section_probes, result.section_deletion, result.analysed[0].run
    splits = first.config.splits()
    blocked = [m for m in result.analysed if m.block is not None]
    return {"probe_pool": f"{p.pool}×{p.pool}", "probe_l2": ", ".join(f"{x:g}" for x in p.l2),
            "probe_test_examples": f"{len(runs.probe_splits(first, p).test):,}",
            "plateau_tol": f"{p.plateau_tol:.2f}", "margin": f"{d.margin:.2f}",
            "max_steps": "all" if d.max_steps is None else str(d.max_steps),
            "deletion_test_examples": f"{len(splits.test.first(d.test_examples)):,}",
            "deletion_repair_examples": f"{len(splits.train.first(d.repair_examples)):,}",
            "chance": f"{1 / first.config.num_classes:.2f}",
            "n_blocked": f"{len(blocked)} of {len(result.analysed)}",
            "n_judged": f"{len(result.judged)} of {len(result.blocked)}",
            "left_out": "; ".join(f"{m.label} ({result.left[m.label]})" for m in result.blocked
                                  if result.left[m.label]) or "none"}


def pruning_probes(result: PruningResult) -> dict[str, str]:
    """The plateau: the claim over the judged models, and each tested span's statistic."""
    plateau, mv = result.named_claims["probe_plateau"], result.model_verdicts
    changes = ", ".join(f"{k}: {mv[k]['probe_change']:.3f}" for k in result.with_block + result.controls)
    return {"probe_verdict": plateau["verdict"], "probe_n": verdicts.describe(plateau),
            "probe_tally": pruning_tally(result, "probe"),
            "probe_tally_controls": pruning_tally(result, "probe", result.controls),
            "probe_gains": changes or "none (no tested span)"}


def pruning_probe_position(result: PruningResult) -> dict[str, str]:
    """Whether the plateau belongs to the block: the position controls' probe statistic beside each model's."""
    specific = result.named_claims["probe_specific"]
    position = "; ".join(
        f"{k}: {result.model_verdicts[k]['probe_change']:.3f} in its block, "
        + (", ".join(f"{g:.3f}" for g in changes.values()) or "no control") + " at the same layers without a block"
        for k, changes in result.probe_position.items()) or "no model with a block"
    return {"probe_specific": specificity(specific["verdict"]), "probe_specific_n": verdicts.describe(specific),
            "probe_headline": result.named_claims["probe"]["verdict"], "probe_position": position}


def pruning_deletions(result: PruningResult) -> dict[str, str]:
    """Single deletions: the claim over the judged models kept by their standard error, and each model alone."""
    claim = result.named_claims["deletion"]
    return {"single_verdict": claim["verdict"], "single_n": verdicts.describe(claim),
            "single_verdict_repaired": result.agreement("single_repaired", verdicts.CHEAPER_INSIDE),
            "single_tally": pruning_tally(result, "single"),
            "single_tally_controls": pruning_tally(result, "single", result.controls),
            "deletion_se": ", ".join(f"{k}: {d['se']:.4f}" for k, d in result.deletion_scores.items()
                                     if d["se"] is not None) or "none",
            "max_se": f"{protocol.rules()['deletion_max_se']:g}"}


def pruning_position(result: PruningResult) -> dict[str, str]:
    """What position alone costs, and "cheaper inside" beyond it."""
    claim, mv = result.named_claims["deletion_beyond_position"], result.model_verdicts
    numbers = "; ".join(
        f"{k}: {mv[k]['mean_delta_inside']:+.3f} inside vs {mv[k]['mean_delta_outside']:+.3f} "
        f"outside, the same positions in {len(p['controls'])} model(s) without a block "
        f"{signed(p['control_inside'])} vs {signed(p['control_outside'])}" for k, p in result.position.items())
    return {"position_verdict": claim["verdict"], "position_n": verdicts.describe(claim),
            "position_numbers": numbers or "no model with a block"}


def pruning_cumulative(result: PruningResult) -> dict[str, str]:
    """The verdicts on several deletions: accuracy after the last one, inside against outside."""
    mv = result.model_verdicts
    ends = "; ".join(
        f"{k}: {mv[k]['cumulative_inside_end']:+.3f} inside vs {mv[k]['cumulative_outside_end']:+.3f} outside"
        for k in result.with_block + result.controls if result.effects[k]["cumulative_inside"])
    return {"cumulative_verdict": result.agreement("cumulative", verdicts.CHEAPER_INSIDE),
            "cumulative_tally": pruning_tally(result, "cumulative"),
            "cumulative_tally_repaired": pruning_tally(result, "cumulative_repaired"),
            "cumulative_ends": ends or "no curves"}


def pruning_found(result: PruningResult) -> str:
    """The verdicts on the two claims as one sentence of the chapter's summary."""
    return "; ".join(f"{FOUND[k]}{' ' if k == 'probe_plateau_specific_to_block' else ': '}{verdict}"
                     for k, verdict in result.verdicts.items())


# ---------------------------------------------------------------------------------------------
# Chapter 8: where the block comes from
# ---------------------------------------------------------------------------------------------

def removal_sentence(removal: dict[str, dict], label) -> str:
    """Per blocked model: block contrast before, after removing the dominant examples, and after random ones."""
    return "; ".join(f"{label(n)}: {e['contrast_before']:.2f} to {e['contrast_after_dominant']:.2f} (random "
                     f"{e['contrast_before'] - e['drop_random_mean']:.2f} ± {e['drop_random_sd']:.2f})"
                     for n, e in removal.items()) or "no block to remove"


def looks_sentence(images: dict[str, dict], label) -> str:
    """Per blocked model: mean brightness and foreground area of its dominant images against the rest."""
    return "; ".join(f"{label(n)}: brightness {v['brightness_top']:.2f} vs {v['brightness_rest']:.2f}, foreground "
                     f"{v['foreground_top']:.2f} vs {v['foreground_rest']:.2f}"
                     for n, v in images.items()) or "no block"


def regulariser_sentence(regularised: dict[str, list[dict]]) -> str:
    """Per threshold: seeds with a block with and without the regulariser, and mean test accuracy of each."""
    return "; ".join(
        f"threshold {t}: blocks in {sum(r['has_block'] for r in rows)} of {len(rows)} seeds (without: "
        f"{sum(r['has_block_unregularised'] for r in rows)}), test accuracy "
        f"{np.mean([r['test_acc'] for r in rows]):.3f} vs {np.mean([r['test_acc_unregularised'] for r in rows]):.3f}"
        for t, rows in regularised.items()) or "no regularised runs"


def progress_sentence(snapshots: dict[str, list[dict]], label) -> str:
    """Per seed: block size at each snapshot and at the end."""
    return "; ".join(f"{label(n)}: block size " + ", ".join(f"{r['block_size']:.2f}" for r in rows)
                     for n, rows in snapshots.items())


# ---------------------------------------------------------------------------------------------
# Chapter 9: the block under every lens
# ---------------------------------------------------------------------------------------------

def lens_sentence(block_verdicts: dict[str, str]) -> str:
    """Which measures see the block ('seen by ...; not by ...'), or why none could be judged."""
    verdict, seen, unseen = measure_tests.lens_claim(block_verdicts)
    if verdict == verdicts.NOT_TESTABLE:
        return next(iter(block_verdicts.values()))
    return f"seen by {', '.join(seen) or 'none'}; not by {', '.join(unseen) or 'none'}"


# ---------------------------------------------------------------------------------------------
# Chapter 10: ViTs
# ---------------------------------------------------------------------------------------------

def vit_describe(result: dict, verdict: bool = True) -> str:
    """'shown: n = 5, mean +0.12 [+0.05, +0.19]': a paired effect's verdict with its n and interval (without the
    verdict for a number that is reported, not judged)."""
    text = verdicts.describe(result)
    return f"{result['verdict']}: {text}" if verdict else text



def law_sentence(fit: dict | None, reason: str | None = None) -> str:
    """'capacity +1.2 [+0.3, +2.1], data ...; capacity + data = 0: p = 0.4' of a fit's record, or why there is none
    (`reason`, the law's own where it recorded one)."""
    if fit is None:
        return f"not fitted ({reason or 'one data size, or a grid that cannot separate capacity from data'})"
    if not fit["estimable"]:
        return f"not estimable ({fit['reason']})"
    parts = [f"{name} {fit[f'{name}_coef'][0]:+.3f} [{fit[f'{name}_coef'][1]:+.3f}, {fit[f'{name}_coef'][2]:+.3f}]"
             for name in ("capacity", "data", "series") if f"{name}_coef" in fit]
    return ", ".join(parts) + f"; capacity + data = 0: p = {fit['relative_test_p']:.3g}"




def vit_correspondence(result: VitResult) -> dict[str, str]:
    """The correspondence's sentences: the shuffled null, what calibration changes, the best matches' depths."""
    pairs = result.pairs
    if not pairs:
        return {k: "n/a (no pair)" for k in ("cross_null", "cross_null_max", "calibration_effect", "best_depths",
                                              "depth_correlation")}
    nulls = np.concatenate([p.cross["null"].ravel() for p in pairs])
    change = max(float(np.nanmax(np.abs(p.calibrated - p.cross["cka"]))) for p in pairs)
    moved = sum(int(np.any(vit.best_match_depths(p.calibrated) != vit.best_match_depths(p.cross["cka"])))
                for p in pairs)
    depths = vit.best_match_depths(pairs[0].calibrated)
    correlations = [vit.spearman(np.linspace(0, 1, len(d)), d) for d in
                    (vit.best_match_depths(p.calibrated) for p in pairs)]
    shown = [f"{c:+.2f}" if c is not None else "undefined (a constant best match)" for c in correlations]
    return {"cross_null": f"{nulls.mean():.3f}", "cross_null_max": f"{nulls.max():.3f}",
            "calibration_effect": f"changes no entry by more than {change:.3f} and moves a best match in "
                                  f"{moved} of {len(pairs)} pair(s)",
            "best_depths": ", ".join(f"{d:.2f}" for d in depths),
            "depth_correlation": ", ".join(shown) + f" over the {len(pairs)} pair(s)"}


# ---------------------------------------------------------------------------------------------
# Chapter 1: the precision side study
# ---------------------------------------------------------------------------------------------

def precision_sentence(check: dict | None, missing: int = 0) -> str:
    """The side study's result in one clause (or why it was not run here)."""
    if check is None:
        return (f"not run here: {missing} of its bfloat16 runs are not trained and this machine has no native "
                f"bfloat16 (they train where it does)")
    effects = "; ".join(f"{q.replace('_', ' ')} {v['precision_effect']:.3f} against {v['seed_effect']:.3f} "
                        f"({v['verdict']})" for q, v in check["quantities"].items())
    return (f"between {' and '.join(check['precisions'])}, the mean |difference| for the same seed against the "
            f"mean |difference| between two seeds: {effects}; block presence agrees for "
            f"{check['block_presence_agrees']} of {len(check['seeds'])} seeds")


# ---------------------------------------------------------------------------------------------
# Chapter 4: what a block is made of
# ---------------------------------------------------------------------------------------------

def share_summary(models: list[BlockAnalysis]) -> dict[str, str]:
    """The first-PC shares the chapter states: models with a block, mean share inside each block, the median
    share outside blocks (whole networks without one) and the largest share of any layer."""
    rows = [m.summary() for m in models]
    inside = [r["pc1_share_inside"] for r in rows if r["block"] is not None]
    return {"n_blocked": f"{len(inside)} of {len(models)}",
            "pc1_inside": ", ".join(f"{v:.2f}" for v in inside) or "none (no block)",
            "pc1_inside_spread": (f"mean {np.mean(inside):.2f}, sd {np.std(inside, ddof=1):.2f} over {len(inside)} models"
                                  if len(inside) > 1 else "no spread (fewer than two models with a block)"),
            "pc1_outside_all": f"{np.median([r['pc1_share_outside'] for r in rows]):.2f}",
            "pc1_max": f"{max(r['max_pc1_share'] for r in rows):.2f}"}


def split_sentence(cross_split: dict[int, tuple[float, float]]) -> str:
    """'seed 0: 0.41 inside its block vs 0.83 outside; ...' (`structure.cross_seed_split`), for the prose."""
    return "; ".join(f"seed {s}: {i:.2f} inside its block vs {o:.2f} outside"
                     for s, (i, o) in cross_split.items()) or "no seed has a block"


def pca_left_out_sentence(entries: Sequence[dict]) -> str:
    """'none' or '2 grid models (ResNet-20 ×1, n=250, s0: misses ...; ...)': the models a rule leaves out."""
    below = [e for e in entries if e.get("left_out") and e.get("role") == "grid"]
    if not below:
        return "none"
    return f"{len(below)} grid model(s) (" + "; ".join(f"{entry_label(e)}: {e['left_out']}" for e in below) + ")"
