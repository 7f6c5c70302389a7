"""The paper's findings against what this book's runs show, read from the chapters' results files.

Layer: book support (reads `widedeep.book.results`; verdicts in `widedeep.analyses.verdicts`).

The introduction's claims table is built here, from `results/<profile>/*.json`, never typed: each
finding names the chapter and figure that test it and a function that turns that chapter's results
into a verdict ("shown", "partly shown", "not shown", "not testable", or a chapter's own wording)
and a one-line piece of evidence with the numbers behind it. A chapter whose results file is missing
gives "not run". `provenance_lines` states where every results file came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from widedeep.analyses.first_pc import first_pc_claim
from widedeep.analyses.matching import subspace_verdict
from widedeep.analyses.verdicts import NOT_RUN, NOT_TESTABLE, describe, fraction_verdict, paired_verdict
from widedeep.book import results as results_schema
from widedeep.book.tables import list_table
from widedeep.labels import architecture_label


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings, where the book tests it, and how its results file becomes a verdict."""

    claim: str
    chapter: str          # results file stem, e.g. "03_block_structure"
    figure: str           # the figure of that chapter that shows it
    judge: Callable[[dict], tuple[str, str]]


def _blocked(models: dict[str, dict]) -> dict[str, dict]:
    """The entries (by run name) of the models that have a block."""
    return {name: e for name, e in models.items() if e.get("block") is not None}


def _law(results: dict) -> tuple[str, dict, dict]:
    """Chapter 3's fit that carries the claims (presence where estimable, else the continuous one), its record."""
    key = results["claims_fit"]["fit"]
    return key, results["claims_fit"]["verdicts"], results.get(key) or {}


def _coefficient(fit: dict, name: str) -> str:
    value = fit.get(f"{name}_coef")
    if not value or value[0] is None or np.isnan(value[0]):
        return f"{name} coefficient not estimable"
    return f"{name} coefficient {value[0]:+.3f} [{value[1]:+.3f}, {value[2]:+.3f}]"


def _version_1(results: dict) -> bool:
    """A results file of the cpu run published before schema version 2 (no fitted law, no power curve)."""
    return results.get("schema_version") == 1


def judge_capacity(results: dict) -> tuple[str, str]:
    """Chapter 3's fitted law: the capacity coefficient (> 0 in the paper's direction), with the models that carry a block."""
    if _version_1(results):  # judged as that run's Chapter 3 did: its yes/no cells
        blocked = _blocked(results["models"]).values()
        names = "; ".join(results_schema.label(e) for e in blocked) or "none"
        return results["trends"]["capacity"], (f"blocks in {len(blocked)} of {len(results['models'])} grid models "
                                               f"({names})")
    key, verdicts, fit = _law(results)
    if not verdicts:
        return NOT_TESTABLE, "the grid cannot separate capacity from data (Chapter 3 fitted no law)"
    blocked = _blocked(results["models"]).values()
    return verdicts["capacity"], (f"{key.replace('_', ' ')}: {_coefficient(fit, 'capacity')} per log-parameter; "
                                  f"blocks in {len(blocked)} of {len(results['models'])} models trained to "
                                  f"interpolation")


def judge_data(results: dict) -> tuple[str, str]:
    """Chapter 3's fitted law: data coefficient < 0 and capacity + data = 0 not rejected ("relative to data")."""
    if _version_1(results):
        sizes = sorted({e["n_train"] for e in results["models"].values()})
        by_size = {n: sum(1 for e in _blocked(results["models"]).values() if e["n_train"] == n) for n in sizes}
        return results["trends"]["data"], "models with a block by n_train: " + ", ".join(
            f"{n}: {k}" for n, k in by_size.items())
    key, verdicts, fit = _law(results)
    if not verdicts:
        return NOT_TESTABLE, "the grid cannot separate capacity from data (Chapter 3 fitted no law)"
    verdict = verdicts["data"] if verdicts["data"] in ("contradicted", "not estimable") else verdicts["relative"]
    p = fit.get("relative_test_p")
    return verdict, (f"{key.replace('_', ' ')}: {_coefficient(fit, 'data')} per log-n_train (paper: < 0); "
                     f"capacity + data = 0: p = {'—' if p is None else f'{p:.3g}'}; data claim {verdicts['data']}, "
                     f"relative claim {verdicts['relative']}")


