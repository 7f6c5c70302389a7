"""`widedeep.compare` against torch_cka and pytorch-cka end to end on torchvision's resnet18; memory at 100 layers.

    .venv/bin/pip install -r benchmarks/requirements-bench.txt
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_peers.py            # ~2-4 min on one core
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_peers.py --quick    # a smoke run, seconds

What it measures, in one run and side by side:
1. Speed and accuracy. Two torchvision `resnet18(weights=None)` of different seeds (BatchNorm
   statistics set on one batch, so activations have realistic scales), the same layers (the stem,
   every residual block, the pool and the logits) and the same loader of random 32x32 images. Each
   tool is called through its public API, end to end (its forward passes included), `--repeats`
   times; the best time is kept. Accuracy: max |difference| of each tool's matrix from a float64
   NumPy reference (activations copied by plain hooks, float64 uncentred Grams, Song et al.'s
   unbiased HSIC summed over batches, then divided). The stem's `bn1` is followed by torchvision's
   `ReLU(inplace=True)`: a tool that keeps a reference to a hooked output instead of reducing or
   copying it reads the post-ReLU tensor there, so the differences are given with and without it.
2. Peak memory at 100 layers. In a fresh process per configuration: two CIFAR ResNets (ours,
   depth 32), their first 100 analysed layers (or 10, to see how memory grows with layers), a
   loader of batches of `--memory-batch` images; the peak resident memory during `compare` (or
   pytorch-cka's `compute_cka`) above what the process held after one warm-up forward pass of each
   model. `compare` holds per batch one n x n Gram per layer and its U-centred rows (about
   16 L n^2 bytes for two models); a tool that stores every hooked output holds L n d numbers.
Timings depend on the machine and its load; the ratios measured in one run are what to compare.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from widedeep import compare
from widedeep import store as run_store
from widedeep.models import resnet

RESULTS = Path(__file__).resolve().parent / "results"
RESNET18_LAYERS = ["conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                   "layer4.0", "layer4.1", "avgpool", "fc"]   # in named_modules order (torch_cka keeps that order)
INPLACE_AFFECTED = ["bn1"]   # followed by ReLU(inplace=True)


# ---------------------------------------------------------------------------------------------
# Models, data and the float64 reference
# ---------------------------------------------------------------------------------------------

def calibrated(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """The model in eval mode with BatchNorm running statistics set exactly by one batch."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def resnet18_pair(images: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """Two torchvision resnet18 of seeds 0 and 1, built without weights."""
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(calibrated(torchvision.models.resnet18(weights=None), images))
    return models[0], models[1]


def hooked_outputs(model: nn.Module, images: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    """Float64 copies of the named layers' outputs, taken by plain hooks that clone."""
    found: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda module, inputs, output, name=name: found.__setitem__(name, output.detach().clone()))
        for name in names]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return [found[name].reshape(len(images), -1).double().numpy() for name in names]


def u_centred(gram: np.ndarray) -> np.ndarray:
    """U-centring (Szekely & Rizzo), so <U(K), U(L)> / (n(n-3)) is the unbiased HSIC."""
    n = len(gram)
    k = gram.copy()
    np.fill_diagonal(k, 0)
    k = k - k.sum(0, keepdims=True) / (n - 2) - k.sum(1, keepdims=True) / (n - 2) + k.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(k, 0)
    return k


def reference_cka(model_a: nn.Module, model_b: nn.Module, loader: DataLoader, names: list[str]) -> np.ndarray:
    """Float64 unbiased minibatch CKA: summed HSICs over batches, divided at the end."""
    cross = self_a = self_b = 0.0
    for (images,) in loader:
        ua = [u_centred(x @ x.T).ravel() for x in hooked_outputs(model_a, images, names)]
        ub = [u_centred(y @ y.T).ravel() for y in hooked_outputs(model_b, images, names)]
        ga, gb = np.stack(ua), np.stack(ub)
        n = len(images)
        cross = cross + ga @ gb.T / (n * (n - 3))
        self_a = self_a + (ga * ga).sum(1) / (n * (n - 3))
        self_b = self_b + (gb * gb).sum(1) / (n * (n - 3))
    return cross / np.sqrt(np.outer(self_a, self_b))


