"""Profiles, the schema and the loader: one name (smoke, cpu, paper, ...) selects every scale parameter of the book.

Layer: training (on `widedeep.experiments`, whose models a profile must be able to build; the CLI, the
studies and book support read profiles).

A profile is a YAML file `book/profiles/<name>.yaml` of flat keys (`epochs: 150`, `cka_examples:
2000`); `extends: <other>` starts from another profile's values, so a variant states only what
differs. Reading one (`load_profile`) checks everything before any model is built or file written:
an unknown, missing or wrongly typed key, a malformed file, a profile name that is not a file of
that folder, and a grid that `TrainConfig` refuses are each a `ProfileError` naming the key, the
file (or the override) and what to do.

The keys are grouped by concern into frozen dataclasses, one per concern: `Recipe` (how each model
trains), `Grid` (which models), `Paths`, `CKA`, `Detector`, `Probes`, `Deletion`, `Errors`,
`Subspace`, `Origins`, `Measures` and `Vit` (Chapter 10's Vision Transformers). A section's YAML keys
are its `PREFIX` followed by its field names (`Detector.threshold` is `block_threshold`), so adding a
key is one line in one dataclass (and the key in every profile, or in the one that the others
extend). A study receives only the sections it reads. The models a profile asks for are built in
`widedeep.experiments`; which of them a chapter reads, its study says (`widedeep.studies`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, Literal

import yaml

from widedeep import experiments, store
from widedeep.experiments import parse_cell

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ProfileError(ValueError):
    """A profile (file, name or override) that cannot be used; the message names the key, the source and the fix."""


def repo_root() -> Path:
    """The book's root folder ($WIDEDEEP_ROOT, else the checkout this package was installed from)."""
    return Path(os.environ.get("WIDEDEEP_ROOT", REPO_ROOT))


def profiles_dir() -> Path:
    """Where the profile YAML files live."""
    return repo_root() / "book" / "profiles"


def available_profiles() -> list[str]:
    """Names of the profiles on disk."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


# ---------------------------------------------------------------------------------------------
# The sections of a profile
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    """A group of profile keys: YAML key = PREFIX + field name."""

    PREFIX: ClassVar[str] = ""

    def check(self) -> None:
        """Raise ValueError('<key>: what is wrong and what to do') for values of the right type that cannot work."""


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{key}: {message}")


@dataclass(frozen=True)
class Recipe(Section):
    """How every model of the profile trains: the TrainConfig fields other than the grid coordinates."""

    dataset: str                  # fashion_mnist | cifar10 | cifar100
    image_size: int | None        # pixels; null keeps the native size
    n_val: int                    # validation examples held out from the training split
    n_test: int | None            # a class-balanced test subset; null: the whole test set
    data_seed: int                # chooses the subset and the validation split
    residual: bool                # false trains the plain (no-shortcut) control
    bn_momentum: float
    epochs: int
    min_steps: int                # train at least this many SGD steps (0: epochs alone)
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment: bool
    eval_every: int               # epochs between validation/test evaluations
    precision: Literal["auto", "float32", "bfloat16"]   # auto: bfloat16 where the hardware has it natively
    gpus_per_model: float         # share of a GPU each training task asks for (unused without GPUs)

    def check(self) -> None:
        _require(self.gpus_per_model > 0, "gpus_per_model", f"must be positive, e.g. 0.25; got {self.gpus_per_model}")


@dataclass(frozen=True)
class Grid(Section):
    """Which models the book trains: the width and depth series over data sizes and seeds, and the seed studies."""

    width_series_depth: int
    widths: list[float]
    depth_series_width: float
    depths: list[int]
    n_trains: list[int]
    seeds: list[int]
    cross_seeds: list[int]        # seeds of Chapter 2's base model compared with each other
    min_train_acc: float | None   # the main arm's rule: every model reaches this clean train accuracy (null: none)
    transition_cells: list[str]   # cells "DEPTHxWIDTH@N_TRAIN" near where blocks start, given the extra seeds below
    transition_seeds: list[int]
    seed_study_depth: int         # the model whose seeds Chapters 3-4 compare inside vs outside its block
    seed_study_width: float
    seed_study_n_train: int
    seed_study_seeds: list[int]
    seed_study_arm: Literal["main", "short"]   # which schedule the seed study trains with
    reference_precision: Literal["auto", "float32", "bfloat16"]   # the seed study again in this precision (Chapter 1)

    def check(self) -> None:
        for name in ("widths", "depths", "n_trains", "seeds", "cross_seeds", "seed_study_seeds"):
            _require(len(getattr(self, name)) > 0, name, "must list at least one value")
        cells = {(self.width_series_depth, float(w)) for w in self.widths} | {(d, float(self.depth_series_width))
                                                                            for d in self.depths}
        for text in self.transition_cells:
            depth, width, n_train = parse_cell(text, "transition_cells")
            _require((depth, width) in cells and n_train in self.n_trains, "transition_cells",
                     f"{text!r} is not a cell of the grid (its architectures x n_trains)")
        _require(not set(self.transition_seeds) & set(self.seeds), "transition_seeds",
                 f"must not repeat the grid's seeds {self.seeds}")


@dataclass(frozen=True)
class Short(Section):
    """The second arm: today's short schedule on the depth series at every n_train (what training length does)."""

    PREFIX: ClassVar[str] = "short_"
    epochs: int                   # epochs of the short schedule ...
    min_steps: int                # ... and its minimum of steps (0: epochs alone)
    depths: list[int]             # the depth series (width depth_series_width) trained with it
    seeds: list[int]
    transition_cells: list[str]   # cells given the extra seeds below
    transition_seeds: list[int]

    def check(self) -> None:
        for text in self.transition_cells:
            depth, width, _ = parse_cell(text, "short_transition_cells")
            _require(depth in self.depths, "short_transition_cells", f"{text!r}: depth {depth} is not in short_depths")


