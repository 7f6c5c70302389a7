"""Chapter 10's study (book/10_vit.md): the paper's questions asked of small Vision Transformers.

Layer: studies (on `widedeep.analyses.vit` for the ViT tools and record kinds, `structure`, `incidence`).
`models(profile)` reads the ViT grid and the (ViT, ResNet) pairs, analysed from their records;
`study(models, settings)` takes them and the settings it reads (the ViT and CKA sections, the
interpolation rule) and returns `VitResult`: the law of block incidence on the ViT grid (claim V1),
the first PC inside ViT blocks with the token-norm ratio as the outlier-token control (V2),
uniformity against Chapter 2's base ResNet (V3) and the calibrated ViT-ResNet correspondence
(reported), judged by book/protocol.md, Chapter 10. Its stored fields are `results/<profile>/10_vit.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from widedeep import experiments, protocol
from widedeep.analyses import incidence, runs, structure, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.analyses.verdicts import NOT_TESTABLE, paired_verdict
from widedeep.analyses.vit import (Pair, best_match_depths, inside_outside, run_cross_calibration, run_token_ratios,
                                   spearman, uniformity, vit_row)
from widedeep.profiles import CKA, Profile, Vit
from widedeep.studies import drawn, keyed, section_values
from widedeep.train import TrainConfig

CHAPTER = "10_vit"
SECTION = "book/protocol.md, Chapter 10"


@dataclass(frozen=True)
class Models:
    """Chapter 10's analysed runs: the ViT grid, and each reference ViT beside its base ResNet."""

    grid: tuple[BlockAnalysis, ...]
    pairs: tuple[tuple[BlockAnalysis, BlockAnalysis], ...]


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 10 reads: the ViT grid and reference ViTs, and the base ResNets they are set beside."""
    return experiments.vit_runs(profile) + [resnet for _, resnet in experiments.vit_resnet_pairs(profile)]


def models(profile: Profile) -> Models:
    """The chapter's runs, analysed for the block structure from their records."""
    pairs = experiments.vit_resnet_pairs(profile)
    vits = structure.analyse_all([a for a, _ in pairs], profile)
    resnets = structure.analyse_all([b for _, b in pairs], profile)
    return Models(tuple(structure.analyse_all(experiments.vit_grid(profile), profile)), tuple(zip(vits, resnets)))


@dataclass(frozen=True)
class Settings:
    """What Chapter 10 reads of a profile: the ViT section, the CKA section (the token-norm images and batches)
    and the interpolation rule."""

    vit: Vit
    cka: CKA
    min_train_acc: float | None


def settings(profile: Profile) -> Settings:
    """Chapter 10's settings from a profile."""
    return Settings(profile.vit, profile.cka, profile.grid.min_train_acc)