# ---------------------------------------------------------------------------------------------
# The tools, each through its public API
# ---------------------------------------------------------------------------------------------

def run_ours(model_a, model_b, loader, names) -> np.ndarray:
    """widedeep.compare: unbiased minibatch CKA, Grams reduced inside the hooks."""
    return compare(model_a, model_b, loader, layers_a=names).matrix


def run_pytorch_cka(model_a, model_b, loader, names) -> np.ndarray:
    """pytorch-cka (`import cka`): compute_cka(model1, model2, loader, layers=...)."""
    import cka
    return cka.compute_cka(model_a, model_b, loader, layers=names, model2_layers=names, device="cpu",
                           progress=False)[0].double().numpy()


def run_torch_cka(model_a, model_b, loader, names) -> np.ndarray:
    """torch_cka: CKA(model1, model2, ...).compare(loader); its hooks are never removed, so it gets copies."""
    from torch_cka import CKA
    model_a, model_b = copy.deepcopy(model_a), copy.deepcopy(model_b)
    with warnings.catch_warnings(), redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        tool = CKA(model_a, model_b, model1_name="a", model2_name="b", model1_layers=names, model2_layers=names,
                   device="cpu")
        tool.compare(loader)
    return tool.export()["CKA"].double().numpy()


TOOLS = {"widedeep.compare": run_ours, "pytorch-cka": run_pytorch_cka, "torch_cka": run_torch_cka}
PACKAGES = {"pytorch-cka": ("cka", "pytorch-cka"), "torch_cka": ("torch_cka", "torch-cka")}


def package_version(tool: str) -> str:
    """The installed version of a peer, or why it cannot be used."""
    if tool not in PACKAGES:
        return "this repository"
    module, distribution = PACKAGES[tool]
    try:
        __import__(module)
    except Exception as error:   # a peer that does not install or import is reported, not fatal
        return f"unavailable: {type(error).__name__}: {error}"
    from importlib.metadata import version
    return version(distribution)


