"""The pipeline in pieces: which runs each chapter needs, what fits in the hours a machine has, analysis, status.

Layer: above the analyses (it drives them), below the command line.

    train → analyse (per-run records) → study → page

- `chapter_runs`: the runs each chapter reads; `groups`: the runs that must be trained together
  because a per-pair record needs all of them (a seed study, a pair of architectures, a population).
- `plan`: the groups that fit in `hours` on this machine, from its measured training throughput
  (`throughput`: the rate its finished runs really reached, else a few timed SGD steps per architecture,
  cached per CPU in ~/.cache/widedeep).
- `analyse_runs`: every trained run's per-run records (all-layer CKA and first-PC statistics), as Ray
  tasks on every core; the chapters then write the rest of their records as they run.
- `status`: per run, trained / partly trained / missing and its records complete / stale / missing;
  the core-hours left on this machine; `compute_spent` and `run_summary`, the training hours behind the
  committed records, per machine (the README's paragraph on the published run, `make records`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from widedeep import experiments, grid, protocol, records, store, studies
from widedeep.profiles import Profile, repo_root
from widedeep.train import TrainConfig, is_complete, measure_throughput

CHAPTERS = tuple(studies.chapters())   # every chapter has its study (widedeep.studies), named as the page is


def chapter_runs(profile: Profile) -> dict[str, list[TrainConfig]]:
    """The runs each chapter reads, as its study declares them (`configs(profile)`), without repeats."""
    return {chapter: list(dict.fromkeys(module.configs(profile))) for chapter, module in studies.chapters().items()}


def runs_of_chapters(profile: Profile, chapters: Iterable[str]) -> list[TrainConfig]:
    """The runs that the named chapters read (their union, in order), for training a few chapters first."""
    runs, known = [], chapter_runs(profile)
    for chapter in chapters:
        if chapter not in known:
            raise ValueError(f"no chapter {chapter!r}: name chapters by their file stem, one of {sorted(known)}")
        runs.extend(known[chapter])
    return list(dict.fromkeys(runs))


def ensure(profile: Profile, chapter: str, progress: bool = True) -> list[TrainConfig]:
    """Train the runs `chapter` reads that are neither recorded nor trained, and record every finished one.

    The one call a chapter run alone makes before its first cell that reads runs: the pipeline alone
    trains (through the grid engine, stamped with the protocol as `widedeep train` stamps them), so the
    studies and the chapter's cells only read records. Runs this machine cannot train (Chapter 1's
    bfloat16 side study without native bfloat16) are left out. Returns the runs trained now.
    """
    _, skipped = experiments.runs_trainable_here(profile)
    lacking = [c for c in chapter_runs(profile)[chapter] if not records.has_training_record(profile, c)]
    todo = [c for c in grid.unfinished(lacking, profile.runs_dir) if c not in set(skipped)]
    for config in todo:
        records.stamp_training(profile, config, training_stamp(profile))
    if todo:
        grid.run_grid(todo, profile.runs_dir, progress=progress)
    for config in lacking:
        if is_complete(config, profile.runs_dir):
            records.write_training_record(profile, config)
    return todo


@dataclass(frozen=True)
class Group:
    """Runs trained together: a per-pair record (or a population statistic) needs every one of them."""

    name: str
    configs: tuple[TrainConfig, ...]


def groups(profile: Profile, configs: Iterable[TrainConfig] | None = None) -> list[Group]:
    """The profile's analysis groups (seed studies, populations, pairs), then every other run on its own.

    Only runs in `configs` (default: every required run) are kept; a run in two groups joins the first.
    """
    wanted = list(dict.fromkeys(configs if configs is not None else experiments.required_runs(profile)))
    candidates = [("seed study", experiments.seed_study_grid(profile)),
                  ("precision side study", experiments.side_study_runs(profile)),
                  ("cross-seed base model", experiments.cka_base_grid(profile)),
                  ("wide and deep pair", list(experiments.wide_and_deep(profile))),
                  ("error populations", [c for cs in experiments.errors_grid(profile).values() for c in cs])]
    candidates += [(f"regularised seeds (threshold {t:g})", cs) for t, cs in experiments.regularised_grid(profile).items()]
    # Chapter 10's reference ViTs: each has a record paired with a base ResNet (that group is trained first)
    candidates.append(("ViTs beside the base ResNet", [vit for vit, _ in experiments.vit_resnet_pairs(profile)]))
    taken: set[TrainConfig] = set()
    out = []
    for name, members in candidates:
        members = [c for c in dict.fromkeys(members) if c in wanted and c not in taken]
        if members:
            out.append(Group(name, tuple(members)))
            taken.update(members)
    out += [Group(c.name(), (c,)) for c in wanted if c not in taken]
    return out


# ---------------------------------------------------------------------------------------------
# Throughput and the plan for a sitting
# ---------------------------------------------------------------------------------------------

def throughput_cache() -> Path:
    """Measured training throughput per machine, beside the run store (never in git)."""
    return store.default_runs_dir().parent / "throughput.json"


def _architecture_key(config: TrainConfig, threads: int, hardware: str | None = None) -> str:
    return json.dumps({"hardware": hardware or store.hardware(), "depth": config.depth, "width": config.width,
                       "residual": config.residual, "image_size": config.image_size, "dataset": config.dataset,
                       "batch": config.batch_size, "precision": config.precision, "threads": threads,
                       "pc_reg": config.pc_reg_strength > 0,
                       # a ViT's shape and optimiser (absent from a ResNet's key, which keeps its cached rates)
                       **{k: v for k, v in config.stored().items()
                          if k in ("arch", "patch_size", "heads", "mlp_ratio", "optimizer")}}, sort_keys=True)


def realized_rates(runs_dir) -> dict[str, float]:
    """Images/s at which the finished runs in the store really trained, per architecture key (the median over
    runs): evaluation, augmentation and whatever else shared the cores included, which the few timed steps of
    `measure_throughput` leave out (on a busy 2-core machine they read up to 3x fast). A run without a
    `threads` entry trained with the grid's default, one."""
    found: dict[str, list[float]] = {}
    for path in Path(runs_dir).glob("*/metrics.json"):
        try:
            metrics = store.read_json(path)
            if metrics.get("status") != "complete" or not metrics.get("wall_time_s"):
                continue
            config = TrainConfig(**metrics["config"])
        except (OSError, ValueError, KeyError, TypeError, store.CorruptFileError):   # damaged or older: no rate
            continue
        key = _architecture_key(config, metrics.get("threads", 1), metrics["hardware"])
        found.setdefault(key, []).append(metrics["steps"] * config.batch_size / metrics["wall_time_s"])
    return {key: float(np.median(rates)) for key, rates in found.items()}


