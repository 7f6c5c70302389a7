"""The introduction's claims table reads its verdicts and numbers from the results files."""

import pytest

from widedeep import profiles, protocol, store
from widedeep.analyses import first_pc, matching
from widedeep.book import claims, results

BLOCK = {"start": 3, "end": 9, "n_layers": 5, "mean_cka": 0.97, "outside_cka": 0.7}


def name(depth, n_train, seed=0):
    return f"fmnist16-resnet{depth}x1-n{n_train}-s{seed}-0000000{depth % 10}"


def entry(depth, n_train, seed=0, block=None, **extra):
    return {"depth": depth, "width": 1, "n_train": n_train, "seed": seed, "block": block, **extra}


def table(*entries):
    """Entries keyed by run name, as results files keep them."""
    return {name(e["depth"], e["n_train"], e["seed"]): e for e in entries}


def provenance(run="0123456789abcdef"):
    return {"profile": "cpu", "commit": "abc123", "hardware": "2 cores", "wall_time_s": 12.3,
            "versions": {"torch": "2.14"}, "protocol": run}


def verdict_object(verdict, n=3, **extra):
    """A recorded claim (`verdicts.claim`'s keys), as a results file keeps it."""
    return {"verdict": verdict, "n": n, "interval": None, "rule": "book/protocol.md", **extra}


def test_capacity_and_data_claims_come_from_chapter_3s_fitted_law():
    law = {"capacity_coef": [0.8, 0.2, 1.4], "data_coef": [-0.9, -1.5, -0.3], "relative_test_p": 0.6}
    chapter = {"models": table(entry(20, 500), entry(110, 500, block=BLOCK), entry(110, 1000, block=BLOCK)),
               "claims_fit": {"fit": "incidence_fit",
                              "verdicts": {"capacity": "shown", "data": "shown", "relative": "shown"}},
               "incidence_fit": law,
               "claims": {"capacity": verdict_object("shown", mean=0.8, interval=[0.2, 1.4]),
                          "data": verdict_object("shown", mean=-0.9, interval=[-1.5, -0.3])}}
    verdict, evidence, stats = claims.judge_capacity(chapter)
    assert verdict == "shown" and "blocks in 2 of 3 grid models" in evidence and "+0.800 [+0.200, +1.400]" in evidence
    assert "0 left out by the interpolation rule" in evidence and stats == "n = 3, mean +0.800 [+0.200, +1.400]"
    verdict, evidence, stats = claims.judge_data(chapter)
    assert verdict == "shown" and "-0.900 [-1.500, -0.300]" in evidence and "p = 0.6" in evidence
    assert stats == "n = 3, mean -0.900 [-1.500, -0.300]"
    # the row repeats the chapter's verdict object, with the models the interpolation rule left out
    chapter["claims_fit"]["left_out"] = ["fmnist16-resnet56x1-n250-s0-00000006"]
    chapter["claims"]["capacity"].update(left_out=1, left_out_why="grid models below the interpolation rule")
    verdict, evidence, stats = claims.judge_capacity(chapter)
    assert "1 left out by the interpolation rule" in evidence
    assert stats == "n = 3, mean +0.800 [+0.200, +1.400]; 1 left out (grid models below the interpolation rule)"
    chapter["claims_fit"] = {"fit": "continuous_fit",
                             "verdicts": {"capacity": "shown", "data": "contradicted", "relative": "not shown"}}
    chapter["continuous_fit"] = law
    assert claims.judge_data(chapter)[0] == "contradicted"
    chapter["claims_fit"] = {"fit": "none", "verdicts": {}}
    assert claims.judge_capacity(chapter)[0] == "not testable"


def removal(inside_before, outside_before, inside_after, outside_after):
    """The CKA of a block's span before and after its layers' first PC is removed (Chapter 4's entry keys)."""
    return {"cka_inside_before": inside_before, "cka_outside_before": outside_before,
            "cka_inside_after": inside_after, "cka_outside_after": outside_after}


