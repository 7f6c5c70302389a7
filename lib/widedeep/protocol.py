"""The protocol: the book's rules, fixed before the run, as a page (`book/protocol.md`) with checkable hashes.

Layer: training (next to `widedeep.profiles`, which it reads; nothing in a lower layer imports it).

The page is the protocol. Each `## ` section of it fixes some rules in prose and declares, in one fenced
`yaml` block, the profile keys it fixes (`keys:`) and the named constants the analyses read
(`rules:`). A section's hash covers its text (code cells included) and the values those keys take in
a profile, so changing either changes that section's hash and no other. `protocol_hash` covers every
section; `training_stamp` is what a training record carries, and `check_records` lists the records
trained under another protocol.

The grid's cost (`grid_cost`) is computed from each model's training FLOPs per image (counted by
`torch.utils.flop_counter`, the benchmark's own method) and measured per-core throughputs: the Xeon of
`benchmarks/results/train_throughput.json`, and the slowest CPU seen (AMD Zen 1, AVX2 only), whose
rates are quoted below. Other architectures are interpolated by FLOPs per image (`images_per_second`).
A Vision Transformer (Chapter 10) runs its small matrix products at another FLOP rate than a ResNet's
convolutions of the same FLOPs: its rate is the ResNet curve's at its FLOPs times its efficiency
relative to that curve, measured on one machine with ViTs and ResNets interleaved
(`benchmarks/vit_throughput.py`, `VIT_BENCHMARK`) and assumed to carry over to the other CPUs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from widedeep import experiments, profiles, store
from widedeep.profiles import Profile
from widedeep.train import TrainConfig

SECTION_HEADING = re.compile(r"^## (?P<title>.+?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```yaml\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


class ProtocolError(ValueError):
    """A protocol page (or record) that cannot be read; the message names the section or file and the fix."""


def page_path() -> Path:
    """The protocol page of this checkout."""
    return profiles.repo_root() / "book" / "protocol.md"


@dataclass(frozen=True)
class ProtocolSection:
    """One `## ` section of the page: its id, title, text, the profile keys it fixes and its named rules."""

    id: str
    title: str
    text: str
    keys: tuple[str, ...]
    rules: dict


def section_id(title: str) -> str:
    """'Chapter 3: the block structure' -> 'chapter-3'; any other title -> its lowercase slug."""
    match = re.match(r"Chapter (\d+)\b", title)
    if match:
        return f"chapter-{match[1]}"
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _declaration(title: str, text: str) -> tuple[tuple[str, ...], dict]:
    """The keys and rules a section declares in its fenced yaml block (none: no keys, no rules)."""
    blocks = [m["body"] for m in FENCE.finditer(text)]
    if not blocks:
        return (), {}
    if len(blocks) > 1:
        raise ProtocolError(f"protocol section {title!r} has {len(blocks)} yaml blocks; declare its keys and "
                            f"rules in one")
    try:
        declared = yaml.safe_load(blocks[0]) or {}
    except yaml.YAMLError as error:
        raise ProtocolError(f"protocol section {title!r}: its yaml block is not valid YAML ({error})") from None
    unknown = set(declared) - {"keys", "rules"}
    if not isinstance(declared, dict) or unknown:
        raise ProtocolError(f"protocol section {title!r}: the yaml block holds `keys:` (a list of profile keys) "
                            f"and `rules:` (a mapping); got {sorted(unknown) or declared!r}")
    keys = declared.get("keys") or []
    bad = [k for k in keys if k not in profiles.KEYS]
    if bad:
        raise ProtocolError(f"protocol section {title!r} fixes unknown profile keys {bad}; name keys of "
                            f"widedeep.profiles (see book/profiles/cpu.yaml)")
    return tuple(keys), dict(declared.get("rules") or {})


def read_sections(text: str | None = None) -> dict[str, ProtocolSection]:
    """The page's sections by id (the text before the first `## ` heading is not a section)."""
    if text is None:
        if not page_path().exists():
            raise ProtocolError(f"no protocol page at {page_path()}: the book's rules live in book/protocol.md; "
                                f"restore it (or set $WIDEDEEP_ROOT to a checkout that has it)")
        text = page_path().read_text(encoding="utf-8")
    heads = list(SECTION_HEADING.finditer(text))
    if not heads:
        raise ProtocolError("the protocol page has no `## ` section")
    out: dict[str, ProtocolSection] = {}
    for head, following in zip(heads, heads[1:] + [None]):
        body = text[head.end():following.start() if following else len(text)]
        sid = section_id(head["title"])
        if sid in out:
            raise ProtocolError(f"two protocol sections share the id {sid!r}; give each chapter one section")
        keys, rules = _declaration(head["title"], body)
        out[sid] = ProtocolSection(sid, head["title"], body, keys, rules)
    names = [name for s in out.values() for name in s.rules]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ProtocolError(f"rules {repeated} are named in more than one section; name each rule once")
    return out