def throughput(config: TrainConfig, threads: int = 1, measure: bool = True,
               realized: dict[str, float] | None = None) -> float | None:
    """This machine's training images/s for `config`'s architecture: what its finished runs here really reached
    (`realized`, from `realized_rates`), else the cached few-step measurement, else measured now (None if not
    allowed)."""
    key = _architecture_key(config, threads)
    if realized and key in realized:
        return realized[key]
    path = throughput_cache()
    cached = store.read_json(path) if path.exists() else {}
    if key not in cached and measure:
        cached[key] = measure_throughput(config, threads)
        store.write_json(path, cached)
    return cached.get(key)


def seconds_left(config: TrainConfig, runs_dir, threads: int = 1, measure: bool = True,
                 realized: dict[str, float] | None = None) -> float | None:
    """Estimated seconds to finish training `config` on one worker here (0 when done)."""
    if is_complete(config, runs_dir):
        return 0.0
    rate = throughput(config, threads, measure, realized)
    if rate is None:
        return None
    return (grid.images_to_train(config) - grid.images_done(config, runs_dir)) / rate


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of jobs on `workers` parallel workers, longest first (the grid starts the costliest first)."""
    loads = [0.0] * max(workers, 1)
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


@dataclass
class Plan:
    """What one sitting of `train --hours` trains: whole groups that fit, and the estimate behind it."""

    chosen: list[Group]
    left: list[Group]
    seconds: dict[str, float]           # run name -> estimated training seconds left on one worker
    workers: int
    budget_s: float

    @property
    def configs(self) -> list[TrainConfig]:
        return [c for g in self.chosen for c in g.configs]

    def estimate_s(self, chosen: list[Group] | None = None) -> float:
        """Estimated wall seconds to train the chosen groups on the workers."""
        jobs = [self.seconds[c.name()] for g in (self.chosen if chosen is None else chosen) for c in g.configs]
        return makespan(jobs, self.workers) if jobs else 0.0

    def core_hours_left(self) -> float:
        """Training core-hours of everything not yet trained, at this machine's rates."""
        return sum(self.seconds.values()) / 3600


