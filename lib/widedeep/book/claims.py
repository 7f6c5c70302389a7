"""The paper's findings against what this book's runs show, read from the chapters' results files.

Layer: book support (reads `widedeep.book.results`; verdicts in `widedeep.analyses.verdicts`).

The introduction's claims table is built here, from `results/<profile>/*.json`, never typed: each
finding names the chapter and figure that test it and a function that turns that chapter's results
into a `Judged` row: the verdict ("shown", "partly shown", "not shown", "not testable", or a chapter's
own wording), a one-line piece of evidence with the numbers behind it, and its n and interval. Each
results file carries its claims' verdict objects (`claims`), which the row repeats. A chapter whose results file is missing gives "not run". Every row names the run (protocol hash) its
results came from; `runs_note` says above the table when the rows come from more than one run, or from
another protocol than the page's now. `provenance_lines` states where every results file came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from widedeep.analyses import verdicts
from widedeep.analyses.origins import span_jaccard
from widedeep.analyses.verdicts import NOT_RUN, NOT_TESTABLE, describe
from widedeep.book import results as results_schema
from widedeep.book.tables import list_table
from widedeep.labels import architecture_label


class Judged(NamedTuple):
    """One row's verdict, its evidence, and its n and interval in words."""

    verdict: str
    evidence: str
    stats: str


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings, where the book tests it, and how its results file becomes a verdict."""

    claim: str
    chapter: str          # results file stem, e.g. "03_block_structure"
    figure: str           # the figure of that chapter that shows it
    judge: Callable[[dict], Judged]


def stored(results: dict, key: str) -> dict:
    """The verdict object a results file recorded for a claim (a file without it is refused by name)."""
    claims = results.get("claims") or {}
    if key not in claims:
        raise results_schema.SchemaError(f"a {results.get('provenance', {}).get('profile', '')} results file has no "
                                         f"verdict object for the claim {key!r} (claims: {sorted(claims)}); rebuild "
                                         f"its chapter (make book) to record it")
    return claims[key]


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


def judge_capacity(results: dict) -> Judged:
    """Chapter 3's fitted law: the capacity coefficient (> 0 in the paper's direction), with the models that carry a block."""
    key, verdicts, fit = _law(results)
    if not verdicts:
        return Judged(NOT_TESTABLE, "the grid cannot separate capacity from data (Chapter 3 fitted no law)",
                      f"n = {len(results['models'])}")
    blocked = _blocked(results["models"]).values()
    left = results["claims_fit"].get("left_out") or []
    return Judged(verdicts["capacity"], (f"{key.replace('_', ' ')}: {_coefficient(fit, 'capacity')} per "
                                         f"log-parameter; blocks in {len(blocked)} of {len(results['models'])} grid "
                                         f"models, {len(left)} left out by the interpolation rule"),
                  describe(stored(results, "capacity")))


def judge_data(results: dict) -> Judged:
    """Chapter 3's fitted law: data coefficient < 0 and capacity + data = 0 not rejected ("relative to data")."""
    key, verdicts, fit = _law(results)
    if not verdicts:
        return Judged(NOT_TESTABLE, "the grid cannot separate capacity from data (Chapter 3 fitted no law)",
                      f"n = {len(results['models'])}")
    verdict = verdicts["data"] if verdicts["data"] in ("contradicted", "not estimable") else verdicts["relative"]
    p = fit.get("relative_test_p")
    return Judged(verdict, (f"{key.replace('_', ' ')}: {_coefficient(fit, 'data')} per log-n_train (paper: < 0); "
                            f"capacity + data = 0: p = {'—' if p is None else f'{p:.3g}'}; data claim "
                            f"{verdicts['data']}, relative claim {verdicts['relative']}"), describe(stored(results, "data")))


