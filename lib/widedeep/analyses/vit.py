"""Chapter 10: the paper's questions asked of small Vision Transformers, and ViT layers beside ResNet layers.

Layer: analyses (on `structure`, `incidence`, `measure_tests` and the run records of `runs`; below book
support). The rules are the protocol's (`book/protocol.md`, "Chapter 10"):

- **the law** on the ViT grid (claims V1): Chapter 3's Firth logistic law of block presence over
  log(parameters), log(n_train) and the series, judged as Chapter 3 judges it; the block is the
  CKA-only detector's (`blocks.block_structure_span` without a first-PC condition);
- **the first PC inside ViT blocks** (claim V2): per blocked ViT, mean first-PC share of its block's
  stream layers minus that of its other stream layers, a paired effect (direction > 0). The control
  for ViTs' high-norm outlier tokens is each stream layer's token-norm ratio (largest token norm over
  the median token norm of the same image), reported inside against outside, not judged;
- **uniformity** (claim V3, Raghu et al. 2021): per (ViT, ResNet) pair, the mean CKA between distinct
  residual-stream layers of the ViT minus that of the ResNet, a paired effect (direction > 0);
- **correspondence** (reported, not judged): debiased CKA between the ViT's and the ResNet's stream
  layers, beside the same CKA with the ResNet's examples shuffled (the calibrated baseline) and the
  calibrated score (best - null) / (1 - null) of `measure_tests.calibrated_score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from widedeep import profiles, protocol, records
from widedeep.analyses import incidence, measure_tests, runs, structure, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.analyses.verdicts import NOT_TESTABLE, paired_verdict
from widedeep.capture import Capture, batches, capture_outputs
from widedeep.measures.cka import cka
from widedeep.measures.grams import gram_linear
from widedeep.profiles import Profile

VERSIONS = records.register_kinds({"tokens": 1, "crosscal": 1})
LAW_FITS = ("incidence_fit", "continuous_fit")   # presence (judged) and the maximum first-PC share (reported)


# ---------------------------------------------------------------------------------------------
# Per-run records: token norms, and the calibrated ViT-ResNet heatmap
# ---------------------------------------------------------------------------------------------

def token_ratio(output: torch.Tensor) -> torch.Tensor:
    """Per image: its largest token norm over its median token norm, from an (n, tokens, width) map."""
    if output.dim() != 3:
        raise ValueError(f"a token map is (examples, tokens, width); got shape {tuple(output.shape)}")
    norms = output.float().norm(dim=-1)
    return norms.max(dim=1).values / norms.median(dim=1).values


def run_token_ratios(run, data, batch_size: int, layers: list[str]) -> dict[str, np.ndarray]:
    """Per layer of a ViT, the token-norm ratio's mean and maximum over the images of `data` (a record)."""
    def compute():
        sums, peaks, count = np.zeros(len(layers)), np.zeros(len(layers)), 0
        with Capture(run.model, layers, lambda _, output: token_ratio(output)) as capture:
            for images in batches(data.images, batch_size):
                ratios = torch.stack(capture(images)).double().numpy()
                sums += ratios.sum(axis=1)
                peaks = np.maximum(peaks, ratios.max(axis=1))
                count += ratios.shape[1]
        return {"mean": sums / count, "max": peaks}

    return run.record("tokens", VERSIONS["tokens"], {"examples": runs.examples_key(data), "batch": batch_size,
                                                     "layers": list(layers)}, compute)


def shuffled_cka(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor], order: np.ndarray | None) -> np.ndarray:
    """Debiased CKA of every pair of layers of A and B, B's examples taken in `order` (None: as they are)."""
    if order is not None:
        index = torch.as_tensor(order)
        grams_b = [g[index][:, index] for g in grams_b]
    return np.array([[cka(a, b, debiased=True) for b in grams_b] for a in grams_a])