CKA_ONLY = {"threshold": 0.9, "min_contrast": 0.2, "min_pc1": None}


def first_pc_chapter(*entries, detector=CKA_ONLY):
    """Chapter 4's fields the rows read, its verdict objects judged as the study judges them (`first_pc.claims`)."""
    return {"models": table(*entries), "blocks_broken": [], "detector": detector,
            "claims": first_pc.claims(entries, detector["min_pc1"])}


def test_first_pc_is_judged_on_cka_only_blocks_with_intervals_over_models():
    falls = removal(0.97, 0.70, 0.80, 0.75)   # contrast 0.27 -> 0.05
    dominated = [entry(110, n, s, block=BLOCK, pc1_share_inside=0.6 + 0.01 * s, pc1_share_outside=0.3, **falls)
                 for n in (500, 1000) for s in (0, 1)]
    verdict, evidence, stats = claims.judge_first_pc(first_pc_chapter(*dominated))
    assert verdict == "shown" and "n = 4" in stats and "[+" in stats
    # the same four, but the first PC no larger inside than outside in two of them: only one half holds
    mixed = dominated[:2] + [{**e, "pc1_share_inside": 0.1} for e in dominated[2:]]
    assert claims.judge_first_pc(first_pc_chapter(*mixed))[0] == "partly shown"
    assert claims.judge_first_pc(first_pc_chapter(entry(20, 500)))[0] == claims.NOT_TESTABLE


def test_one_or_two_models_are_at_most_suggestive():
    one = entry(110, 500, block=BLOCK, pc1_share_inside=0.6, pc1_share_outside=0.3, **removal(0.97, 0.7, 0.8, 0.75))
    verdict, evidence, stats = claims.judge_first_pc(first_pc_chapter(one))
    assert verdict == "suggestive (1 model)" and "n = 1" in stats


def test_a_block_circular_through_the_first_pc_rule_is_not_testable():
    """A detector that required a first-PC share >= 0.45 cannot then show that the first PC dominates."""
    dominated = [entry(110, 500, s, block=BLOCK, pc1_share_inside=0.6, pc1_share_outside=0.3,
                       **removal(0.97, 0.7, 0.8, 0.75)) for s in range(4)]
    verdict, _, _ = claims.judge_first_pc(first_pc_chapter(*dominated, detector={**CKA_ONLY, "min_pc1": 0.45}))
    assert verdict.startswith(claims.NOT_TESTABLE) and "first-PC rule" in verdict


def test_a_contrast_that_rises_under_pc_removal_is_not_broken():
    """ResNet-110 n500 of the pre-protocol run: contrast 0.28 -> 0.34 was counted as broken."""
    rises = [entry(110, 500, s, block=BLOCK, pc1_share_inside=0.6, pc1_share_outside=0.3,
                   **removal(0.90, 0.62 + 0.01 * s, 0.80, 0.46)) for s in range(4)]
    verdict, evidence, stats = claims.judge_first_pc(first_pc_chapter(*rises))
    assert verdict == "partly shown" and "contradicted" in evidence   # dominates, but the contrast rose