def judge_first_pc(results: dict) -> Judged:
    """Chapter 4 (book/protocol.md): over models with a CKA-only block, the first-PC share inside minus outside
    (> 0) and the block's contrast after removing the first PC minus before (< 0), each with its n and interval."""
    verdict = stored(results, "first_pc")["verdict"]
    dominates, falls = stored(results, "first_pc_dominates"), stored(results, "first_pc_removal_breaks")
    if dominates["n"] == 0:
        return Judged(verdict, f"{len(_blocked(results['models']))} model(s) with such a block", describe(dominates))
    return Judged(verdict, (f"first-PC share inside minus outside the block: {dominates['verdict']}; block contrast "
                            f"after minus before removing the first PC: {falls['verdict']}"),
                  f"share: {describe(dominates)}; contrast: {describe(falls)}")


def judge_seeds(results: dict) -> Judged:
    """Chapter 4: cross-seed CKA inside each blocked seed's block minus outside it (< 0), over the blocked seeds,
    with a bootstrap over seeds."""
    pairs = [e for e in _blocked(results["models"]).values() if e.get("cross_seed_cka_inside") is not None]
    numbers = "; ".join(f"{results_schema.label(e)}: {e['cross_seed_cka_inside']:.2f} inside vs "
                        f"{e['cross_seed_cka_outside']:.2f} outside" for e in pairs)
    claim = stored(results, "seeds_unique")
    evidence = f"CKA with the other seeds, inside minus outside each blocked seed's block; {numbers or 'no pair'}"
    return Judged(claim["verdict"], evidence, describe(claim) + (f" ({claim['test']})" if claim.get("test") else ""))


def judge_probes(results: dict) -> Judged:
    """Chapter 5's probe row: the plateau and its block-free control in one headline (book/protocol.md)."""
    headline, plateau, specific = (stored(results, k) for k in ("probe", "probe_plateau", "probe_specific"))
    return Judged(headline["verdict"], (f"largest |probe accuracy change| from the block's first layer, against "
                                        f"probe_plateau_tol {plateau.get('bound', float('nan')):g}; the position "
                                        f"controls' minus the model's own: {specific['verdict']}"),
                  f"plateau: {describe(plateau)}; control: {describe(specific)}")


def judge_deletion(results: dict) -> Judged:
    """Chapter 5's deletion row: the score (inside minus outside) over models within the standard-error bound, and
    beyond position (the score minus its controls'), both paired effects > 0."""
    numbers = "; ".join(f"{results_schema.label(e)}: {e['verdicts']['mean_delta_inside']:+.3f} inside vs "
                        f"{e['verdicts']['mean_delta_outside']:+.3f} outside"
                        for e in _blocked(results["models"]).values() if "mean_delta_inside" in e.get("verdicts", {}))
    position = results.get("position_control", {}).values()
    controls = "; ".join(f"{c['control_inside']:+.3f} vs {c['control_outside']:+.3f}"
                         for c in position if c["control_inside"] is not None)
    uncontrolled = sum(c["control_inside"] is None for c in position)   # no block-free model of that architecture
    evidence = (f"Δ test accuracy per deleted residual block, {numbers or 'no block'}; the same positions in models "
                f"without a block: {controls or 'none'}"
                + (f" ({uncontrolled} blocked model(s) without a block-free control)" if uncontrolled else ""))
    score, beyond = stored(results, "deletion"), stored(results, "deletion_beyond_position")
    return Judged(f"{score['verdict']}, beyond position: {beyond['verdict']}", evidence,
                  f"score: {describe(score)}; beyond position: {describe(beyond)}")


def judge_errors(results: dict) -> Judged:
    """Chapter 6 as a row, with the recorded verdict object's n where there is one."""
    verdict, evidence = _errors(results)
    return Judged(verdict, evidence, describe(stored(results, "example_level")))


def _errors(results: dict) -> tuple[str, str]:
    """Chapter 6: the main test (all seeds, filtered) against its half-split calibration, with the power it had."""
    wide, deep = (architecture_label(results[side]["depth"], results[side]["width"]) for side in ("wide", "deep"))
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


