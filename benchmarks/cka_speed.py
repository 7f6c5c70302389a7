"""Speed and accuracy of widedeep.cka against pytorch-cka and torch_cka, on identical activations.

    .venv/bin/pip install -r benchmarks/requirements-bench.txt
    .venv/bin/python benchmarks/cka_speed.py                 # ResNet-56, 2 batches of 256 (a few minutes)
    .venv/bin/python benchmarks/cka_speed.py --batch-size 64 --batches 1 --subset-layers 8 --sweep-sizes   # quick look

What it measures, all in one run and side by side:
1. Identical activations. ResNet-56 (width 1, random init, BatchNorm statistics calibrated on one
   batch so activations have realistic scales) runs once on random 32x32 images; every analysed
   layer's output is stored. Each tool then gets exactly these tensors: ours through
   `MinibatchCKA.update`, the two packages through a "replay" model whose modules return the stored
   tensors, driven by each package's own public API. Only CKA work is timed (replaying is free).
   - "full": all 198 layers (the whole-model heatmap): ours vs pytorch-cka.
   - "subset": `--subset-layers` evenly spaced layers: all three tools (torch_cka's per-pair loop
     is too slow for 198 layers; its time at 198 layers is extrapolated from the pair count).
   Accuracy: max |difference| of each tool's CKA matrix from an independent float64 numpy reference
   (uncentred float64 Grams, Kornblith et al.'s U-centring, ratio of summed HSICs).
2. Floors. The Gram products are work every exact tool must do: "bare Grams" times float32 `x @ x.T`
   for every layer and batch with nothing else, which bounds how far any tool that forms full Grams
   can beat another. The Gram kernels (one GEMM, our three half-size products, SciPy's OpenBLAS
   syrk with half the flops) are timed alone and interleaved with the torch op that precedes each
   Gram in the engine (feature centring), because thread pools that contend only show there.
3. Cost relative to the forward pass: `model_cka` on ResNet-56 (hooks reduce each layer to its
   Gram inside the forward pass) minus a plain forward pass on the same batches, divided by the
   plain forward pass; then the same on the same images in batches of other sizes, since a Gram's
   cost per example grows with the batch size n while the forward pass's does not. For each size:
   the ratio of Gram flops to forward flops, the bare Grams' time over the forward time (a floor for
   the fraction), and how far that batch size's estimate moves from the single-batch estimate.
Timings depend on the machine and its load; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from widedeep import store as run_store
from widedeep.measures import cka, grams
from widedeep.models import resnet

# ---------------------------------------------------------------------------------------------
# Activations and replay
# ---------------------------------------------------------------------------------------------


def calibrated_resnet(depth: int, seed: int, images: torch.Tensor) -> nn.Module:
    """A random-init CIFAR ResNet whose BatchNorm running statistics are those of one batch (realistic scales)."""
    torch.manual_seed(seed)
    model = resnet(depth, 1)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    with torch.no_grad():
        model(images)
    for bn in batchnorms:
        bn.momentum = 0.01
    return model.eval()


def record_activations(model: nn.Module, batches: list[torch.Tensor]) -> tuple[list[list[torch.Tensor]], list[str]]:
    """Every analysed layer's output for every batch, as float32 copies: the shared input of all tools."""
    layers = model.layers()
    store: list[list[torch.Tensor]] = []
    for images in batches:
        outputs: list[torch.Tensor] = []
        handles = [layer.module.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
                   for layer in layers]
        with torch.no_grad():  # not inference_mode: torch_cka later works on these outside it
            model(images)
        for handle in handles:
            handle.remove()
        assert len(outputs) == len(layers), "every layer must fire exactly once"
        store.append(outputs)
    return store, [layer.name for layer in layers]


class ReplayLayer(nn.Module):
    """Returns a stored activation: layer `index` of the batch whose number the input encodes."""

    def __init__(self, store: list[list[torch.Tensor]], index: int):
        super().__init__()
        self.store, self.index = store, index

    def forward(self, batch_id: torch.Tensor) -> torch.Tensor:
        return self.store[int(batch_id[0])][self.index]