def test_missing_chapters_are_marked_not_run_and_rows_keep_the_findings_order(tmp_path):
    store.write_json(tmp_path / "03_block_structure.json", {
        "schema_version": results.SCHEMA_VERSION, "provenance": provenance(), "models": table(entry(20, 500)),
        "trends": {"capacity": "not shown", "data": "not shown"}, "detector": {}, "seed_study": {},
        "threshold_sweep": {}, "short_arm": {}, "arms_compared": [], "training_length_effect": {},
        **dict.fromkeys([f"{arm}{fit}_fit" for arm in ("", "short_arm_") for fit in ("incidence", "continuous",
                                                                                   "block_size")]),
        "claims_fit": {"fit": "continuous_fit", "verdicts": {"capacity": "not shown", "data": "not shown",
                                                             "relative": "not shown"}},
        "claims": {claim: verdict_object("not shown", n=1) for claim in ("capacity", "data", "relative")}})
    loaded = claims.load_results(tmp_path)
    rows = claims.claims_rows(loaded)
    assert [r["claim"] for r in rows] == [f.claim for f in claims.FINDINGS]
    assert [r["verdict"] for r in rows[:2]] == ["not shown", "not shown"]
    assert all(r["verdict"] == claims.NOT_RUN for r in rows[2:])
    assert claims.provenance_lines(loaded) == [
        "03_block_structure: profile cpu, commit abc123, 2 cores, 12 s; torch 2.14; protocol 0123456789abcdef"]
    assert {r["run"] for r in rows[:2]} == {"0123456789abcdef"} and {r["run"] for r in rows[2:]} == {"—"}
    assert "`0123456789abcdef`" in claims.claims_table(rows)


def test_a_results_file_without_a_claims_verdict_object_is_refused_by_name():
    chapter = {"provenance": provenance(), "models": table(entry(110, 500, block=BLOCK)), "claims": {}}
    with pytest.raises(results.SchemaError, match="no verdict object for the claim 'seeds_unique'"):
        claims.judge_seeds(chapter)


@pytest.mark.parametrize("finding", claims.FINDINGS, ids=lambda f: f.chapter)
def test_committed_cpu_results_fill_every_row_with_their_own_verdicts(finding):
    """The published table: every chapter's committed cpu results give a verdict that is in the file."""
    path = profiles.repo_root() / "results" / "cpu" / f"{finding.chapter}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not committed yet")
    result = results.read(path)
    verdict, evidence, stats = finding.judge(result)
    assert verdict and evidence
    recorded = {**result.get("trends", {}), **result.get("verdicts", {}),
                **result.get("claims_fit", {}).get("verdicts", {}),
                **({"claim": result["claim"]["verdict"]} if "claim" in result else {}),
                **{f"claims.{k}": v["verdict"] for k, v in result.get("claims", {}).items()}}
    if recorded:  # chapters that record their verdicts: the table repeats one of them (Chapter 5's deletion row:
        # the score's and the beyond-position claim's, joined)
        assert verdict in recorded.values() or all(
            part in recorded.values() for part in verdict.split(", beyond position: "))


def test_subspace_verdict_counts_layers_below_one_half_at_the_loosest_eps():
    # (pairs, layers, eps) with eps listed out of order: the loosest is 0.5, the first column
    scores = [[[0.10, 0.0], [0.30, 0.0]], [[0.20, 0.0], [0.50, 0.1]]]
    base = {"eps": [0.5, 0.15], "pairs": [[0, 1], [2, 3]], "layers": ["a", "b"],
            "match_scores": scores, "linear_cka": [[0.9, 0.8], [0.9, 0.8]], "mean_score_by_eps": [0.275, 0.025]}
    claim = verdict_object("shown", n=2, k=2, seeds=4, layer_intervals=[[0.1, 0.2], [0.3, 0.45]])
    verdict, evidence, stats = claims.judge_subspace({"base": base, "claims": {"wang_low_match": claim}})
    assert verdict == "shown" and evidence.startswith("2 of 2 layers") and "ε = 0.5" in evidence
    assert "mean score 0.28" in evidence and "CKA of the same layers is 0.85" in evidence
    assert "bootstrap over 4 seeds (largest upper bound 0.45)" in stats
    one_high = [[[0.10, 0.0], [0.60, 0.0]], [[0.20, 0.0], [0.50, 0.1]]]  # layer b: mean 0.55 at eps 0.5
    assert matching.subspace_verdict(one_high, base["eps"]) == ("partly shown", 1, 2)
    assert matching.subspace_verdict(one_high, base["eps"], threshold=0.6) == ("shown", 2, 2)
    assert matching.subspace_verdict([[[0.7], [0.9]]], [0.5])[0] == "not shown"