def judge_subspace(results: dict) -> Judged:
    """Chapter 7: shown when, at the paper's largest ε, every layer's score over seed pairs has its upper bound
    (bootstrap over seeds) below one half."""
    base = results["base"]
    claim = stored(results, "wang_low_match")
    verdict, low, layers = claim["verdict"], claim.get("k", 0), claim["n"]
    highest = max((b[1] for b in claim.get("layer_intervals") or []), default=float("nan"))
    stats = (f"{describe(claim)} layers, each with a bootstrap over {claim.get('seeds', '—')} seeds "
             f"(largest upper bound {highest:.2f})")
    loosest = int(np.argmax(base["eps"]))
    cka_mean = float(np.mean(base["linear_cka"]))
    return Judged(verdict, (f"{low} of {layers} layers match in under half their neurons at ε = "
                            f"{base['eps'][loosest]:g} (mean score {base['mean_score_by_eps'][loosest]:.2f} over "
                            f"{len(base['pairs'])} seed pairs), while linear CKA of the same layers is {cka_mean:.2f}"),
                  stats)


def _origins(results: dict, key: str, evidence: str) -> Judged:
    """A Chapter 8 row: its recorded verdict object, with `evidence`."""
    claim = stored(results, key)
    return Judged(claim["verdict"], evidence, describe(claim))


def judge_dominant_datapoints(results: dict) -> Judged:
    """Chapter 8: a few examples carry each blocked seed's first PC, and its block's layers share them."""
    top = "; ".join(f"{results_schema.label(results['models'][n])}: top 5% carry {c['top_5pct']:.2f}, "
                    f"Jaccard between block layers {results['within_model_overlap'].get(n, float('nan')):.2f}"
                    for n, c in results["concentration"].items()) or "no seed with a block"
    return _origins(results, "dominant_datapoints", f"{top} (Gaussian scores: {results['gaussian']['top_5pct']:.2f}; "
                                                    f"two random sets: {results['chance_overlap']:.3f})")


def judge_differ_across_seeds(results: dict) -> Judged:
    """Chapter 8: one seed's dominant sets at two layers against two seeds' sets at one layer (permutation test);
    where it could not run (fewer than three blocked seeds), the first blocked seed's dominant set against the
    other seeds'."""
    claim = stored(results, "differ_across_seeds")
    if claim.get("p") is not None:
        evidence = (f"mean Jaccard of one seed's dominant sets at two block layers {claim['within_seed']:.3f}, of two "
                    f"seeds' sets at one layer {claim['across_seeds']:.3f}, over {claim['layers']} layers "
                    f"(two random sets: {results['chance_overlap']:.3f})")
    else:
        across = "; ".join(f"{results_schema.label(results['models'][n])}: {v:.3f}"
                           for n, v in results["across_seed_overlap"].items()) or "no other seed"
        evidence = (f"Jaccard with the first blocked seed's dominant set: {across} (two random sets: "
                    f"{results['chance_overlap']:.3f})")
    return _origins(results, "differ_across_seeds", evidence)


def judge_removal(results: dict) -> Judged:
    """Chapter 8: the block's contrast after removing its dominant examples, against random removals."""
    drops = "; ".join(f"{results_schema.label(results['models'][n])}: contrast {e['contrast_before']:.2f} to "
                      f"{e['contrast_after_dominant']:.2f} (random {e['contrast_before'] - e['drop_random_mean']:.2f})"
                      for n, e in results["removal"].items()) or "no seed with a block"
    return _origins(results, "removal_breaks_block", drops)


def judge_forms_early(results: dict) -> Judged:
    """Chapter 8: block size (and, where recorded, the span's overlap with the final block) at the snapshots."""
    blocked = results["removal"].keys()

    def at(row: dict, final: dict) -> str:
        text = f"{row['block_size']:.2f} (epoch {row['epoch']}"
        if "span" in row and row is not final:
            text += f", span overlap {span_jaccard(row['span'], final['span']):.2f}"
        return text + ")"

    sizes = "; ".join(f"{results_schema.label(results['models'][n])}: block size "
                      + ", ".join(at(r, rows[-1]) for r in rows)
                      for n, rows in results["snapshots"].items() if n in blocked) or "no seed with a block"
    return _origins(results, "forms_early", sizes)