def plan(profile: Profile, configs: list[TrainConfig], hours: float, workers: int, analysis_share: float = 0.15,
         threads: int = 1) -> Plan:
    """The groups (cheapest first) whose training fits in `hours` on `workers`, keeping `analysis_share` of the
    time for the analyses and the commit; runs of a group are never split across sittings."""
    if not hours > 0:
        raise ValueError(f"--hours must be positive, e.g. 2.5; got {hours!r}")
    if not 0 <= analysis_share < 1:
        raise ValueError(f"analysis_share must be in [0, 1); got {analysis_share!r}")
    realized = realized_rates(profile.runs_dir)
    seconds = {c.name(): seconds_left(c, profile.runs_dir, threads, realized=realized) for c in configs}
    todo = [g for g in groups(profile, configs) if any(seconds[c.name()] > 0 for c in g.configs)]
    budget = hours * 3600 * (1 - analysis_share)
    result = Plan([], [], seconds, workers, budget)
    for group in sorted(todo, key=lambda g: sum(seconds[c.name()] for c in g.configs)):
        if result.estimate_s(result.chosen + [group]) <= budget:
            result.chosen.append(group)
        else:
            result.left.append(group)
    return result


# ---------------------------------------------------------------------------------------------
# Analysis: every trained run's per-run records, as Ray tasks
# ---------------------------------------------------------------------------------------------

def _analyse_task(profile: Profile, config: TrainConfig, threads: int) -> str:
    """One Ray task: a run's training record and its block-structure records (CKA, first-PC statistics)."""
    import torch

    from widedeep.analyses import structure

    torch.set_num_threads(threads)
    run = records.load_runs(profile, [config])[0]   # writes its training record if it lacks one
    structure.analyse(run, profile)
    return config.name()


def analysable(profile: Profile) -> list[TrainConfig]:
    """Runs some chapter analyses for the block structure (every run of Chapters 1-5 and 7-9)."""
    chapters = chapter_runs(profile)
    return list(dict.fromkeys(c for chapter, configs in chapters.items() if chapter != "06_errors"
                              for c in configs))


def analyse_runs(profile: Profile, threads: int = 1, progress: bool = True) -> list[str]:
    """Write the training record and block-structure records of every trained run that lacks them (Ray tasks)."""
    from tqdm.auto import tqdm

    todo = []
    for config in experiments.required_runs(profile):
        if is_complete(config, profile.runs_dir):
            todo.append(config)
    if not todo:
        return []
    block_runs = set(analysable(profile))
    engine = grid.choose_engine("auto", len(todo))
    done: list[str] = []
    bar = tqdm(total=len(todo), desc="analyse (records)", unit="run", disable=not progress, dynamic_ncols=True)
    if engine == "in-process":
        for config in todo:
            if config in block_runs:
                done.append(_analyse_task(profile, config, threads))
            else:
                records.load_runs(profile, [config])
                done.append(config.name())
            bar.update()
    else:
        with grid.ray_session() as ray:
            task = ray.remote(_analyse_task).options(num_cpus=threads, max_retries=1)
            pending = []
            for config in todo:
                if config in block_runs:
                    pending.append(task.remote(profile, config, threads))
                else:
                    records.load_runs(profile, [config])
                    done.append(config.name())
                    bar.update()
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done.append(ray.get(ready[0]))
                bar.update()
    bar.close()
    return done