def test_origins_rows_are_judged_from_chapter_8s_verdicts_with_the_numbers_behind_them():
    name = "fmnist16-resnet110x1-n500-s1-1a2b3c4d"
    effect = {"contrast_before": 0.6, "contrast_after_dominant": 0.1, "drop_random_mean": 0.05}
    document = {"models": {name: {"depth": 110, "width": 1, "n_train": 500, "seed": 1}}, "removal": {name: effect},
                "concentration": {name: {"top_5pct": 0.7}}, "gaussian": {"top_5pct": 0.25},
                "within_model_overlap": {name: 0.4}, "across_seed_overlap": {name: 0.02}, "chance_overlap": 0.026,
                "snapshots": {name: [{"epoch": 15, "block_size": 0.3}, {"epoch": 150, "block_size": 0.5}]},
                "regularised": {"0.2": [{"has_block": False, "has_block_unregularised": True},
                                        {"has_block": True, "has_block_unregularised": True},
                                        {"has_block": False, "has_block_unregularised": False}]},
                "claims": {"dominant_datapoints": verdict_object("shown", n=1),
                           "differ_across_seeds": verdict_object("not testable: the permutation test needs three "
                                                                 "blocked seeds sharing layers", n=1, p=None),
                           "removal_breaks_block": verdict_object("shown", n=1),
                           "forms_early": verdict_object("shown", n=1),
                           "regulariser_removes_block": verdict_object("partly shown", n=2)}}
    verdict, evidence, stats = claims.judge_dominant_datapoints(document)
    assert verdict == "shown" and "top 5% carry 0.70, Jaccard between block layers 0.40" in evidence
    assert "(Gaussian scores: 0.25; two random sets: 0.026)" in evidence
    verdict, evidence, stats = claims.judge_differ_across_seeds(document)   # too few blocked seeds to permute
    assert verdict.startswith("not testable") and "ResNet-110 ×1, n=500, s1: 0.020" in evidence
    document["claims"]["differ_across_seeds"] = verdict_object("shown", n=4, p=0.01, within_seed=0.4,
                                                               across_seeds=0.05, layers=6)
    verdict, evidence, stats = claims.judge_differ_across_seeds(document)
    assert verdict == "shown" and evidence.startswith("mean Jaccard of one seed's dominant sets at two block "
                                                      "layers 0.400, of two seeds' sets at one layer 0.050")
    assert claims.judge_removal(document)[:2] == ("shown", "ResNet-110 ×1, n=500, s1: contrast 0.60 to 0.10 (random 0.55)")
    assert claims.judge_forms_early(document)[1].endswith("0.30 (epoch 15), 0.50 (epoch 150)")
    verdict, evidence, stats = claims.judge_regulariser(document)
    assert verdict == "partly shown" and evidence.startswith("1 of 2 (seed, threshold) runs")


def lens_results(found: dict, seen: list, unseen: list, verdict: str) -> dict:
    measures = {lens: {"k": 1 if lens in seen else 0, "n": 3} for lens in seen + unseen}
    return {"verdicts": found, "claim": {"verdict": verdict, "seen_by": seen, "not_seen_by": unseen},
            "claims": {"seen_by_other_measures": verdict_object(verdict, measures=measures)}}


def test_the_lens_row_counts_the_other_measures_that_see_the_block():
    found = {"linear CKA": "shown", "Procrustes": "shown", "RSA": "not shown", "SVCCA": "partly shown"}
    verdict, evidence, stats = claims.judge_lenses(lens_results(found, ["Procrustes"], ["RSA", "SVCCA"], "partly shown"))
    assert verdict == "partly shown"
    assert "seen by 1 of 3 other measures (Procrustes)" in evidence and "not by RSA, SVCCA" in evidence
    assert "under linear CKA: shown" in evidence and stats.endswith("Procrustes 1 of 3 seeds, RSA 0 of 3 seeds, "
                                                                    "SVCCA 0 of 3 seeds")
    untestable = dict.fromkeys(found, "not testable: no seed has a block")
    verdict, evidence, stats = claims.judge_lenses(lens_results(untestable, [], [], "not testable"))
    assert verdict == "not testable" and "no seed has a block" in evidence