def _normalised(text: str) -> str:
    """Section text as hashed: trailing spaces and blank lines at either end dropped."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def section_hashes(profile: Profile, text: str | None = None) -> dict[str, str]:
    """Per section: a hash of its text and of the values the profile gives the keys it fixes."""
    values = profile.values()
    return {sid: _digest({"text": _normalised(s.text), "keys": {k: values[k] for k in s.keys}})
            for sid, s in read_sections(text).items()}


def protocol_hash(profile: Profile, text: str | None = None) -> str:
    """One hash over every section's hash."""
    return _digest(section_hashes(profile, text))


def training_stamp(profile: Profile, text: str | None = None) -> dict:
    """What a training record carries: {"protocol": the protocol hash, "sections": each section's hash}."""
    return {"protocol": protocol_hash(profile, text), "sections": section_hashes(profile, text)}


def rules(text: str | None = None) -> dict:
    """Every named rule of the page (e.g. rules()["level"]), from the sections' yaml blocks."""
    return {name: value for s in read_sections(text).values() for name, value in s.rules.items()}


def stamp_of(record: dict) -> dict | None:
    """The protocol stamp a record carries (top level, or under "protocol"), or None."""
    if isinstance(record.get("protocol"), dict):
        record = record["protocol"]
    if isinstance(record.get("protocol"), str) and isinstance(record.get("sections"), dict):
        return {"protocol": record["protocol"], "sections": record["sections"]}
    return None


# Profile keys outside the recipe, grid and short sections that still shape what a run trains.
TRAINING_EXTRA_KEYS = ("errors_n_train", "errors_wide_depth", "errors_wide_width", "errors_wide_seeds",
                       "errors_deep_depth", "errors_deep_width", "errors_deep_seeds", "origins_reg_strength",
                       "origins_reg_thresholds", "origins_reg_layers", "origins_snapshot_fractions")


def training_keys() -> set[str]:
    """The profile keys that change what a run trains (its config, or which runs the book trains)."""
    return {key for key, (section, _) in profiles.KEYS.items() if section in ("recipe", "grid", "short", "vit")
            } | set(TRAINING_EXTRA_KEYS)


def training_sections(text: str | None = None) -> list[str]:
    """The sections that fix how the runs train: a record trained under other versions of them is off-protocol.

    A later, dated amendment of a rule (how a claim is judged) leaves them alone, so it does not void runs
    trained before it; the page marks the rows it touches.
    """
    keys = training_keys()
    return [sid for sid, s in read_sections(text).items() if keys & set(s.keys)]


def check_records(records_dir: str | Path, profile: Profile, text: str | None = None) -> list[dict]:
    """The training records under `records_dir` (each run's `metrics.json`) not trained under this protocol.

    A record is off-protocol when a section that fixes how runs train (`training_sections`) has another
    hash than the page's now. A section its stamp does not list at all was added to the page after the
    run trained (a new chapter's section, which adds runs of its own and leaves the earlier ones as they
    trained), so it is not held against that record. Each offender is {"record": path, "reason": ...,
    "sections": those sections}; a record without a stamp is an offender too. An empty list: every
    record is on protocol.
    """
    current = training_stamp(profile, text)
    fixing = training_sections(text)
    offenders = []
    for path in sorted(Path(records_dir).rglob("metrics.json")):
        try:
            stamp = stamp_of(store.read_json(path))
        except (OSError, ValueError) as error:
            offenders.append({"record": str(path), "reason": f"unreadable: {error}", "sections": []})
            continue
        if stamp is None:
            offenders.append({"record": str(path), "reason": "no protocol stamp", "sections": []})
        else:
            changed = sorted(s for s in fixing if s in stamp["sections"]
                             and stamp["sections"][s] != current["sections"].get(s))
            if changed:
                offenders.append({"record": str(path), "reason": f"trained under protocol {stamp['protocol']}, "
                                  f"the book's is {current['protocol']}; changed since: {changed}",
                                  "sections": changed})
    return offenders


# ---------------------------------------------------------------------------------------------
# What the grid costs
# ---------------------------------------------------------------------------------------------

BENCHMARK = Path("benchmarks") / "results" / "train_throughput.json"
# Per-core training images/s at batch 128, 16 px, float32, on the slowest CPU seen (AMD Zen 1, AVX2 only),
# measured for "The book on any CPU"; keyed like the benchmark's models. It has no native bfloat16.
ZEN1 = {"float32": {"resnet20x1": 320.0, "resnet20x4": 28.0, "resnet110x1": 58.0}}
CPUS = ("xeon", "zen1")


