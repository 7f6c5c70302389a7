"""The runs of the book's experiments: every model a profile asks for, as `TrainConfig`s.

Layer: training (on `widedeep.train`; `widedeep.profiles` reads and checks a profile, and refuses one
whose models cannot be built by calling `required_runs` here). Each function turns a profile's
sections into the models of one experiment: the main arm (`training_grid`) and the short arm, the
seed study (with its snapshots, its precision side study and its regularised twins), Chapter 2's
base model and its wide and deep pair, Chapter 6's populations and Chapter 10's ViTs. Which of them a
chapter reads, its study says (`widedeep.studies.<chapter>.runs`); `required_runs` is all of them,
what the pipeline trains. Run names (config hashes) are pinned in tests/data/run_names.json.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import TYPE_CHECKING

from widedeep.train import TrainConfig, default_device, native_bfloat16, resolve_precision

if TYPE_CHECKING:   # annotations only: profiles imports this module to check a profile's models
    from widedeep.profiles import Grid, Profile


def parse_cell(text: str, key: str) -> tuple[int, float, int]:
    """'110x1@250' -> (110, 1.0, 250): a grid cell as profiles write it (depth x width @ n_train)."""
    match = re.fullmatch(r"(\d+)x([0-9.]+)@(\d+)", text)
    if match is None:
        raise ValueError(f"{key}: cells are written DEPTHxWIDTH@N_TRAIN, e.g. '110x1@250'; got {text!r}")
    return int(match[1]), float(match[2]), int(match[3])


GRID_COORDINATES = ("depth", "width", "n_train", "seed")
# Run options that only an experiment sets, through `train_config(..., **changes)` with values from its
# profile section (Chapter 8's regulariser and snapshots); every other option is a Recipe key.
EXPERIMENT_OPTIONS = ("pc_reg_strength", "pc_reg_threshold", "pc_reg_layers", "snapshot_epochs", "arch", "patch_size",
                      "heads", "mlp_ratio", "optimizer", "warmup_steps")


def train_config(profile: Profile, depth: int, width: float, n_train: int, seed: int, **changes) -> TrainConfig:
    """The TrainConfig of one model under the profile's recipe (`auto` precision resolved for this machine)."""
    recipe = {f.name: getattr(profile.recipe, f.name) for f in fields(TrainConfig)
              if f.name not in GRID_COORDINATES + EXPERIMENT_OPTIONS}
    recipe.update(changes)
    recipe["precision"] = resolve_precision(recipe["precision"])  # a run's config names what it trains in
    return TrainConfig.from_dict({"depth": depth, "width": width, "n_train": n_train, "seed": seed, **recipe})


def width_series(grid: Grid) -> list[tuple[int, float]]:
    """(depth, width) pairs of the width series: every width at `width_series_depth`."""
    return [(grid.width_series_depth, w) for w in grid.widths]


def depth_series(grid: Grid) -> list[tuple[int, float]]:
    """(depth, width) pairs of the depth series: every depth at `depth_series_width`."""
    return [(d, grid.depth_series_width) for d in grid.depths]


def architectures(profile: Profile) -> list[tuple[int, float]]:
    """(depth, width) pairs of the grid: the width series then the depth series, without repeats."""
    return list(dict.fromkeys(width_series(profile.grid) + depth_series(profile.grid)))


def _cell_seeds(cells: list[str], extra: list[int], key: str) -> dict[tuple[int, float, int], list[int]]:
    return {parse_cell(text, key): list(extra) for text in cells}


def training_grid(profile: Profile) -> list[TrainConfig]:
    """The main arm: architectures x n_train x seeds, plus the extra seeds of the transition cells."""
    g = profile.grid
    extra = _cell_seeds(g.transition_cells, g.transition_seeds, "transition_cells")
    return [train_config(profile, depth, width, n_train, seed) for n_train in g.n_trains
            for depth, width in architectures(profile)
            for seed in g.seeds + extra.get((depth, float(width), n_train), [])]


def short_changes(profile: Profile) -> dict:
    """The recipe changes of the short arm."""
    return {"epochs": profile.short.epochs, "min_steps": profile.short.min_steps}