def test_the_lens_row_reads_as_not_run_without_chapter_9():
    row = [r for r in claims.claims_rows({}) if r["chapter"] == "09_measures"]
    assert len(row) == 1 and row[0]["verdict"] == "not run"


def pair_entry(seed, others, inside, outside):
    """A blocked seed's Chapter 4 entry with its per-pair cross-seed CKA (inside, outside) against `others`."""
    pairs = {str(t): [inside(t), outside(t)] for t in others}
    return entry(110, 500, seed, block=BLOCK, cross_seed_pairs=pairs, pc1_share_inside=0.6, pc1_share_outside=0.3,
                 **removal(0.97, 0.7, 0.8, 0.75),
                 cross_seed_cka_inside=sum(v[0] for v in pairs.values()) / len(pairs),
                 cross_seed_cka_outside=sum(v[1] for v in pairs.values()) / len(pairs))


def test_seed_uniqueness_with_per_pair_values_is_a_bootstrap_over_seeds():
    seeds = range(6)
    steady = [pair_entry(s, [t for t in seeds if t != s], lambda t: 0.4, lambda t: 0.7 + 0.01 * t) for s in range(3)]
    verdict, evidence, stats = claims.judge_seeds(seed_chapter(*steady))
    assert verdict == "shown" and "bootstrap over 6 seeds" in stats and "n = 3" in stats
    assert "ResNet-110 ×1, n=500, s0: 0.40 inside vs 0.73 outside" in evidence
    # pairs that disagree wildly: seed 5 is unlike every blocked seed inside their blocks, the others alike
    noisy = [pair_entry(s, [t for t in seeds if t != s], lambda t: 0.1 if t == 5 else 0.9, lambda t: 0.75)
             for s in range(3)]
    verdict, _, stats = claims.judge_seeds(seed_chapter(*noisy))
    assert verdict == "not shown" and "bootstrap over 6 seeds" in stats
    assert claims.judge_seeds(seed_chapter(steady[0]))[0] == "suggestive (1 model)"
    assert claims.judge_seeds(seed_chapter(entry(20, 500)))[0] == claims.NOT_TESTABLE


def seed_chapter(*entries):
    """Chapter 4's seed-study fields, its claim judged as the study judges it."""
    return {"models": table(*entries), "claims": first_pc.claims(entries, None)}


def test_rows_of_different_protocol_hashes_are_marked_and_said_so_above_the_table():
    """No silent mixing (book/protocol.md): each row names its run, and the note above the table says when the
    rows come from more than one run or from another protocol than the page's."""
    rows = [{"run": "aaaa"}, {"run": "aaaa"}, {"run": "—"}]
    assert claims.runs_note(rows, "aaaa") == "Every row comes from one run, under this book's protocol (`aaaa`)."
    mixed = rows + [{"run": "bbbb"}]
    note = claims.runs_note(mixed, "aaaa")
    assert note.startswith("**These rows come from 2 different runs**") and "`aaaa` (2 rows), `bbbb` (1 rows)" in note
    assert "not written under this page's protocol (`aaaa`), but before it or under another: `bbbb`" in note
    stale = claims.runs_note(rows, "cccc")
    assert "different runs" not in stale and "under another: `aaaa`" in stale
    assert claims.runs_note([{"run": "—"}], "aaaa") == "No chapter has results for this profile yet."
    table = claims.claims_table([{"claim": "c", "verdict": "shown", "evidence": "e", "figure": "f", "stats": "n = 3",
                                  "chapter": "04_pca", "run": "bbbb"}])
    assert "n = 3" in table and "`bbbb`" in table


