"""Training throughput: float32 against bfloat16 autocast, and several seeds in one process (vmap).

Every measurement runs the book's own training step (`widedeep.train.sgd_step`: forward under the
run's precision, float32 loss, backward, SGD with momentum and kernel-only weight decay) on
Fashion-MNIST batches from the in-memory pipeline, with augmentation. Measurements are
interleaved (float32, bfloat16, float32, ...) after warm-up steps, so drift in the machine's speed
hits every variant alike; the ratio of medians within one run is what to compare.

FLOP utilisation: the FLOPs of one training step are counted by `torch.utils.flop_counter`
(forward and backward), divided by the measured step time, and set against two peaks: the
processor's nominal peak (cores x the clock /proc/cpuinfo reports x FLOPs per cycle, the assumption
printed; a virtual machine reports the base clock, so boost can take a real product above it) and
the best square matrix product measured in the same run (what the BLAS reaches here, the fairer
ceiling).

Several seeds in one process: four width-1 models stacked with `torch.func.stack_module_state` and
trained through `torch.func.vmap` + `functional_call` (each member on its own batch) against the
same four models stepped one after another. The issue's goal for adopting it: >= 1.3x.

    .venv/bin/python benchmarks/train_throughput.py [--threads 1] [--steps 10] [--repeats 3]
    .venv/bin/python benchmarks/train_throughput.py --pipeline   # the old input-pipeline comparison

Results: `benchmarks/results/train_throughput.{txt,json}` (with provenance).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from widedeep import data, models, store, train

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"resnet20x1": (20, 1), "resnet20x4": (20, 4), "resnet110x1": (110, 1)}
PRECISIONS = ("float32", "bfloat16")


def endless_batches(images: data.ImageData, batch_size: int, seed: int):
    """Augmented training batches forever (crop + flip, as training uses)."""
    pad, epoch = data.crop_padding(images.images.shape[-1]), 0
    while True:
        yield from data.batches(images, batch_size, torch.Generator().manual_seed(seed + epoch), drop_last=True,
                                augment_pad=pad, flip=True)
        epoch += 1


def fresh_model(depth: int, width: float, seed: int = 0):
    """A model and its optimiser exactly as `train_or_load` builds them."""
    config = train.TrainConfig(depth=depth, width=width, n_train=2000, n_val=100, n_test=100, seed=seed)
    model = config.build_model()
    return model, train._optimizer(model, config)


def step_rate(depth: int, width: float, precision: str, batches, steps: int, warmup: int = 2) -> float:
    """Images per second of `steps` training steps after `warmup` untimed ones."""
    model, optimizer = fresh_model(depth, width)
    model.train()
    for _ in range(warmup):
        train.sgd_step(model, optimizer, *next(batches), precision)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        images, labels = next(batches)
        train.sgd_step(model, optimizer, images, labels, precision)
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def step_flops(depth: int, width: float, batches) -> float:
    """FLOPs of one training step per image (forward + backward, counted in float32)."""
    model, optimizer = fresh_model(depth, width)
    images, labels = next(batches)
    with FlopCounterMode(display=False) as counter:
        train.sgd_step(model, optimizer, images, labels, "float32")
    return counter.get_total_flops() / len(labels)


def gemm_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of a square matrix product in `dtype` (the BLAS's practical peak here)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best


def nominal_peak(threads: int) -> dict:
    """Cores x clock x FLOPs per cycle, with the assumption it rests on (x86 with AVX-512 FMA, by vendor)."""
    clock_ghz, vendor, flags = None, "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "cpu MHz" and clock_ghz is None:
                clock_ghz = float(value) / 1000
            elif key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    if clock_ghz is None:
        return {"assumption": "clock unknown", "float32": None, "bfloat16": None}
    if vendor == "AuthenticAMD":
        # Zen 4: AVX-512 on two 256-bit FMA pipes = 32 float32 FLOPs a cycle; BF16 dot products twice that
        per_cycle, pipes = {"float32": 32, "bfloat16": 64}, "two 256-bit FMA pipes (Zen 4)"
    else:
        # Xeon Scalable (Gold/Platinum): two 512-bit FMA ports = 64; AVX512-BF16 twice that. AMX tiles, which
        # oneDNN uses for bfloat16 where present, reach far more: the measured GEMM is the fairer ceiling there.
        per_cycle, pipes = {"float32": 64, "bfloat16": 128}, "two 512-bit FMA ports (Xeon Scalable)"
        if "amx_bf16" in flags:
            pipes += "; AMX-BF16 present, its tile peak not counted"
    return {"assumption": f"{threads} core(s) x {clock_ghz:.2f} GHz x {per_cycle['float32']} (float32) / "
                          f"{per_cycle['bfloat16']} (bfloat16) FLOPs a cycle, {vendor or 'vendor unknown'}: {pipes}",
            **{p: threads * clock_ghz * 1e9 * per_cycle[p] for p in PRECISIONS}}


def stacked_rate(members: int, depth: int, width: float, precision: str, batches: list, steps: int,
                 warmup: int = 2) -> float:
    """Images per second of `members` models trained as one vmapped model, each on its own batch."""
    from torch.func import functional_call, stack_module_state, vmap

    nets = [fresh_model(depth, width, seed)[0] for seed in range(members)]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    optimizer = torch.optim.SGD(params.values(), lr=0.01, momentum=0.9, weight_decay=2e-4)

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    def step():
        pairs = [next(batch) for batch in batches]
        images = torch.stack([x for x, _ in pairs])
        labels = torch.stack([y for _, y in pairs])
        with train._autocast(images.device, precision):
            logits = vmap(one)(params, buffers, images)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum") / labels.shape[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return labels.numel()

    for _ in range(warmup):
        step()
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        seen += step()
    return seen / (time.perf_counter() - start)


def separate_rate(members: int, depth: int, width: float, precision: str, batches: list, steps: int,
                  warmup: int = 2) -> float:
    """Images per second of the same `members` models stepped one after another in one process."""
    nets = [fresh_model(depth, width, seed) for seed in range(members)]
    for _ in range(warmup):
        for (model, optimizer), batch in zip(nets, batches):
            train.sgd_step(model, optimizer, *next(batch), precision)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        for (model, optimizer), batch in zip(nets, batches):
            images, labels = next(batch)
            train.sgd_step(model, optimizer, images, labels, precision)
            seen += len(labels)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the grid trains one model per core)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per variant")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--members", type=int, default=4, help="models stacked in the multi-seed measurement")
    parser.add_argument("--image-size", type=int, default=16, help="pixels (the cpu profile uses 16)")
    parser.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    parser.add_argument("--pipeline", action="store_true", help="run the input-pipeline comparison instead")
    args = parser.parse_args()
    if args.pipeline:
        import input_pipeline

        sys.argv = [sys.argv[0]]
        return input_pipeline.main()
    torch.set_num_threads(args.threads)
    if not train.native_bfloat16("cpu"):
        print("note: this CPU has no native bfloat16; bfloat16 numbers below are emulated")
    splits = data.make_splits("fashion_mnist", n_train=2000, n_val=100, image_size=args.image_size, n_test=100)
    batches = endless_batches(splits.train, 128, 0)
    lines = [f"Training throughput, batch 128, Fashion-MNIST {args.image_size} px, {args.threads} thread(s), "
             f"{store.hardware()}, torch {torch.__version__}, native bfloat16: {train.native_bfloat16('cpu')}"]
    peaks = {"nominal": nominal_peak(args.threads),
             "gemm": {p: gemm_peak(getattr(torch, p)) for p in PRECISIONS}}
    lines.append(f"peaks: nominal {peaks['nominal']['assumption']} = "
                 + ", ".join(f"{p} {peaks['nominal'][p] / 1e9:.0f} GFLOP/s" for p in PRECISIONS if peaks['nominal'][p])
                 + "; best 2048^2 matrix product " + ", ".join(f"{p} {peaks['gemm'][p] / 1e9:.0f} GFLOP/s"
                                                              for p in PRECISIONS))
    header = (f"{'model':<13}{'float32 img/s':>15}{'bfloat16 img/s':>16}{'ratio':>7}"
              f"{'GFLOP/img':>11}{'util f32 (nom/gemm)':>21}{'util bf16 (nom/gemm)':>22}")
    lines += ["", header]
    print("\n".join(lines), flush=True)
    results = {"settings": vars(args), "peaks": peaks, "models": {}, "multi_seed": {}}
    for name in args.models:
        depth, width = MODELS[name]
        rates = {p: [] for p in PRECISIONS}
        for _ in range(args.repeats):
            for precision in PRECISIONS:
                rates[precision].append(step_rate(depth, width, precision, batches, args.steps))
        flops = step_flops(depth, width, batches)
        median = {p: statistics.median(rates[p]) for p in PRECISIONS}
        util = {p: {kind: (median[p] * flops / peaks[kind][p] if peaks[kind][p] else None)
                    for kind in ("nominal", "gemm")} for p in PRECISIONS}
        results["models"][name] = {"rates": rates, "median": median, "ratio": median["bfloat16"] / median["float32"],
                                   "flops_per_image": flops, "utilisation": util}
        row = (f"{name:<13}{median['float32']:>15.0f}{median['bfloat16']:>16.0f}"
               f"{median['bfloat16'] / median['float32']:>6.2f}x{flops / 1e9:>11.3f}"
               + "".join(f"{util[p]['nominal'] or 0:>13.0%} / {util[p]['gemm']:.0%}".rjust(21 + (p == 'bfloat16'))
                         for p in PRECISIONS))
        lines.append(row)
        print(row, flush=True)
    lines += ["", f"{args.members} ResNet-20 x1 in one process: separate steps vs stacked (vmap), "
                  f"each member on its own batch"]
    lines.append(f"{'precision':<11}{'separate img/s':>16}{'vmap img/s':>12}{'ratio':>8}")
    print("\n".join(lines[-2:]), flush=True)
    member_batches = [endless_batches(splits.train, 128, seed) for seed in range(args.members)]
    for precision in PRECISIONS:
        rates = {"separate": [], "vmap": []}
        for _ in range(args.repeats):
            rates["separate"].append(separate_rate(args.members, 20, 1, precision, member_batches, args.steps // 2 or 1))
            rates["vmap"].append(stacked_rate(args.members, 20, 1, precision, member_batches, args.steps // 2 or 1))
        median = {k: statistics.median(v) for k, v in rates.items()}
        results["multi_seed"][precision] = {"rates": rates, "median": median,
                                            "ratio": median["vmap"] / median["separate"]}
        row = f"{precision:<11}{median['separate']:>16.0f}{median['vmap']:>12.0f}{median['vmap'] / median['separate']:>7.2f}x"
        lines.append(row)
        print(row, flush=True)
    if not args.no_save:
        results["provenance"] = {"commit": store.git_commit(), "hardware": store.hardware(),
                                 "versions": store.versions(), "python": platform.python_version(),
                                 "date": time.strftime("%Y-%m-%d %H:%M")}
        RESULTS.mkdir(exist_ok=True)
        suffix = "" if args.threads == 1 else f"-{args.threads}threads"
        store.write_json(RESULTS / f"train_throughput{suffix}.json", results)
        (RESULTS / f"train_throughput{suffix}.txt").write_text("\n".join(lines) + "\n")
        print(f"written: {RESULTS / f'train_throughput{suffix}.txt'} and .json")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