def chapters_ready(profile: Profile) -> dict[str, list[TrainConfig]]:
    """Per chapter, the runs it needs that are neither recorded nor trained (empty: the chapter can run)."""
    return {chapter: [c for c in configs if not records.has_training_record(profile, c)
                      and not is_complete(c, profile.runs_dir)]
            for chapter, configs in chapter_runs(profile).items()}


def training_stamp(profile: Profile) -> dict:
    """What a run is trained under (the protocol's hashes), written into its store folder when training starts."""
    return {**protocol.training_stamp(profile), "commit": store.git_commit()}


def record_versions() -> dict[str, int]:
    """Every record kind's current version (importing the analyses and the studies registers them)."""
    import importlib

    for module in ("runs", "matching", "measure_tests", "origins", "vit"):
        importlib.import_module(f"widedeep.analyses.{module}")
    studies.chapters()   # a study that records something registers its kinds where it is defined
    return dict(records.KIND_VERSIONS)


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------

@dataclass
class RunStatus:
    """One run: trained / partly trained / missing, and its records complete / stale / missing."""

    config: TrainConfig
    training: str                         # "trained" | "recorded" | "partly trained" | "missing" | "skipped here"
    records: str                          # "complete" | "stale" | "missing" | "none yet"
    checkpoint: bool
    epochs_done: int = 0
    stale: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _expected_records(profile: Profile) -> dict[str, dict[str, str]]:
    """Per run name, the record files (relative to the run's records folder) some chapter's results list."""
    expected: dict[str, dict[str, str]] = {}
    for chapter in CHAPTERS:
        path = Path(profile.results_dir) / f"{chapter}.json"
        if not path.exists():
            continue
        listed = store.read_json(path).get("records") or {}
        for relative, kind in listed.items():
            run, _, rest = relative.partition("/")
            expected.setdefault(run, {})[rest] = kind
    return expected


def status(profile: Profile, versions: dict[str, int], device=None) -> list[RunStatus]:
    """Every required run's state; `versions` are the record kinds' current versions (`analyses.runs.VERSIONS`...)."""
    _, skipped = experiments.runs_trainable_here(profile, device)
    skipped = set(skipped)
    expected = _expected_records(profile)
    out = []
    for config in experiments.required_runs(profile):
        name, folder = config.name(), records.run_records_dir(profile, config)
        checkpoint = is_complete(config, profile.runs_dir)
        done_images = grid.images_done(config, profile.runs_dir)
        epochs = done_images // max(config.steps_per_epoch * config.batch_size, 1)
        if records.has_training_record(profile, config):
            training = "trained" if checkpoint else "recorded"
        elif checkpoint:
            training = "trained"
        elif done_images:
            training = "partly trained"
        else:
            training = "skipped here" if config in skipped else "missing"
        stale, missing = [], []
        for relative, kind in expected.get(name, {}).items():
            state = records.record_state(folder / relative, versions.get(kind, 1))
            (stale if state == "stale" else missing if state == "missing" else []).append(relative)
        if not records.has_training_record(profile, config):
            missing = ["config.json, metrics.json"] + missing
        if training in ("missing", "partly trained", "skipped here") and not expected.get(name):
            state = "none yet"
        else:
            state = "stale" if stale else "missing" if missing else "complete"
        out.append(RunStatus(config, training, state, checkpoint, epochs, stale, missing))
    return out