def test_a_chapter_reading_another_chapters_stale_results_says_so(tmp_path):
    profile = profiles.load_profile("smoke")
    current = protocol.protocol_hash(profile)
    blocked = pair_entry(0, [1, 2], lambda t: 0.4, lambda t: 0.7)
    document = {"schema_version": results.SCHEMA_VERSION, "provenance": provenance(),
                "models": table(blocked), "detector": {}, "blocks_broken": [], "cross_seed_matched_stream_mean": 0.8,
                "claims": first_pc.claims([blocked], None)}
    store.write_json(tmp_path / "04_pca.json", document)
    sentence = claims.block_uniqueness(tmp_path, profile)
    assert "written under protocol 0123456789abcdef, not under this book's protocol now" in sentence
    assert current in sentence
    document["provenance"]["protocol"] = current
    store.write_json(tmp_path / "04_pca.json", document)
    assert "Note:" not in claims.block_uniqueness(tmp_path, profile)
    assert results.stale_note({"provenance": provenance("fedcba9876543210")}, profile).startswith(
        "Note: the results read here were written under protocol fedcba9876543210, not")


def test_the_subspace_claim_bootstraps_each_layer_over_seeds():
    """Chapter 7 (book/protocol.md): a layer matches in under half its neurons when its upper bound, from a
    bootstrap over the four seeds, is below 0.5; a layer whose pairs with one seed match highly is not."""
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    scores = [[[0.10 + 0.01 * a], [0.8 if 3 in (a, b) else 0.2], [0.44 + 0.01 * b]] for a, b in pairs]
    from widedeep.analyses.matching import subspace_claim
    claim = subspace_claim(scores, [0.5], pairs)
    assert claim["verdict"] == "partly shown" and (claim["k"], claim["n"]) == (2, 3)
    assert claim["layer_intervals"][1][1] > 0.5 > claim["layer_intervals"][2][1]
    one_pair = subspace_claim(scores[2:3], [0.5], pairs[2:3])   # seeds 0 and 3: layer b's pair is at 0.8
    assert one_pair["verdict"] == "not shown"
    assert subspace_claim([[[0.1], [0.2]]], [0.5], [(0, 1)])["verdict"] == "suggestive (2 models)"


def vit_results(first_pc_verdict="shown", uniform_verdict="not shown", data="shown", relative="shown"):
    """A Chapter 10 results file's fields the rows read: the ViT grid, the law, and claims V1-V3."""
    def claim(verdict, **extra):
        return {"verdict": verdict, "n": 6, "mean": 0.2, "interval": [0.1, 0.3], "rule": "Chapter 10", **extra}
    models = {f"fmnist16-vit{d}x32-n250-s0-0000000{d}": {"depth": d, "width": 32, "n_train": 250, "seed": 0,
                                                          "block": BLOCK if d > 4 else None} for d in (4, 8, 16)}
    law = {"fits": {"incidence_fit": {"capacity_coef": [0.7, 0.1, 1.3], "data_coef": [-0.4, -0.9, 0.1],
                                      "relative_test_p": 0.5}},
           "verdicts": {"capacity": "shown", "data": data, "relative": relative}}
    return {"models": models, "law": law, "tokens": {"effect": {"verdict": "not shown"}},
            "uniformity": {"pairs": [{"vit_uniformity": 0.81, "resnet_uniformity": 0.74}]},
            "claims": {"capacity": claim("shown"), "data": claim(data), "relative": claim(relative),
                       "first_pc": claim(first_pc_verdict), "uniform": claim(uniform_verdict)}}