def short_arm_grid(profile: Profile) -> list[TrainConfig]:
    """The second arm: the short schedule on the depth series at every n_train, plus its transition seeds."""
    s, width = profile.short, profile.grid.depth_series_width
    extra = _cell_seeds(s.transition_cells, s.transition_seeds, "short_transition_cells")
    return [train_config(profile, depth, width, n_train, seed, **short_changes(profile))
            for n_train in profile.grid.n_trains for depth in s.depths
            for seed in s.seeds + extra.get((depth, float(width), n_train), [])]


def _seed_study(profile: Profile, **changes) -> list[TrainConfig]:
    g = profile.grid
    arm = short_changes(profile) if g.seed_study_arm == "short" else {}
    return [train_config(profile, g.seed_study_depth, g.seed_study_width, g.seed_study_n_train, s, **arm, **changes)
            for s in g.seed_study_seeds]


def snapshot_epochs(profile: Profile) -> tuple[int, ...]:
    """The seed study's snapshot epochs: the profile's fractions of its schedule (distinct, at least epoch 1)."""
    total = _seed_study(profile)[0].total_epochs
    return tuple(sorted({max(1, min(total - 1, round(f * total))) for f in profile.origins.snapshot_fractions}))


def seed_study_grid(profile: Profile, precision: str | None = None) -> list[TrainConfig]:
    """The seeds of the model whose block Chapters 3-4 compare across seeds (in its arm's schedule).

    They keep snapshots of their weights during training (Chapter 8), which changes nothing they learn:
    the same seed without snapshots ends with identical weights.
    """
    changes = {"snapshot_epochs": snapshot_epochs(profile)}
    if precision is not None:
        changes["precision"] = precision
    return _seed_study(profile, **changes)


def regularised_grid(profile: Profile) -> dict[float, list[TrainConfig]]:
    """The seed study trained with the first-PC regulariser, by threshold (Chapter 8's intervention)."""
    o = profile.origins
    return {t: _seed_study(profile, pc_reg_strength=o.reg_strength, pc_reg_threshold=t, pc_reg_layers=o.reg_layers)
            for t in o.reg_thresholds}


def block_models(profile: Profile) -> list[TrainConfig]:
    """Every model Chapters 4-5 search for blocks: both arms and the seed study, without repeats."""
    return list(dict.fromkeys(training_grid(profile) + short_arm_grid(profile) + seed_study_grid(profile)))


def precision_reference_grid(profile: Profile) -> list[TrainConfig]:
    """The seed study trained again in the reference precision (Chapter 1 compares the two)."""
    return seed_study_grid(profile, profile.grid.reference_precision)


def cka_base_grid(profile: Profile) -> list[TrainConfig]:
    """Chapter 2's base model (narrowest of the width series, most data) over its seeds, and its plain control."""
    g = profile.grid
    depth, width, n_train = g.width_series_depth, g.widths[0], max(g.n_trains)
    seeds = [train_config(profile, depth, width, n_train, s) for s in g.cross_seeds]
    return seeds + [train_config(profile, depth, width, n_train, g.cross_seeds[0], residual=False)]


def wide_and_deep(profile: Profile) -> tuple[TrainConfig, TrainConfig]:
    """Chapter 2's widest and deepest models of the grid on the most data (first cross seed)."""
    g = profile.grid
    n_train, seed = max(g.n_trains), g.cross_seeds[0]
    return (train_config(profile, g.width_series_depth, max(g.widths), n_train, seed),
            train_config(profile, max(g.depths), g.depth_series_width, n_train, seed))


ERROR_SIDES = ("wide", "deep")


def errors_grid(profile: Profile) -> dict[str, list[TrainConfig]]:
    """Chapter 6's populations: the seeds of the wide-shallow and of the deep-narrow model, by side."""
    e = profile.errors
    return {side: [train_config(profile, getattr(e, f"{side}_depth"), getattr(e, f"{side}_width"), e.n_train, s)
                   for s in getattr(e, f"{side}_seeds")] for side in ERROR_SIDES}