def judge_first_pc(results: dict) -> tuple[str, str]:
    """Chapter 4 (book/protocol.md): over models with a CKA-only block, the first-PC share inside minus outside
    (> 0) and the block's contrast after removing the first PC minus before (< 0), each with its n and interval."""
    blocked = _blocked(results["models"])
    if not blocked:
        return NOT_TESTABLE, "no model has a block"
    if _version_1(results) or "min_pc1" not in results.get("detector", {}):
        min_pc1 = 0.45  # the pre-protocol detector: blocks required a first-PC share >= 0.45
    else:
        min_pc1 = results["detector"]["min_pc1"]
    claim = first_pc_claim(list(blocked.values()), min_pc1)
    if claim["dominates"]["n"] == 0:
        return claim["verdict"], f"{len(blocked)} model(s) with such a block"
    return claim["verdict"], (f"first-PC share inside minus outside the block: {claim['dominates']['verdict']} "
                              f"({describe(claim['dominates'])}); block contrast after minus before removing the "
                              f"first PC: {claim['removal_breaks']['verdict']} ({describe(claim['removal_breaks'])})")


def judge_seeds(results: dict) -> tuple[str, str]:
    """Chapter 4: cross-seed CKA inside each blocked seed's block minus outside it (< 0), over the blocked seeds."""
    pairs = [e for e in _blocked(results["models"]).values() if e.get("cross_seed_cka_inside") is not None]
    if not pairs:
        return NOT_TESTABLE, "no seed-study model has a block"
    claim = paired_verdict([e["cross_seed_cka_inside"] - e["cross_seed_cka_outside"] for e in pairs], -1)
    numbers = "; ".join(f"{results_schema.label(e)}: {e['cross_seed_cka_inside']:.2f} inside vs "
                        f"{e['cross_seed_cka_outside']:.2f} outside" for e in pairs)
    return claim["verdict"], f"inside minus outside, {describe(claim)}; CKA with the other seeds, {numbers}"


def judge_probes(results: dict) -> tuple[str, str]:
    """Chapter 5's probe verdicts."""
    verdicts = results["verdicts"]
    return verdicts["probe_plateau"], f"compared with the same layers without a block, the plateau is " \
                                      f"{verdicts['probe_plateau_specific_to_block']}"


def judge_deletion(results: dict) -> tuple[str, str]:
    """Chapter 5's deletion verdicts: mean single-deletion cost inside vs outside each block, and the position control."""
    verdicts = results["verdicts"]
    numbers = "; ".join(f"{results_schema.label(e)}: {e['verdicts']['mean_delta_inside']:+.3f} inside vs "
                        f"{e['verdicts']['mean_delta_outside']:+.3f} outside"
                        for e in _blocked(results["models"]).values() if "mean_delta_inside" in e.get("verdicts", {}))
    controls = "; ".join(f"{c['control_inside']:+.3f} vs {c['control_outside']:+.3f}"
                         for c in results.get("position_control", {}).values())
    return verdicts["single_deletion_cheaper_inside"], (
        f"Δ test accuracy per deleted residual block, {numbers or 'no block'}; the same positions in models "
        f"without a block: {controls or 'none'}; beyond position: "
        f"{verdicts['single_deletion_cheaper_inside_beyond_position']}")


def judge_errors(results: dict) -> tuple[str, str]:
    """Chapter 6: the main test (all seeds, filtered) against its half-split calibration, with the power it had."""
    wide, deep = (architecture_label(results[side]["depth"], results[side]["width"]) for side in ("wide", "deep"))
    if _version_1(results):  # no main test yet: the median over half splits against the seed-split null
        verdicts, match, example = results["verdicts"], results["accuracy_match"], results["example_level"]
        return verdicts["example_level"], (
            f"{wide} vs {deep}, accuracy {match['acc_a']:.3f} vs {match['acc_b']:.3f}; median "
            f"{example['n_significant']:g} significant examples vs a null of {min(example['null_n_significant'])}–"
            f"{max(example['null_n_significant'])}; class level: {verdicts['class_level']}")
    verdicts, match, main, power = results["verdicts"], results["accuracy_match"], results["main_test"], results["power"]
    sizes = power["populations"]
    here = min(power["curve"], key=lambda p: abs(p["m_a"] - sizes["wide"]))
    enough = power["smallest_population"]
    return verdicts["example_level"], (
        f"{wide} vs {deep} ({sizes['wide']} and {sizes['deep']} seeds), validation accuracy {match['acc_a']:.3f} vs "
        f"{match['acc_b']:.3f}; {main['n_significant']} significant examples vs "
        f"{min(main['calibration_n_significant'])}–{max(main['calibration_n_significant'])} between halves of the "
        f"deep seeds; the power curve expects {here['expected_discoveries']:.1f} here and "
        f"{power['wanted']:g} at {enough if enough is not None else 'more than ' + str(power['curve'][-1]['m_a'])} "
        f"wide seeds; class level: {verdicts['class_level']}")