def judge_regulariser(results: dict) -> Judged:
    """Chapter 8: seeds with a block that have none when trained with the first-PC regulariser."""
    rows = [r for rows in results["regularised"].values() for r in rows if r["has_block_unregularised"]]
    return _origins(results, "regulariser_removes_block", (
        f"{sum(not r['has_block'] for r in rows)} of {len(rows)} (seed, threshold) runs of seeds with a block have "
        f"none when regularised, over thresholds {', '.join(results['regularised']) or 'none'}"))


def judge_lenses(results: dict) -> Judged:
    """Chapter 9: the measures other than linear CKA whose inside-outside contrast on the CKA block's layers
    beats same-length runs of layers in seeds without a block (the seed study's seeds)."""
    claim, found = results["claim"], results["verdicts"]
    recorded = stored(results, "seen_by_other_measures")
    per_measure = ", ".join(f"{lens} {m['k']} of {m['n']} seeds" for lens, m in recorded.get(
        "measures", {}).items())
    stats = describe(recorded) + (f"; {per_measure}" if per_measure else "")
    if claim["verdict"] == NOT_TESTABLE:
        return Judged(NOT_TESTABLE, f"{found.get('linear CKA', 'no verdict')} (Chapter 9)", stats)
    judged = len(claim["seen_by"]) + len(claim["not_seen_by"])
    return Judged(claim["verdict"], (f"on the seed study: seen by {len(claim['seen_by'])} of {judged} other measures "
                                     f"({', '.join(claim['seen_by']) or 'none'}); not by "
                                     f"{', '.join(claim['not_seen_by']) or 'none'}; under linear CKA: "
                                     f"{found.get('linear CKA', '—')}"), stats)


def _vit_law(results: dict, name: str) -> Judged:
    """Chapter 10's V1 on the ViT grid: the presence law's `name` claim, with the models that carry a block."""
    claim = stored(results, name)
    fit = results["law"].get("fits", {}).get("incidence_fit") or {}
    blocked = _blocked(results["models"])
    why = "" if fit else f" ({results['law'].get('reason', 'no law fitted')})"
    if name == "capacity":
        said = f"{_coefficient(fit, 'capacity')} per log-parameter"
    else:
        p = fit.get("relative_test_p")
        said = (f"{_coefficient(fit, 'data')} per log-n_train (paper: < 0); capacity + data = 0: "
                f"p = {'—' if p is None else f'{p:.3g}'}; data claim {results['law']['verdicts']['data']}")
    return Judged(claim["verdict"], f"ViT presence law: {said}{why}; blocks in {len(blocked)} of "
                                    f"{len(results['models'])} ViTs", describe(claim))


def judge_vit_capacity(results: dict) -> Judged:
    """Chapter 10, V1: the ViT presence law's capacity coefficient (> 0)."""
    return _vit_law(results, "capacity")


def judge_vit_data(results: dict) -> Judged:
    """Chapter 10, V1: the ViT law's data coefficient (< 0) and capacity + data = 0 not rejected, read as
    Chapter 3's row reads it: a contradicted or inestimable data claim is the row's verdict, else the relative one."""
    judged = _vit_law(results, "data")
    data = stored(results, "data")["verdict"]
    verdict = data if data in ("contradicted", "not estimable") else stored(results, "relative")["verdict"]
    return Judged(verdict, judged.evidence, f"data: {judged.stats}; relative: {describe(stored(results, 'relative'))}")


def judge_vit_first_pc(results: dict) -> Judged:
    """Chapter 10, V2: first-PC share inside minus outside each blocked ViT's CKA-only block (> 0), with the
    outlier-token control beside it (reported, not judged)."""
    claim = stored(results, "first_pc")
    tokens = results.get("tokens", {}).get("effect")
    control = f"; token-norm ratio inside minus outside (control, not judged): {tokens['verdict']}" if tokens else ""
    return Judged(claim["verdict"], f"first-PC share inside minus outside the block over {claim['n']} blocked "
                                    f"ViT(s){control}", describe(claim))