@dataclass(frozen=True)
class Paths(Section):
    """Where results and records go, relative to the repository root (null: beside the run store, never
    committed); the run store itself is `store.default_runs_dir()`."""

    results_dir: str | None


@dataclass(frozen=True)
class CKA(Section):
    """The minibatch CKA estimator's data (Chapter 2 on): the first test images, in reshuffled passes."""

    PREFIX: ClassVar[str] = "cka_"
    examples: int
    batch_size: int
    passes: int

    def check(self) -> None:
        _require(self.batch_size >= 4, "cka_batch_size",
                 f"must be at least 4 (the unbiased HSIC); got {self.batch_size}")
        _require(self.examples >= self.batch_size, "cka_examples", f"must be at least cka_batch_size "
                 f"({self.batch_size}); got {self.examples}")


@dataclass(frozen=True)
class Detector(Section):
    """The block detector's settings (`widedeep.analyses.blocks`) and the sweeps beside them."""

    PREFIX: ClassVar[str] = "block_"
    threshold: float              # every layer's mean CKA inside the block exceeds this
    min_contrast: float           # inside minus outside
    min_pc1: float | None         # every layer's first-PC share (null: the CKA conditions alone)
    thresholds: list[float]
    min_pc1s: list[float]

    def check(self) -> None:
        _require(0 < self.threshold <= 1, "block_threshold", f"must lie in (0, 1]; got {self.threshold}")
        _require(self.min_pc1 is None or 0 <= self.min_pc1 <= 1, "block_min_pc1", "must lie in [0, 1] or be null")

    def settings(self) -> dict:
        """The detector's keyword arguments: threshold, min_contrast and min_pc1."""
        return {"threshold": self.threshold, "min_contrast": self.min_contrast, "min_pc1": self.min_pc1}


@dataclass(frozen=True)
class Probes(Section):
    """Linear probes along the residual stream (Chapter 5)."""

    PREFIX: ClassVar[str] = "probe_"
    pool: int                     # average-pool each activation map over pool x pool windows first
    l2: list[float]               # L2 strengths tried, chosen on validation
    max_iter: int                 # L-BFGS iterations per strength
    test_examples: int | None     # first test images the probes are scored on (null: all)
    plateau_tol: float            # probe-accuracy change across a block that still counts as a plateau


@dataclass(frozen=True)
class Deletion(Section):
    """Deleting residual blocks (Chapter 5)."""

    PREFIX: ClassVar[str] = "deletion_"
    test_examples: int | None
    repair_examples: int | None   # training images whose BN statistics repair a deleted model
    max_steps: int | None         # cumulative deletions per side (null: as many as the smaller side allows)
    margin: float                 # mean accuracy difference inside vs outside that counts as cheaper


