"""Training throughput of Chapter 10's Vision Transformers beside the benchmark's ResNets, on one core.

Each architecture of the cpu profile's ViT grid and the three ResNets of `train_throughput.json`
(ResNet-20 x1, x4, ResNet-110 x1) is timed with `widedeep.train.measure_throughput` (the book's own
training step on noise batches of 128 images at 16 px, float32, one thread), interleaved over
`--repeats` rounds so that drift in the machine's speed (other jobs on a shared machine) hits every
model alike. What the protocol reads (`widedeep.protocol.vit_efficiency`) is each ViT's median
images/s over the ResNet curve's at its FLOPs on this same machine: a ratio within one run, which
is what carries over to the Xeon and Zen 1 rates of `train_throughput.json`.

    .venv/bin/python benchmarks/vit_throughput.py [--repeats 5] [--profile cpu]

Results: `benchmarks/results/vit_throughput.{txt,json}` (with provenance and the load average).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch

from widedeep import experiments, profiles, protocol, store
from widedeep.train import TrainConfig, measure_throughput

RESULTS = Path(__file__).resolve().parent / "results"
RESNETS = (("resnet20x1", 20, 1), ("resnet20x4", 20, 4), ("resnet110x1", 110, 1))


def configs(profile_name: str) -> dict[str, TrainConfig]:
    """The profile's ViT architectures (at its largest n_train) and the benchmark's ResNets, by key."""
    profile = profiles.load_profile(profile_name)
    out = {}
    for config in experiments.vit_grid(profile):
        out.setdefault(f"vit{config.depth}x{config.width:g}", config)
    base = experiments.training_grid(profile)[0]
    for key, depth, width in RESNETS:
        out[key] = TrainConfig.from_dict({**base.stored(), "depth": depth, "width": width})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = configs(args.profile)
    rates: dict[str, list[float]] = {key: [] for key in models}
    for repeat in range(args.repeats):
        for key, config in models.items():
            rates[key].append(measure_throughput(config, threads=1, steps=3 if key == "resnet20x4" else 6))
        print(f"round {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    table = {}
    for key, config in models.items():
        flops = protocol.train_flops_per_image(config.depth, config.width, config.residual, config.image_size,
                                               config.in_channels, config.num_classes, config.arch,
                                               config.patch_size, config.heads, config.mlp_ratio)
        table[key] = {"arch": config.arch, "depth": config.depth, "width": config.width, "rates": rates[key],
                      "median": statistics.median(rates[key]), "best": max(rates[key]), "flops_per_image": flops}
    resnets = {m["flops_per_image"] / 1e9: m["median"] for m in table.values() if m["arch"] == "resnet"}
    for entry in table.values():
        entry["efficiency"] = entry["median"] / protocol.images_per_second(entry["flops_per_image"] / 1e9, resnets)
    provenance = {"hardware": store.hardware(), "torch": torch.__version__, "threads": 1,
                  "load_average": os.getloadavg(), "cores": os.cpu_count(), "commit": store.git_commit()}
    document = {"settings": {"batch": 128, "image_size": 16, "precision": "float32", "repeats": args.repeats,
                             "profile": args.profile}, "models": table, "provenance": provenance}
    RESULTS.mkdir(exist_ok=True)
    store.write_json(RESULTS / "vit_throughput.json", document)
    lines = [f"Training throughput, batch 128, 16 px, float32, 1 thread, {args.repeats} interleaved rounds; "
             f"{provenance['hardware']}, torch {provenance['torch']}, load average at the end "
             f"{', '.join(f'{v:.1f}' for v in provenance['load_average'])} on {provenance['cores']} cores",
             "", f"{'model':<14}{'median img/s':>14}{'best img/s':>12}{'GFLOP/img':>11}{'vs ResNet curve':>17}"]
    for key, entry in table.items():
        lines.append(f"{key:<14}{entry['median']:>14.0f}{entry['best']:>12.0f}"
                     f"{entry['flops_per_image'] / 1e9:>11.4f}{entry['efficiency']:>16.2f}x")
    (RESULTS / "vit_throughput.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