def judge_vit_uniform(results: dict) -> Judged:
    """Chapter 10, V3: the ViT's mean stream CKA minus its paired ResNet's (> 0: the ViT more uniform)."""
    claim = stored(results, "uniform")
    numbers = "; ".join(f"{p['vit_uniformity']:.2f} vs {p['resnet_uniformity']:.2f}"
                        for p in results["uniformity"].get("pairs", []))
    return Judged(claim["verdict"], f"mean CKA between stream layers, ViT vs its paired ResNet's: "
                                    f"{numbers or 'no pair'}", describe(claim))


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
    Finding("(Chapter 10) Wider or deeper Vision Transformers develop a block structure", "10_vit",
            "ViT heatmap grid", judge_vit_capacity),
    Finding("(Chapter 10) In ViTs too, it appears when capacity is large relative to the training set", "10_vit",
            "ViT heatmap grid (rows: n_train)", judge_vit_data),
    Finding("(Chapter 10) A ViT's block carries a dominant first principal component", "10_vit",
            "first-PC share inside and outside ViT blocks", judge_vit_first_pc),
    Finding("(Raghu et al. 2021) ViT representations are more uniform across layers than ResNets'", "10_vit",
            "stream CKA of ViT and ResNet side by side", judge_vit_uniform),
]


def block_uniqueness(results_dir: str | Path, profile=None) -> str:
    """What Chapter 4 found under CKA of each seed's block (its claim's verdict and each seed's numbers), from its
    results file, saying so when that file was written under another protocol than `profile`'s now."""
    path = Path(results_dir) / "04_pca.json"
    if not path.exists():
        return "Chapter 4 asks whether a block is unique to its model (its results are not here yet)"
    document = results_schema.read(path)
    judged = judge_seeds(document)
    stale = results_schema.stale_note(document, profile) if profile is not None else ""
    models = document["models"].values()
    compared = [e for e in models if e.get("cross_seed_cka_inside") is not None]
    if not compared:
        return "Chapter 4 found no seed with a block to compare" + (f" ({stale})" if stale else "")
    seeds = "; ".join(f"{results_schema.label(e)}: {e['cross_seed_cka_inside']:.2f} inside, "
                      f"{e['cross_seed_cka_outside']:.2f} outside" for e in compared)
    return (f"Chapter 4 judged \"each block is unique to its seed\" {judged.verdict} ({judged.stats}; CKA with the "
            f"other seeds {seeds})" + (f". {stale}" if stale else ""))


def load_results(results_dir: str | Path) -> dict[str, dict]:
    """Every chapter's results in `results_dir` (checked against the schema), keyed by chapter."""
    return results_schema.load_all(results_dir)


def claims_rows(results: dict[str, dict], findings: list[Finding] = FINDINGS) -> list[dict]:
    """One row per finding: claim, verdict, evidence, n and interval, chapter, figure and run ("not run" without
    results)."""
    rows = []
    for finding in findings:
        if finding.chapter in results:
            judged = finding.judge(results[finding.chapter])
        else:
            judged = Judged(NOT_RUN, f"no {finding.chapter}.json in this profile's results", "—")
        run = results_schema.run_of(results[finding.chapter]) if finding.chapter in results else "—"
        rows.append({"claim": finding.claim, "verdict": judged.verdict, "evidence": judged.evidence,
                     "stats": judged.stats, "chapter": finding.chapter, "figure": finding.figure, "run": run})
    return rows


def claims_table(rows: list[dict]) -> str:
    """The introduction's table: each finding, our verdict (bold), its n and interval, its evidence, figure,
    chapter link and run (the protocol hash its results were written under)."""
    return list_table(["the paper finds", "our runs", "n, interval", "evidence", "figure", "chapter", "run"], [
        [r["claim"], f"**{r['verdict']}**", r.get("stats", "—"), r["evidence"], r["figure"],
         f"[Chapter {int(r['chapter'][:2])}]({r['chapter']}.md)", _run_label(r.get("run", "—"))] for r in rows])