@dataclass(frozen=True)
class Errors(Section):
    """Chapter 6's populations (a wide-shallow and a deep-narrow model, m and 2m seeds) and its statistics."""

    PREFIX: ClassVar[str] = "errors_"
    n_train: int
    wide_depth: int
    wide_width: float
    wide_seeds: list[int]
    deep_depth: int
    deep_width: float
    deep_seeds: list[int]
    null_side: Literal["deep"]    # the side with 2m seeds whose half-splits are the null (the chapter's design)
    splits: int
    fdr: float
    n_boot: int
    level: float
    match_tolerance: float
    null_quantile: float
    power_seeds: list[int]        # seeds of the wide side (the deep side has twice as many) the power curve covers
    power_draws: int              # simulated experiments per point of the curve
    power_wanted: float           # expected discoveries that a population should reach "if the effect is real"

    def check(self) -> None:
        _require(len(self.deep_seeds) == 2 * len(self.wide_seeds) >= 4, "errors_deep_seeds",
                 f"the null side needs twice the wide side's seeds and at least 4 (got {len(self.deep_seeds)} deep, "
                 f"{len(self.wide_seeds)} wide): each half-split of the deep seeds is compared with the wide ones")
        for name in ("fdr", "level", "null_quantile"):
            _require(0 < getattr(self, name) < 1, f"errors_{name}", f"must lie in (0, 1); got {getattr(self, name)}")


@dataclass(frozen=True)
class Subspace(Section):
    """Wang et al.'s subspace match (Chapter 7)."""

    PREFIX: ClassVar[str] = "subspace_"
    examples: int
    batch_size: int
    eps: list[float]              # increasing: the last is the loosest
    samples: int                  # the authors' sampled protocol: coordinates per draw ...
    draws: int                    # ... and draws averaged
    simple_eps: float
    simple_layers: int
    simple_neurons: int
    energy_kept: float

    def check(self) -> None:
        _require(self.eps == sorted(self.eps) and all(0 <= e for e in self.eps), "subspace_eps",
                 f"list non-negative values in increasing order (the last is the loosest); got {self.eps}")
        _require(0 < self.energy_kept < 1, "subspace_energy_kept", f"must lie in (0, 1); got {self.energy_kept}")


@dataclass(frozen=True)
class Origins(Section):
    """Where the block comes from (Chapter 8): dominant datapoints, the block during training, the regulariser."""

    PREFIX: ClassVar[str] = "origins_"
    examples: int                 # first test images whose full Grams the dominant-datapoint analysis uses
    fraction: float               # the top fraction of examples called dominant (and removed)
    draws: int                    # random removals of as many examples (the control's spread)
    snapshot_fractions: list[float]   # the seed study keeps its weights at these fractions of training
    reg_strength: float           # the authors' first-PC regulariser: strength ...
    reg_thresholds: list[float]   # ... thresholds swept (theirs: 0.1) ...
    reg_layers: Literal["relu", "stream", "add", "all"]   # ... and the layers it sums over
    top_images: int               # dominant images shown per seed

    def check(self) -> None:
        _require(0 < self.fraction < 0.5, "origins_fraction", f"must lie in (0, 0.5); got {self.fraction}")
        _require(all(0 < f < 1 for f in self.snapshot_fractions), "origins_snapshot_fractions",
                 f"list fractions of training in (0, 1); got {self.snapshot_fractions}")
        _require(all(0 <= t < 1 for t in self.reg_thresholds), "origins_reg_thresholds",
                 f"list thresholds in [0, 1); got {self.reg_thresholds}")


@dataclass(frozen=True)
class Measures(Section):
    """Does the block depend on the lens (Chapter 9): the field's tests of a measure on the seed study."""

    PREFIX: ClassVar[str] = "measures_"
    examples: int                 # first test images every measure compares
    stride: int                   # every stride-th residual-stream layer (all from 1)
    draws: int                    # shuffles of the other seed's examples per calibrated best match
    pc_ks: list[int]              # top principal components deleted (Ding et al.'s perturbation)
    deletion_layers: int          # evenly spaced stream layers whose PCs are deleted
    outlier_fractions: list[float]   # Davari et al.: share of examples translated ...
    outlier_scales: list[float]   # ... by c times the layer's spread
    knn_k: int                    # neighbours of the mutual k-NN measure
    null_quantile: float          # a block contrast above this quantile of block-free runs is seen

    def check(self) -> None:
        _require(self.stride >= 1, "measures_stride", f"must be a positive integer; got {self.stride}")
        _require(all(k >= 1 for k in self.pc_ks), "measures_pc_ks", f"list positive integers; got {self.pc_ks}")
        _require(all(0 < f < 1 for f in self.outlier_fractions), "measures_outlier_fractions",
                 f"list fractions in (0, 1); got {self.outlier_fractions}")
        _require(0 < self.null_quantile < 1, "measures_null_quantile", f"must lie in (0, 1); got {self.null_quantile}")