def run_cross_calibration(run_a, run_b, data, layers_a: list[str], layers_b: list[str], draws: int,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Debiased CKA between two runs' layers on `data` and its shuffled-examples baseline (a record of run_a).

    Returns {"cka": (La, Lb), "null": (La, Lb)}: the null is the mean over `draws` shuffles of B's examples
    (one shuffle for all of B's layers per draw), which keeps every layer's width and spectrum and destroys
    any correspondence between the examples.
    """
    def compute():
        grams_a = [gram_linear(x) for x in capture_outputs(run_a.model, data.images, layers_a)]
        grams_b = [gram_linear(x) for x in capture_outputs(run_b.model, data.images, layers_b)]
        rng = np.random.default_rng(seed)
        null = np.mean([shuffled_cka(grams_a, grams_b, rng.permutation(len(data.images))) for _ in range(draws)],
                       axis=0)
        return {"cka": shuffled_cka(grams_a, grams_b, None), "null": null}

    return run_a.record("crosscal", VERSIONS["crosscal"], {
        "b": run_b.config.name(), "examples": runs.examples_key(data), "layers_a": list(layers_a),
        "layers_b": list(layers_b), "draws": draws, "seed": seed}, compute)


# ---------------------------------------------------------------------------------------------
# Statistics and verdicts
# ---------------------------------------------------------------------------------------------

def uniformity(matrix: np.ndarray) -> float:
    """Mean CKA between distinct layers of a within-model heatmap (symmetrised): 1 for a uniform stream."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"uniformity needs a square heatmap of at least 2 layers; got shape {matrix.shape}")
    sym = (matrix + matrix.T) / 2
    return float(sym[~np.eye(len(sym), dtype=bool)].mean())


def best_match_depths(matrix: np.ndarray) -> np.ndarray:
    """For each row layer, the relative depth (0..1) of its most similar column layer."""
    matrix = np.asarray(matrix, dtype=float)
    return np.argmax(matrix, axis=1) / max(matrix.shape[1] - 1, 1)


def describe(result: dict, verdict: bool = True) -> str:
    """'shown: n = 5, mean +0.12 [+0.05, +0.19]': a paired effect's verdict with its n and interval (without the
    verdict for a number that is reported, not judged)."""
    text = verdicts.describe(result)
    return f"{result['verdict']}: {text}" if verdict else text


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------

@dataclass
class Pair:
    """A reference ViT and the ResNet it is set beside, analysed, with their calibrated cross heatmap."""

    vit: BlockAnalysis
    resnet: BlockAnalysis
    cross: dict[str, np.ndarray]      # {"cka", "null"} over stream layers (ViT rows, ResNet columns)

    @property
    def calibrated(self) -> np.ndarray:
        """The cross heatmap calibrated against its shuffled-examples baseline: 0 at chance, 1 at a perfect match."""
        return measure_tests.calibrated_score(self.cross["cka"], self.cross["null"])

    def uniformity_difference(self) -> float:
        """Mean stream CKA of the ViT minus that of the ResNet."""
        return uniformity(self.vit.stream_cka) - uniformity(self.resnet.stream_cka)


class VitStudy:
    """Chapter 10's ViT grid analysed, its law fitted, and its reference ViTs set beside the base ResNets."""

    def __init__(self, profile: Profile):
        self.profile = profile
        rules = protocol.rules()
        self.level = rules["level"]
        self.paired = {"level": rules["level"], "min_models": rules["min_models"],
                       "sign_flip_from": rules["sign_flip_min_models"]}
        self.models = structure.analyse_all(profiles.vit_grid(profile), profile)
        v = profile.vit
        self.rows = [vit_row(m, v.width_series_depth, v.depth_series_width) for m in self.models]
        rule = profile.grid.min_train_acc
        self.eligible = [r for r in self.rows if rule is None or r["train_acc"] >= rule]
        self.by_name = {m.run.config.name(): m for m in self.models}
        pairs = profiles.vit_resnet_pairs(profile)
        vits = structure.analyse_all([a for a, _ in pairs], profile)
        resnets = structure.analyse_all([b for _, b in pairs], profile)
        self.pairs = [Pair(a, b, self._cross(a, b)) for a, b in zip(vits, resnets)]

    def _cross(self, a: BlockAnalysis, b: BlockAnalysis) -> dict[str, np.ndarray]:
        v = self.profile.vit
        data = runs.cka_images(a.run, v.calibration_examples)
        return run_cross_calibration(a.run, b.run, data, a.stream_names, b.stream_names, v.calibration_draws)

    def _meets_rule(self, m: BlockAnalysis) -> bool:
        rule = self.profile.grid.min_train_acc
        return rule is None or m.run.metrics["final"]["train_acc"] >= rule

    # -- V1: the law -----------------------------------------------------------------------------

    def law(self) -> dict:
        """The laws on the eligible ViTs; the verdicts are the presence fit's (not estimable with too few events:
        the maximum first-PC share's law is then reported, not judged, as the protocol fixes)."""
        try:
            fits = incidence.fit_laws(self.eligible, self.level)
        except ValueError as error:   # e.g. one n_train: capacity and data cannot be told apart
            return {"fits": {}, "reason": str(error),
                    "verdicts": {k: NOT_TESTABLE for k in ("capacity", "data", "relative")}}
        record = incidence.law_record(fits, self.eligible)
        return {"fits": record, "verdicts": record["incidence_fit"]["verdicts"]}

    # -- V2: the first PC inside ViT blocks, and the outlier-token control -------------------------

    def blocked(self) -> list[BlockAnalysis]:
        """The eligible ViTs with a block (CKA alone)."""
        names = {r["name"] for r in self.eligible if r["has_block"]}
        return [m for m in self.models if m.run.config.name() in names]

    def first_pc(self) -> dict:
        """Per blocked ViT the first-PC share inside minus outside its block, judged as a paired effect (> 0)."""
        differences = {}
        for m in self.blocked():
            inside, outside = _inside_outside(m.pc1_share, m)
            differences[m.run.config.name()] = inside - outside
        return {"differences": differences, **paired_verdict(list(differences.values()), +1, **self.paired),
                "left_out": len(self.rows) - len(self.eligible), "left_out_why": "ViTs below the interpolation rule"}

    def tokens(self) -> dict:
        """Per ViT the token-norm ratio of every stream layer; per blocked ViT its mean inside minus outside."""
        per_model, differences = {}, {}
        for m in self.models:
            data = runs.cka_images(m.run, self.profile.cka.examples)
            ratios = run_token_ratios(m.run, data, self.profile.cka.batch_size, m.stream_names)
            per_model[m.run.config.name()] = {"mean": ratios["mean"], "max": ratios["max"]}
        for m in self.blocked():
            full = np.full(len(m.names), np.nan)
            full[m.stream] = per_model[m.run.config.name()]["mean"]
            inside, outside = _inside_outside(full, m)
            differences[m.run.config.name()] = inside - outside
        return {"per_model": per_model, "inside_minus_outside": differences,
                "effect": paired_verdict(list(differences.values()), +1, **self.paired),   # reported, not judged
                "largest": float(max(np.max(r["max"]) for r in per_model.values())) if per_model else None}

    # -- V3: uniformity; correspondence ----------------------------------------------------------

    def uniformity(self) -> dict:
        """Per (ViT, ResNet) pair meeting the rule: mean stream CKA of each and their difference; judged (> 0)."""
        pairs = [p for p in self.pairs if self._meets_rule(p.vit) and self._meets_rule(p.resnet)]
        entries = [{"vit": p.vit.run.config.name(), "resnet": p.resnet.run.config.name(),
                    "vit_uniformity": uniformity(p.vit.stream_cka),
                    "resnet_uniformity": uniformity(p.resnet.stream_cka),
                    "difference": p.uniformity_difference()} for p in pairs]
        return {"pairs": entries, **paired_verdict([e["difference"] for e in entries], +1, **self.paired),
                "left_out": len(self.pairs) - len(pairs), "left_out_why": "a model of the pair below the rule"}

    def correspondence(self) -> dict:
        """Per pair, the best-matching ResNet depth of each ViT stream layer, raw and calibrated; the mean null."""
        out = []
        for p in self.pairs:
            raw, calibrated = p.cross["cka"], p.calibrated
            depths = np.linspace(0, 1, raw.shape[0])
            out.append({"vit": p.vit.run.config.name(), "resnet": p.resnet.run.config.name(),
                        "best_depth_raw": best_match_depths(raw), "best_depth_calibrated": best_match_depths(calibrated),
                        "best_raw": raw.max(axis=1), "best_calibrated": calibrated.max(axis=1),
                        "mean_null": float(p.cross["null"].mean()), "max_null": float(p.cross["null"].max()),
                        "depth_rank_correlation": _spearman(depths, best_match_depths(calibrated))})
        return {"pairs": out}

    def correspondence_text(self) -> dict[str, str]:
        """The correspondence's sentences: the shuffled null, what calibration changes, the best matches' depths."""
        if not self.pairs:
            return {k: "n/a (no pair)" for k in ("cross_null", "cross_null_max", "calibration_effect",
                                                  "best_depths", "depth_correlation")}
        nulls = np.concatenate([p.cross["null"].ravel() for p in self.pairs])
        change = max(float(np.nanmax(np.abs(p.calibrated - p.cross["cka"]))) for p in self.pairs)
        moved = sum(int(np.any(best_match_depths(p.calibrated) != best_match_depths(p.cross["cka"])))
                    for p in self.pairs)
        depths = best_match_depths(self.pairs[0].calibrated)
        correlations = [_spearman(np.linspace(0, 1, len(d)), d) for d in
                        (best_match_depths(p.calibrated) for p in self.pairs)]
        shown = [f"{c:+.2f}" if c is not None else "undefined (a constant best match)" for c in correlations]
        return {"cross_null": f"{nulls.mean():.3f}", "cross_null_max": f"{nulls.max():.3f}",
                "calibration_effect": f"changes no entry by more than {change:.3f} and moves a best match in "
                                      f"{moved} of {len(self.pairs)} pair(s)",
                "best_depths": ", ".join(f"{d:.2f}" for d in depths),
                "depth_correlation": ", ".join(shown) + f" over the {len(self.pairs)} pair(s)"}

    def mean_cross(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw, null and calibrated cross heatmaps averaged over the pairs."""
        raw, null, calibrated = zip(*[(p.cross["cka"], p.cross["null"], p.calibrated) for p in self.pairs])
        return np.mean(raw, axis=0), np.mean(null, axis=0), np.mean(calibrated, axis=0)

    # -- results ---------------------------------------------------------------------------------

    def rule(self) -> dict:
        """The interpolation rule on the ViT grid: models meeting it, of how many, and the lowest train accuracy."""
        accs = [r["train_acc"] for r in self.rows]
        return {"min_train_acc": self.profile.grid.min_train_acc, "held": len(self.eligible), "models": len(self.rows),
                "lowest": min(accs) if accs else None}

    def verdicts(self, law: dict, first_pc: dict, uniform: dict) -> dict[str, str]:
        """The chapter's claims as verdicts: the law's three, the first PC inside blocks, uniformity."""
        return {**law["verdicts"], "first_pc": first_pc["verdict"], "uniform": uniform["verdict"]}

    def claims(self, law: dict, first_pc: dict, uniform: dict) -> dict[str, dict]:
        """Claims V1-V3 as verdict objects (`verdicts.claim`) with the rule of book/protocol.md, Chapter 10."""
        section = "book/protocol.md, Chapter 10"
        fit = law["fits"].get("incidence_fit")
        common = {"n": len(self.eligible), "left_out": len(self.rows) - len(self.eligible),
                  "left_out_why": "ViTs below the interpolation rule"}
        out = {}
        for name, sign in (("capacity", "> 0"), ("data", "< 0")):
            value = fit[f"{name}_coef"] if fit is not None and fit["estimable"] else None
            out[name] = verdicts.claim({**common, "verdict": law["verdicts"][name],
                                        "mean": None if value is None else value[0],
                                        "interval": None if value is None else value[1:]},
                                       f"{section}, V1: Firth presence law's {name} coefficient {sign}, "
                                       f"profile-likelihood interval")
        out["relative"] = verdicts.claim({**common, "verdict": law["verdicts"]["relative"], "interval": None,
                                          "lr_test_p": None if fit is None else fit["relative_test_p"]},
                                         f"{section}, V1: capacity and data shown, capacity + data = 0 not rejected")
        out["first_pc"] = verdicts.claim(first_pc, f"{section}, V2: first-PC share inside minus outside the "
                                                   f"CKA-only block, paired effect > 0")
        out["uniform"] = verdicts.claim(uniform, f"{section}, V3: mean stream CKA of the ViT minus the ResNet's, "
                                                 f"paired effect > 0")
        return out

    def record(self, law: dict, first_pc: dict, tokens: dict, uniform: dict, correspondence: dict) -> dict:
        """The chapter's results (the keys of `results.CHAPTERS["10_vit"]`)."""
        return {"settings": self.profile.section_values("vit"), "models": _keyed(self.rows),
                "resnets": _keyed([p.resnet.summary() for p in self.pairs]), "rule": self.rule(), "law": law,
                "first_pc": first_pc, "tokens": tokens, "uniformity": uniform, "correspondence": correspondence,
                "verdicts": self.verdicts(law, first_pc, uniform), "claims": self.claims(law, first_pc, uniform)}


def law_sentence(fit: dict | None) -> str:
    """'capacity +1.2 [+0.3, +2.1], data ...; capacity + data = 0: p = 0.4' of a fit's record, or why there is none."""
    if fit is None:
        return "not fitted (one data size, or a grid that cannot separate capacity from data)"
    if not fit["estimable"]:
        return f"not estimable ({fit['reason']})"
    parts = [f"{name} {fit[f'{name}_coef'][0]:+.3f} [{fit[f'{name}_coef'][1]:+.3f}, {fit[f'{name}_coef'][2]:+.3f}]"
             for name in ("capacity", "data", "series") if f"{name}_coef" in fit]
    return ", ".join(parts) + f"; capacity + data = 0: p = {fit['relative_test_p']:.3g}"


def vit_row(m: BlockAnalysis, width_series_depth: int, depth_series_width: int) -> dict:
    """A ViT's summary with its series, arch and CKA-only block as the block the law and the claims read."""
    s = m.summary()
    block = s["block_cka_only"]
    return {**s, "arch": "vit", "block": block, "has_block": block is not None, "block_size": s["block_size_cka_only"],
            "series": incidence.series_of(s["depth"], s["width"], width_series_depth, depth_series_width)}


def _keyed(rows: list[dict]) -> dict[str, dict]:
    """{run name: row without its name}, as results files key their tables of models."""
    return {row["name"]: {k: v for k, v in row.items() if k != "name"} for row in rows}


def _inside_outside(values: np.ndarray, m: BlockAnalysis) -> tuple[float, float]:
    """Mean of a per-layer vector over the CKA-only block's stream layers and over the other stream layers."""
    block = m.block_cka_only
    stream = m.stream
    inside = (stream >= block.start) & (stream <= block.end)
    return float(np.mean(values[stream[inside]])), float(np.mean(values[stream[~inside]]))


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation, None where either side is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)