@dataclass(frozen=True)
class VitResult:
    """Chapter 10's results: the stored fields are `10_vit.json`'s keys, in order; the drawn ones feed the page."""

    settings: dict                    # the profile's vit_* keys
    models: dict[str, dict]           # the ViT grid, by run name (each with its CKA-only block as the block)
    resnets: dict[str, dict]          # the base ResNets the reference ViTs are set beside
    rule: dict                        # the interpolation rule on the ViT grid
    law: dict                         # V1: the laws on the eligible ViTs and the presence fit's verdicts
    first_pc: dict                    # V2: first-PC share inside minus outside each blocked ViT's block
    tokens: dict                      # the outlier-token control (reported, not judged)
    uniformity: dict                  # V3: mean stream CKA of the ViT minus the ResNet's, per pair
    correspondence: dict              # the best-matching ResNet depth of each ViT layer, raw and calibrated
    verdicts: dict[str, str]
    claims: dict[str, dict]
    analysed: tuple[BlockAnalysis, ...] = drawn()   # the ViT grid
    pairs: tuple[Pair, ...] = drawn()
    eligible: tuple[dict, ...] = drawn()            # the grid's rows meeting the rule
    blocked: tuple[BlockAnalysis, ...] = drawn()    # the eligible ViTs with a (CKA-only) block

    @property
    def models_list(self) -> list[BlockAnalysis]:
        """The ViT grid (as the page's figures and tables take it)."""
        return list(self.analysed)

    def mean_cross(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw, null and calibrated cross heatmaps averaged over the pairs."""
        raw, null, calibrated = zip(*[(p.cross["cka"], p.cross["null"], p.calibrated) for p in self.pairs])
        return np.mean(raw, axis=0), np.mean(null, axis=0), np.mean(calibrated, axis=0)


def fit_law(eligible: list[dict], level: float) -> dict:
    """The laws on the eligible ViTs; the verdicts are the presence fit's (not estimable with too few events: the
    maximum first-PC share's law is then reported, not judged, as the protocol fixes)."""
    if not eligible:
        return {"fits": {}, "reason": "no ViT meets the interpolation rule",
                "verdicts": {k: NOT_TESTABLE for k in ("capacity", "data", "relative")}}
    try:
        fits = incidence.fit_laws(eligible, level)
    except ValueError as error:   # e.g. one n_train: capacity and data cannot be told apart
        return {"fits": {}, "reason": str(error),
                "verdicts": {k: NOT_TESTABLE for k in ("capacity", "data", "relative")}}
    record = incidence.law_record(fits, eligible)
    return {"fits": record, "verdicts": record["incidence_fit"]["verdicts"]}


def claims(law: dict, first_pc: dict, uniform: dict, n: int, left_out: int) -> dict[str, dict]:
    """Claims V1-V3 as verdict objects (`verdicts.claim`) with the rule of book/protocol.md, Chapter 10."""
    fit = law["fits"].get("incidence_fit")
    common = {"n": n, "left_out": left_out, "left_out_why": "ViTs below the interpolation rule"}
    out = {}
    for name, sign in (("capacity", "> 0"), ("data", "< 0")):
        value = fit[f"{name}_coef"] if fit is not None and fit["estimable"] else None
        out[name] = verdicts.claim({**common, "verdict": law["verdicts"][name], "mean": None if value is None
                                    else value[0], "interval": None if value is None else value[1:]},
                                   f"{SECTION}, V1: Firth presence law's {name} coefficient {sign}, "
                                   f"profile-likelihood interval")
    out["relative"] = verdicts.claim({**common, "verdict": law["verdicts"]["relative"], "interval": None,
                                      "lr_test_p": None if fit is None else fit["relative_test_p"]},
                                     f"{SECTION}, V1: capacity and data shown, capacity + data = 0 not rejected")
    out["first_pc"] = verdicts.claim(first_pc, f"{SECTION}, V2: first-PC share inside minus outside the "
                                               f"CKA-only block, paired effect > 0")
    out["uniform"] = verdicts.claim(uniform, f"{SECTION}, V3: mean stream CKA of the ViT minus the ResNet's, "
                                             f"paired effect > 0")
    return out


def study(models: Models, settings: Settings) -> VitResult:
    """Chapter 10 on the ViT grid and its pairs: the law, the first PC and its token control, uniformity, the
    calibrated correspondence, and claims V1-V3."""
    v, rule, rules = settings.vit, settings.min_train_acc, protocol.rules()
    paired = {"level": rules["level"], "min_models": rules["min_models"],
              "sign_flip_from": rules["sign_flip_min_models"]}
    grid = list(models.grid)
    rows = [vit_row(m, v.width_series_depth, v.depth_series_width) for m in grid]
    eligible = [r for r in rows if rule is None or r["train_acc"] >= rule]
    left_out = len(rows) - len(eligible)

    def meets_rule(m: BlockAnalysis) -> bool:
        return rule is None or m.run.metrics["final"]["train_acc"] >= rule

    pairs = []
    for a, b in models.pairs:
        data = runs.cka_images(a.run, v.calibration_examples)
        pairs.append(Pair(a, b, run_cross_calibration(a.run, b.run, data, a.stream_names, b.stream_names,
                                                      v.calibration_draws)))
    law = fit_law(eligible, rules["level"])

    # V2: the first PC inside ViT blocks, and the outlier-token control
    names = {r["name"] for r in eligible if r["has_block"]}
    blocked = [m for m in grid if m.run.config.name() in names]
    differences = {}
    for m in blocked:
        inside, outside = inside_outside(m.pc1_share, m)
        differences[m.run.config.name()] = inside - outside
    first_pc = {"differences": differences, **paired_verdict(list(differences.values()), +1, **paired),
                "left_out": left_out, "left_out_why": "ViTs below the interpolation rule"}
    per_model, token_differences = {}, {}
    for m in grid:
        ratios = run_token_ratios(m.run, runs.cka_images(m.run, settings.cka.examples), settings.cka.batch_size,
                                  m.stream_names)
        per_model[m.run.config.name()] = {"mean": ratios["mean"], "max": ratios["max"]}
    for m in blocked:
        full = np.full(len(m.names), np.nan)
        full[m.stream] = per_model[m.run.config.name()]["mean"]
        inside, outside = inside_outside(full, m)
        token_differences[m.run.config.name()] = inside - outside
    tokens = {"per_model": per_model, "inside_minus_outside": token_differences,
              "effect": paired_verdict(list(token_differences.values()), +1, **paired),   # reported, not judged
              "largest": float(max(np.max(r["max"]) for r in per_model.values())) if per_model else None}

    # V3: uniformity per pair meeting the rule; the correspondence, reported
    judged = [p for p in pairs if meets_rule(p.vit) and meets_rule(p.resnet)]
    entries = [{"vit": p.vit.run.config.name(), "resnet": p.resnet.run.config.name(),
                "vit_uniformity": uniformity(p.vit.stream_cka), "resnet_uniformity": uniformity(p.resnet.stream_cka),
                "difference": p.uniformity_difference()} for p in judged]
    uniform = {"pairs": entries, **paired_verdict([e["difference"] for e in entries], +1, **paired),
               "left_out": len(pairs) - len(judged), "left_out_why": "a model of the pair below the rule"}
    correspondence = []
    for p in pairs:
        raw, calibrated = p.cross["cka"], p.calibrated
        depths = np.linspace(0, 1, raw.shape[0])
        correspondence.append({
            "vit": p.vit.run.config.name(), "resnet": p.resnet.run.config.name(),
            "best_depth_raw": best_match_depths(raw), "best_depth_calibrated": best_match_depths(calibrated),
            "best_raw": raw.max(axis=1), "best_calibrated": calibrated.max(axis=1),
            "mean_null": float(p.cross["null"].mean()), "max_null": float(p.cross["null"].max()),
            "depth_rank_correlation": spearman(depths, best_match_depths(calibrated))})
    accs = [r["train_acc"] for r in rows]
    return VitResult(
        settings=section_values(v), models=keyed(rows), resnets=keyed([p.resnet.summary() for p in pairs]),
        rule={"min_train_acc": rule, "held": len(eligible), "models": len(rows), "lowest": min(accs) if accs else None},
        law=law, first_pc=first_pc, tokens=tokens, uniformity=uniform, correspondence={"pairs": correspondence},
        verdicts={**law["verdicts"], "first_pc": first_pc["verdict"], "uniform": uniform["verdict"]},
        claims=claims(law, first_pc, uniform, len(eligible), left_out),
        analysed=tuple(grid), pairs=tuple(pairs), eligible=tuple(eligible), blocked=tuple(blocked))


RESULT = VitResult
MODEL_TABLES = ("models", "resnets")
VERDICTS = ("verdicts.*", "law.verdicts.*")