def judge_subspace(results: dict) -> tuple[str, str]:
    """Chapter 7: shown when, at the paper's largest ε, each seed-paired layer matches in under half its neurons."""
    base = results["base"]
    verdict, low, layers = subspace_verdict(base["match_scores"], base["eps"])
    loosest = int(np.argmax(base["eps"]))
    cka_mean = float(np.mean(base["linear_cka"]))
    return verdict, (f"{low} of {layers} layers match in under half their neurons at ε = {base['eps'][loosest]:g} "
                     f"(mean score {base['mean_score_by_eps'][loosest]:.2f} over {len(base['pairs'])} seed pairs), "
                     f"while linear CKA of the same layers is {cka_mean:.2f}")


def judge_dominant_datapoints(results: dict) -> tuple[str, str]:
    """Chapter 8: a few examples carry each blocked seed's first PC, and its block's layers share them."""
    top = "; ".join(f"{results_schema.label(results['models'][n])}: top 5% carry {c['top_5pct']:.2f}, "
                    f"Jaccard between block layers {results['within_model_overlap'].get(n, float('nan')):.2f}"
                    for n, c in results["concentration"].items()) or "no seed with a block"
    return results["verdicts"]["dominant_datapoints"], (
        f"{top} (Gaussian scores: {results['gaussian']['top_5pct']:.2f}; two random sets: "
        f"{results['chance_overlap']:.3f})")


def judge_differ_across_seeds(results: dict) -> tuple[str, str]:
    """Chapter 8: the first blocked seed's dominant set against the other seeds', on its block's layers."""
    across = "; ".join(f"{results_schema.label(results['models'][n])}: {v:.3f}"
                       for n, v in results["across_seed_overlap"].items()) or "no other seed"
    return results["verdicts"]["differ_across_seeds"], (
        f"Jaccard with the first blocked seed's dominant set: {across} (two random sets: "
        f"{results['chance_overlap']:.3f})")


def judge_removal(results: dict) -> tuple[str, str]:
    """Chapter 8: the block's contrast after removing its dominant examples, against random removals."""
    drops = "; ".join(f"{results_schema.label(results['models'][n])}: contrast {e['contrast_before']:.2f} to "
                      f"{e['contrast_after_dominant']:.2f} (random {e['contrast_before'] - e['drop_random_mean']:.2f})"
                      for n, e in results["removal"].items()) or "no seed with a block"
    return results["verdicts"]["removal_breaks_block"], drops


def judge_forms_early(results: dict) -> tuple[str, str]:
    """Chapter 8: block size at the snapshots of the seeds that end with a block."""
    blocked = results["removal"].keys()
    sizes = "; ".join(f"{results_schema.label(results['models'][n])}: block size "
                      + ", ".join(f"{r['block_size']:.2f} (epoch {r['epoch']})" for r in rows)
                      for n, rows in results["snapshots"].items() if n in blocked) or "no seed with a block"
    return results["verdicts"]["forms_early"], sizes


def judge_regulariser(results: dict) -> tuple[str, str]:
    """Chapter 8: seeds with a block that have none when trained with the first-PC regulariser."""
    rows = [r for rows in results["regularised"].values() for r in rows if r["has_block_unregularised"]]
    return results["verdicts"]["regulariser_removes_block"], (
        f"{sum(not r['has_block'] for r in rows)} of {len(rows)} (seed, threshold) runs of seeds with a block have "
        f"none when regularised, over thresholds {', '.join(results['regularised']) or 'none'}")


def judge_lenses(results: dict) -> tuple[str, str]:
    """Chapter 9: the measures other than linear CKA whose inside-outside contrast on the CKA block's layers
    beats same-length runs of layers in seeds without a block."""
    claim, found = results["claim"], results["verdicts"]
    if claim["verdict"] == NOT_TESTABLE:
        return NOT_TESTABLE, f"{found.get('linear CKA', 'no verdict')} (Chapter 9)"
    judged = len(claim["seen_by"]) + len(claim["not_seen_by"])
    return claim["verdict"], (f"seen by {len(claim['seen_by'])} of {judged} other measures "
                              f"({', '.join(claim['seen_by']) or 'none'}); not by "
                              f"{', '.join(claim['not_seen_by']) or 'none'}; under linear CKA: "
                              f"{found.get('linear CKA', '—')}")


