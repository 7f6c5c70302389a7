"""Is the block structure doing any work? (Chapter 5): probes across each model's tested span, deleting its
residual blocks, and controls for what the span's position alone explains.

Layer: analyses (on `probes`, `deletion`, `runs` and `structure`; below book support). `PruningStudy`
holds the analysed models and, step by step, what the chapter computes of them: the tested span of
each model (its block, else its CKA-only block as a control), probe accuracies, deletion effects,
per-model verdicts, the position controls and the verdicts on the paper's two claims, each as the
numbers it rests on and the sentence the chapter quotes. Probes and deletions come from the run
store's caches (`runs.run_probes`, `runs.run_deletions`).
"""

from __future__ import annotations

import time

import numpy as np

from widedeep import protocol
from widedeep.analyses import deletion, probes, runs, structure
from widedeep.analyses import verdicts as v
from widedeep.analyses.structure import BlockAnalysis, same_architecture_without_block
from widedeep.profiles import Profile

SECTION = "book/protocol.md, Chapter 5"

SPAN_SOURCES = {"block": "block", "cka_only": "CKA-only (control)", None: "—"}
MAX_FOCUS = 6  # models with a block drawn in the figures


def signed(value: float) -> str:
    """+0.012 style, or a dash where there is nothing to measure (NaN)."""
    return f"{value:+.3f}" if np.isfinite(value) else "—"


