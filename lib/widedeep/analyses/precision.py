"""Does training in bfloat16 change the science? Paired precision differences against the seed spread.

Analyses layer. The same seeds of one model are trained twice, in bfloat16 autocast and in float32
(same data, initialisation and batch order; only the arithmetic differs). For each quantity the
chapters read (test accuracy, maximum first-PC share, block size) this compares

- the **precision effect**: the mean over seeds of |bfloat16 - float32| for the same seed, with
- the **seed effect**: the mean over pairs of different seeds of |seed a - seed b| within one
  precision (both precisions pooled).

One seed cannot settle it, because blocks already differ between seeds: a precision effect smaller
than the seed effect means that changing the arithmetic moves a result less than re-drawing the
initialisation does, so the bfloat16 book says what a float32 book would, up to seed noise.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from widedeep import experiments, records
from widedeep.train import is_complete

QUANTITIES = ("test_acc", "max_pc1_share", "block_size")
SMALLER, NOT_SMALLER = "smaller than the seed spread", "not smaller than the seed spread"


def _by_seed(rows: Sequence[dict], name: str) -> dict[int, dict]:
    seeds = [r["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name} repeats a seed: {seeds}; give one row per seed")
    return {r["seed"]: r for r in rows}


def compare(low: Sequence[dict], exact: Sequence[dict], quantities: Sequence[str] = QUANTITIES,
            names: tuple[str, str] = ("bfloat16", "float32")) -> dict:
    """Per quantity: paired differences (low - exact), precision and seed effects, their ratio and a verdict."""
    low_rows, exact_rows = _by_seed(low, "the bfloat16 rows"), _by_seed(exact, "the float32 rows")
    if set(low_rows) != set(exact_rows):
        raise ValueError(f"the two precisions must cover the same seeds; got {sorted(low_rows)} and "
                         f"{sorted(exact_rows)}")
    seeds = sorted(low_rows)
    if len(seeds) < 2:
        raise ValueError("the seed spread needs at least two seeds in each precision")
    out = {"seeds": seeds, "precisions": list(names), "quantities": {}}
    for q in quantities:
        a = np.array([float(low_rows[s][q]) for s in seeds])
        b = np.array([float(exact_rows[s][q]) for s in seeds])
        precision_effect = float(np.mean(np.abs(a - b)))
        seed_pairs = [abs(x[i] - x[j]) for x in (a, b) for i, j in combinations(range(len(seeds)), 2)]
        seed_effect = float(np.mean(seed_pairs))
        ratio = precision_effect / seed_effect if seed_effect > 0 else (0.0 if precision_effect == 0 else np.inf)
        out["quantities"][q] = {
            "bfloat16": a.tolist(), "float32": b.tolist(), "difference": (a - b).tolist(),
            "precision_effect": precision_effect, "seed_effect": seed_effect, "ratio": float(ratio),
            "verdict": SMALLER if ratio < 1 else NOT_SMALLER}
    presence = [(low_rows[s].get("block") is not None) == (exact_rows[s].get("block") is not None) for s in seeds]
    out["block_presence_agrees"] = int(sum(presence))
    return out


def runs_missing_here(profile) -> list:
    """The side study's bfloat16 runs that are neither recorded nor trained and cannot train on this machine."""
    _, skipped = experiments.runs_trainable_here(profile)
    return [c for c in skipped if not records.has_training_record(profile, c) and not is_complete(c, profile.runs_dir)]
