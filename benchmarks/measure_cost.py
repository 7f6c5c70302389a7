"""Wall time of each of Chapter 9's measures, split as the chapter pays it: once per layer, once per pair.

    .venv/bin/python benchmarks/measure_cost.py                       # 500 examples, ResNet stage shapes
    .venv/bin/python benchmarks/measure_cost.py --examples 1000 --repeats 5

Three synthetic post-ReLU conv layers of the same examples with the shapes of a width-1 ResNet's
three stages on Fashion-MNIST (16 x 28 x 28, 32 x 14 x 14, 64 x 7 x 7), each sharing half of its
channels with a mixture of the previous one. Each lens of `widedeep.measures.lenses` is timed on its
summary of one layer (`prepare`, paid once per layer and per shuffled or perturbed copy) and on its
comparison of two summaries (`compare`, paid once per layer pair; the mean over the 3 x 3 pairs of
stages), and beside them the two-argument measure as the previous chapter code called it per pair,
so the saving reads off one line. On one BLAS thread, as the chapter runs. The fastest of
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

from widedeep.measures.lenses import lenses

RESULTS = Path(__file__).resolve().parent / "results"


SHAPES = ((16, 28, 28), (32, 14, 14), (64, 7, 7))


def layers(n: int, seed: int) -> list[np.ndarray]:
    """Three non-negative conv layers of the stage shapes, each sharing half its channels with the previous."""
    rng = np.random.default_rng(seed)
    out = [np.maximum(rng.normal(size=(n, *SHAPES[0])), 0)]
    for c, h, w in SHAPES[1:]:
        previous = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(out[-1]), (h, w)).numpy()
        shared = np.einsum("nchw,cd->ndhw", previous, rng.normal(size=(previous.shape[1], c // 2)))
        out.append(np.maximum(np.concatenate([shared, rng.normal(size=(n, c - c // 2, h, w))], axis=1), 0))
    return [x.astype(np.float32) for x in out]   # as the chapter captures them


def fastest(function, repeats: int) -> tuple[float, object]:
    best, value = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.5)
    args = parser.parse_args()
    out = io.StringIO()
    rows = []
    with redirect_stdout(out), threadpool_limits(limits=1, user_api="blas"):
        torch.set_num_threads(1)
        print(f"# measure cost, {args.examples} examples, layers {' / '.join('x'.join(map(str, s)) for s in SHAPES)}, "
              f"one BLAS thread; numpy {np.__version__}, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs (shared with other work: the machine may be busy)")
        stack = layers(args.examples, 0)
        print(f"{'measure':<16}{'prepare ms/layer':>18}{'compare ms/pair':>17}{'measure ms/pair':>17}"
              f"{'prepare/compare':>17}")
        for name, lens in lenses(args.knn_k, args.eps).items():
            prepare_s, summaries = fastest(lambda: [lens.prepare(x) for x in stack], args.repeats)
            compare_s, _ = fastest(lambda: [lens.compare(a, b) for a in summaries for b in summaries], args.repeats)
            measure_s, _ = fastest(lambda: [lens.function(a, b) for a in stack for b in stack], args.repeats)
            row = {"measure": name, "prepare_s": prepare_s / len(stack), "compare_s": compare_s / len(stack) ** 2,
                   "measure_s": measure_s / len(stack) ** 2}
            rows.append(row)
            print(f"{name:<16}{row['prepare_s'] * 1e3:>18.1f}{row['compare_s'] * 1e3:>17.2f}"
                  f"{row['measure_s'] * 1e3:>17.1f}{row['prepare_s'] / row['compare_s']:>17.1f}")
    text = out.getvalue()
    print(text, end="")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "measure_cost.txt").write_text(text)
    (RESULTS / "measure_cost.json").write_text(json.dumps(
        {"config": vars(args), "shapes": SHAPES, "load_average": os.getloadavg()[0], "measures": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
