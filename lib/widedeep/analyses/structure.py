"""One trained run, analysed for the block structure: its CKA heatmap, first-PC shares and detected blocks.

Layer: analyses (above measures, below book support). Chapters 3-5 all start from the same
per-model analysis, so it lives here once: CKA and PC statistics come from the run store's caches
(`runs.run_cka`, `runs.run_pc_stats`), and the detector's
settings come from the profile (`Profile.detector`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from widedeep import experiments, records
from widedeep.analyses import blocks, heatmaps, runs
from widedeep.labels import run_label
from widedeep.models import STREAM
from widedeep.profiles import CKA, Detector, Profile


@dataclass
class BlockAnalysis:
    """A run with its all-layer CKA heatmap, per-layer PC shares, and blocks found with and without the PC1 rule."""

    run: records.Run
    cka: np.ndarray                  # (L, L) minibatch CKA over every analysable layer
    names: list[str]
    kinds: list[str]
    pc_shares: np.ndarray            # (L, k) variance shares of the top-k PCs (residual-stream layers; NaN elsewhere)
    block: blocks.Block | None       # CKA and first-PC conditions (the book's definition)
    block_cka_only: blocks.Block | None
    schedule: str = "main"           # "short" for the profile's second arm (its short schedule)

    @property
    def label(self) -> str:
        """'ResNet-56 ×1, n=500, s0' (with ', short schedule' for the second arm)."""
        return run_label(self.run.config) + (", short schedule" if self.schedule == "short" else "")

    @property
    def pc1_share(self) -> np.ndarray:
        """First-PC share of variance per layer."""
        return self.pc_shares[:, 0]

    @property
    def stream(self) -> np.ndarray:
        """Indices of the residual-stream layers (the ones the detector looks at)."""
        return np.flatnonzero(np.asarray(self.kinds) == STREAM)

    @property
    def stream_cka(self) -> np.ndarray:
        """The CKA heatmap restricted to the residual-stream layers."""
        return self.cka[np.ix_(self.stream, self.stream)]

    @property
    def stream_names(self) -> list[str]:
        """Module names of the residual-stream layers."""
        return [self.names[i] for i in self.stream]

    def on_stream(self, block: blocks.Block | None) -> blocks.Block | None:
        """The block with start/end as positions among the residual-stream layers (for stream-only matrices)."""
        if block is None:
            return None
        position = {index: i for i, index in enumerate(self.stream)}
        return replace(block, start=position[block.start], end=position[block.end])

    def tested_block(self) -> tuple[blocks.Block | None, str | None]:
        """The span a chapter tests and where it came from: the block ("block"), else the CKA-only one
        ("cka_only", a control: not a block by the book's definition), else (None, None)."""
        if self.block is not None:
            return self.block, "block"
        if self.block_cka_only is not None:
            return self.block_cka_only, "cka_only"
        return None, None

    def span_name(self, block: blocks.Block | None) -> str:
        """'stages.0.3.relu2 … stages.1.2.relu2' for a block, '—' for none."""
        return "—" if block is None else f"{self.names[block.start]} … {self.names[block.end]}"

    def relative_span(self, block: blocks.Block | None) -> tuple[float, float] | None:
        """A block's first and last layer as relative depth along the residual stream (0..1)."""
        if block is None:
            return None
        position = {index: i / max(len(self.stream) - 1, 1) for i, index in enumerate(self.stream)}
        return position[block.start], position[block.end]

    def block_measures(self) -> dict[str, float]:
        """The continuous measures: block size (0 without a block) and the largest first-PC share on the stream."""
        return {"block_size": blocks.block_size(self.block),
                "max_pc1_share": float(np.nanmax(self.pc1_share[self.stream]))}

    def summary(self) -> dict:
        """The JSON entry for this model (the shape the results files share)."""
        c, m = self.run.config, self.run.metrics
        inside, outside = blocks.inside_outside(self.pc1_share, self.block, self.kinds)
        return {"name": c.name(), "depth": c.depth, "width": c.width, "n_train": c.n_train, "seed": c.seed,
                "test_acc": m["final"]["test_acc"], "train_acc": m["final"]["train_acc"],
                "steps": c.total_steps, "epochs": c.total_epochs, "precision": c.precision, "schedule": self.schedule,
                "parameters": m.get("parameters"),
                "block_size": blocks.block_size(self.block), "block_size_cka_only": blocks.block_size(self.block_cka_only),
                "n_layers": len(self.names), "n_stream_layers": int(len(self.stream)),
                "block": None if self.block is None else self.block.as_dict(),
                "block_cka_only": None if self.block_cka_only is None else self.block_cka_only.as_dict(),
                "max_pc1_share": float(np.nanmax(self.pc1_share[self.stream])),
                "pc1_share_inside": inside, "pc1_share_outside": outside}


def detect(cka: np.ndarray, kinds: list[str], pc1_share: np.ndarray,
           detector: Detector) -> tuple[blocks.Block | None, blocks.Block | None]:
    """Blocks with the first-PC rule (if the profile sets one) and without it."""
    settings = detector.settings()
    min_pc1 = settings.pop("min_pc1")
    with_pc1 = blocks.block_structure_span(cka, kinds, pc1_share=pc1_share, min_pc1=min_pc1, **settings)
    cka_only = blocks.block_structure_span(cka, kinds, **settings)
    return with_pc1, cka_only


def batching(cka: CKA) -> dict:
    """The CKA minibatch settings of a profile (examples are `runs.cka_images`)."""
    return {"batch_size": cka.batch_size, "passes": cka.passes}


def analyse(run, profile: Profile) -> BlockAnalysis:
    """All-layer CKA, residual-stream PC shares and the blocks of one run (all cached in the run store).

    PC statistics are computed on the residual-stream layers only: they are what the detector reads,
    and an eigendecomposition per layer and minibatch over every layer would cost several times the
    CKA itself on a deep network.
    """
    images = runs.cka_images(run, profile.cka.examples)
    matrix = runs.run_cka(run, images, **batching(profile.cka))
    layers = run.layers()
    names, kinds = [layer.name for layer in layers], [layer.kind for layer in layers]
    stream = np.flatnonzero(np.asarray(kinds) == STREAM)
    stream_shares = runs.run_pc_stats(run, images, layers=[names[i] for i in stream], **batching(profile.cka))["shares"]
    shares = np.full((len(names), stream_shares.shape[1]), np.nan)
    shares[stream] = stream_shares
    block, block_cka_only = detect(matrix, kinds, shares[:, 0], profile.detector)
    c, recipe = run.config, profile.recipe
    schedule = "main" if (c.epochs, c.min_steps) == (recipe.epochs, recipe.min_steps) else "short"
    return BlockAnalysis(run, matrix, names, kinds, shares, block, block_cka_only, schedule)


def removal_effect(m: BlockAnalysis, removed: np.ndarray, detector: Detector) -> dict:
    """A model's tested block before and after an intervention, on the residual-stream layers.

    `removed` is the stream-only CKA matrix after the intervention (e.g. each layer's first PC removed
    per minibatch). Returns the block's CKA inside / outside before and after (NaN without a block),
    where the span came from, and the CKA-only block re-detected after it (full-network indices).
    """
    block, span_from = m.tested_block()
    span = m.on_stream(block)
    before = m.cka[np.ix_(m.stream, m.stream)]
    stream_kinds = [m.kinds[i] for i in m.stream]
    before_in, before_out = blocks.span_cka(before, span, stream_kinds) if span else (np.nan, np.nan)
    after_in, after_out = blocks.span_cka(removed, span, stream_kinds) if span else (np.nan, np.nan)
    settings = {k: v for k, v in detector.settings().items() if k != "min_pc1"}
    after_block = blocks.block_structure_span(removed, stream_kinds, **settings)
    if after_block is not None:  # back to full-network layer indices, like every other block in the results
        after_block = replace(after_block, start=int(m.stream[after_block.start]), end=int(m.stream[after_block.end]))
    return {"span": None if span is None else span.as_dict(), "span_from": span_from,
            "cka_inside_before": before_in, "cka_outside_before": before_out,
            "cka_inside_after": after_in, "cka_outside_after": after_out, "block_after_pc1_removal": after_block}


def analyse_snapshot(run, epoch: int, profile: Profile) -> BlockAnalysis:
    """A run's weights at a snapshot epoch, analysed like a run (its records in the run's snapshot folder; the
    snapshot's weights are loaded only where a record is missing)."""
    return analyse(run.snapshot(epoch), profile)


def cross_seed_pairs(models: list[BlockAnalysis], cross: dict[tuple[int, int], np.ndarray]) -> dict[int, dict]:
    """Per seed with a block, per other seed: mean matched-layer CKA inside vs outside the first seed's block.

    `cross[(seed_a, seed_b)]` is the stream-only CKA between two seeds of one architecture; its diagonal
    (a layer against the same layer of the other seed) is split by each seed's own block in turn. These
    are the per-pair values Chapter 4's bootstrap over seeds resamples.
    """
    by_seed = {m.run.config.seed: m for m in models}
    per_seed: dict[int, dict[int, tuple[float, float]]] = {}
    for pair, matrix in cross.items():
        matched = heatmaps.matched_layer_similarity(matrix)
        for seed, other in (pair, pair[::-1]):
            m = by_seed[seed]
            if m.block is not None:
                inside, outside = blocks.inside_outside(matched, m.on_stream(m.block), [m.kinds[i] for i in m.stream])
                per_seed.setdefault(seed, {})[other] = (float(inside), float(outside))
    return per_seed


def cross_seed_split(models: list[BlockAnalysis], cross: dict[tuple[int, int], np.ndarray]) -> dict[int, tuple]:
    """Per seed with a block: mean matched-layer CKA with the other seeds inside vs outside its own block."""
    return {seed: (float(np.mean([v[0] for v in pairs.values()])), float(np.mean([v[1] for v in pairs.values()])))
            for seed, pairs in cross_seed_pairs(models, cross).items()}


ROLES = ("grid", "seed_study", "short_arm")


def roles(profile: Profile) -> dict[str, str]:
    """Run name -> its part in Chapters 3-5's claims: "grid" (the main arm, held to the interpolation rule),
    "seed_study" (on its own schedule, below the rule by design) or "short_arm" (described, never judged)."""
    out = {c.name(): "short_arm" for c in experiments.short_arm_grid(profile)}
    out.update({c.name(): "grid" for c in experiments.training_grid(profile)})
    out.update({c.name(): "seed_study" for c in experiments.seed_study_grid(profile)})
    return out


def left_out(summary: dict, role: str | None, min_train_acc: float | None) -> str | None:
    """Why a model is left out of the claims judged on Chapters 3-5's models (book/protocol.md), or None.

    A grid model that misses the interpolation rule (clean train accuracy below `min_train_acc`) is left out
    of every claim judged on the grid; the short arm is described, not judged; a model of no role (an
    override's extra run) is not part of the protocol's units.
    """
    if role == "grid":
        if min_train_acc is not None and summary["train_acc"] < min_train_acc:
            return f"misses the interpolation rule (train accuracy {summary['train_acc']:.3f} < {min_train_acc:g})"
        return None
    if role == "seed_study":
        return None
    return "short arm: described, not judged" if role == "short_arm" else "not a unit of the protocol"


def eligibility(models: list[BlockAnalysis], profile: Profile) -> dict[str, dict]:
    """Per run name: {"role", "left_out"} (`roles`, `left_out`) under the profile's interpolation rule."""
    return eligibility_by_role(models, roles(profile), profile.grid.min_train_acc)


def eligibility_by_role(models: list[BlockAnalysis], by_name: dict[str, str],
                        min_train_acc: float | None) -> dict[str, dict]:
    """Per run name: {"role", "left_out"} given each run's role (`roles`) and the interpolation rule."""
    out = {}
    for m in models:
        role = by_name.get(m.run.config.name())
        out[m.run.config.name()] = {"role": role, "left_out": left_out(m.summary(), role, min_train_acc)}
    return out


def misses_rule(rows: list[dict], min_train_acc: float | None) -> list[dict]:
    """The rows (run summaries with a train_acc) below the interpolation rule (none without a rule)."""
    return [] if min_train_acc is None else [r for r in rows if r["train_acc"] < min_train_acc]


def same_architecture_without_block(m: BlockAnalysis, models: list[BlockAnalysis]) -> list[BlockAnalysis]:
    """Position controls (book/protocol.md, Chapter 5): the models of m's depth, width and n_train that have no
    block, measured at m's own layers for what position alone does."""
    c = m.run.config
    key = (c.depth, c.width, c.n_train)
    return [o for o in models if o.block is None and (o.run.config.depth, o.run.config.width,
                                                       o.run.config.n_train) == key]


def analyse_all(configs: list, profile: Profile) -> list[BlockAnalysis]:
    """Every config's run analysed for the block structure, read from records (nothing is trained here)."""
    return [analyse(run, profile) for run in records.load_runs(profile, configs)]


def grid_layout(models: list[BlockAnalysis], architectures: list[tuple[int, float]], n_trains: list[int],
                seed: int) -> list[list[BlockAnalysis | None]]:
    """The models of one seed on a grid: a row per n_train (in the order given), a column per architecture."""
    by_key = {(m.run.config.depth, m.run.config.width, m.run.config.n_train): m
              for m in models if m.run.config.seed == seed}
    return [[by_key.get((d, w, n)) for d, w in architectures] for n in n_trains]


def threshold_sweep(models: list[BlockAnalysis], detector: Detector) -> dict[str, dict[str, list[int]]]:
    """Per model (run name): the stream layers in its block at each of the detector's CKA thresholds, with the
    first-PC rule ("with_pc1") and without ("cka_only"), and at each first-PC threshold ("by_min_pc1"); 0 = none."""
    others = {"min_contrast": detector.min_contrast}
    sweep = {}
    for m in models:
        by_threshold = blocks.threshold_sweep(m.cka, m.kinds, detector.thresholds, pc1_share=m.pc1_share,
                                              min_pc1=detector.min_pc1, **others)
        cka_only = blocks.threshold_sweep(m.cka, m.kinds, detector.thresholds, **others)
        by_min_pc1 = [blocks.block_structure_span(m.cka, m.kinds, pc1_share=m.pc1_share, min_pc1=v,
                                                  threshold=detector.threshold, **others) for v in detector.min_pc1s]
        sweep[m.run.config.name()] = {key: [b.n_layers if b else 0 for b in found] for key, found in (
            ("with_pc1", by_threshold), ("cka_only", cka_only), ("by_min_pc1", by_min_pc1))}
    return sweep


def sweep_counts(sweep: dict[str, dict[str, list[int]]], values: list[float], key: str) -> str:
    """'3 at 0.8, 1 at 0.9': how many models have a block at each value of one sweep."""
    return ", ".join(f"{sum(bool(s[key][i]) for s in sweep.values())} at {v:g}" for i, v in enumerate(values))