class ReplayModel(nn.Module):
    """A 'network' whose layers emit stored activations, so hook-based tools see identical tensors."""

    def __init__(self, store: list[list[torch.Tensor]], indices: list[int]):
        super().__init__()
        self.layer_names = [f"l{i:03d}" for i in indices]
        for name, i in zip(self.layer_names, indices):
            self.add_module(name, ReplayLayer(store, i))

    def forward(self, batch_id: torch.Tensor) -> torch.Tensor:
        out = batch_id
        for module in self.children():
            out = module(batch_id)
        return out


class ReplayLoader:
    """Yields (batch_id tensor of length n, labels) per stored batch; has the `.dataset` torch_cka reads."""

    def __init__(self, store: list[list[torch.Tensor]]):
        self.n = [int(acts[0].shape[0]) for acts in store]
        self.dataset = "replayed ResNet-56 activations"

    def __len__(self) -> int:
        return len(self.n)

    def __iter__(self):
        for b, n in enumerate(self.n):
            yield torch.full((n,), float(b)), torch.zeros(n, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------------


def reference_cka(store: list[list[torch.Tensor]], indices: list[int]) -> np.ndarray:
    """Independent float64 numpy minibatch CKA: raw Grams, demo U-centring, ratio of summed HSICs."""
    total = None
    for acts in store:
        rows = []
        for i in indices:
            x = acts[i].reshape(acts[i].shape[0], -1).double().numpy()
            gram = x @ x.T
            n = gram.shape[0]
            np.fill_diagonal(gram, 0)
            means = gram.sum(0) / (n - 2)
            means -= means.sum() / (2 * (n - 1))
            gram -= means[:, None]
            gram -= means[None, :]
            np.fill_diagonal(gram, 0)
            rows.append(gram.ravel() / np.sqrt(n * (n - 3)))
        rows = np.stack(rows)
        products = rows @ rows.T
        total = products if total is None else total + products
    diagonal = np.diag(total)
    return total / np.sqrt(np.outer(diagonal, diagonal))


def run_ours(store: list[list[torch.Tensor]], indices: list[int], gram_dtype: torch.dtype) -> tuple[np.ndarray, float]:
    """widedeep.measures.cka.MinibatchCKA on the stored activations: (matrix, seconds)."""
    start = time.perf_counter()
    engine = cka.MinibatchCKA([str(i) for i in indices], gram_dtype=gram_dtype)
    for acts in store:
        engine.update([acts[i] for i in indices])
    matrix = engine.compute()
    return matrix, time.perf_counter() - start


def run_pytorch_cka(store: list[list[torch.Tensor]], indices: list[int]) -> tuple[np.ndarray, float]:
    """pytorch-cka's public `compute_cka(model, model, loader, layers=...)` on a replay model: (matrix, seconds)."""
    from cka import compute_cka  # the pytorch-cka distribution installs the top-level package `cka`

    replay = ReplayModel(store, indices)
    start = time.perf_counter()
    matrix = compute_cka(replay, replay, ReplayLoader(store), layers=replay.layer_names, device="cpu",
                         progress=False)[0]
    return matrix.double().numpy(), time.perf_counter() - start


def run_torch_cka(store: list[list[torch.Tensor]], indices: list[int]) -> tuple[np.ndarray, float]:
    """torch_cka's public `CKA(model1, model2, ...).compare(loader)` on two replay models: (matrix, seconds)."""
    import warnings

    from torch_cka import CKA

    replay_a, replay_b = ReplayModel(store, indices), ReplayModel(store, indices)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that one loader is used for both models
        tool = CKA(replay_a, replay_b, "replay_a", "replay_b", replay_a.layer_names, replay_b.layer_names,
                   device="cpu")
        import torch_cka.cka as torch_cka_module
        torch_cka_module.tqdm = lambda iterable, **kwargs: iterable  # silence its progress bar
        tool.compare(ReplayLoader(store))
    matrix = tool.export()["CKA"]
    return matrix.double().numpy(), time.perf_counter() - start


def warm_up(store: list[list[torch.Tensor]], missing: dict) -> None:
    """Run every tool once on a small slice, so no timed run pays first-call costs (allocator, BLAS, imports)."""
    small = [[t[:16] for t in store[0][:6]]]
    indices = list(range(6))
    run_ours(small, indices, torch.float32)
    run_ours(small, indices, torch.float64)
    reference_cka(small, indices)
    if not missing["pytorch-cka"]:
        run_pytorch_cka(small, indices)
    if not missing["torch_cka"]:
        run_torch_cka(small, indices)


def bare_grams(store: list[list[torch.Tensor]], indices: list[int]) -> tuple[None, float]:
    """Seconds of float32 `x @ x.T` for every layer and batch and nothing else: the Gram work floor."""
    start = time.perf_counter()
    for acts in store:
        for i in indices:
            x = acts[i].reshape(acts[i].shape[0], -1)
            x @ x.T
    return None, time.perf_counter() - start


def scipy_syrk(m: torch.Tensor) -> torch.Tensor:
    """m m^T from OpenBLAS syrk through SciPy (one triangle, half a GEMM's flops), mirrored to a full Gram."""
    from scipy.linalg import blas

    upper = torch.from_numpy(blas.ssyrk(1.0, m.contiguous().numpy().T, trans=1))
    return torch.triu(upper) + torch.triu(upper, 1).T


GRAM_KERNELS = {
    "one GEMM (x @ x.T)": lambda m: m @ m.T,
    "three half-size products (ours)": grams.symmetric_gram,
    "OpenBLAS syrk via SciPy": scipy_syrk,
}


def gram_kernels(acts: list[torch.Tensor], repeats: int) -> dict:
    """Seconds of each Gram kernel over one batch's layers, alone and after each layer's feature centring."""
    matrices = [a.reshape(a.shape[0], -1) for a in acts]
    table = {}
    for name, kernel in GRAM_KERNELS.items():
        def alone() -> tuple[None, float]:
            start = time.perf_counter()
            for m in matrices:
                kernel(m)
            return None, time.perf_counter() - start

        def interleaved() -> tuple[None, float]:
            start = time.perf_counter()
            for m in matrices:
                kernel(grams.center_features(m))
            return None, time.perf_counter() - start

        table[name] = {"alone_s": best_of(alone, repeats)[1], "interleaved_s": best_of(interleaved, repeats)[1]}
    return table


def forward_flops_per_example(model: nn.Module, image: torch.Tensor) -> float:
    """Multiply-adds x 2 of the convolutions and linear layers for one example (what dominates a forward pass)."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        macs.append(output[0].numel() * per_output)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(image[:1])
    for handle in handles:
        handle.remove()
    return 2.0 * sum(macs)


def batch_size_sweep(model: nn.Module, images: torch.Tensor, sizes: list[int], repeats: int) -> list[dict]:
    """CKA cost as a fraction of forward time when the same images come in batches of each size."""
    store, _ = record_activations(model, [images[:2]])
    features = sum(t[0].numel() for t in store[0])  # summed feature count of the analysed layers
    forward_flops = forward_flops_per_example(model, images)
    single, _, _ = cka.model_cka(model, [images], gram_dtype=torch.float32)  # one batch of all the images
    rows = []
    for n in sizes:
        batches = [b for b in images.split(n) if b.shape[0] == n]  # equal, full batches
        row = forward_fraction(model, batches, torch.float32, repeats)
        bare = 0.0
        for batch in batches:  # one batch's activations at a time
            stored, _ = record_activations(model, [batch])
            bare += bare_grams(stored, list(range(len(stored[0]))))[1]
        matrix, _, _ = cka.model_cka(model, batches, gram_dtype=torch.float32)
        row |= {"batch_size": n, "batches": len(batches),
                # a full-GEMM Gram costs 2 n d flops per example and layer; the forward pass 2 x its multiply-adds
                "gram_flops_over_forward_flops": 2 * n * features / forward_flops,
                "bare_grams_s": bare, "bare_grams_fraction": bare / row["forward_s"],
                "max_abs_diff_from_single_batch": float(np.abs(matrix - single).max())}
        rows.append(row)
    return rows


def forward_fraction(model: nn.Module, batches: list[torch.Tensor], gram_dtype: torch.dtype, repeats: int) -> dict:
    """Seconds of a plain forward pass vs `model_cka` (same batches): CKA overhead as a fraction of forward time."""

    def forward() -> tuple[None, float]:
        start = time.perf_counter()
        with torch.inference_mode():
            for images in batches:
                model(images)
        return None, time.perf_counter() - start

    def with_cka() -> tuple[None, float]:
        start = time.perf_counter()
        cka.model_cka(model, batches, gram_dtype=gram_dtype)
        return None, time.perf_counter() - start

    plain, total = best_of(forward, repeats)[1], best_of(with_cka, repeats)[1]
    return {"forward_s": plain, "model_cka_s": total, "cka_s": total - plain, "fraction": (total - plain) / plain}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def max_abs_diff(matrix: np.ndarray, reference: np.ndarray) -> float:
    """Largest |difference| from the reference (NaN counts as infinitely wrong)."""
    diff = np.abs(matrix - reference)
    return float("inf") if np.isnan(diff).any() else float(diff.max())


def clamped_entries(matrix: np.ndarray, reference: np.ndarray) -> int:
    """Entries exactly at 0 or 1 where the reference is not: the signature of clamping."""
    at_bound = (matrix == 0) | (matrix == 1)
    return int(np.sum(at_bound & (np.abs(matrix - reference) > 1e-9)))


def best_of(run, repeats: int) -> tuple[np.ndarray, float]:
    """Run `repeats` times and keep the fastest: the least disturbed by other load on the machine."""
    best = None
    for _ in range(repeats):
        matrix, seconds = run()
        if best is None or seconds < best[1]:
            best = (matrix, seconds)
    return best


def tool_available(module: str) -> str | None:
    """None if `module` imports, else why not."""
    try:
        __import__(module)
        return None
    except Exception as error:  # not installed, or broken against this torch
        return f"{type(error).__name__}: {error}"


ADAPTATIONS = """\
Adaptations to the packages' APIs (their code is unchanged):
- pytorch-cka 1.1.3 installs the top-level module `cka`; it is driven by `compute_cka(model, model,
  loader, layers=..., device="cpu", progress=False)` with the same model object twice, which takes its
  within-model path (one Gram per layer). It computes float32 Grams of uncentred features and clamps
  CKA to [0, 1] (entries it clamped show up in the "entries at 0/1" column).
- torch_cka 0.21 needs a loader with `.dataset` and tuple batches, never removes its hooks (each run
  builds fresh replay models) and prints a tqdm bar (silenced here). It averages HSICs over batches
  (a ratio of means, like ours) but loops over layer pairs, rebuilding the second Gram per pair."""


def print_goals(results: dict) -> None:
    """One line per goal of the issue: the measured value and whether it is met."""
    print("\n[goals]")
    full, subset = results["full"], results["subset"]
    if "pytorch-cka/ours-float32" in full:
        ratio = full["pytorch-cka/ours-float32"]
        print(f"  >= 1.5x faster than pytorch-cka ({full['layers']} layers, float32 Grams): {ratio:.2f}x -> "
              f"{'met' if ratio >= 1.5 else 'NOT met'}")
    if "torch_cka/ours-float32" in subset:
        measured, extrapolated = subset["torch_cka/ours-float32"], results["torch_cka_full_extrapolated/ours-float32"]
        print(f"  >= 50x faster than torch_cka: {measured:.0f}x measured at {subset['layers']} layers, "
              f"{extrapolated:.0f}x extrapolated to {full['layers']} layers -> "
              f"{'met' if measured >= 50 else ('met only when extrapolated' if extrapolated >= 50 else 'NOT met')}")
    worst = max(full["tools"][t]["max_abs_diff"] for t in ("ours-float32", "ours-float64"))
    print(f"  max |diff| <= 1e-6: ours {worst:.1e} -> {'met' if worst <= 1e-6 else 'NOT met'}"
          + "".join(f"; {t} {full['tools'][t]['max_abs_diff']:.1e}" for t in full["tools"] if not t.startswith("ours")))
    bounds = results.get("max_speedup_over_pytorch_cka")
    if bounds:
        print(f"    (bound: bare full Grams alone would be {bounds['full_gemm']:.2f}x faster than pytorch-cka; "
              f"the fastest kernel alone {bounds['fastest_kernel_alone']:.2f}x)")
    row = results.get("forward_fraction_float32")
    if row:
        print(f"  CKA <= 30% of forward time (whole-model heatmap, float32 Grams, n = {results['config']['batch_size']}): "
              f"{row['fraction']:.0%} -> {'met' if row['fraction'] <= 0.30 else 'NOT met'}")
    for row in results.get("batch_size_sweep", []):
        print(f"    n = {row['batch_size']:>3}: {row['fraction']:.0%} (bare Grams alone {row['bare_grams_fraction']:.0%}) -> "
              f"{'met' if row['fraction'] <= 0.30 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--subset-layers", type=int, default=66,
                        help="layers in the three-tool comparison (66: every third layer, ~3 min of torch_cka)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per tool; the fastest is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-forward", action="store_true", help="skip the forward-pass fraction")
    parser.add_argument("--sweep-sizes", type=int, nargs="*", default=[32, 64, 128, 256],
                        help="batch sizes for the forward-fraction sweep over the same images (none: skip)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    missing = {name: tool_available(module) for name, module in (("pytorch-cka", "cka"), ("torch_cka", "torch_cka"))}
    for name, why in missing.items():
        if why:
            print(f"NOTE: {name} unavailable ({why}); its columns are skipped")
    print(ADAPTATIONS + "\n")

    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(args.batch_size, 3, 32, 32, generator=generator) for _ in range(args.batches)]
    calibration = torch.rand(args.batch_size, 3, 32, 32, generator=generator)
    model = calibrated_resnet(args.depth, 0, calibration)
    store, names = record_activations(model, batches)
    warm_up(store, missing)
    total_mb = sum(t.numel() * 4 for acts in store for t in acts) / 2 ** 20
    print(f"ResNet-{args.depth}: {len(names)} layers, {args.batches} batches of {args.batch_size}, "
          f"{total_mb:.0f} MiB of stored activations\n")

    results: dict = {"config": vars(args) | {"json": str(args.json) if args.json else None,
                                              "threads": torch.get_num_threads(), "layers": len(names)}}
    workloads = {"full": list(range(len(names))),
                 "subset": [int(round(i)) for i in np.linspace(0, len(names) - 1, args.subset_layers)]}
    for workload, indices in workloads.items():
        reference = reference_cka(store, indices)
        runs = {"ours-float32": lambda: run_ours(store, indices, torch.float32),
                "ours-float64": lambda: run_ours(store, indices, torch.float64)}
        if not missing["pytorch-cka"]:
            runs["pytorch-cka"] = lambda: run_pytorch_cka(store, indices)
        if workload == "subset" and not missing["torch_cka"]:
            runs["torch_cka"] = lambda: run_torch_cka(store, indices)
        table = {}
        for tool, run in runs.items():
            matrix, seconds = best_of(run, args.repeats)
            table[tool] = {"seconds": seconds, "max_abs_diff": max_abs_diff(matrix, reference),
                           "clamped_entries": clamped_entries(matrix, reference)}
        results[workload] = {"layers": len(indices), "tools": table}
        print(f"[{workload}: {len(indices)} layers x {len(indices)}]")
        print(f"  {'tool':<14}{'seconds':>10}{'max|diff| vs float64':>24}{'entries at 0/1':>16}")
        for tool, row in table.items():
            print(f"  {tool:<14}{row['seconds']:>10.3f}{row['max_abs_diff']:>24.2e}{row['clamped_entries']:>16d}")
        for ours in ("ours-float32", "ours-float64"):
            for other in ("pytorch-cka", "torch_cka"):
                if other in table:
                    ratio = table[other]["seconds"] / table[ours]["seconds"]
                    results[workload][f"{other}/{ours}"] = ratio
                    print(f"  speed-up of {ours} over {other}: {ratio:.2f}x")
        print()

    if "torch_cka" in results["subset"]["tools"]:
        # torch_cka loops over layer pairs (rebuilding the second Gram and an n^3 product per pair),
        # so its time grows with L^2; extrapolate its subset time to the full layer count.
        pairs_ratio = (len(names) / len(workloads["subset"])) ** 2
        extrapolated = results["subset"]["tools"]["torch_cka"]["seconds"] * pairs_ratio
        results["torch_cka_full_extrapolated_s"] = extrapolated
        for ours in ("ours-float32", "ours-float64"):
            ratio = extrapolated / results["full"]["tools"][ours]["seconds"]
            results[f"torch_cka_full_extrapolated/{ours}"] = ratio
            print(f"torch_cka at {len(names)} layers (extrapolated x{pairs_ratio:.0f} pairs: {extrapolated:.0f} s) "
                  f"vs {ours} measured: {ratio:.0f}x")
        print()

    print("[floors: the Gram products every exact tool computes]")
    _, floor = best_of(lambda: bare_grams(store, workloads["full"]), args.repeats)
    results["bare_grams_s"] = floor
    print(f"  bare float32 Grams (x @ x.T, {len(names)} layers x {args.batches} batches, nothing else): {floor:.3f} s")
    for tool, row in results["full"]["tools"].items():
        print(f"  {tool:<14}{row['seconds'] / floor:>6.2f}x the bare Grams")
    kernels = gram_kernels(store[0], args.repeats)
    results["gram_kernels_one_batch"] = kernels
    print(f"  Gram kernels on one batch's {len(names)} layers (seconds; alone / after each layer's centring):")
    for name, row in kernels.items():
        print(f"    {name:<34}{row['alone_s']:>8.3f}{row['interleaved_s']:>8.3f}")
    if "pytorch-cka" in results["full"]["tools"]:
        gemm = kernels["one GEMM (x @ x.T)"]
        fastest = min(row["alone_s"] for row in kernels.values()) / gemm["alone_s"]
        pcka = results["full"]["tools"]["pytorch-cka"]["seconds"]
        results["max_speedup_over_pytorch_cka"] = {"full_gemm": pcka / floor, "fastest_kernel_alone": pcka / (floor * fastest)}
        print(f"  any tool that forms full Grams is at most {pcka / floor:.2f}x faster than pytorch-cka here; with the "
              f"fastest kernel at its solo speed and nothing else, at most {pcka / (floor * fastest):.2f}x")
    print()

    if not args.skip_forward:
        del store  # free the stored activations before the live runs
        print(f"[CKA cost vs forward pass: whole-model {len(names)}x{len(names)} heatmap of ResNet-{args.depth}]")
        for dtype in (torch.float32, torch.float64):
            row = forward_fraction(model, batches, dtype, args.repeats)
            results[f"forward_fraction_{str(dtype).split('.')[-1]}"] = row
            print(f"  Grams in {str(dtype).split('.')[-1]}: forward {row['forward_s']:.2f} s, model_cka "
                  f"{row['model_cka_s']:.2f} s -> CKA time = {row['fraction']:.0%} of forward time")
        if args.sweep_sizes:
            images = torch.cat(batches)
            print(f"\n[the same {len(images)} images in batches of other sizes (float32 Grams)]")
            print(f"  {'n':>5}{'Gram/forward flops':>20}{'bare Grams/forward':>20}{'CKA/forward':>13}"
                  f"{'max|diff| from one batch':>26}")
            rows = batch_size_sweep(model, images, args.sweep_sizes, args.repeats)
            results["batch_size_sweep"] = rows
            for row in rows:
                print(f"  {row['batch_size']:>5}{row['gram_flops_over_forward_flops']:>20.2f}"
                      f"{row['bare_grams_fraction']:>20.0%}{row['fraction']:>13.0%}"
                      f"{row['max_abs_diff_from_single_batch']:>26.1e}")
    print_goals(results)
    if args.json:  # with provenance (commit, hardware, versions), written atomically
        run_store.write_json(args.json, {"provenance": run_store.provenance("benchmark", time.perf_counter() - started),
                                         **results})


if __name__ == "__main__":
    main()
