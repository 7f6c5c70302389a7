"""Profiles: one name (smoke, cpu, paper, ...) selects every scale parameter of the book.

A profile is a flat YAML file in `book/profiles/`. Any of its values can be overridden; a key the
profile does not have, or a value of the wrong shape, is an error that lists what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import yaml

from widedeep.train import TrainConfig, resolve_precision

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_root() -> Path:
    """The book's root folder ($WIDEDEEP_ROOT, else the checkout this package was installed from)."""
    return Path(os.environ.get("WIDEDEEP_ROOT", REPO_ROOT))


def profiles_dir() -> Path:
    """Where the profile YAML files live."""
    return repo_root() / "book" / "profiles"


def available_profiles() -> list[str]:
    """Names of the profiles on disk."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(name: str, overrides: dict | None = None) -> dict:
    """The profile `name` with `overrides` applied; paths made absolute under the repository root."""
    path = profiles_dir() / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown profile {name!r}; choose one of {available_profiles()} (files in {profiles_dir()})")
    params = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(f"unknown parameter {key!r} for profile {name!r}; known parameters: {sorted(params)}")
        if isinstance(params[key], list) and not isinstance(value, list):
            raise ValueError(f"parameter {key!r} takes a list (the profile has {params[key]!r}); got {value!r}")
        params[key] = value
    params["profile"] = name
    for key in ("runs_dir", "results_dir"):
        params[key] = str(repo_root() / params[key])
    return params


# The recipe keys a profile passes to TrainConfig: every field except the per-model grid coordinates.
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("depth", "width", "n_train", "seed"))


def train_config(params: dict, depth: int, width: float, n_train: int, seed: int, **changes) -> TrainConfig:
    """The TrainConfig of one model under this profile's recipe."""
    recipe = {k: params[k] for k in TRAIN_KEYS if k in params}
    recipe.update(changes)
    if "precision" in recipe:  # a profile may say `auto`; a run's config names what it really trains in
        recipe["precision"] = resolve_precision(recipe["precision"])
    return TrainConfig.from_dict({"depth": depth, "width": width, "n_train": n_train, "seed": seed, **recipe})


def architectures(params: dict) -> list[tuple[int, float]]:
    """(depth, width) pairs of the grid: the width series then the depth series, without repeats."""
    pairs = [(params["width_series_depth"], w) for w in params["widths"]]
    pairs += [(d, params["depth_series_width"]) for d in params["depths"]]
    return list(dict.fromkeys(pairs))


def training_grid(params: dict) -> list[TrainConfig]:
    """Every model of the profile's grid: architectures x n_train x seeds."""
    return [train_config(params, depth, width, n_train, seed)
            for n_train in params["n_trains"] for depth, width in architectures(params) for seed in params["seeds"]]


def public(params: dict) -> dict:
    """The profile's values as stored in results files (machine-specific absolute paths left out)."""
    return {k: v for k, v in params.items() if k not in ("runs_dir", "results_dir")}


def seed_study_grid(params: dict) -> list[TrainConfig]:
    """The seeds of the model whose block Chapters 3-4 compare across seeds."""
    return [train_config(params, params["seed_study_depth"], params["seed_study_width"], params["seed_study_n_train"], s)
            for s in params["seed_study_seeds"]]


def cka_base_grid(params: dict) -> list[TrainConfig]:
    """Chapter 2's base model (the narrowest of the width series on the most data) over its seeds, and its plain control."""
    depth, width, n_train = params["width_series_depth"], params["widths"][0], max(params["n_trains"])
    seeds = [train_config(params, depth, width, n_train, s) for s in params["cross_seeds"]]
    return seeds + [train_config(params, depth, width, n_train, params["cross_seeds"][0], residual=False)]


ERROR_SIDES = ("wide", "deep")


def errors_grid(params: dict) -> dict[str, list[TrainConfig]]:
    """Chapter 6's populations: the seeds of the wide-shallow and of the deep-narrow model, by side."""
    return {side: [train_config(params, params[f"errors_{side}_depth"], params[f"errors_{side}_width"],
                                params["errors_n_train"], s) for s in params[f"errors_{side}_seeds"]]
            for side in ERROR_SIDES}


def required_runs(params: dict) -> list[TrainConfig]:
    """Every model any chapter of the book trains under this profile, without repeats."""
    errors = [c for configs in errors_grid(params).values() for c in configs]
    return list(dict.fromkeys(training_grid(params) + cka_base_grid(params) + seed_study_grid(params) + errors))