def test_chapter_10_rows_repeat_its_verdict_objects_with_the_numbers_behind_them():
    chapter = vit_results()
    verdict, evidence, stats = claims.judge_vit_capacity(chapter)
    assert verdict == "shown" and "+0.700 [+0.100, +1.300]" in evidence and "blocks in 2 of 3 ViTs" in evidence
    assert stats == "n = 6, mean +0.200 [+0.100, +0.300]"
    assert claims.judge_vit_data(chapter)[0] == "shown"
    # a contradicted data claim is the row's verdict whatever the relative claim says, as in Chapter 3's row
    assert claims.judge_vit_data(vit_results(data="contradicted", relative="not shown"))[0] == "contradicted"
    assert claims.judge_vit_data(vit_results(data="shown", relative="not shown"))[0] == "not shown"
    verdict, evidence, _ = claims.judge_vit_first_pc(vit_results(first_pc_verdict="suggestive (2 models)"))
    assert verdict == "suggestive (2 models)" and "control, not judged): not shown" in evidence
    verdict, evidence, _ = claims.judge_vit_uniform(chapter)
    assert verdict == "not shown" and "0.81 vs 0.74" in evidence
    rows = claims.claims_rows({"10_vit": {**chapter, "provenance": provenance()}})
    assert [r["verdict"] for r in rows if r["chapter"] == "10_vit"] == ["shown", "shown", "shown", "not shown"]


def test_the_standing_counts_only_rows_of_this_protocol_and_lists_the_others_apart():
    rows = [{"claim": "A", "verdict": "shown", "run": "abc"},
            {"claim": "B", "verdict": "suggestive (2 models)", "run": "abc"},
            {"claim": "C", "verdict": "contradicted", "run": "abc"},
            {"claim": "D", "verdict": "not run", "run": "—"},
            {"claim": "E", "verdict": "shown, beyond position: not shown", "run": "0ld"},
            {"claim": "F", "verdict": "plateau", "run": "abc"},
            {"claim": "G", "verdict": "not estimable", "run": "abc"},
            {"claim": "H", "verdict": "partly shown", "run": "abc"},
            {"claim": "I", "verdict": "shown, beyond position: not shown", "run": "abc"}]
    lines = claims.standing(rows, "abc").splitlines()
    # a qualified verdict is placed by its head, and quoted so the qualifier is not lost from the plain statement
    assert lines[0] == "- **Reproduced at this scale** (2 of 9): A; I — shown, beyond position: not shown"
    assert lines[1] == "- **Partly, or only suggested** (2 of 9): B — suggestive (2 models); H"
    assert lines[2] == "- **Not reproduced** (1 of 9): C"
    assert lines[3] == "- **Not testable here** (1 of 9): G"
    assert lines[4] == "- **In a chapter's own words** (1 of 9): F: plateau"
    assert lines[5] == ("- **Not yet judged under this protocol** (2 of 9; their earlier verdicts in brackets, not "
                        "counted above): D (not run); E (0ld: shown, beyond position: not shown)")


def test_the_deletion_row_names_blocked_models_without_a_block_free_control():
    """A blocked model whose architecture has no block-free model at its positions has no control (None values)."""
    def claim(verdict):
        return {"verdict": verdict, "n": 2, "mean": 0.06, "interval": [0.05, 0.07], "rule": "book/protocol.md"}
    blocked = entry(110, 500, 0, block=BLOCK, verdicts={"mean_delta_inside": -0.02, "mean_delta_outside": -0.1})
    chapter = {"models": table(blocked, entry(110, 250, 1, block=BLOCK)),
               "position_control": {name(110, 500): {"control_inside": -0.021, "control_outside": -0.095},
                                    name(110, 250, 1): {"control_inside": None, "control_outside": None}},
               "claims": {"deletion": claim("shown"), "deletion_beyond_position": claim("not shown")}, "verdicts": {}}
    verdict, evidence, stats = claims.judge_deletion(chapter)
    assert verdict == "shown, beyond position: not shown"
    assert "ResNet-110 ×1, n=500, s0: -0.020 inside vs -0.100 outside" in evidence
    assert evidence.endswith("without a block: -0.021 vs -0.095 (1 blocked model(s) without a block-free control)")
    assert stats.startswith("score: n = 2, mean +0.060 [+0.050, +0.070]")