class PruningStudy:
    """Chapter 5 on analysed models: each model's tested span, probes and deletions across it, verdicts, controls."""

    def __init__(self, models: list[BlockAnalysis], profile: Profile):
        self.models, self.profile = models, profile
        self.spans = {m.label: m.tested_block() for m in models}     # (span, "block" | "cka_only" | None)
        self.blocked = [m for m in models if m.block is not None]
        self.controls = [m.label for m in models if self.spans[m.label][1] == "cka_only"]
        self.with_block = [m.label for m in self.blocked]
        self.probe_rows: dict[str, list[dict]] = {}
        self.effects: dict[str, dict] = {}
        self.verdicts: dict[str, dict] = {m.label: {} for m in models}
        self.probe_position: dict[str, dict[str, float]] = {}
        self.position: dict[str, dict] = {}
        self.timing_s: dict[str, float] = {}
        # the protocol's units: models with a block that no rule leaves out (a grid model below the
        # interpolation rule is left out and counted; the short arm is described, not judged)
        self.rules = protocol.rules()
        self.eligibility = structure.eligibility(models, profile)
        self.judged = [m for m in self.blocked if not self.left(m)]
        self.claims: dict[str, dict] = {}
        self.deletion_scores: dict[str, dict] = {}

    def left(self, m: BlockAnalysis) -> str | None:
        """Why a rule leaves m out of the claims (`structure.left_out`), or None."""
        return self.eligibility[m.run.config.name()]["left_out"]

    def position_controls(self, m: BlockAnalysis) -> list[BlockAnalysis]:
        """m's position controls: models of its architecture and n_train without a block that no rule leaves out."""
        return [c for c in same_architecture_without_block(m, self.models) if not self.left(c)]

    def rule_left_out(self) -> dict:
        """The models with a block a rule leaves out, counted for a verdict object."""
        below = [m for m in self.blocked if self.left(m)]
        return {"left_out": len(below), "left_out_why": "models with a block below the interpolation rule"}

    def left_out_sentence(self) -> str:
        """'none' or the models with a block a rule leaves out, with why."""
        return "; ".join(f"{m.label} ({self.left(m)})" for m in self.blocked if self.left(m)) or "none"

    def _judge(self, name: str, result: dict, rule: str, **extra) -> dict:
        self.claims[name] = v.claim(result, f"{SECTION}: {rule}", **extra)
        return self.claims[name]

    # -- the models ------------------------------------------------------------------------------

    def focus(self) -> tuple[list[BlockAnalysis], str]:
        """The models the figures show and a sentence saying why: those with a block (and one without, for
        contrast), or, where none has one, the model with the largest first-PC share."""
        models, blocked = self.models, self.blocked
        if blocked:
            contrast = max([m for m in models if m.block is None], key=lambda m: (len(m.stream), m.run.test_acc),
                           default=None)
            shown = blocked[:MAX_FOCUS]
            note = (f"{len(blocked)} of {len(models)} models have a block; the figures show "
                    f"{', '.join(m.label for m in shown)}" +
                    (f", and for contrast {contrast.label}, which has none." if contrast else "."))
            return shown + ([contrast] if contrast else []), note
        fallback = max(models, key=lambda m: np.nanmax(m.pc1_share[m.stream]))
        span, _ = self.spans[fallback.label]
        note = (f"No model of the {self.profile.name!r} profile has a block under the book's definition, so the "
                f"paper's two claims cannot be tested on a block here. The figures show instead {fallback.label}, "
                f"the model with the largest first-PC share ({np.nanmax(fallback.pc1_share[fallback.stream]):.2f}), "
                + (f"with its CKA-only block ({fallback.span_name(span)}) shaded as a control."
                   if span is not None else "which has no CKA-only block either: nothing is shaded."))
        return [fallback], note

    def plot_label(self, m: BlockAnalysis) -> str:
        """The model's label, saying which span is shaded."""
        return m.label + {"block": "", "cka_only": " (CKA-only span)", None: " (no block)"}[self.spans[m.label][1]]

    def inside_stream(self, m: BlockAnalysis, span_of: BlockAnalysis | None = None) -> list[bool]:
        """For each residual-stream layer of m, whether it lies in the tested span (of `span_of`, default m)."""
        span = self.spans[(span_of or m).label][0]
        return [span is not None and span.start <= i <= span.end for i in m.stream]

    # -- probes ----------------------------------------------------------------------------------

    def fit_probes(self) -> None:
        """Probe accuracies of every residual-stream layer of every model (cached in the run folders)."""
        start = time.perf_counter()
        for m in self.models:
            layers = [m.run.layers()[i] for i in m.stream]
            self.probe_rows[m.label] = runs.run_probes(m.run, layers, self.profile.probes)
        self.timing_s["probes"] = round(time.perf_counter() - start, 1)

    def probe_accuracy(self, m: BlockAnalysis) -> list[float]:
        """Probe test accuracy along m's residual stream."""
        return [r["test_acc"] for r in self.probe_rows[m.label]]

    def judge_probes(self) -> dict[str, str]:
        """Per model the probe statistic (the largest |accuracy change| from its span's first layer to a later one)
        and the endpoint verdict (descriptive); the plateau claim over the judged models (book/protocol.md)."""
        tol, level, least = self.profile.probes.plateau_tol, self.rules["level"], self.rules["min_models"]
        for m in self.models:
            accuracy, inside = self.probe_accuracy(m), self.inside_stream(m)
            self.verdicts[m.label].update({"probe_gain_inside": probes.gain_inside(accuracy, inside),
                                           "probe_change": probes.largest_change(accuracy, inside),
                                           "probe": probes.plateau_verdict(accuracy, inside, tol)})
        plateau = self._judge("probe_plateau", v.bound_verdict(
            [self.verdicts[m.label]["probe_change"] for m in self.judged], tol, level, least),
            "largest |probe accuracy change| from the block's first layer, t-interval upper bound <= "
            "probe_plateau_tol", **self.rule_left_out())
        changes = ", ".join(f"{k}: {self.verdicts[k]['probe_change']:.3f}" for k in self.with_block + self.controls)
        return {"probe_verdict": plateau["verdict"], "probe_n": v.describe(plateau),
                "probe_tally": self.tally("probe"), "probe_tally_controls": self.tally("probe", self.controls),
                "probe_gains": changes or "none (no tested span)"}

    def probe_position_control(self) -> dict[str, str]:
        """Whether the plateau belongs to the block: per judged model, the probe statistic at its layers in its
        position controls (mean over them) minus its own, a paired effect > 0; and the row's headline."""
        differences = []
        for m in self.judged:
            mask = self.inside_stream(m)
            same = self.position_controls(m)
            self.probe_position[m.label] = {c.label: probes.largest_change(self.probe_accuracy(c), mask) for c in same}
            if same:
                differences.append(float(np.mean(list(self.probe_position[m.label].values())))
                                   - self.verdicts[m.label]["probe_change"])
        result = (v.paired_verdict(differences, +1, self.rules["level"], self.rules["min_models"],
                                   self.rules["sign_flip_min_models"]) if differences else
                  {"verdict": f"{v.NOT_TESTABLE}: no position control", "n": 0, "mean": None, "interval": None})
        specific = self._judge("probe_specific", result, "probe statistic of the position controls minus the "
                               "model's own, paired effect > 0")
        plateau = self.claims["probe_plateau"]
        self._judge("probe", {**plateau, "verdict": headline(plateau["verdict"], specific["verdict"], plateau["n"])},
                    "the plateau's verdict and its block-free control's, in one headline")
        position = "; ".join(
            f"{k}: {self.verdicts[k]['probe_change']:.3f} in its block, "
            + (", ".join(f"{g:.3f}" for g in changes.values()) or "no control") + " at the same layers without a block"
            for k, changes in self.probe_position.items()) or "no model with a block"
        return {"probe_specific": specificity(specific["verdict"]), "probe_specific_n": v.describe(specific),
                "probe_headline": self.claims["probe"]["verdict"], "probe_position": position}

    # -- deletions -------------------------------------------------------------------------------

    def delete_blocks(self) -> None:
        """Single and cumulative deletions of every model's residual blocks (cached by the tested span)."""
        start = time.perf_counter()
        for m in self.models:
            membership = deletion.block_membership(m.run.architecture, self.spans[m.label][0])
            self.effects[m.label] = runs.run_deletions(m.run, membership, self.profile.deletion)
        self.timing_s["deletions"] = round(time.perf_counter() - start, 1)

    def judge_deletions(self) -> dict[str, str]:
        """Per model the mean deletion costs inside and outside its span (descriptive); per judged model its score
        (inside minus outside) and the score's standard error by a bootstrap over the test examples; the claim over
        the judged models whose standard error is within `deletion_max_se` (the others left out and counted)."""
        resamples, bound = self.rules["deletion_se_resamples"], self.rules["deletion_max_se"]
        for m in self.models:
            self.verdicts[m.label].update(deletion.deletion_verdicts(self.effects[m.label],
                                                                     self.profile.deletion.margin))
        for m in self.judged:
            parts = deletion.example_scores(self.effects[m.label])
            own = self.verdicts[m.label]
            se = None if parts is None else v.bootstrap_se(parts, resamples)
            self.deletion_scores[m.label] = {"score": own["mean_delta_inside"] - own["mean_delta_outside"], "se": se,
                                             "kept": se is not None and se <= bound}
            own.update(deletion_score=self.deletion_scores[m.label]["score"], deletion_se=se)
        kept = [k for k, d in self.deletion_scores.items() if d["kept"]]
        over = [k for k, d in self.deletion_scores.items() if d["se"] is not None and d["se"] > bound]
        sideless = [k for k, d in self.deletion_scores.items() if d["se"] is None]
        below = self.rule_left_out()["left_out"]
        why = "; ".join(text for count, text in (
            (len(over), f"{len(over)} with a standard error over {bound:g}"),
            (len(sideless), f"{len(sideless)} without a deletable block on one side"),
            (below, f"{below} below the interpolation rule")) if count)
        claim = self._judge("deletion", v.paired_verdict(
            [self.deletion_scores[k]["score"] for k in kept], +1, self.rules["level"], self.rules["min_models"],
            self.rules["sign_flip_min_models"]), "mean accuracy change of single deletions inside minus outside the "
            "block, paired effect > 0, models with a bootstrap standard error over deletion_max_se left out",
            left_out=len(over) + len(sideless) + below, left_out_why=why or "none", over_se=over)
        return {"single_verdict": claim["verdict"], "single_n": v.describe(claim),
                "single_verdict_repaired": self.agreement("single_repaired", v.CHEAPER_INSIDE),
                "single_tally": self.tally("single"), "single_tally_controls": self.tally("single", self.controls),
                "deletion_se": ", ".join(f"{k}: {d['se']:.4f}" for k, d in self.deletion_scores.items()
                                         if d["se"] is not None) or "none", "max_se": f"{bound:g}"}

    def position_control(self) -> dict[str, str]:
        """What position alone costs: the same positions deleted in the position controls, per judged model whose
        score is kept; beyond position is its score minus the controls' (a paired effect > 0)."""
        margin = self.profile.deletion.margin
        beyond = []
        for m in self.judged:
            same = self.position_controls(m)
            control_inside, control_outside = deletion.position_control(
                self.effects[m.label]["deletions"], [self.effects[c.label]["deletions"] for c in same])
            own = self.verdicts[m.label]
            difference = own["deletion_score"] - (control_inside - control_outside)
            self.position[m.label] = {
                "controls": [c.label for c in same], "control_inside": control_inside,
                "control_outside": control_outside, "beyond_position": difference,
                "verdict": deletion.cost_verdict(own["mean_delta_inside"] - control_inside,
                                                 own["mean_delta_outside"] - control_outside, margin)}
            if self.deletion_scores[m.label]["kept"] and np.isfinite(difference):
                beyond.append(difference)
        kept = any(d["kept"] for d in self.deletion_scores.values())
        why = "no position control" if kept else "no model's deletion score within its standard-error bound"
        result = (v.paired_verdict(beyond, +1, self.rules["level"], self.rules["min_models"],
                                   self.rules["sign_flip_min_models"]) if beyond else
                  {"verdict": f"{v.NOT_TESTABLE}: {why}", "n": 0, "mean": None, "interval": None})
        claim = self._judge("deletion_beyond_position", result, "deletion score minus its position controls' at "
                            "the same positions, paired effect > 0")
        numbers = "; ".join(
            f"{k}: {self.verdicts[k]['mean_delta_inside']:+.3f} inside vs "
            f"{self.verdicts[k]['mean_delta_outside']:+.3f} "
            f"outside, the same positions in {len(p['controls'])} model(s) without a block "
            f"{signed(p['control_inside'])} vs {signed(p['control_outside'])}" for k, p in self.position.items())
        return {"position_verdict": claim["verdict"], "position_n": v.describe(claim),
                "position_numbers": numbers or "no model with a block"}

    def cumulative(self) -> dict[str, str]:
        """The verdicts on several deletions: accuracy after the last one, inside against outside."""
        ends = "; ".join(
            f"{k}: {self.verdicts[k]['cumulative_inside_end']:+.3f} inside vs "
            f"{self.verdicts[k]['cumulative_outside_end']:+.3f} outside"
            for k in self.with_block + self.controls if self.effects[k]["cumulative_inside"])
        return {"cumulative_verdict": self.agreement("cumulative", v.CHEAPER_INSIDE),
                "cumulative_tally": self.tally("cumulative"),
                "cumulative_tally_repaired": self.tally("cumulative_repaired"), "cumulative_ends": ends or "no curves"}

    # -- verdicts --------------------------------------------------------------------------------

    def agreement(self, key: str, expected: str) -> str:
        """Whether the judged models with a block bear out the paper's `expected` verdict on `key` (descriptive)."""
        return v.agreement([self.verdicts[m.label][key] for m in self.judged], expected)

    def tally(self, key: str, labels: list[str] | None = None) -> str:
        """The per-model verdicts on `key` as one sentence (models with a block by default)."""
        return v.tally({k: self.verdicts[k][key] for k in (self.with_block if labels is None else labels)})

    def found(self) -> dict[str, str]:
        """The verdicts on the paper's two claims, as recorded in the results."""
        return {"probe_plateau": self.claims["probe"]["verdict"],
                "probe_plateau_specific_to_block": specificity(self.claims["probe_specific"]["verdict"]),
                "single_deletion_cheaper_inside": self.claims["deletion"]["verdict"],
                "single_deletion_cheaper_inside_beyond_position": self.claims["deletion_beyond_position"]["verdict"],
                "single_deletion_cheaper_inside_repaired": self.agreement("single_repaired", v.CHEAPER_INSIDE),
                "cumulative_deletion_cheaper_inside": self.agreement("cumulative", v.CHEAPER_INSIDE)}

    CLAIMS = {"probe_plateau": "probe accuracy plateaus across the block",
              "probe_plateau_specific_to_block": "compared with the same layers without a block, the plateau is",
              "single_deletion_cheaper_inside": "single deletions cost less inside the block",
              "single_deletion_cheaper_inside_beyond_position": "beyond what their position explains",
              "single_deletion_cheaper_inside_repaired": "the same after the BatchNorm repair",
              "cumulative_deletion_cheaper_inside": "several deletions cost less inside"}

    def found_sentence(self) -> str:
        """The verdicts on the two claims as one sentence of the chapter's summary."""
        return "; ".join(f"{self.CLAIMS[k]}{' ' if k == 'probe_plateau_specific_to_block' else ': '}{verdict}"
                         for k, verdict in self.found().items())

    # -- the record ------------------------------------------------------------------------------

    def settings_texts(self) -> dict[str, str]:
        """The probe and deletion settings as the prose quotes them (test and repair images as counted)."""
        p, d = self.profile.probes, self.profile.deletion
        splits = self.models[0].run.config.splits()
        return {"probe_pool": f"{p.pool}×{p.pool}", "probe_l2": ", ".join(f"{x:g}" for x in p.l2),
                "probe_test_examples": f"{len(runs.probe_splits(self.models[0].run, p).test):,}",
                "plateau_tol": f"{p.plateau_tol:.2f}", "margin": f"{d.margin:.2f}",
                "max_steps": "all" if d.max_steps is None else str(d.max_steps),
                "deletion_test_examples": f"{len(splits.test.first(d.test_examples)):,}",
                "deletion_repair_examples": f"{len(splits.train.first(d.repair_examples)):,}",
                "chance": f"{1 / self.models[0].run.config.num_classes:.2f}",
                "n_blocked": f"{len(self.blocked)} of {len(self.models)}"}

    def record(self) -> dict:
        """The chapter's results payload (models and controls keyed by run name; `widedeep.book.results`)."""
        name = {m.label: m.run.config.name() for m in self.models}
        entries = {}
        for m in self.models:
            r, e, rows = m.summary(), self.effects[m.label], self.probe_rows[m.label]
            entries[name[m.label]] = {
                **{k: r[k] for k in ("depth", "width", "n_train", "seed", "test_acc", "block", "block_cka_only")},
                "span_from": self.spans[m.label][1], "probe_layers": [p["layer"] for p in rows],
                "probe_acc": [p["test_acc"] for p in rows], "probe_val_acc": [p["val_acc"] for p in rows],
                "probe_l2": [p["l2"] for p in rows], "deletion_baseline_acc": e["baseline_acc"],
                **self.eligibility[name[m.label]],
                "repair_only_delta": e["repair_only_delta"], "deletions": e["deletions"],
                "cumulative_inside": e["cumulative_inside"], "cumulative_outside": e["cumulative_outside"],
                "verdicts": self.verdicts[m.label]}
        position = {name[k]: {**p, "controls": [name[c] for c in p["controls"]]} for k, p in self.position.items()}
        probe_position = {name[k]: {name[c]: g for c, g in gains.items()} for k, gains in self.probe_position.items()}
        claims = {k: ({**c, "over_se": [name[label] for label in c["over_se"]]} if "over_se" in c else c)
                  for k, c in self.claims.items()}
        return {"settings": self.profile.section_values("probes", "deletion"), "timing_s": self.timing_s,
                "verdicts": self.found(), "position_control": position, "probe_position_control": probe_position,
                "models": entries, "claims": claims}


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