@cache
def train_flops_per_image(depth: int, width: float, residual: bool = True, image_size: int = 16,
                          in_channels: int = 1, num_classes: int = 10, arch: str = "resnet", patch_size: int = 4,
                          heads: int = 4, mlp_ratio: int = 2) -> float:
    """FLOPs of one training step per image (forward and backward), counted as the benchmark counts them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from widedeep.models import resnet, vit
    torch.manual_seed(0)
    if arch == "vit":
        model = vit(depth, width, num_classes, in_channels, image_size, patch_size, heads, mlp_ratio)
    else:
        model = resnet(depth, width, num_classes, in_channels, residual)
    model.train()
    images = torch.zeros(2, in_channels, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1])).backward()
    return counter.get_total_flops() / 2


def measured_rates(cpu: str, precision: str = "float32") -> dict[float, float]:
    """{GFLOP per image: images/s per core} of the models measured on `cpu` ("xeon" or "zen1")."""
    bench = store.read_json(profiles.repo_root() / BENCHMARK)["models"]
    if cpu == "xeon":
        return {bench[m]["flops_per_image"] / 1e9: bench[m]["median"][precision] for m in bench}
    if cpu == "zen1":
        if precision not in ZEN1:
            raise ValueError(f"no {precision} rates for zen1 (it has no native bfloat16); use float32")
        return {bench[m]["flops_per_image"] / 1e9: rate for m, rate in ZEN1[precision].items()}
    raise ValueError(f"cpu must be one of {CPUS}; got {cpu!r}")


def images_per_second(gflop: float, rates: dict[float, float]) -> float:
    """Images/s of a model of `gflop` GFLOP per image: the FLOP rate (GFLOP/s) interpolated linearly in
    log GFLOP/img between the measured models, held at the nearest one outside their range."""
    points = sorted((math.log(g), g * r) for g, r in rates.items())
    x = math.log(gflop)
    if x <= points[0][0]:
        return points[0][1] / gflop
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return (y0 + (y1 - y0) * (x - x0) / (x1 - x0)) / gflop
    return points[-1][1] / gflop


def _flops(config: TrainConfig) -> float:
    return train_flops_per_image(config.depth, config.width, config.residual, config.image_size or 28,
                                 config.in_channels, config.num_classes, config.arch, config.patch_size,
                                 config.heads, config.mlp_ratio)


VIT_BENCHMARK = Path("benchmarks") / "results" / "vit_throughput.json"


def vit_efficiency(gflop: float) -> float:
    """A ViT's images/s over what the ResNet curve gives at its FLOPs, on the machine that measured both
    (`VIT_BENCHMARK`): interpolated linearly in log GFLOP/img between the measured ViTs, held outside them."""
    path = profiles.repo_root() / VIT_BENCHMARK
    if not path.exists():
        raise ProtocolError(f"no ViT throughput measurements at {VIT_BENCHMARK}: run "
                            f"`python benchmarks/vit_throughput.py` to measure them")
    bench = store.read_json(path)["models"]
    resnets = {m["flops_per_image"] / 1e9: m["median"] for m in bench.values() if m["arch"] == "resnet"}
    points = sorted((math.log(m["flops_per_image"] / 1e9),
                     m["median"] / images_per_second(m["flops_per_image"] / 1e9, resnets))
                    for m in bench.values() if m["arch"] == "vit")
    x = math.log(gflop)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def run_core_seconds(config: TrainConfig, cpu: str, regulariser_overhead: float = 1.2) -> float:
    """Core-seconds to train one run on one core of `cpu` in the run's precision (regularised runs cost more)."""
    gflop = _flops(config) / 1e9
    rate = images_per_second(gflop, measured_rates(cpu, config.precision))
    if config.arch == "vit":
        rate *= vit_efficiency(gflop)
    overhead = regulariser_overhead if config.pc_reg_strength > 0 else 1.0
    return config.total_steps * config.batch_size / rate * overhead


def grid_cost(profile: Profile, cpu: str) -> dict:
    """Training cost of every model the profile needs on one core of `cpu`: per run, total and the largest run.

    Runs in a precision `cpu` cannot train natively (bfloat16 on Zen 1) are left out and counted apart.
    """
    runs, skipped = {}, []
    for config in experiments.required_runs(profile):
        try:
            runs[config.name()] = run_core_seconds(config, cpu)
        except ValueError:
            skipped.append(config.name())
    largest = max(runs, key=runs.get)
    return {"cpu": cpu, "runs": runs, "core_hours": sum(runs.values()) / 3600, "largest_run": largest,
            "largest_run_hours": runs[largest] / 3600, "skipped": skipped}