def runs_note(rows: list[dict], current: str) -> str:
    """What the table's rows rest on, said above it: one run under this page's protocol (`current`), or which runs
    they mix and which were written under another protocol. Rows are never silently mixed: each names its run."""
    runs = sorted({r["run"] for r in rows if r.get("run", "—") != "—"})
    if not runs:
        return "No chapter has results for this profile yet."
    label = {run: _run_label(run) for run in runs}
    stale = [run for run in runs if run != current]
    if len(runs) == 1 and not stale:
        return f"Every row comes from one run, under this book's protocol ({label[runs[0]]})."
    text = []
    if len(runs) > 1:
        counts = {run: sum(r.get("run") == run for r in rows) for run in runs}
        text.append(f"**These rows come from {len(runs)} different runs** (last column): "
                    + ", ".join(f"{label[run]} ({counts[run]} rows)" for run in runs)
                    + ". Rows of different runs are not one experiment; read each with its run.")
    if stale:
        text.append(f"Rows not written under this page's protocol (`{current}`), but before it or under "
                    "another: " + ", ".join(label[run] for run in stale) + "; rebuild those chapters "
                    "(`make book`) to judge them under it.")
    return " ".join(text)


STANDING = (("Reproduced at this scale", (verdicts.SHOWN, verdicts.SHOWN_IN_AGGREGATE)),
            ("Partly, or only suggested", (verdicts.PARTLY_SHOWN, verdicts.SUGGESTIVE)),
            ("Not reproduced", (verdicts.NOT_SHOWN, verdicts.CONTRADICTED)),
            ("Not testable here", (verdicts.NOT_TESTABLE, verdicts.NOT_ESTIMABLE)))


def standing(rows: list[dict], current: str) -> str:
    """The introduction's plain statement, from the table's rows: which findings this scale reproduces, which only
    partly, which not, and which it cannot test, counting only rows judged under this page's protocol (`current`;
    a row is placed by the verdict it starts with, and a qualified verdict is quoted beside its claim). Rows of
    another run, or of none yet, are listed apart."""
    groups: dict[str, list[str]] = {title: [] for title, _ in STANDING}
    own_words, pending = [], []
    for row in rows:
        if row.get("run") != current:
            run = row.get("run", "—")
            where = "not run" if run == "—" else f"{run}: {row['verdict']}"
            pending.append(f"{row['claim']} ({where})")
            continue
        title = next((t for t, heads in STANDING if verdicts.head(row["verdict"]) in heads), None)
        if title is None:
            own_words.append(f"{row['claim']}: {row['verdict']}")
        else:   # a verdict with a qualifier ("shown, beyond position: not shown") keeps it beside the claim
            qualified = row["verdict"] != verdicts.head(row["verdict"])
            groups[title].append(f"{row['claim']} — {row['verdict']}" if qualified else row["claim"])
    lines = [f"- **{title}** ({len(names)} of {len(rows)}): " + ("; ".join(names) if names else "none")
             for title, names in groups.items()]
    if own_words:
        lines.append(f"- **In a chapter's own words** ({len(own_words)} of {len(rows)}): " + "; ".join(own_words))
    if pending:
        lines.append(f"- **Not yet judged under this protocol** ({len(pending)} of {len(rows)}; their earlier "
                     f"verdicts in brackets, not counted above): " + "; ".join(pending))
    return "\n".join(lines)

def _run_label(run: str) -> str:
    return run if run == "—" else f"`{run}`"


def provenance_lines(results: dict[str, dict]) -> list[str]:
    """One line per results file: profile, commit, hardware, wall time and versions."""
    lines = []
    for chapter, result in results.items():
        p = result["provenance"]
        versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
        lines.append(f"{chapter}: profile {p['profile']}, commit {p['commit']}, {p['hardware']}, "
                     f"{p['wall_time_s']:.0f} s; {versions}; protocol {results_schema.run_of(result)}")
    return lines