@dataclass(frozen=True)
class Vit(Section):
    """Chapter 10's small Vision Transformers: their grid, recipe and the ViT set beside the ResNets.

    A ViT's depth is its number of encoder blocks and its width its embedding dimension; every other
    training option (data, epochs, min_steps, batch, augmentation, precision) is the recipe's.
    """

    PREFIX: ClassVar[str] = "vit_"
    width_series_depth: int       # blocks of the width series
    widths: list[int]             # embedding dimensions (multiples of heads)
    depth_series_width: int       # embedding dimension of the depth series
    depths: list[int]             # encoder blocks
    n_trains: list[int]
    seeds: list[int]
    patch_size: int               # pixels per square patch
    heads: int
    mlp_ratio: int
    optimizer: Literal["sgd", "adamw"]
    lr: float
    weight_decay: float           # AdamW's decoupled decay on dense and patch kernels
    warmup_steps: int             # linear warmup before the cosine decay
    reference_depth: int          # the ViT set beside Chapter 2's base ResNet (same n_train, seed by seed) ...
    reference_width: int
    calibration_examples: int     # first test images of the ViT-ResNet heatmap's shuffled-examples baseline ...
    calibration_draws: int        # ... and its shuffles

    def check(self) -> None:
        for name in ("widths", "depths", "n_trains", "seeds"):
            _require(len(getattr(self, name)) > 0, f"vit_{name}", "must list at least one value")
        _require(self.calibration_draws >= 1, "vit_calibration_draws", f"must be positive; got {self.calibration_draws}")
        _require(self.calibration_examples >= 4, "vit_calibration_examples",
                 f"must be at least 4 (the unbiased HSIC); got {self.calibration_examples}")


SECTIONS: dict[str, type[Section]] = {"recipe": Recipe, "grid": Grid, "short": Short, "paths": Paths, "cka": CKA,
                                      "detector": Detector, "probes": Probes, "deletion": Deletion,
                                      "errors": Errors, "subspace": Subspace, "origins": Origins,
                                      "measures": Measures, "vit": Vit}


@dataclass(frozen=True)
class Profile:
    """A profile read and checked: its name, file and one typed section per concern."""

    name: str
    path: Path
    recipe: Recipe
    grid: Grid
    short: Short
    paths: Paths
    cka: CKA
    detector: Detector
    probes: Probes
    deletion: Deletion
    errors: Errors
    subspace: Subspace
    origins: Origins
    measures: Measures
    vit: Vit

    @property
    def runs_dir(self) -> Path:
        """The run store (absolute): `$WIDEDEEP_RUNS`, else `~/.cache/widedeep/runs`, whatever the profile."""
        return store.default_runs_dir()

    @property
    def results_dir(self) -> Path:
        """Where the chapters write this profile's results and records (absolute): `results_dir` under the
        repository, or `<run store>/.results/<profile>` when it is null (smoke: never committed)."""
        if self.paths.results_dir is None:
            return store.default_runs_dir() / ".results" / self.name
        return repo_root() / self.paths.results_dir

    def values(self) -> dict:
        """Every key of the profile with its value, flat, as in the YAML file."""
        return {key: getattr(getattr(self, section), field) for key, (section, field) in KEYS.items()}

    def section_values(self, *sections: str) -> dict:
        """The flat keys and values of some sections (e.g. "probes", "deletion"), for results files."""
        return {key: value for key, value in self.values().items() if KEYS[key][0] in sections}

    def public(self) -> dict:
        """The profile's values as stored in results files (machine-specific paths left out) and its name."""
        flat = {k: v for k, v in self.values().items() if k != "results_dir"}
        return {**flat, "profile": self.name}


def _section_keys() -> dict[str, tuple[str, str]]:
    """YAML key -> (section attribute, field name), checking that no two sections claim one key."""
    keys: dict[str, tuple[str, str]] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            key = cls.PREFIX + f.name
            if key in keys:
                raise RuntimeError(f"profile key {key!r} is claimed by two sections: {keys[key][0]} and {section}")
            keys[key] = (section, f.name)
    return keys


KEYS = _section_keys()
RESERVED = ("extends",)


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------

def _describe(annotation) -> str:
    """A type as the error message names it ("an integer", "a list of numbers", ...)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}[args[0]]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[annotation]


def _matches(value, annotation) -> bool:
    """Whether a YAML value has the annotated type (an int is a number; a bool is never a number)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return value in args and not isinstance(value, bool)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    raise TypeError(f"profiles cannot check values of type {annotation!r}")


HINTS = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}