def speed(args) -> dict:
    """End-to-end time and accuracy of every tool on the same resnet18 pair, layers and loader."""
    images = torch.randn(args.examples, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model_a, model_b = resnet18_pair(images[:args.batch_size])
    loader = DataLoader(TensorDataset(images), batch_size=args.batch_size)
    names = RESNET18_LAYERS
    reference = reference_cka(model_a, model_b, loader, names)
    clean = [i for i, name in enumerate(names) if name not in INPLACE_AFFECTED]

    def forward_passes(*_) -> None:
        """A floor: both models' forward passes alone over the same batches."""
        for (batch,) in loader:
            with torch.inference_mode():
                model_a(batch), model_b(batch)

    runs = {"forward passes alone": forward_passes}
    rows = {}
    for tool, run in TOOLS.items():
        status = package_version(tool)
        rows[tool] = {"version": status}
        if not status.startswith("unavailable"):
            runs[tool] = run
    times: dict[str, list[float]] = {label: [] for label in runs}
    walls: dict[str, list[float]] = {label: [] for label in runs}
    matrices = {}
    for _ in range(args.repeats):   # round robin, so that a change in the machine's load hits every tool alike
        for label, run in runs.items():
            start, wall = time.process_time(), time.perf_counter()
            matrices[label] = run(model_a, model_b, loader, names)
            times[label].append(time.process_time() - start)
            walls[label].append(time.perf_counter() - wall)
    forward_s = min(times.pop("forward passes alone"))
    forward_wall_s = min(walls.pop("forward passes alone"))
    for tool in times:
        diff = np.abs(matrices[tool] - reference)
        matrix = matrices[tool]
        rows[tool].update({"seconds": min(times[tool]), "all_seconds": times[tool],
                           "wall_seconds": min(walls[tool]), "all_wall_seconds": walls[tool],
                           "max_abs_diff": float(diff.max()),
                           "max_abs_diff_without_inplace_layers": float(diff[np.ix_(clean, clean)].max()),
                           "nan_entries": int(np.isnan(matrix).sum()),
                           # exactly 0 or 1 where the reference is not: values clamped to [0, 1]
                           "entries_at_0_or_1": int(((matrix == 0) | (matrix == 1))[
                               reference != np.round(reference)].sum())})
    ours = rows["widedeep.compare"]["seconds"]
    for tool, row in rows.items():
        if "seconds" in row:
            row["seconds_over_ours"] = row["seconds"] / ours
            row["seconds_beyond_forward"] = row["seconds"] - forward_s
    return {"model": "torchvision resnet18(weights=None), seeds 0 and 1, BatchNorm set on one batch",
            "layers": names, "examples": args.examples, "batch_size": args.batch_size,
            "forward_passes_alone_s": forward_s, "forward_passes_alone_wall_s": forward_wall_s,
            "reference_negative_entries": int((reference < 0).sum()),
            "tools": rows}


# ---------------------------------------------------------------------------------------------
# Peak memory, one fresh process per configuration
# ---------------------------------------------------------------------------------------------

def status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB: VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Reset the kernel's peak-resident counter (VmHWM) to the current resident size (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def output_sizes(model: nn.Module, images: torch.Tensor, names: list[str]) -> list[int]:
    """Number of values in each named layer's output for this batch (hooks record sizes only)."""
    sizes: dict[str, int] = {}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda module, inputs, output, name=name: sizes.__setitem__(name, output.numel())) for name in names]
    with torch.inference_mode():
        model(images)
    for handle in handles:
        handle.remove()
    return [sizes[name] for name in names]