def status_report(profile: Profile, versions: dict[str, int], threads: int = 1, measure: bool = False) -> str:
    """The text `widedeep status` prints: a line per run, the groups that need retraining, what is left."""
    rows = status(profile, versions)
    lines = [f"profile {profile.name}: {len(rows)} runs; records in {records.records_dir(profile)}; "
             f"run store {profile.runs_dir}"]
    width = max(len(r.config.name()) for r in rows) if rows else 10
    for r in rows:
        detail = ""
        if r.training == "partly trained":
            detail = f" (epoch {r.epochs_done} of {r.config.total_epochs})"
        if r.stale:
            detail += f"; stale: {', '.join(r.stale[:3])}{' ...' if len(r.stale) > 3 else ''}"
        lines.append(f"  {r.config.name():<{width}}  {r.training:<15} records {r.records}{detail}")
    by_name = {r.config.name(): r for r in rows}
    for group in groups(profile):
        lost = [c for c in group.configs if by_name[c.name()].records in ("stale", "missing")
                and not by_name[c.name()].checkpoint and by_name[c.name()].training == "recorded"]
        if lost:
            secs = [seconds_left(c, "/nonexistent", threads, measure) for c in lost]
            cost = (f"{sum(secs) / 3600:.2f} core-hours here" if all(s is not None for s in secs)
                    else "cost not measured here yet")
            lines.append(f"  group {group.name}: records missing or stale while {len(lost)} checkpoint(s) are "
                         f"gone; retraining {', '.join(c.name() for c in lost)} costs {cost}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.training] = counts.get(r.training, 0) + 1
    left = [r.config for r in rows if r.training in ("missing", "partly trained")]
    realized = realized_rates(profile.runs_dir)
    secs = [seconds_left(c, profile.runs_dir, threads, measure, realized) for c in left]
    if not left:
        hours = "nothing left to train"
    elif all(s is not None for s in secs):
        hours = f"{sum(secs) / 3600:.2f} core-hours of training left on this machine ({store.hardware()})"
    else:
        hours = f"{len(left)} runs left to train (rates not measured here yet: `widedeep train --hours H` measures them)"
    record_counts: dict[str, int] = {}
    for r in rows:
        record_counts[r.records] = record_counts.get(r.records, 0) + 1
    lines.append("runs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    lines.append("records: " + ", ".join(f"{n} {k}" for k, n in sorted(record_counts.items())))
    lines.append(hours)
    spent = compute_spent(profile)
    lines.append("compute spent: " + ("; ".join(f"{e['hours']:.2f} core-hours over {e['runs']} runs on {e['hardware']}"
                                                for e in spent) or "nothing recorded yet"))
    return "\n".join(lines)


def compute_spent(profile: Profile) -> list[dict]:
    """The training compute behind a profile's recorded runs, per machine: from each training record's wall time
    (summed over its epochs, one model per core unless `--threads` said otherwise) and the hardware it finished on."""
    spent: dict[str, dict] = {}
    for config in experiments.required_runs(profile):
        if not records.has_training_record(profile, config):
            continue
        metrics = store.read_json(records.run_records_dir(profile, config) / "metrics.json")["metrics"]
        entry = spent.setdefault(metrics["hardware"], {"hardware": metrics["hardware"], "runs": 0, "hours": 0.0})
        entry["runs"] += 1
        entry["hours"] += metrics["wall_time_s"] / 3600
    return sorted(spent.values(), key=lambda e: -e["hours"])


def run_summary(profile: Profile) -> str:
    """The README's paragraph on the published run, computed from the committed records alone (so that any clone
    gives the same text): runs recorded of those required, training hours per machine, and the records' size."""
    required = experiments.required_runs(profile)
    spent = compute_spent(profile)
    recorded = sum(e["runs"] for e in spent)
    machines = "; ".join(f"{e['hours']:.1f} h over {e['runs']} runs on {e['hardware']}" for e in spent)
    folder = records.records_dir(profile)
    shown = folder.relative_to(repo_root()) if folder.is_relative_to(repo_root()) else folder
    return (f"Runs of the `{profile.name}` profile with committed records: {recorded} of {len(required)}. Their "
            f"training took {sum(e['hours'] for e in spent):.1f} core-hours (one model per core; "
            f"{machines or 'none yet'}). Records: {records_size(profile) / 2**20:.1f} MiB in `{shown}`.")

def records_size(profile: Profile) -> int:
    """Bytes of the profile's committed records."""
    root = records.records_dir(profile)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def available_workers(threads: int = 1) -> int:
    """Training tasks this machine runs at once (one a core, or `threads` cores each)."""
    return max(1, grid.available_cores() // max(threads, 1))
