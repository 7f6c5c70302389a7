"""Tables and simple summaries of result rows (lists of dicts), for the book's prose and JSON files.

Layer: book support (display labels from `widedeep.labels`).
"""

from __future__ import annotations

import re
from itertools import groupby

from widedeep.labels import architecture_label
from widedeep.studies import errors as errors_study
from widedeep.studies import pruning, subspace_match

RUN_COLUMNS = {"depth": "depth", "width": "width", "n_train": "n_train", "seed": "seed",
               "parameters": "parameters", "train_acc": "train acc", "val_acc": "val acc",
               "test_acc": "test acc", "train_wall_time_s": "train s"}
RUN_FORMATS = {"width": "g", "parameters": ",", "train_acc": ".3f", "val_acc": ".3f", "test_acc": ".3f",
               "train_wall_time_s": ".0f"}


def markdown_table(rows: list[dict], columns: dict[str, str], formats: dict[str, str] | None = None) -> str:
    """A Markdown table of `rows` with headers columns[key] (values formatted by formats[key])."""
    formats = formats or {}
    return list_table(list(columns.values()), [[format(r[k], formats.get(k, "")) for k in columns] for r in rows])


NUMBER = re.compile(r"[+\-−]?[\d,]*\.?\d+(e[+-]?\d+)?%?( ± [\d.]+)?|—|nan")


def is_number(cell) -> bool:
    """Whether a table cell reads as a number (or a dash / nan placeholder): those columns are right-aligned."""
    return NUMBER.fullmatch(str(cell).strip()) is not None