def memory_child(tool: str, layers: int, batch_size: int, batches: int) -> dict:
    """In this process: peak resident memory of plain forward passes and of one comparison, above the warm process.

    Run with MALLOC_MMAP_THRESHOLD_ set low (as `memory` does), so that freed tensors go back to the
    system and resident memory follows live memory instead of the allocator's cache.
    """
    torch.manual_seed(0)
    images = torch.randn(batch_size * batches, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    models = [calibrated(resnet(32, 1), images[:batch_size]) for _ in range(2)]
    names = [layer.name for layer in models[0].layers()[:layers]]
    stored_mib = 2 * sum(output_sizes(models[0], images[:batch_size], names)) * 4 / 2 ** 20   # float32, both models
    loader = DataLoader(TensorDataset(images), batch_size=batch_size)
    run = {"widedeep.compare": run_ours, "pytorch-cka": run_pytorch_cka}[tool]
    run(models[0], models[1], loader, names[:2])   # imports and first-call allocations
    before = status_mib("VmRSS")
    reset_peak()
    with torch.inference_mode():
        for (batch,) in loader:
            models[0](batch), models[1](batch)
    forward_peak = status_mib("VmHWM") - before
    before = status_mib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    run(models[0], models[1], loader, names)
    seconds = time.perf_counter() - start
    return {"tool": tool, "layers": len(names), "batch_size": batch_size, "batches": batches,
            "peak_above_warm_process_mib": status_mib("VmHWM") - before, "forward_passes_peak_mib": forward_peak,
            "grams_mib": 16 * len(names) * batch_size ** 2 / 2 ** 20,
            "stored_outputs_mib": stored_mib, "seconds": seconds}


def memory(args) -> list[dict]:
    """Peak memory per tool and layer count, each in a fresh process."""
    rows = []
    for tool in ("widedeep.compare", "pytorch-cka"):
        if package_version(tool).startswith("unavailable"):
            continue
        for layers in (10, 100):
            command = [sys.executable, __file__, "--memory-child", tool, str(layers), str(args.memory_batch),
                       str(args.memory_batches)]
            environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}   # freed tensors leave the process
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def report(result: dict) -> str:
    """The results as a short text table."""
    s = result["speed"]
    lines = [f"{result['provenance']['hardware']}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
             f"load average {result['load_average']:.1f}",
             f"{s['model']}; {len(s['layers'])} layers ({', '.join(s['layers'])}); {s['examples']} random 32x32 "
             f"images in batches of {s['batch_size']}; best of {result['config']['repeats']} end-to-end calls, "
             f"tools taking turns",
             f"both models' forward passes alone: {s['forward_passes_alone_s']:.2f} CPU s "
             f"({s['forward_passes_alone_wall_s']:.2f} s wall)",
             "Times are CPU seconds of this one-thread process (the least of the calls): on a shared machine they "
             "do not count the time spent waiting for a core, which wall-clock times do (given in the JSON).", "",
             f"  {'tool':18} {'version':>15} {'CPU s':>8} {'beyond fwd':>10} {'x ours':>7} "
             f"{'max|diff| vs float64':>21} "
             f"{'without bn1':>12} {'at 0/1':>7}"]
    for tool, row in s["tools"].items():
        if "seconds" not in row:
            lines.append(f"  {tool:18} {row['version']}")
            continue
        lines.append(f"  {tool:18} {row['version']:>15} {row['seconds']:8.2f} {row['seconds_beyond_forward']:10.2f} "
                     f"{row['seconds_over_ours']:7.2f} "
                     f"{row['max_abs_diff']:21.2e} {row['max_abs_diff_without_inplace_layers']:12.2e} "
                     f"{row['entries_at_0_or_1']:7d}")
    lines += ["", "'beyond fwd': the tool's time less the forward passes alone. 'x ours': the tool's time over "
              "widedeep.compare's. 'without bn1': bn1 is followed by "
              "ReLU(inplace=True), which rewrites a hooked output that a tool keeps by reference. 'at 0/1': "
              "entries exactly 0 or 1 where the reference is neither (clamped; the reference is negative in "
              f"{result['speed']['reference_negative_entries']} of {len(s['layers']) ** 2} entries).", "",
              f"Peak memory above the warmed-up process (two CIFAR ResNet-32, batches of "
              f"{result['config']['memory_batch']}, {result['config']['memory_batches']} batches):",
              f"  {'tool':18} {'layers':>6} {'peak MiB':>9} {'forward alone':>14} {'16 L n^2 (MiB)':>15} "
              f"{'outputs of one batch (MiB)':>27}"]
    for row in result["memory"]:
        lines.append(f"  {row['tool']:18} {row['layers']:6d} {row['peak_above_warm_process_mib']:9.1f} "
                     f"{row['forward_passes_peak_mib']:14.1f} {row['grams_mib']:15.1f} "
                     f"{row['stored_outputs_mib']:27.1f}")
    lines += ["'forward alone': the peak of the two models' plain forward passes over the same batches; "
              "'16 L n^2': compare's Grams and U-centred rows for two models; 'outputs of one batch': what "
              "keeping every hooked output of both models costs (float32)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-batch", type=int, default=128)
    parser.add_argument("--memory-batches", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, results not written")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        tool, layers, batch, batches = args.memory_child
        print(json.dumps(memory_child(tool, int(layers), int(batch), int(batches))))
        return
    if args.quick:
        args.examples, args.batch_size, args.repeats, args.memory_batch, args.memory_batches = 64, 32, 1, 32, 1
    started = time.perf_counter()
    result = {"config": {k: v for k, v in vars(args).items() if k != "memory_child"},
              "load_average": os.getloadavg()[0], "threads": torch.get_num_threads(),
              "speed": speed(args), "memory": memory(args)}
    result = {"provenance": run_store.provenance("benchmark", time.perf_counter() - started), **result}
    text = report(result)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "compare_peers.txt").write_text(text)
        run_store.write_json(RESULTS / "compare_peers.json", result)


if __name__ == "__main__":
    main()
