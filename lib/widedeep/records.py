"""Per-run records: what the book needs from each trained run, kept in git so the book builds without checkpoints.

Layer: beside the run store (imports `store`, `train`, `profiles`). A profile's records live in
`<results_dir>/runs/<run-name>/`, committed for the published profiles (`results/cpu/runs/...`)
and beside the run store for smoke (never committed). Each run's folder holds

- `config.json` and `metrics.json`: the run's config, its metrics (accuracies, steps, wall time,
  hardware) and the protocol stamp it was trained under;
- one file per analysis result, `<kind>-<key hash>.npz|json`, keyed as the run store's caches were
  (the key holds everything the numbers depend on), carrying its kind's version and provenance.

`Run` is a trained run read through its records: `metrics` come from the record, and `model` is
loaded from the run store only when an analysis misses a record (and trained again, deterministically,
if its checkpoint is gone). `run.snapshot(epoch)` is the run at a training snapshot, its records in
`<run>/snapshots/epoch-N/`, its weights likewise loaded only on a miss. A record whose version is
older than its code's is stale: it is recomputed where the checkpoint exists, and the run is trained
again where it does not (saying so);
`widedeep status` lists such runs with the retraining they need before anything runs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from widedeep import store
from widedeep.train import FinalAccuracies, TrainConfig, default_device, is_complete, train_or_load

# What reading a damaged record raises (a truncated npz is no zip file; a cut member ends early).
DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, store.CorruptFileError)
META_KEY = "__record__"       # the npz entry (a JSON string) holding an npz record's metadata
RECORD_SUFFIXES = (".npz", ".json")
TRAINING_FILES = ("config.json", "metrics.json")


class RecordError(store.CorruptFileError):
    """A record that is damaged or off-schema; the message names it and what to do."""


# Every record kind's current version, registered by the module that computes it (`register_kinds`).
KIND_VERSIONS: dict[str, int] = {}


def register_kinds(versions: dict[str, int]) -> dict[str, int]:
    """Register record kinds with their versions (bump a version when its code would give other numbers)."""
    for kind, version in versions.items():
        if KIND_VERSIONS.get(kind, version) != version:
            raise ValueError(f"record kind {kind!r} is registered twice, with versions {KIND_VERSIONS[kind]} and "
                             f"{version}: one module owns a kind")
        KIND_VERSIONS[kind] = version
    return versions


# Records read in this process (path -> kind), so a chapter can list what it read in its results file.
_read_log: dict[str, str] = {}
_log_lock = threading.Lock()


def read_log() -> dict[str, str]:
    """The records read or written in this process so far (path -> kind)."""
    with _log_lock:
        return dict(_read_log)


def _logged(path: Path, kind: str) -> None:
    with _log_lock:
        _read_log[str(path)] = kind


def provenance(precision: str) -> dict:
    """Where a record was computed: commit, CPU or GPU, torch version, the run's training precision."""
    return {"commit": store.git_commit(), "hardware": store.hardware(), "torch": torch.__version__,
            "precision": precision, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _damaged(path: Path, error: Exception) -> RecordError:
    return RecordError(f"{path} is a damaged record ({type(error).__name__}: {error}). Delete it (rm '{path}') "
                       f"and rerun `widedeep analyse`: it is computed again from the run's checkpoint.")


def _meta(path: Path) -> dict | None:
    """A record file's metadata, or None if it has none (a cache file from before records)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as stored:
                return json.loads(str(stored[META_KEY])) if META_KEY in stored.files else None
        value = store.read_json(path)
        return value.get(META_KEY) if isinstance(value, dict) else None
    except DAMAGED as error:
        raise _damaged(path, error) from None


def record_state(path: Path, version: int) -> str:
    """'current', 'stale' (older version, or written before records had versions) or 'missing'."""
    if not path.exists():
        return "missing"
    meta = _meta(path)
    if meta is None or int(meta.get("version", 0)) < version:
        return "stale"
    if int(meta["version"]) > version:
        raise RecordError(f"{path} was written by newer code (version {meta['version']} of {meta.get('kind')!r}; "
                          f"this code has {version}): update this checkout (git pull) before reading it")
    return "current"


def _read(path: Path) -> Any:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as stored:
                return {k: stored[k] for k in stored.files if k != META_KEY}
        return store.read_json(path)["value"]
    except DAMAGED as error:
        raise _damaged(path, error) from None


def _write(path: Path, value: Any, meta: dict) -> Any:
    if path.suffix == ".npz":
        arrays = {k: np.asarray(v) for k, v in value.items()}
        if META_KEY in arrays:
            raise ValueError(f"a record may not hold an array named {META_KEY!r}")
        store.write_npz(path, **arrays, **{META_KEY: np.array(json.dumps(meta))})
        return arrays
    store.write_json(path, {META_KEY: meta, "value": value})
    return store.read_json(path)["value"]  # as a later read gives it (tuples as lists, NaN as None)


@dataclass
class Run(FinalAccuracies):
    """A trained run read through its records; its model is loaded (or retrained) only on a record miss."""

    config: TrainConfig
    runs_dir: Path                   # the run store
    records_dir: Path                # this run's records folder
    device: torch.device | None = None
    _model: torch.nn.Module | None = field(default=None, repr=False)
    _metrics: dict | None = field(default=None, repr=False)
    _architecture: torch.nn.Module | None = field(default=None, repr=False)
    _load: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)  # other weights (a snapshot)
    _base: "Run | None" = field(default=None, repr=False)   # the run whose snapshot this is (its metrics)

    @property
    def name(self) -> str:
        return self.config.name()

    @property
    def run_dir(self) -> Path:
        """The run's folder in the run store (checkpoint, snapshots)."""
        return Path(self.runs_dir) / self.name

    @property
    def metrics(self) -> dict:
        """The run's metrics: its record, else the run store's `metrics.json` (trained here)."""
        if self._metrics is None and self._base is not None:
            return self._base.metrics
        if self._metrics is None:
            path = self.records_dir / "metrics.json"
            if path.exists():
                self._metrics = store.read_json(path)["metrics"]
            else:
                self._metrics = self._trained().metrics
        return self._metrics

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> torch.nn.Module:
        """The trained model (eval mode): loaded from the run store, or trained again if its checkpoint is gone."""
        if self._model is None:
            self._model = self._load() if self._load is not None else self._trained().model
        return self._model

    def _trained(self):
        device = self.device or default_device()
        if not is_complete(self.config, self.runs_dir):
            print(f"{self.name}: a record is missing or stale and the checkpoint is not in {self.runs_dir}; "
                  f"training it again (deterministic: the same weights)", file=sys.stderr, flush=True)
        run = train_or_load(self.config, self.runs_dir, device, allow_train=True, progress=False)
        self._model = run.model
        return run

    @property
    def architecture(self) -> torch.nn.Module:
        """The trained model if loaded, else an untrained one of the same architecture (module names, layers)."""
        if self._model is not None:
            return self._model
        if self._architecture is None:
            self._architecture = self.config.build_model().eval()
        return self._architecture

    def layers(self) -> list:
        """The model's analysable layers (names and kinds come from the architecture: no checkpoint needed)."""
        return self.architecture.layers()

    def with_model(self, model: torch.nn.Module, subfolder: str) -> "Run":
        """The same run with other weights (a snapshot), its records in `<records>/<subfolder>`."""
        return Run(self.config, self.runs_dir, self.records_dir / subfolder, self.device, model, self._metrics,
                   _base=self)

    def snapshot(self, epoch: int) -> "Run":
        """The run at a snapshot epoch, its records in `<records>/snapshots/epoch-N`; weights loaded only on a miss."""
        if epoch not in self.config.snapshot_epochs:
            raise ValueError(f"{self.name} keeps snapshots at epochs {list(self.config.snapshot_epochs)}, not {epoch}")
        return Run(self.config, self.runs_dir, self.records_dir / "snapshots" / f"epoch-{epoch}", self.device,
                   _load=lambda: self._snapshot_model(epoch), _base=self)

    def _snapshot_model(self, epoch: int) -> torch.nn.Module:
        """The snapshot's weights from the run store (the run trained again first if its checkpoint is gone)."""
        path = self.run_dir / "snapshots" / f"epoch-{epoch}.pt"
        if not path.exists() and not is_complete(self.config, self.runs_dir):
            self._trained()   # training writes the snapshots on its way
        if not path.exists():
            raise FileNotFoundError(f"snapshot {path} is missing while {self.name} is trained: a snapshot record "
                                    f"needs it. Delete the run's folder (rm -r '{self.run_dir}') and rerun: it is "
                                    f"trained again (deterministic: the same weights) with its snapshots")
        model = self.config.build_model()
        model.load_state_dict(store.load_checkpoint(path)["model"])
        return model.to(self.device or default_device()).eval()

    def record_path(self, kind: str, key: dict, suffix: str = ".npz") -> Path:
        """`<records_dir>/<kind>-<hash of key>.<suffix>` (the key holds everything the numbers depend on)."""
        if suffix not in RECORD_SUFFIXES:
            raise ValueError(f"a record is one of {RECORD_SUFFIXES}; got {suffix!r}")
        return self.records_dir / f"{kind}-{store.config_hash(key)}{suffix}"

    def record(self, kind: str, version: int, key: dict, compute: Callable[[], Any], suffix: str = ".npz") -> Any:
        """The record of `kind` under `key`: read if current, else computed (from the model) and written atomically.

        `.npz` records hold a dict of arrays, `.json` records any JSON value. A missing or stale record
        is computed from the model: loaded from the run store, or trained again (deterministically, saying
        so on stderr) when its checkpoint is gone; `widedeep status` lists such runs beforehand.
        """
        path = self.record_path(kind, key, suffix)
        state = record_state(path, version)
        _logged(path, kind)
        if state == "current":
            return _read(path)
        return _write(path, compute(), {"kind": kind, "version": version, "key": key,
                                        "provenance": provenance(self.config.precision)})


def records_dir(profile) -> Path:
    """Where a profile's per-run records live: `<results_dir>/runs`."""
    return Path(profile.results_dir) / "runs"


def run_records_dir(profile, config: TrainConfig) -> Path:
    """One run's records folder."""
    return records_dir(profile) / config.name()


def has_training_record(profile, config: TrainConfig) -> bool:
    """Whether the run's config and metrics are recorded (it needs no training to be read)."""
    folder = run_records_dir(profile, config)
    return all((folder / name).exists() for name in TRAINING_FILES)


def write_training_record(profile, config: TrainConfig, stamp: dict | None = None) -> None:
    """Copy a finished run's config and metrics from the store into its records, with provenance and stamp.

    The stamp (the protocol hash the run was trained under) is read from the run store's
    `protocol.json`, written when its training started; `stamp` is used when the run has none.
    """
    run_dir = Path(profile.runs_dir) / config.name()
    metrics = store.read_json(run_dir / "metrics.json")
    if metrics.get("status") != "complete":
        raise ValueError(f"{config.name()} has not finished training; only finished runs are recorded")
    stamp_path = run_dir / "protocol.json"
    trained_under = store.read_json(stamp_path) if stamp_path.exists() else stamp
    folder = run_records_dir(profile, config)
    store.write_json(folder / "config.json", config.stored())
    store.write_json(folder / "metrics.json", {"metrics": metrics, "protocol": trained_under,
                                               "provenance": provenance(config.precision)})


def stamp_training(profile, config: TrainConfig, stamp: dict) -> None:
    """Write the protocol stamp into a run's store folder when its training starts (kept if already there)."""
    path = Path(profile.runs_dir) / config.name() / "protocol.json"
    if not path.exists():
        store.write_json(path, stamp)


def load_runs(profile, configs: list[TrainConfig], device=None) -> list[Run]:
    """The runs of `configs`, read through their records: a run with a training record needs no checkpoint.

    Nothing is trained here: a finished run without a training record gets one, and a run that is neither
    recorded nor trained raises FileNotFoundError naming the command that trains it (the pipeline alone
    trains: `widedeep train`, or `pipeline.ensure` before a chapter's first cell that reads runs).
    """
    unique = list(dict.fromkeys(configs))
    lacking = [c for c in unique if not has_training_record(profile, c)]
    untrained = [c for c in lacking if not is_complete(c, profile.runs_dir)]
    if untrained:
        raise FileNotFoundError(f"{len(untrained)} runs have no record and are not trained (first: "
                                f"{untrained[0].name()}): run `widedeep train --profile {profile.name}` "
                                f"(a chapter run alone calls widedeep.pipeline.ensure first)")
    for config in lacking:
        write_training_record(profile, config)
    device = torch.device(device) if device is not None else None
    by_name = {c.name(): Run(c, Path(profile.runs_dir), run_records_dir(profile, c), device) for c in unique}
    return [by_name[c.name()] for c in configs]