def list_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table from a header and rows of already formatted cells; numeric columns right-aligned, text left."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row needs {len(header)} cells (the header: {header})")
    numeric = [bool(rows) and all(is_number(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def runs_table(rows: list[dict]) -> str:
    """The Markdown table of trained models (architecture, data, accuracies, training time)."""
    return markdown_table(rows, RUN_COLUMNS, RUN_FORMATS)


def rising_series(rows: list[dict], along: str, value: str,
                  group: tuple[str, ...] = ("depth", "width", "seed")) -> tuple[int, int]:
    """Count series (rows sharing `group`) whose `value` strictly rises with `along`; (rising, series).

    Series with a single point say nothing about a trend and are not counted.
    """
    key = lambda r: tuple(r[g] for g in group)  # noqa: E731
    rising = total = 0
    for _, members in groupby(sorted(rows, key=key), key=key):
        values = [r[value] for r in sorted(members, key=lambda r: r[along])]
        if len(values) < 2:
            continue
        total += 1
        rising += all(a < b for a, b in zip(values, values[1:]))
    return rising, total


def rising_sentence(rising: int, series: int) -> str:
    """How many (architecture, seed) series gain test accuracy with every increase of n_train, for the prose."""
    if not series:
        return "not tested here: this profile has one training-set size"
    return f"in {rising} of the {series} (architecture, seed) series with more than one training-set size"


def accuracy_summary(rows: list[dict]) -> dict[str, float]:
    """The lowest and highest test accuracy of the trained models and their mean train-test gap."""
    test = [r["test_acc"] for r in rows]
    gaps = [r["train_acc"] - r["test_acc"] for r in rows]
    return {"min_test_acc": min(test), "max_test_acc": max(test), "mean_gap": sum(gaps) / len(gaps)}


def block_cell(m, block) -> str:
    """One table cell for a block of analysed model `m`: its span, size and CKA inside / outside ("—" for none)."""
    if block is None:
        return "—"
    return (f"{m.span_name(block)} ({block.n_layers}/{len(m.stream)} stream layers; "
            f"CKA {block.mean_cka:.2f} in / {block.outside_cka:.2f} out)")


def blocks_table(models: list, seed_column: bool = False) -> str:
    """Analysed models (`structure.BlockAnalysis`) with their accuracies, largest first-PC share and both blocks."""
    header = ((["seed"] if seed_column else ["model", "n_train"]) + ["test acc"]
              + ([] if seed_column else ["train acc", "steps"]))
    rows = []
    for m in models:
        r = m.summary()
        first = [r["seed"]] if seed_column else [f"{architecture_label(r['depth'], r['width'])} s{r['seed']}",
                                                 r["n_train"]]
        rows.append(first + [f"{r['test_acc']:.3f}"] + ([] if seed_column else [f"{r['train_acc']:.3f}", r["steps"]])
                    + [f"{r['max_pc1_share']:.2f}", f"{r['block_size']:.2f}", block_cell(m, m.block),
                       block_cell(m, m.block_cka_only)])
    return list_table(header + ["max PC1 share", "block size", "block (CKA + PC1)", "CKA-only block"], rows)


def sweep_table(models: list, sweep: dict, thresholds: list[float], min_pc1s: list[float]) -> str:
    """The detector's sweeps (`structure.threshold_sweep`): stream layers in each model's block, 0 for none."""
    header = (["model"] + [f"CKA > {t:g}" for t in thresholds] + [f"CKA only, > {t:g}" for t in thresholds]
              + [f"PC1 ≥ {v:g}" for v in min_pc1s])
    rows = [[m.label] + sweep[n]["with_pc1"] + sweep[n]["cka_only"] + sweep[n]["by_min_pc1"]
            for m, n in ((m, m.run.config.name()) for m in models)]
    return list_table(header, rows)


def stored_blocks_table(models: dict[str, dict]) -> str:
    """Models of a results file (by run name) with their test accuracy, largest first-PC share and block."""
    return list_table(["model", "n_train", "test acc", "max PC1 share", "block"], [
        [f"{architecture_label(r['depth'], r['width'])} s{r['seed']}", r["n_train"], f"{r['test_acc']:.3f}",
         f"{r['max_pc1_share']:.2f}", "—" if r["block"] is None else
         f"{r['block']['n_layers']} layers, CKA {r['block']['mean_cka']:.2f}"] for r in models.values()])


def pc_share_table(models: list) -> str:
    """Analysed models' largest first-PC share and their mean shares inside and outside the block."""
    rows = []
    for m in models:
        r = m.summary()
        inside = "—" if r["block"] is None else f"{r['pc1_share_inside']:.2f}"
        rows.append([m.label, f"{r['max_pc1_share']:.2f}", inside, f"{r['pc1_share_outside']:.2f}"])
    return list_table(["model", "max PC1 share", "PC1 share inside block", "PC1 share outside"], rows)


def removal_table(models: list, effects: list[dict]) -> str:
    """Each model's tested block before and after removing the first PC (`structure.removal_effect`)."""
    rows = [[m.label, m.span_name(m.tested_block()[0]) + (" (CKA only)" if e["span_from"] == "cka_only" else ""),
             f"{e['cka_inside_before']:.2f} / {e['cka_outside_before']:.2f}",
             f"{e['cka_inside_after']:.2f} / {e['cka_outside_after']:.2f}", m.span_name(e["block_after_pc1_removal"])]
            for m, e in zip(models, effects)]
    return list_table(["model", "block tested", "CKA in / out before", "after removing PC1",
                       "block after removal (CKA only)"], rows)


def spans_table(study: pruning.PruningResult) -> str:
    """Each model of Chapter 5's study with its test accuracy and the span it is tested on."""
    return list_table(["model", "test acc", "tested span", "from"], [
        [m.label, f"{m.run.test_acc:.3f}", m.span_name(study.spans[m.label][0]),
         {"block": "block", "cka_only": "CKA-only (control)", None: "—"}[study.spans[m.label][1]]]
        for m in study.analysed])


def deletion_table(study: pruning.PruningResult) -> str:
    """Per model of Chapter 5's study: probe gain across its span, mean deletion costs in / out of it
    (without and with the BatchNorm repair) and what the repair alone changes."""
    def signed(value: float) -> str:
        return f"{value:+.3f}" if value == value else "—"   # NaN (nothing to measure) as a dash

    rows = []
    for m in study.analysed:
        v, e = study.model_verdicts[m.label], study.effects[m.label]
        rows.append([m.label, {"block": "block", "cka_only": "CKA-only", None: "—"}[study.spans[m.label][1]],
                     signed(v["probe_gain_inside"]),
                     f"{signed(v['mean_delta_inside'])} / {signed(v['mean_delta_outside'])}",
                     f"{signed(v['mean_delta_inside_repaired'])} / {signed(v['mean_delta_outside_repaired'])}",
                     signed(e["repair_only_delta"])])
    return list_table(["model", "span", "probe gain in span", "mean Δ in / out", "with BN repair", "repair alone"],
                      rows)


def populations_table(populations: errors_study.Populations) -> str:
    """Chapter 6's two populations: architecture, seeds, parameters, test accuracy per seed."""
    return list_table(["side", "model", "seeds", "parameters", "test accuracy per seed"], [
        [name, side.architecture, len(side.seeds), f"{side.parameters:,}", ", ".join(f"{a:.3f}" for a in side.test_acc)]
        for name, side in populations.sides.items()])


def sampling_table(study: subspace_match.SubspaceMatchResult) -> str:
    """Exact against sampled match scores of Chapter 7's first seed pair, per ε (means over layers)."""
    return list_table(["ε", "exact (mean over layers)", "sampled", "mean absolute difference", "largest"], [
        [f"{e:g}", f"{study.exact[:, k].mean():.3f}", f"{study.sampled[:, k].mean():.3f}",
         f"{study.gap[:, k].mean():.3f}", f"{study.gap[:, k].max():.3f}"] for k, e in enumerate(study.eps)])


def simple_match_table(study: subspace_match.SubspaceMatchResult) -> str:
    """Simple-match sizes in Chapter 7's chosen layers (or a sentence when there are none)."""
    eps = study.section.simple_eps
    if not len(study.simple_chosen):
        return f"No layer of the first seed pair has a non-empty maximum match at ε = {eps:g}."
    return list_table(
        ["layer", "channels per side", f"maximum match at ε = {eps:g}", "simple-match sizes (neurons, both sides)"],
        [[name, study.simple_n_a[i], f"{study.simple_scores[i]:.2f}",
          ", ".join(map(str, sorted(study.simple_sizes[name]))) or "—"]
         for i, name in zip(study.simple_chosen, study.simple_sizes)])


def invariance_table(study: subspace_match.SubspaceMatchResult) -> str:
    """Linear CKA and the match of one real layer against its transformed copies (Chapter 7)."""
    return list_table(["transformation of one layer", "linear CKA", f"match (ε = {study.eps[0]:g})"],
                      [[k, f"{c:.3f}", f"{m:.3f}"] for k, (c, m) in study.checks.items()])


def block_match_table(study: subspace_match.SubspaceMatchResult) -> str:
    """Each seed with a block against each other seed under the match, inside and outside its block."""
    eps = study.eps[-1]
    return list_table(["seed with a block", "other seed", f"match inside the block (ε = {eps:g})", "outside",
                       "ε for half the neurons, inside", "outside"], [
        [b["seed"], r["other_seed"], f"{r['score_inside']:.2f}", f"{r['score_outside']:.2f}",
         f"{r['half_eps_inside']:.2f}", f"{r['half_eps_outside']:.2f}"]
        for b in study.block.values() for r in b["pairs"]])


def precision_table(check: dict) -> str:
    """`precision.compare`'s result: per quantity and seed, bfloat16, float32 and their difference, then the effects."""
    rows = []
    for quantity, v in check["quantities"].items():
        for seed, a, b, d in zip(check["seeds"], v["bfloat16"], v["float32"], v["difference"]):
            rows.append([quantity, seed, f"{a:.3f}", f"{b:.3f}", f"{d:+.3f}", "", ""])
        rows.append([quantity, "all", "", "", "", f"{v['precision_effect']:.3f}", f"{v['seed_effect']:.3f}"])
    first, second = check.get("precisions", ("bfloat16", "float32"))
    return list_table(["quantity", "seed", first, second, "difference", "precision effect", "seed effect"], rows)


def concentration_table(concentration: dict[str, dict], gaussian: dict[str, float], within: dict[str, float],
                        across: dict[str, float], chance: float, label) -> str:
    """Share of the first PC carried by the top examples, overlaps within the model and across seeds."""
    rows = [[label(name), *(f"{v[k]:.2f}" for k in gaussian), f"{within.get(name, float('nan')):.2f}"]
            for name, v in concentration.items()]
    rows.append(["Gaussian scores", *(f"{g:.2f}" for g in gaussian.values()), f"{chance:.3f} (chance)"])
    table = list_table(["model", *(k.replace("_", " ").replace("pct", "%") for k in gaussian),
                        "Jaccard between block layers"], rows)
    seeds = list_table(["other seed", "Jaccard with the first blocked seed's dominant set"],
                       [[label(n), f"{v:.3f}"] for n, v in across.items()] + [["chance", f"{chance:.3f}"]])
    return table + "\n\n" + seeds


def example_removal_table(removal: dict[str, dict], label) -> str:
    """Block contrast before and after removing the dominant examples, random ones and the controls."""
    return list_table(["model", "removed", "contrast before", "after dominant", "after random (mean ± sd)",
                       "after outside-layer control", "after other seed's"], [
        [label(name), e["removed"], f"{e['contrast_before']:.3f}", f"{e['contrast_after_dominant']:.3f}",
         f"{e['contrast_before'] - e['drop_random_mean']:.3f} ± {e['drop_random_sd']:.3f}",
         f"{e['contrast_after_control']:.3f}",
         f"{e['contrast_before'] - e['drop_other_seed']:.3f}" if "drop_other_seed" in e else "—"]
        for name, e in removal.items()])


def regulariser_table(reg: dict[str, list[dict]]) -> str:
    """Per threshold and seed: test accuracy, block size and first-PC share with and without the regulariser."""
    return list_table(["threshold", "seed", "test acc (reg / plain)", "block size (reg / plain)",
                       "max PC1 share (reg / plain)"], [
        [t, r["seed"], f"{r['test_acc']:.3f} / {r['test_acc_unregularised']:.3f}",
         f"{r['block_size']:.2f} / {r['block_size_unregularised']:.2f}",
         f"{r['max_pc1_share']:.2f} / {r['max_pc1_share_unregularised']:.2f}"]
        for t, rows in reg.items() for r in rows])


def lens_table(rows: list[dict]) -> str:
    """One row per measure, one column per test of a measure (Chapter 9); — where a test could not run."""
    def cell(value, spec: str = ".2f") -> str:
        return "—" if value is None or value != value else format(value, spec)

    return list_table(["measure", "layer identification", "calibrated best match", "ρ with accuracy drop",
                       "seed − costliest deletion", "outlier change", "block contrast", "block seen"], [
        [r["measure"], cell(r["identification"]), cell(r["calibrated"]), cell(r["rho"]),
         cell(r["specificity_margin"], "+.2f"), cell(r["outlier_change"]), cell(r["block_contrast"], "+.3f"),
         r["block"]] for r in rows])


def vit_table(models: list, token_ratios: dict[str, dict]) -> str:
    """Chapter 10's ViTs: accuracies, largest first-PC share, largest token-norm ratio and CKA-only block."""
    rows = []
    for m in models:
        r, name = m.summary(), m.run.config.name()
        rows.append([f"{architecture_label(r['depth'], r['width'], arch='vit')} s{r['seed']}", r["n_train"],
                     f"{r['test_acc']:.3f}", f"{r['train_acc']:.3f}", f"{r['max_pc1_share']:.2f}",
                     f"{float(max(token_ratios[name]['max'])):.1f}", block_cell(m, m.block_cka_only)])
    return list_table(["model", "n_train", "test acc", "train acc", "max PC1 share", "max token ratio",
                       "CKA-only block"], rows)