FINDINGS = [
    Finding("Wider or deeper ResNets develop a block structure", "03_block_structure",
            "heatmap grid", judge_capacity),
    Finding("It appears when capacity is large relative to the training set", "03_block_structure",
            "heatmap grid (rows: n_train)", judge_data),
    Finding("Block layers share and propagate the dominant principal component; removing it breaks the block",
            "04_pca", "first-PC share by layer; CKA after removing the first PC", judge_first_pc),
    Finding("Each model's block is unique, while layers outside it match across seeds", "04_pca",
            "cross-seed CKA inside vs outside the block", judge_seeds),
    Finding("Linear-probe accuracy barely improves across the block", "05_pruning",
            "probe accuracy by layer", judge_probes),
    Finding("Deleting residual blocks inside the block costs little accuracy", "05_pruning",
            "single-deletion bars", judge_deletion),
    Finding("Wide and deep models of equal accuracy make different errors", "06_errors",
            "correct-fraction grids and seed-split null", judge_errors),
    Finding("(Wang et al. 2018) The same layers of two seeds match in fewer than half their neurons, even at "
            "the loosest ε", "07_subspace_match", "match score and CKA by layer", judge_subspace),
    Finding("(Nguyen et al. 2022) A few dominant datapoints carry the block's first PC, shared by its layers",
            "08_origins", "concentration table", judge_dominant_datapoints),
    Finding("(Nguyen et al. 2022) The dominant datapoints differ between seeds", "08_origins",
            "concentration table (across seeds)", judge_differ_across_seeds),
    Finding("(Nguyen et al. 2022) Removing the dominant datapoints breaks the block", "08_origins",
            "removal table", judge_removal),
    Finding("(Nguyen et al. 2022) The block forms early in training", "08_origins",
            "block size over training", judge_forms_early),
    Finding("(Nguyen et al. 2022) The first-PC regulariser removes the block", "08_origins",
            "regulariser table", judge_regulariser),
    Finding("(Chapter 9) The block is seen by other measures (CCA, Procrustes, RSA, k-NN, subspace match)",
            "09_measures", "heatmaps under every measure; block contrast against block-free seeds",
            judge_lenses),
]


def block_uniqueness(results_dir: str | Path) -> str:
    """What Chapter 4 found under CKA of each seed's block (unique to it or not), from its results file."""
    path = Path(results_dir) / "04_pca.json"
    if not path.exists():
        return "Chapter 4 asks whether a block is unique to its model (its results are not here yet)"
    models = results_schema.read(path)["models"].values()
    compared = [e for e in models if e.get("cross_seed_cka_inside") is not None]
    return "; ".join(
        f"Chapter 4 found the block of {results_schema.label(e)} "
        + ("unique to it" if e["cross_seed_cka_inside"] < e["cross_seed_cka_outside"] else "not unique to it")
        + f" (CKA with the other seeds {e['cross_seed_cka_inside']:.2f} inside, {e['cross_seed_cka_outside']:.2f}"
          " outside)" for e in compared) or "Chapter 4 found no seed with a block to compare"


def load_results(results_dir: str | Path) -> dict[str, dict]:
    """Every chapter's results in `results_dir` (checked against the schema), keyed by chapter."""
    return results_schema.load_all(results_dir)


def claims_rows(results: dict[str, dict], findings: list[Finding] = FINDINGS) -> list[dict]:
    """One row per finding: claim, verdict, evidence, chapter and figure (verdict "not run" without results)."""
    rows = []
    for finding in findings:
        if finding.chapter in results:
            verdict, evidence = finding.judge(results[finding.chapter])
        else:
            verdict, evidence = NOT_RUN, f"no {finding.chapter}.json in this profile's results"
        run = results_schema.run_of(results[finding.chapter]) if finding.chapter in results else "—"
        rows.append({"claim": finding.claim, "verdict": verdict, "evidence": evidence,
                     "chapter": finding.chapter, "figure": finding.figure, "run": run})
    return rows


def claims_table(rows: list[dict]) -> str:
    """The introduction's table: each finding, our verdict (bold), its evidence, figure, chapter link and run
    (the protocol hash its results were written under, or pre-protocol)."""
    return list_table(["the paper finds", "our runs", "evidence", "figure", "chapter", "run"], [
        [r["claim"], f"**{r['verdict']}**", r["evidence"], r["figure"],
         f"[Chapter {int(r['chapter'][:2])}]({r['chapter']}.md)", _run_label(r.get("run", "—"))] for r in rows])


def _run_label(run: str) -> str:
    return "*pre-protocol*" if run == results_schema.PRE_PROTOCOL else run if run == "—" else f"`{run}`"


def provenance_lines(results: dict[str, dict]) -> list[str]:
    """One line per results file: profile, commit, hardware, wall time and versions."""
    lines = []
    for chapter, result in results.items():
        p = result["provenance"]
        versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
        older = (" (schema 1: the run published before the bfloat16 book; `make book` rewrites it)"
                 if _version_1(result) else "")
        run = results_schema.run_of(result)
        protocol = (" (pre-protocol: written before book/protocol.md fixed the run's rules)"
                    if run == results_schema.PRE_PROTOCOL else f"; protocol {run}")
        lines.append(f"{chapter}: profile {p['profile']}, commit {p['commit']}, {p['hardware']}, "
                     f"{p['wall_time_s']:.0f} s; {versions}{older}{protocol}")
    return lines