def vit_config(profile: Profile, depth: int, width: int, n_train: int, seed: int) -> TrainConfig:
    """One of Chapter 10's ViTs under the profile's recipe with the ViT section's shape and optimiser."""
    v = profile.vit
    return train_config(profile, depth, width, n_train, seed, arch="vit", patch_size=v.patch_size, heads=v.heads,
                        mlp_ratio=v.mlp_ratio, optimizer=v.optimizer, lr=v.lr, weight_decay=v.weight_decay,
                        warmup_steps=v.warmup_steps)


def vit_architectures(profile: Profile) -> list[tuple[int, int]]:
    """(depth, width) pairs of the ViT grid: the width series then the depth series, without repeats."""
    v = profile.vit
    pairs = [(v.width_series_depth, w) for w in v.widths] + [(d, v.depth_series_width) for d in v.depths]
    return list(dict.fromkeys(pairs))


def vit_grid(profile: Profile) -> list[TrainConfig]:
    """Chapter 10's ViTs: architectures x n_train x seeds."""
    v = profile.vit
    return [vit_config(profile, depth, width, n_train, seed) for n_train in v.n_trains
            for depth, width in vit_architectures(profile) for seed in v.seeds]


def vit_resnet_pairs(profile: Profile) -> list[tuple[TrainConfig, TrainConfig]]:
    """(ViT, ResNet) pairs of Chapter 10: the reference ViT and Chapter 2's base ResNet at its n_train, seed by seed.

    The ResNets are `cka_base_grid`'s residual seeds; the ViT takes the same n_train and pairs its i-th seed
    with the i-th base seed (independent models: any pairing gives independent differences).
    """
    v = profile.vit
    resnets = [c for c in cka_base_grid(profile) if c.residual]
    if len(resnets) < len(v.seeds):
        raise ValueError(f"vit_seeds: {len(v.seeds)} ViT seeds need as many of Chapter 2's base ResNet to pair "
                         f"with, but cross_seeds has {len(resnets)}")
    return [(vit_config(profile, v.reference_depth, v.reference_width, resnet.n_train, seed), resnet)
            for seed, resnet in zip(v.seeds, resnets)]


def vit_runs(profile: Profile) -> list[TrainConfig]:
    """Every ViT Chapter 10 reads: the grid and the reference ViTs (without repeats)."""
    return list(dict.fromkeys(vit_grid(profile) + [vit for vit, _ in vit_resnet_pairs(profile)]))


def required_runs(profile: Profile) -> list[TrainConfig]:
    """Every model any chapter of the book trains under this profile, without repeats (the ViTs last)."""
    errors = [c for configs in errors_grid(profile).values() for c in configs]
    regularised = [c for configs in regularised_grid(profile).values() for c in configs]
    return list(dict.fromkeys(training_grid(profile) + short_arm_grid(profile) + cka_base_grid(profile)
                              + seed_study_grid(profile) + precision_reference_grid(profile)
                              + list(wide_and_deep(profile)) + errors + regularised + vit_runs(profile)))


def side_study_runs(profile: Profile) -> list[TrainConfig]:
    """The runs of Chapter 1's precision side study that the main precision does not already train."""
    main = set(seed_study_grid(profile))
    return [c for c in precision_reference_grid(profile) if c not in main]


def runs_trainable_here(profile: Profile, device=None) -> tuple[list[TrainConfig], list[TrainConfig]]:
    """`required_runs` split into (trainable on `device`, side-study runs skipped here: bfloat16 where emulated).

    Chapter 1's bfloat16 side study trains only where bfloat16 is native; elsewhere its runs are skipped
    (and the chapter reads their committed records, or says the study was not run). The main precision
    is never skipped: `train` refuses a profile whose own precision this device cannot run.
    """
    side = set(side_study_runs(profile))
    native = native_bfloat16(device or default_device())
    skipped = [c for c in required_runs(profile) if c in side and c.precision == "bfloat16" and not native]
    return [c for c in required_runs(profile) if c not in set(skipped)], skipped