def _annotation(key: str):
    section, name = KEYS[key]
    return HINTS[section][name]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def _display(path: Path) -> str:
    """A path as messages show it: relative to the repository when it lies inside."""
    try:
        return str(path.resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def profile_path(name: str) -> Path:
    """The file of profile `name`, refusing names that are not a file of the profiles folder."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise ProfileError(f"profile name {name!r} is not a profile: a name is a file stem in "
                           f"{_display(profiles_dir())}/ (letters, digits, '-', '_', '.'; no paths); "
                           f"choose one of {available_profiles()}")
    path = profiles_dir() / f"{name}.yaml"
    if not path.exists():
        raise ProfileError(f"unknown profile {name!r}; choose one of {available_profiles()} "
                           f"(files in {_display(profiles_dir())}/)")
    return path


def _read_yaml(path: Path) -> dict:
    """A profile file's mapping, or a ProfileError naming the file and the line YAML stopped at."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ProfileError(f"{_display(path)} is not valid YAML{where}: {problem}; fix the file") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ProfileError(f"{_display(path)} must be a mapping of keys to values (key: value lines); "
                           f"got a {type(values).__name__}")
    return values


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(str(key), list(KEYS) + list(RESERVED), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _layers(name: str, chain: tuple[str, ...] = ()) -> tuple[dict, dict[str, str]]:
    """(values, where each value was set) of profile `name` with the profiles it extends underneath."""
    path = profile_path(name)
    if name in chain:
        raise ProfileError(f"{_display(path)}: `extends:` loops back to {name!r} ({' -> '.join(chain + (name,))}); "
                           f"remove one of the `extends:` lines")
    own = _read_yaml(path)
    for key in own:
        if key not in KEYS and key not in RESERVED:
            raise ProfileError(f"{_display(path)}: unknown key {key!r}{_suggest(key)}; the keys a profile "
                               f"takes are those of book/profiles/cpu.yaml (see widedeep.profiles)")
    values, origin = {}, {}
    parent = own.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ProfileError(f"{_display(path)}: `extends:` takes a profile name, e.g. `extends: paper`; "
                               f"got {parent!r}")
        values, origin = _layers(parent, chain + (name,))
    values.update(own)
    origin.update({key: _display(path) for key in own})
    return values, origin


def _check_value(key: str, value, where: str) -> None:
    annotation = _annotation(key)
    if not _matches(value, annotation):
        raise ProfileError(f"{where}: {key!r} must be {_describe(annotation)}; got {value!r} "
                           f"({type(value).__name__}); fix the value")


def load_profile(name: str, overrides: dict | None = None) -> Profile:
    """Profile `name` with `overrides` applied, every key present, known and of its type, and its grid valid."""
    values, origin = _layers(name)
    path = profiles_dir() / f"{name}.yaml"
    missing = [key for key in KEYS if key not in values]
    if missing:
        raise ProfileError(f"{_display(path)} lacks {', '.join(repr(k) for k in missing)}: add "
                           f"{'it' if len(missing) == 1 else 'them'} (see book/profiles/cpu.yaml for each key's "
                           f"meaning), or `extends:` a profile that has {'it' if len(missing) == 1 else 'them'}")
    for key, value in (overrides or {}).items():
        if key not in KEYS:
            raise ProfileError(f"unknown parameter {key!r} for profile {name!r}{_suggest(key)}; known parameters: "
                               f"{sorted(KEYS)}")
        values[key] = value
        origin[key] = f"the override {key}={value!r}"
    for key in KEYS:
        _check_value(key, values[key], origin[key])
    grouped: dict[str, dict] = {section: {} for section in SECTIONS}
    for key, (section, field_name) in KEYS.items():
        grouped[section][field_name] = values[key]
    sections = {section: SECTIONS[section](**grouped[section]) for section in SECTIONS}
    for section in sections.values():
        try:
            section.check()
        except ValueError as error:
            key = str(error).split(":", 1)[0]
            raise ProfileError(f"{origin.get(key, _display(path))}: {error}") from None
    profile = Profile(name, path, **sections)
    try:
        experiments.required_runs(profile)  # every model's TrainConfig: depths 6n+2, data sizes, batch sizes ...
    except ValueError as error:
        raise ProfileError(f"{_display(path)}{' with overrides ' + repr(overrides) if overrides else ''}: "
                           f"a model of its grid cannot be trained: {error}") from None
    return profile


def with_values(profile: Profile, **values) -> Profile:
    """The profile with some keys changed (flat YAML keys, checked like overrides)."""
    for key, value in values.items():
        if key not in KEYS:
            raise ProfileError(f"unknown parameter {key!r}{_suggest(key)}")
        _check_value(key, value, f"the change {key}={value!r}")
    changed = {}
    for key, value in values.items():
        section, field_name = KEYS[key]
        changed.setdefault(section, {})[field_name] = value
    return replace(profile, **{s: replace(getattr(profile, s), **v) for s, v in changed.items()})
