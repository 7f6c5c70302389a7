"""Speed of widedeep.measures.subspace's two exact forms of the maximum match, on identical activations.

    .venv/bin/python benchmarks/subspace_speed.py                          # 32 and 128 channels (under a minute)
    .venv/bin/python benchmarks/subspace_speed.py --sizes 64x10000 --eps 0.15,0.2,0.25,0.3,0.5

What it measures, all in one run and side by side:
1. Identical activations. For each size CxD, two non-negative "conv layers" of C channels each over
   D (example, position) samples: non-negative mixtures of C/2 shared ReLU features plus per-channel
   noise of graded size, so that the maximum match is partial and shrinks with eps (Algorithm 1
   then needs several rounds). Both forms get exactly these float64 matrices.
   - direct: `LayerPair.from_activations(a, b).maximum_match(eps)`, projection onto an SVD basis of the other side's span in
     every round of Algorithm 1 (the authors' least-squares code does the same work with lstsq);
   - Gram: `stacked_gram(a, b)` once (what `NeuronMoments` accumulates during the forward pass
     anyway), then `LayerPair.from_gram(gram, C).maximum_match(eps)`; timed with and without building the Gram.
   Agreement: whether both forms return the same index sets, and the score.
2. Simple matches (Algorithm 2) of a few neurons, `LayerPair.simple_match` in the direct vs the Gram form,
   on the first size only, at the smallest eps with a non-empty maximum match: O(n) maximum
   matches per neuron, each of which the direct form pays with SVDs of (neurons x samples) matrices.
Timings depend on the machine and its load; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from widedeep.measures import subspace
from widedeep.measures.subspace import LayerPair


def activations(channels: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (channels, samples) non-negative layers: mixtures of shared ReLU features plus graded noise.

    Both layers mix the same channels/2 non-negative features relu(S) with non-negative weights; each
    channel then gets its own noise of relative size uniform in [0, 0.6], so a channel's relative
    distance to the other layer's span grows with its noise and the maximum match shrinks with eps.
    """
    rng = np.random.default_rng(seed)
    features = np.maximum(rng.standard_normal((max(1, channels // 2), samples)), 0.0)
    layers = []
    for _ in range(2):
        signal = rng.uniform(0.0, 1.0, (channels, features.shape[0])) @ features
        noise = np.abs(rng.standard_normal((channels, samples)))
        scale = rng.uniform(0.0, 0.6, (channels, 1)) * np.linalg.norm(signal, axis=1, keepdims=True)
        layers.append(signal + scale * noise / np.linalg.norm(noise, axis=1, keepdims=True))
    return layers[0], layers[1]


def best_of(run, repeats: int) -> tuple[object, float]:
    """Run `repeats` times and keep the fastest: the least disturbed by other load on the machine."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        if best is None or seconds < best[1]:
            best = (result, seconds)
    return best


def same(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two (idx_a, idx_b) results hold the same index sets."""
    return all(np.array_equal(x, y) for x, y in zip(first, second))


def time_maximum_match(a: np.ndarray, b: np.ndarray, eps_values: list[float], repeats: int) -> list[dict]:
    """Direct vs Gram form at each eps: seconds, ratio, agreement and score."""
    gram, build_s = best_of(lambda: subspace.stacked_gram(a, b), repeats)
    rows = []
    for eps in eps_values:
        direct, direct_s = best_of(lambda: LayerPair.from_activations(a, b).maximum_match(eps), repeats)
        from_gram, match_s = best_of(lambda: LayerPair.from_gram(gram, a.shape[0]).maximum_match(eps), repeats)
        rows.append({"eps": eps, "direct_s": direct_s, "gram_build_s": build_s, "gram_match_s": match_s,
                     "ratio_with_build": direct_s / (build_s + match_s), "ratio_match_only": direct_s / match_s,
                     "agree": same(direct, from_gram),
                     "score": (direct[0].size + direct[1].size) / (a.shape[0] + b.shape[0])})
    return rows


def time_simple_matches(a: np.ndarray, b: np.ndarray, eps: float, neurons: int) -> dict:
    """Algorithm 2 for the first `neurons` neurons of the maximum match: direct vs Gram seconds and agreement."""
    gram = subspace.stacked_gram(a, b)
    idx_a, idx_b = LayerPair.from_gram(gram, a.shape[0]).maximum_match(eps)
    chosen = np.concatenate([idx_a, a.shape[0] + idx_b])[:neurons]
    start = time.perf_counter()
    pair = LayerPair.from_activations(a, b)
    direct = [pair.simple_match(int(v), eps) for v in chosen]
    direct_s = time.perf_counter() - start
    start = time.perf_counter()
    pair = LayerPair.from_gram(gram, a.shape[0])
    from_gram = [pair.simple_match(int(v), eps) for v in chosen]
    gram_s = time.perf_counter() - start
    return {"eps": eps, "neurons": int(chosen.size), "direct_s": direct_s, "gram_s": gram_s,
            "ratio": direct_s / gram_s, "agree": all(same(x, y) for x, y in zip(direct, from_gram)),
            "sizes": [int(x[0].size + x[1].size) for x in from_gram]}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'32x4000,128x10000' -> [(32, 4000), (128, 10000)]: channels per side x samples."""
    sizes = []
    for item in text.split(","):
        channels, samples = item.lower().split("x")
        sizes.append((int(channels), int(samples)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("32x4000,128x10000"),
                        help="channels per side x samples, comma separated (default 32x4000,128x10000)")
    parser.add_argument("--eps", type=lambda s: [float(x) for x in s.split(",")], default=list(subspace.PAPER_EPS),
                        help="eps values, comma separated (default: the paper's 0.15,0.2,0.25,0.3,0.5)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per form; the fastest is kept")
    parser.add_argument("--simple-neurons", type=int, default=3, help="neurons for the simple-match timing (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    threads = os.environ.get("OMP_NUM_THREADS")
    print(f"numpy {np.__version__}, torch {torch.__version__}, OMP_NUM_THREADS={threads}, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    LayerPair.from_activations(*activations(4, 50, 0)).maximum_match(0.2)  # warm up BLAS/LAPACK
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "maximum_match": {}, "simple_match": None}
    for channels, samples in args.sizes:
        a, b = activations(channels, samples, args.seed)
        rows = time_maximum_match(a, b, args.eps, args.repeats)
        results["maximum_match"][f"{channels}x{samples}"] = rows
        print(f"\n[maximum match: {channels} + {channels} channels x {samples} samples; "
              f"maximal eps {LayerPair.from_activations(a, b).maximal_eps():.3f}]")
        print(f"  {'eps':>5}{'direct s':>11}{'Gram build s':>14}{'Gram match s':>14}{'direct/Gram':>13}"
              f"{'(match only)':>14}{'agree':>7}{'score':>7}")
        for r in rows:
            print(f"  {r['eps']:>5.2f}{r['direct_s']:>11.4f}{r['gram_build_s']:>14.4f}{r['gram_match_s']:>14.4f}"
                  f"{r['ratio_with_build']:>12.1f}x{r['ratio_match_only']:>13.1f}x{str(r['agree']):>7}"
                  f"{r['score']:>7.3f}")
    if args.simple_neurons > 0:
        channels, samples = args.sizes[0]
        a, b = activations(channels, samples, args.seed)
        gram = subspace.stacked_gram(a, b)
        # The smallest eps whose maximum match is not empty: there simple matches are smallest.
        eps = min((e for e in args.eps if LayerPair.from_gram(gram, channels).score(e) > 0), default=max(args.eps))
        row = time_simple_matches(a, b, eps, args.simple_neurons)
        results["simple_match"] = row
        print(f"\n[simple matches (Algorithm 2) of {row['neurons']} neurons at eps {row['eps']}: "
              f"{channels} + {channels} channels x {samples} samples]")
        print(f"  direct {row['direct_s']:.3f} s, Gram {row['gram_s']:.3f} s -> {row['ratio']:.1f}x; "
              f"same sets: {row['agree']}; sizes {row['sizes']}")
    agree = all(r["agree"] for rows in results["maximum_match"].values() for r in rows)
    print(f"\nAll maximum matches agree between the forms: {agree}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
