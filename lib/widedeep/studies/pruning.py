"""Chapter 5's study (book/05_pruning.md): is the block structure doing any work?

Layer: studies (on `widedeep.analyses.probes`, `deletion`, `structure` and the run records of `runs`).
`study(models, settings)` takes the analysed models of both schedule arms and the seed study and the
profile's probe and deletion sections, and returns `PruningResult`: each model's tested span (its
block, else its CKA-only block as a control), probe accuracies along the residual stream and their
plateau across the span, single and cumulative deletions of its residual blocks with and without a
BatchNorm repair, the controls for what the span's position alone explains, and the paper's two
claims judged by book/protocol.md on the models with a block that no rule leaves out. Every step runs
in one fixed order inside the call. Probes and deletions are records (`runs.run_probes`,
`runs.run_deletions`); its stored fields are `results/<profile>/05_pruning.json`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from widedeep import experiments, protocol
from widedeep.analyses import deletion, probes, runs, structure
from widedeep.analyses import verdicts as v
from widedeep.analyses.structure import BlockAnalysis, same_architecture_without_block
from widedeep.profiles import Deletion, Probes, Profile
from widedeep.studies import drawn, section_values
from widedeep.train import TrainConfig

CHAPTER = "05_pruning"
SECTION = "book/protocol.md, Chapter 5"


@dataclass(frozen=True)
class Settings:
    """What Chapter 5 reads of a profile: the probe and deletion sections, the interpolation rule and which part
    each run plays in the protocol's claims (`structure.roles`)."""

    probes: Probes
    deletion: Deletion
    min_train_acc: float | None
    roles: Mapping[str, str]


def settings(profile: Profile) -> Settings:
    """Chapter 5's settings from a profile."""
    return Settings(profile.probes, profile.deletion, profile.grid.min_train_acc, structure.roles(profile))


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 5 reads: both schedule arms and the seed study."""
    return experiments.block_models(profile)


def models(profile: Profile) -> list[BlockAnalysis]:
    """Both schedule arms and the seed study, analysed for the block structure from their records."""
    return structure.analyse_all(configs(profile), profile)


@dataclass(frozen=True)
class PruningResult:
    """Chapter 5's results: the stored fields are `05_pruning.json`'s keys, in order; the drawn ones feed the page
    (named as its tables and figures read them)."""

    settings: dict                          # the profile's probe_* and deletion_* keys
    timing_s: dict[str, float]              # wall time of the probes and of the deletions (not a result)
    verdicts: dict[str, str]                # the paper's two claims, as the introduction's table reads them
    position_control: dict[str, dict]       # per judged model (run name): the same positions deleted in controls
    probe_position_control: dict[str, dict]   # per judged model: the probe statistic at its layers in its controls
    models: dict[str, dict]                 # per model (run name): span, probes, deletions, its verdicts
    claims: dict[str, dict]                 # the verdict objects (run names where they name models)
    section_probes: Probes = drawn()
    section_deletion: Deletion = drawn()
    analysed: tuple[BlockAnalysis, ...] = drawn()
    spans: dict[str, tuple] = drawn()       # label -> (tested span, "block" | "cka_only" | None)
    blocked: tuple[BlockAnalysis, ...] = drawn()
    judged: tuple[BlockAnalysis, ...] = drawn()   # models with a block that no rule leaves out: the claims' units
    left: dict[str, str | None] = drawn()   # label -> why a rule leaves the model out, or None
    probe_rows: dict[str, list[dict]] = drawn()
    effects: dict[str, dict] = drawn()      # label -> `runs.run_deletions`
    model_verdicts: dict[str, dict] = drawn()   # label -> the model's probe and deletion statistics and verdicts
    deletion_scores: dict[str, dict] = drawn()  # judged label -> {"score", "se", "kept"}
    probe_position: dict[str, dict] = drawn()   # label -> {control label: probe statistic}
    position: dict[str, dict] = drawn()     # label -> position control (control labels)
    named_claims: dict[str, dict] = drawn()    # the claims as judged (model labels)

    @property
    def with_block(self) -> list[str]:
        """Labels of the models with a block."""
        return [m.label for m in self.blocked]

    @property
    def controls(self) -> list[str]:
        """Labels of the models tested on their CKA-only block (controls, not blocks)."""
        return [m.label for m in self.analysed if self.spans[m.label][1] == "cka_only"]

    def probe_accuracy(self, m: BlockAnalysis) -> list[float]:
        """Probe test accuracy along m's residual stream."""
        return [r["test_acc"] for r in self.probe_rows[m.label]]

    def plot_label(self, m: BlockAnalysis) -> str:
        """The model's label, saying which span is shaded."""
        return m.label + {"block": "", "cka_only": " (CKA-only span)", None: " (no block)"}[self.spans[m.label][1]]

    def agreement(self, key: str, expected: str) -> str:
        """Whether the judged models bear out the paper's `expected` verdict on `key` (descriptive)."""
        return v.agreement([self.model_verdicts[m.label][key] for m in self.judged], expected)