# The analyses, from measurements on the Xeon (both cores, README and results provenance): the per-model
# CKA and first-PC stage takes ~84 core-s for a ResNet-110 on 2000 images, scaled here by FLOPs per image;
# Chapter 5 deletes every residual block of every block model once and once repaired, plus the cumulative
# deletions (both sides, with and without repair), each scored on its deletion images; Chapters 8 and 9 took
# 1025 s and 442 s on both cores over a 4-seed study.
STAGE_CORE_S_R110 = 84.0
FORWARD_SHARE = 1 / 3            # a forward pass costs about a third of a training step
SEED_STUDY_CHAPTERS_CORE_S = 2 * (1025 + 442)
SEED_STUDY_MEASURED_SEEDS = 4
OTHER_CHAPTERS_CORE_S = 900.0    # Chapters 2, 6 and 7 from a filled run store: an allowance, not measured cold


def _slowdown(cpu: str) -> float:
    """How much slower `cpu` trains a ResNet-110 than the Xeon (the analyses are scaled by it)."""
    r110 = train_flops_per_image(110, 1.0)
    return (images_per_second(r110 / 1e9, measured_rates("xeon"))
            / images_per_second(r110 / 1e9, measured_rates(cpu)))


def analysis_core_seconds(profile: Profile, cpu: str) -> float:
    """Estimated core-seconds of the ResNet chapters' analyses (1-9), every block model counted as blocked (the
    worst case); Chapter 10's are `vit_cost`'s."""
    r110 = train_flops_per_image(110, 1.0)
    slowdown = _slowdown(cpu)
    vits = set(experiments.vit_runs(profile))
    stage = sum(STAGE_CORE_S_R110 * _flops(c) / r110 for c in experiments.required_runs(profile) if c not in vits)
    deletion = sum(deletion_evaluations(profile, c) * (profile.deletion.test_examples or 10_000) * FORWARD_SHARE
                   / images_per_second(_flops(c) / 1e9, measured_rates("xeon"))
                   for c in experiments.block_models(profile))
    seeds = len(profile.grid.seed_study_seeds) / SEED_STUDY_MEASURED_SEEDS
    return (stage + deletion + SEED_STUDY_CHAPTERS_CORE_S * seeds + OTHER_CHAPTERS_CORE_S) * slowdown


# Chapter 10's analyses, measured on the machine that measured the ViTs' throughput (busy, so an upper bound):
# the CKA and first-PC stage of a ViT takes ~0.25 core-s per analysed layer on 2000 images in 3 passes
# (ViT-16 d32: 29 s for 118 layers), scaled by examples x passes; the token norms, the calibrated ViT-ResNet
# heatmaps and the fits get an allowance.
VIT_STAGE_CORE_S_PER_LAYER = 0.25
VIT_STAGE_IMAGES = 2000 * 3
VIT_CHAPTER_CORE_S = 300.0


def vit_cost(profile: Profile, cpu: str) -> dict:
    """Chapter 10's share of the run on one core of `cpu`: its ViTs' training and analysis core-hours, its largest run."""
    runs = {c.name(): run_core_seconds(c, cpu) for c in experiments.vit_runs(profile)}
    images = profile.cka.examples * profile.cka.passes / VIT_STAGE_IMAGES
    stage = sum(VIT_STAGE_CORE_S_PER_LAYER * len(c.build_model().layers()) * images for c in experiments.vit_runs(profile))
    largest = max(runs, key=runs.get)
    return {"cpu": cpu, "runs": runs, "train_core_hours": sum(runs.values()) / 3600,
            "analysis_core_hours": (stage + VIT_CHAPTER_CORE_S) * _slowdown(cpu) / 3600,
            "largest_run": largest, "largest_run_hours": runs[largest] / 3600}


def vit_measured_core_hours(profile: Profile) -> dict[str, float] | None:
    """Chapter 10's ViT training on the machine of `VIT_BENCHMARK` at its measured median and best images/s
    (None when it did not measure every architecture of this profile: it measures the cpu profile's)."""
    bench = store.read_json(profiles.repo_root() / VIT_BENCHMARK)
    models = bench["models"]
    out = {"median": 0.0, "best": 0.0}
    for config in experiments.vit_runs(profile):
        key = f"vit{config.depth}x{config.width:g}"
        if key not in models or config.image_size != bench["settings"]["image_size"]:
            return None
        for stat in out:
            out[stat] += config.total_steps * config.batch_size / models[key][stat] / 3600
    return {**out, "hardware": bench["provenance"]["hardware"]}


def deletion_evaluations(profile: Profile, config: TrainConfig) -> int:
    """Models Chapter 5 scores per block model: each residual block deleted, plain and repaired, and the
    cumulative deletions on both sides, plain and repaired."""
    blocks = 3 * (config.depth - 2) // 6
    steps = profile.deletion.max_steps if profile.deletion.max_steps is not None else blocks // 2
    return 2 * blocks + 4 * steps
