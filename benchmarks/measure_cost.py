"""Wall time of each of Chapter 9's measures on one layer pair, as the chapter calls them.

    .venv/bin/python benchmarks/measure_cost.py                     # 1000 examples x 256 features
    .venv/bin/python benchmarks/measure_cost.py --examples 500 --features 4096 --repeats 5

Two synthetic layers of the same examples: X (n x p), Y = a random mixture of half of X's features
plus noise, both post-ReLU like the book's layers. Each measure of `widedeep.analyses.measures_study.lenses`
is timed on the form it reads in the chapter (principal coordinates for the Euclidean measures, the
raw layer for RSA, PWCCA and the subspace match; the subspace match treats each feature as a neuron
over the n examples); the one-off cost of the principal coordinates is reported on its own line, since the chapter pays
it once per layer, not once per pair. On one BLAS thread, as the chapter runs. The fastest of
`--repeats` runs is kept; timings depend on the machine and its load, the ratios are what to compare.
Writes benchmarks/results/measure_cost.{txt,json}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from widedeep.analyses import measures_study

RESULTS = Path(__file__).resolve().parent / "results"


def layers(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two non-negative (n, p) layers sharing half of their directions."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(n, p)), 0)
    y = np.maximum(x[:, : p // 2] @ rng.normal(size=(p // 2, p)) / np.sqrt(p) + 0.5 * rng.normal(size=(n, p)), 0)
    return x, y


def fastest(function, repeats: int) -> tuple[float, object]:
    best, value = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.5)
    args = parser.parse_args()
    out = io.StringIO()
    rows = []
    with redirect_stdout(out), threadpool_limits(limits=1, user_api="blas"):
        torch.set_num_threads(1)
        print(f"# measure cost, {args.examples} examples x {args.features} features, one BLAS thread; numpy "
              f"{np.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared with other work: the "
              f"machine may be busy)")
        x, y = layers(args.examples, args.features, 0)
        coords_s, _ = fastest(lambda: measures_study.principal_coordinates(x), args.repeats)
        print(f"principal coordinates of one layer (once per layer): {coords_s * 1e3:.1f} ms")
        print(f"{'measure':<16}{'reads':>24}{'ms per pair':>14}{'value':>9}")
        for name, lens in measures_study.lenses(args.knn_k, args.eps).items():
            a, b = measures_study.prepared([x, y], lens.form)
            seconds, value = fastest(lambda: lens.function(a, b), args.repeats)
            rows.append({"measure": name, "form": lens.form, "seconds": seconds, "value": float(value)})
            print(f"{name:<16}{lens.form:>24}{seconds * 1e3:>14.1f}{value:>9.3f}")
    text = out.getvalue()
    print(text, end="")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "measure_cost.txt").write_text(text)
    (RESULTS / "measure_cost.json").write_text(json.dumps(
        {"config": vars(args), "load_average": os.getloadavg()[0], "principal_coordinates_s": coords_s,
         "measures": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