def specificity(verdict: str) -> str:
    """The paired verdict on the position control, in the words of the probe row: specific to the block when
    shown, not specific when not shown or contradicted, as it is when suggestive or not testable."""
    if v.head(verdict) == v.SHOWN:
        return v.SPECIFIC
    return verdict if v.head(verdict) in (v.SUGGESTIVE, v.NOT_TESTABLE) else v.NOT_SPECIFIC


def headline(plateau: str, specific: str, n: int) -> str:
    """The probe row's headline (book/protocol.md): 'shown, not specific to the block (n = 5)'."""
    words = specificity(specific)
    if v.head(words) == v.NOT_TESTABLE:
        words = "control not testable"
    elif v.head(words) == v.SUGGESTIVE:
        words = f"specificity {words}"
    return f"{plateau}, {words} (n = {n})"


def inside_stream(m: BlockAnalysis, span) -> list[bool]:
    """For each residual-stream layer of m, whether it lies in `span` (a block in m's layer indices, or None)."""
    return [span is not None and span.start <= i <= span.end for i in m.stream]


def study(models: Sequence[BlockAnalysis], settings: Settings) -> PruningResult:
    """Chapter 5: probes and deletions across each model's tested span, their controls and the two claims."""
    models, rules = list(models), protocol.rules()
    level, least, flips = rules["level"], rules["min_models"], rules["sign_flip_min_models"]
    spans = {m.label: m.tested_block() for m in models}          # (span, "block" | "cka_only" | None)
    blocked = [m for m in models if m.block is not None]
    eligibility = structure.eligibility_by_role(models, dict(settings.roles), settings.min_train_acc)
    left = {m.label: eligibility[m.run.config.name()]["left_out"] for m in models}
    judged = [m for m in blocked if not left[m.label]]
    below = [m for m in blocked if left[m.label]]
    rule_left_out = {"left_out": len(below), "left_out_why": "models with a block below the interpolation rule"}
    controls_of = {m.label: [c for c in same_architecture_without_block(m, models) if not left[c.label]]
                   for m in judged}
    claims: dict[str, dict] = {}

    def judge(name: str, found: dict, rule: str, **extra) -> dict:
        claims[name] = v.claim(found, f"{SECTION}: {rule}", **extra)
        return claims[name]

    # probes along the residual stream, and the plateau across each tested span
    timing, start = {}, time.perf_counter()
    probe_rows = {m.label: runs.run_probes(m.run, [m.run.layers()[i] for i in m.stream], settings.probes)
                  for m in models}
    timing["probes"] = round(time.perf_counter() - start, 1)
    accuracy = {label: [r["test_acc"] for r in rows] for label, rows in probe_rows.items()}
    model_verdicts: dict[str, dict] = {m.label: {} for m in models}
    for m in models:
        inside = inside_stream(m, spans[m.label][0])
        model_verdicts[m.label].update({"probe_gain_inside": probes.gain_inside(accuracy[m.label], inside),
                                        "probe_change": probes.largest_change(accuracy[m.label], inside),
                                        "probe": probes.plateau_verdict(accuracy[m.label], inside,
                                                                        settings.probes.plateau_tol)})
    plateau = judge("probe_plateau", v.bound_verdict([model_verdicts[m.label]["probe_change"] for m in judged],
                                                     settings.probes.plateau_tol, level, least),
                    "largest |probe accuracy change| from the block's first layer, t-interval upper bound <= "
                    "probe_plateau_tol", **rule_left_out)
    probe_position, differences = {}, []
    for m in judged:
        mask = inside_stream(m, spans[m.label][0])
        probe_position[m.label] = {c.label: probes.largest_change(accuracy[c.label], mask)
                                   for c in controls_of[m.label]}
        if controls_of[m.label]:
            differences.append(float(np.mean(list(probe_position[m.label].values())))
                               - model_verdicts[m.label]["probe_change"])
    specific = judge("probe_specific", v.paired_verdict(differences, +1, level, least, flips) if differences else
                     {"verdict": f"{v.NOT_TESTABLE}: no position control", "n": 0, "mean": None, "interval": None},
                     "probe statistic of the position controls minus the model's own, paired effect > 0")
    judge("probe", {**plateau, "verdict": headline(plateau["verdict"], specific["verdict"], plateau["n"])},
          "the plateau's verdict and its block-free control's, in one headline")

    # deleting residual blocks one at a time and cumulatively, and the deletion score of each judged model
    start = time.perf_counter()
    effects = {m.label: runs.run_deletions(m.run, deletion.block_membership(m.run.architecture, spans[m.label][0]),
                                           settings.deletion) for m in models}
    timing["deletions"] = round(time.perf_counter() - start, 1)
    resamples, bound = rules["deletion_se_resamples"], rules["deletion_max_se"]
    for m in models:
        model_verdicts[m.label].update(deletion.deletion_verdicts(effects[m.label], settings.deletion.margin))
    scores = {}
    for m in judged:
        parts = deletion.example_scores(effects[m.label])
        own = model_verdicts[m.label]
        se = None if parts is None else v.bootstrap_se(parts, resamples)
        scores[m.label] = {"score": own["mean_delta_inside"] - own["mean_delta_outside"], "se": se,
                           "kept": se is not None and se <= bound}
        own.update(deletion_score=scores[m.label]["score"], deletion_se=se)
    kept = [k for k, d in scores.items() if d["kept"]]
    over = [k for k, d in scores.items() if d["se"] is not None and d["se"] > bound]
    sideless = [k for k, d in scores.items() if d["se"] is None]
    why = "; ".join(text for count, text in (
        (len(over), f"{len(over)} with a standard error over {bound:g}"),
        (len(sideless), f"{len(sideless)} without a deletable block on one side"),
        (len(below), f"{len(below)} below the interpolation rule")) if count)
    judge("deletion", v.paired_verdict([scores[k]["score"] for k in kept], +1, level, least, flips),
          "mean accuracy change of single deletions inside minus outside the block, paired effect > 0, models with "
          "a bootstrap standard error over deletion_max_se left out", left_out=len(over) + len(sideless) + len(below),
          left_out_why=why or "none", over_se=over)

    # what position alone costs: the same positions deleted in the position controls
    position, beyond = {}, []
    for m in judged:
        control_inside, control_outside = deletion.position_control(
            effects[m.label]["deletions"], [effects[c.label]["deletions"] for c in controls_of[m.label]])
        own = model_verdicts[m.label]
        difference = own["deletion_score"] - (control_inside - control_outside)
        position[m.label] = {
            "controls": [c.label for c in controls_of[m.label]], "control_inside": control_inside,
            "control_outside": control_outside, "beyond_position": difference,
            "verdict": deletion.cost_verdict(own["mean_delta_inside"] - control_inside,
                                             own["mean_delta_outside"] - control_outside, settings.deletion.margin)}
        if scores[m.label]["kept"] and np.isfinite(difference):
            beyond.append(difference)
    why = "no position control" if any(d["kept"] for d in scores.values()) else (
        "no model's deletion score within its standard-error bound")
    judge("deletion_beyond_position", v.paired_verdict(beyond, +1, level, least, flips) if beyond else
          {"verdict": f"{v.NOT_TESTABLE}: {why}", "n": 0, "mean": None, "interval": None},
          "deletion score minus its position controls' at the same positions, paired effect > 0")

    def agreement(key: str) -> str:
        return v.agreement([model_verdicts[m.label][key] for m in judged], v.CHEAPER_INSIDE)

    name = {m.label: m.run.config.name() for m in models}
    entries = {}
    for m in models:
        r, e, rows = m.summary(), effects[m.label], probe_rows[m.label]
        entries[name[m.label]] = {
            **{k: r[k] for k in ("depth", "width", "n_train", "seed", "test_acc", "block", "block_cka_only")},
            "span_from": spans[m.label][1], "probe_layers": [p["layer"] for p in rows],
            "probe_acc": [p["test_acc"] for p in rows], "probe_val_acc": [p["val_acc"] for p in rows],
            "probe_l2": [p["l2"] for p in rows], "deletion_baseline_acc": e["baseline_acc"],
            **eligibility[name[m.label]],
            "repair_only_delta": e["repair_only_delta"], "deletions": e["deletions"],
            "cumulative_inside": e["cumulative_inside"], "cumulative_outside": e["cumulative_outside"],
            "verdicts": model_verdicts[m.label]}
    return PruningResult(
        settings=section_values(settings.probes, settings.deletion), timing_s=timing,
        verdicts={"probe_plateau": claims["probe"]["verdict"],
                  "probe_plateau_specific_to_block": specificity(claims["probe_specific"]["verdict"]),
                  "single_deletion_cheaper_inside": claims["deletion"]["verdict"],
                  "single_deletion_cheaper_inside_beyond_position": claims["deletion_beyond_position"]["verdict"],
                  "single_deletion_cheaper_inside_repaired": agreement("single_repaired"),
                  "cumulative_deletion_cheaper_inside": agreement("cumulative")},
        position_control={name[k]: {**p, "controls": [name[c] for c in p["controls"]]} for k, p in position.items()},
        probe_position_control={name[k]: {name[c]: g for c, g in gains.items()} for k, gains in probe_position.items()},
        models=entries,
        claims={k: ({**c, "over_se": [name[label] for label in c["over_se"]]} if "over_se" in c else c)
                for k, c in claims.items()},
        section_probes=settings.probes, section_deletion=settings.deletion, analysed=tuple(models), spans=spans,
        blocked=tuple(blocked), judged=tuple(judged), left=left, probe_rows=probe_rows, effects=effects,
        model_verdicts=model_verdicts, deletion_scores=scores, probe_position=probe_position, position=position,
        named_claims=claims)


RESULT = PruningResult
MODEL_TABLES = ("models",)
VERDICTS = ("verdicts.*", "position_control.*.verdict") + tuple(f"models.*.verdicts.{k}" for k in (
    "probe", "single", "single_repaired", "cumulative", "cumulative_repaired"))
