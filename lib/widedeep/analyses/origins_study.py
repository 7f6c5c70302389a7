"""Chapter 8's study: the seed study's blocks traced to dominant datapoints, over training, and under the regulariser.

Layer: analyses (on `origins` for the statistics, `structure` for each model's block, the run store for
snapshots and regularised runs). Every model is the seed study's architecture in its schedule arm, so
the seeds with and without a block are the comparison the follow-up paper draws. What the statistics
read is recorded per run and snapshot (`VERSIONS`: each stream layer's first-PC shares per example,
each blocked seed's removal effect); the full Grams are computed only where a record is missing.
"""

from __future__ import annotations

import numpy as np
import torch

from widedeep import profiles, protocol, records
from widedeep.analyses import origins, runs, structure, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.capture import capture_outputs
from widedeep.profiles import Profile

# Chapter 8's record kinds: bump one when its numbers would change.
VERSIONS = records.register_kinds({"origins_pc1": 1, "origins_removal": 1})


def stream_grams(m: BlockAnalysis, images: torch.Tensor) -> list[np.ndarray]:
    """Each residual-stream layer's Gram (float64) over all the images at once (for the whole-set first PC)."""
    outputs = capture_outputs(m.run.model, images, m.stream_names, batch_size=250)
    return [(x.flatten(1).double() @ x.flatten(1).double().T).numpy() for x in outputs]


def stream_pc1_shares(grams: list[np.ndarray]) -> np.ndarray:
    """(layers, examples): each example's share u_1(i)^2 of each layer's first PC (NaN for a constant layer)."""
    rows = []
    for gram in grams:
        try:
            rows.append(origins.first_pc(gram)[1] ** 2)
        except ValueError:   # a constant layer has no first PC; refused if a statistic reads it
            rows.append(np.full(len(gram), np.nan))
    return np.array(rows)


def layer_shares(shares: np.ndarray, inside: np.ndarray) -> list[np.ndarray]:
    """The rows of `shares` (`stream_pc1_shares`) of the layers inside, refusing a layer without a first PC."""
    chosen = [row for row, keep in zip(shares, inside) if keep]
    if any(np.isnan(row).any() for row in chosen):
        raise ValueError("the layer is constant over these examples (zero centred Gram): it has no first PC")
    return chosen


def shares_contributions(shares: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """`origins.pc1_contributions` of the layers inside, from their recorded first-PC shares."""
    chosen = layer_shares(shares, inside)
    if len(chosen) == 0:
        raise ValueError("need at least one layer's Gram")
    return np.mean(chosen, axis=0)


def image_statistics(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: mean brightness and foreground area (share of pixels above 0.1), the cues the paper looks for."""
    flat = images.flatten(1).float()
    return {"brightness": flat.mean(1).numpy(), "foreground": (flat > 0.1).float().mean(1).numpy()}


class OriginsStudy:
    """Dominant datapoints of every seed-study model, their overlaps, removal with controls, snapshots, regulariser."""

    def __init__(self, profile: Profile):
        self.profile, self.settings = profile, profile.origins
        configs = profiles.seed_study_grid(profile)
        self.models = structure.analyse_all(configs, profile)
        data = self.data = runs.cka_images(self.models[0].run, self.settings.examples)
        self.images, self.labels, self.classes = data.images, data.labels.numpy(), list(data.classes)
        self._grams: dict[str, list[np.ndarray]] = {}    # final models' stream Grams, only on a record miss
        self.blocked = [m for m in self.models if m.block is not None]
        self.without = [m for m in self.models if m.block is None]
        self._snapshots: dict[tuple[str, int], BlockAnalysis] = {}

    # -- records: what the statistics read, computed from the Grams only on a miss ----------------

    def grams(self, m: BlockAnalysis) -> list[np.ndarray]:
        """m's residual-stream Grams over the images (float64, from its model). A final model's are kept for the
        study's life (its removal records need them again); a snapshot's are not (~0.4 GB each at cpu)."""
        if all(m is not final for final in self.models):
            return stream_grams(m, self.images)
        if m.run.name not in self._grams:
            self._grams[m.run.name] = stream_grams(m, self.images)
        return self._grams[m.run.name]

    def recorded(self, m: BlockAnalysis, kind: str, compute, suffix: str = ".npz", **settings):
        """A record of `kind` in m's run folder on this study's images and stream layers."""
        key = {"examples": runs.examples_key(self.data), "layers": m.stream_names, **settings}
        return m.run.record(kind, VERSIONS[kind], key, compute, suffix)

    def pc1_shares(self, m: BlockAnalysis) -> np.ndarray:
        """(stream layers, examples): each example's share of each stream layer's first PC (recorded)."""
        return self.recorded(m, "origins_pc1", lambda: {"shares": stream_pc1_shares(self.grams(m))})["shares"]

    # -- which examples dominate -----------------------------------------------------------------

    def inside(self, m: BlockAnalysis, span_of: BlockAnalysis | None = None) -> np.ndarray:
        """Residual-stream layers inside `span_of`'s block (default: m's own), as a boolean mask."""
        block = (span_of or m).on_stream((span_of or m).block)
        mask = np.zeros(len(m.stream), bool)
        mask[block.start:block.end + 1] = True
        return mask

    def contributions(self, m: BlockAnalysis, span_of: BlockAnalysis | None = None) -> np.ndarray:
        """Each example's share of the first PC, averaged over the block's layers (another model's span allowed)."""
        return shares_contributions(self.pc1_shares(m), self.inside(m, span_of))

    def concentration(self) -> dict[str, dict]:
        """Per model with a block: the share of the first PC's variance its top 1/5/10% carry, beside Gaussian."""
        out = {}
        for m in self.blocked:
            scores = self.contributions(m)
            out[m.run.config.name()] = {f"top_{int(100 * f)}pct": origins.top_share(scores, f)
                                        for f in origins.TOP_FRACTIONS}
        return out

    def gaussian(self) -> dict[str, float]:
        """The same shares for Gaussian scores (no dominance)."""
        return {f"top_{int(100 * f)}pct": origins.gaussian_top_share(f) for f in origins.TOP_FRACTIONS}

    def within_model_overlap(self) -> dict[str, float]:
        """Per model with a block: mean Jaccard of the top sets between pairs of its block's layers."""
        out, f = {}, self.settings.fraction
        for m in self.blocked:
            sets = [origins.top_set(shares, f) for shares in layer_shares(self.pc1_shares(m), self.inside(m))]
            pairs = [origins.jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
            out[m.run.config.name()] = float(np.mean(pairs)) if pairs else float("nan")
        return out

    def dominant_sets(self) -> dict[tuple[int, int], np.ndarray]:
        """(seed, stream layer) -> its dominant set, at each layer of each blocked seed's block (claim 10's units)."""
        out, f = {}, self.settings.fraction
        for m in self.blocked:
            shares = self.pc1_shares(m)   # recorded u_1(i)^2 per stream layer: the same top sets as the Grams'
            for i in np.flatnonzero(self.inside(m)):
                out[(m.run.config.seed, int(i))] = origins.top_set(layer_shares(shares[i:i + 1], np.ones(1, bool))[0], f)
        return out

    def across_seed_overlap(self) -> dict[str, float]:
        """Jaccard of the dominant sets of two seeds, each on the first blocked seed's block layers."""
        if not self.blocked:
            return {}
        reference, f = self.blocked[0], self.settings.fraction
        mine = origins.top_set(self.contributions(reference), f)
        return {m.run.config.name(): origins.jaccard(mine, origins.top_set(self.contributions(m, reference), f))
                for m in self.models if m is not reference}

    def chance_overlap(self) -> float:
        return origins.chance_jaccard(self.settings.fraction, len(self.labels))

    # -- removing them ---------------------------------------------------------------------------

    def removal(self) -> dict[str, dict]:
        """Per model with a block: the contrast before/after removing its dominant examples, random removals, and
        the stronger controls (a layer outside the block's dominant examples; a seed without a block's)."""
        out = {}
        for m in self.blocked:
            inside = self.inside(m)
            outside_layer = int(np.flatnonzero(~inside)[np.argmax(m.pc1_share[m.stream][~inside])])
            other = self.without[0] if self.without else None
            out[m.run.config.name()] = self.recorded(
                m, "origins_removal", lambda: self.removal_effect(m, inside, outside_layer, other), ".json",
                inside=inside.tolist(), outside_layer=m.stream_names[outside_layer], fraction=self.settings.fraction,
                draws=self.settings.draws, seed=0, other=None if other is None else other.run.name)
        return out

    def removal_effect(self, m: BlockAnalysis, inside: np.ndarray, outside_layer: int,
                       other: BlockAnalysis | None) -> dict:
        """m's removal effect with its controls (the outside layer's dominant examples, `other` seed's), from Grams."""
        grams = self.grams(m)
        choose, measure = origins.split_halves(len(self.labels), seed=0)
        effect = origins.removal_effect(grams, inside, self.settings.fraction, 0, self.settings.draws,
                                        control_scores=origins.cross_half_projections(grams[outside_layer],
                                                                                      choose, measure))
        effect["control"] = f"dominant examples of the outside layer {m.stream_names[outside_layer]}"
        if other is not None:
            scores = np.mean([origins.cross_half_projections(g, choose, measure)
                              for g, i in zip(self.grams(other), inside) if i], axis=0)
            seed_effect = origins.removal_effect(grams, inside, self.settings.fraction, 0, 1, control_scores=scores)
            effect["drop_other_seed"] = seed_effect["drop_control"]
            effect["other_seed"] = other.run.config.name()
        effect.pop("dominant_positions")
        return effect

    # -- what they look like ---------------------------------------------------------------------

    def dominant_images(self) -> dict[str, dict]:
        """Per model with a block: its top images, their classes, and their brightness and area against the rest."""
        stats, out = image_statistics(self.images), {}
        for m in self.blocked:
            top = origins.top_set(self.contributions(m), self.settings.fraction)
            rest = np.setdiff1d(np.arange(len(self.labels)), top)
            order = top[np.argsort(-self.contributions(m)[top])]
            out[m.run.config.name()] = {
                "indices": order[: self.settings.top_images].tolist(),
                "class_counts": np.bincount(self.labels[top], minlength=len(self.classes)).tolist(),
                **{f"{k}_top": float(v[top].mean()) for k, v in stats.items()},
                **{f"{k}_rest": float(v[rest].mean()) for k, v in stats.items()}}
        return out

    # -- the block during training ---------------------------------------------------------------

    def snapshot_analysis(self, m: BlockAnalysis, epoch: int) -> BlockAnalysis:
        """The model of `m` at a snapshot epoch, analysed (its CKA and PC statistics cached beside the snapshot)."""
        key = (m.run.config.name(), epoch)
        if key not in self._snapshots:   # the snapshot's weights are loaded only if one of its records is missing
            self._snapshots[key] = structure.analyse_snapshot(m.run, epoch, self.profile)
        return self._snapshots[key]

    def snapshots(self) -> dict[str, list[dict]]:
        """Per seed: at each snapshot epoch and at the end, block size, maximum first-PC share, and (for a seed with
        a block) the overlap of its dominant set at that epoch with the final one, on the final block's layers."""
        out = {}
        for m in self.models:
            final_scores = self.contributions(m) if m.block is not None else None
            rows = []
            for epoch in m.run.config.snapshot_epochs:
                snap = self.snapshot_analysis(m, epoch)
                row = {"epoch": epoch, **snap.block_measures(), "span": stream_span(snap)}
                if final_scores is not None:
                    scores = shares_contributions(self.pc1_shares(snap), self.inside(m))
                    row["overlap_with_final"] = origins.jaccard(origins.top_set(scores, self.settings.fraction),
                                                                origins.top_set(final_scores, self.settings.fraction))
                rows.append(row)
            rows.append({"epoch": m.run.config.total_epochs, **m.block_measures(), "span": stream_span(m),
                         **({"overlap_with_final": 1.0} if final_scores is not None else {})})
            out[m.run.config.name()] = rows
        self.snapshot_models = out
        return out

    # -- the intervention ------------------------------------------------------------------------

    def regularised(self) -> dict[str, list[dict]]:
        """Per threshold: each seed's test accuracy, block size and maximum first-PC share beside the unregularised."""
        grids = profiles.regularised_grid(self.profile)
        base = {m.run.config.seed: m for m in self.models}
        out = {}
        for threshold, configs in grids.items():
            analysed = structure.analyse_all(configs, self.profile)
            out[f"{threshold:g}"] = [{"seed": r.run.config.seed, "test_acc": r.run.test_acc,
                                      "test_acc_unregularised": base[r.run.config.seed].run.test_acc,
                                      **r.block_measures(),
                                      **{f"{k}_unregularised": v
                                         for k, v in base[r.run.config.seed].block_measures().items()},
                                      "has_block": r.block is not None,
                                      "has_block_unregularised": base[r.run.config.seed].block is not None}
                                     for r in analysed]
        self.reg = out
        return out

    # -- verdicts --------------------------------------------------------------------------------

    def claims(self, rules: dict | None = None) -> dict[str, dict]:
        """The follow-up's claims on these runs as verdict objects (`judge` of this study's statistics)."""
        blocked = [m.run.config.name() for m in self.blocked]
        snapshots = self.snapshot_models if hasattr(self, "snapshot_models") else self.snapshots()
        reg = self.reg if hasattr(self, "reg") else self.regularised()
        sets = self.dominant_sets()
        sets = {key: value for key, value in sets.items()   # the layers inside the blocks of at least two seeds
                if sum(other[1] == key[1] for other in sets) >= 2}
        return judge(blocked, self.concentration(), self.gaussian(), self.within_model_overlap(),
                     self.chance_overlap(), self.removal(), {n: rows for n, rows in snapshots.items() if n in blocked},
                     reg, sets, rules)

    def verdicts(self) -> dict[str, str]:
        """The follow-up's claims on these runs, each verdict alone (`claims`)."""
        return {k: v["verdict"] for k, v in self.claims().items()}


def stream_span(m: BlockAnalysis) -> list[int] | None:
    """m's block as [first, last] residual-stream positions (None without a block)."""
    block = m.on_stream(m.block)
    return None if block is None else [int(block.start), int(block.end)]


CLAIMS = ("dominant_datapoints", "differ_across_seeds", "removal_breaks_block", "forms_early",
          "regulariser_removes_block")
SECTION = "book/protocol.md, Chapter 8"


def formed_early(rows: list[dict], overlap: float) -> bool:
    """Whether a snapshot at or before half of training (rows end with the final model) has a block whose span
    overlaps the final block's by at least `overlap` (Jaccard of the two spans' layers)."""
    final = rows[-1]
    return any(origins.span_jaccard(r.get("span"), final.get("span")) >= overlap
               for r in rows[:-1] if r["epoch"] <= final["epoch"] / 2)


def judge(blocked: list[str], concentration: dict[str, dict], gaussian: dict[str, float], within: dict[str, float],
          chance: float, removal: dict[str, dict], snapshots: dict[str, list[dict]],
          regularised: dict[str, list[dict]], sets: dict[tuple[int, int], np.ndarray],
          rules: dict | None = None) -> dict[str, dict]:
    """The follow-up's five claims (book/protocol.md, Chapter 8) as verdict objects, under the page's rules.

    - dominant datapoints (share): the top 5% carry over `dominant_concentration` times their Gaussian share,
      and the block's layers share their top sets (Jaccard over `dominant_overlap` times two random sets');
    - they differ across seeds: the seed-label permutation test of the (seed, layer) dominant sets at the
      layers inside at least two blocked seeds' blocks (`origins.seed_label_permutation_test`,
      `origins_permutations` draws); shown when p <= 1 - level; needs three blocked seeds;
    - removing them breaks the block (paired effect > 0): the contrast's fall under their removal minus the
      mean fall over the random removals;
    - the block forms early (share): a snapshot at or before half of training has a block whose span overlaps
      the final one's by at least `early_span_overlap` (`formed_early`);
    - the regulariser removes it (share): per blocked seed, no regularised twin (any threshold) has a block.
    """
    rules = rules or protocol.rules()
    level, least, null = rules["level"], rules["min_models"], rules["share_null"]

    def share(hits: int, total: int, rule: str) -> dict:
        return verdicts.claim(verdicts.share_verdict(hits, total, null, level, least), f"{SECTION}: {rule}")

    concentrated = {n for n, v in concentration.items()
                    if v["top_5pct"] > rules["dominant_concentration"] * gaussian["top_5pct"]}
    shared = {n for n, v in within.items() if v > rules["dominant_overlap"] * chance}
    out = {"dominant_datapoints": share(len(concentrated & shared & set(blocked)), len(blocked),
                                        "top 5% over dominant_concentration x Gaussian and block layers' overlap "
                                        "over dominant_overlap x chance, share claim")}
    seeds = len({key[0] for key in sets})
    differ = {"n": seeds, "interval": None, "p": None}
    if len(blocked) < 3 or seeds < 3:
        differ["verdict"] = f"{verdicts.NOT_TESTABLE}: the permutation test needs three blocked seeds sharing layers"
    else:
        differ.update(origins.seed_label_permutation_test(sets, rules["origins_permutations"]))
        differ["verdict"] = verdicts.SHOWN if differ["p"] <= 1 - level else verdicts.NOT_SHOWN
    out["differ_across_seeds"] = verdicts.claim(differ, f"{SECTION}: seed labels permuted within each layer, "
                                                        f"shown when p <= 1 - level")
    falls = [e["drop_dominant"] - e["drop_random_mean"] for e in removal.values()]
    out["removal_breaks_block"] = verdicts.claim(
        verdicts.paired_verdict(falls, +1, level, least, rules["sign_flip_min_models"]),
        f"{SECTION}: contrast's fall under the dominant images' removal minus the mean fall under random ones, "
        f"paired effect > 0")
    early = sum(formed_early(rows, rules["early_span_overlap"]) for rows in snapshots.values())
    out["forms_early"] = share(early, len(snapshots), "a block at a snapshot at or before half of training whose "
                                                      "span overlaps the final one's >= early_span_overlap")
    twins: dict[int, list[bool]] = {}
    for rows in regularised.values():
        for row in rows:
            if row["has_block_unregularised"]:
                twins.setdefault(row["seed"], []).append(not row["has_block"])
    out["regulariser_removes_block"] = share(sum(all(v) for v in twins.values()), len(twins),
                                             "no regularised twin of a blocked seed has a block, share claim")
    if not blocked:
        out = {k: {**v, "verdict": verdicts.NOT_TESTABLE} for k, v in out.items()}
    return out


def claims_verdicts(*args, **kwargs) -> dict[str, str]:
    """Each claim's verdict alone (`judge`)."""
    return {k: v["verdict"] for k, v in judge(*args, **kwargs).items()}


# -- sentences for the chapter's prose (glued, so the numbers are the ones computed) -----------------

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
