"""The subspace match of Wang et al. beside CKA on the book's models (Chapter 7).

Layer: analyses (on `widedeep.measures.subspace`, `measures.cka`, the run caches of `runs` and
`structure`; below book support). `MatchStudy` holds Chapter 2's base model over its seeds and
computes, step by step, what the chapter shows: the maximum-match scores of every post-ReLU layer
for every seed pair next to linear CKA of the same layers, the verdict on Wang et al.'s finding, the
exact Grams against the authors' sampled protocol, simple-match sizes, where the two measures
disagree (on one real layer), and the block of every seed that has one under the match. Each step
returns the sentences the chapter quotes; `record()` is the results payload. What a step reads from
the runs is a record (`VERSIONS`, `runs.run_match_scores`): scores, not Grams, so the chapter builds
without a checkpoint where its records are present.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import stats

from widedeep import profiles, protocol, records
from widedeep.analyses import runs, verdicts
from widedeep.analyses.structure import BlockAnalysis
from widedeep.analyses.verdicts import fraction_verdict
from widedeep.capture import capture_outputs
from widedeep.measures import cka, subspace
from widedeep.profiles import Profile

# Chapter 7's record kinds beside `runs.run_match_scores` ("match"): bump one when its numbers would change.
VERSIONS = records.register_kinds({"match_sampled": 1, "match_simple": 1, "match_invariance": 1})


def subspace_verdict(match_scores: Sequence[Sequence[Sequence[float]]], eps: Sequence[float],
                     threshold: float = 0.5) -> tuple[str, int, int]:
    """Wang et al.'s claim per layer: (verdict, layers whose mean score over seed pairs at the largest ε is below
    `threshold`, layers). `match_scores` is (pairs, layers, ε values)."""
    scores = np.asarray(match_scores, dtype=float)
    loosest = scores[:, :, int(np.argmax(eps))].mean(axis=0)
    low = int(np.sum(loosest < threshold))
    return fraction_verdict(low, loosest.size, min_models=1), low, loosest.size  # layers, not models


def subspace_claim(match_scores: Sequence[Sequence[Sequence[float]]], eps: Sequence[float],
                   pairs: Sequence[Sequence[int]], rules: dict | None = None) -> dict:
    """Wang et al.'s claim (book/protocol.md, Chapter 7) as a verdict object: per layer, the maximum-match score at
    the loosest ε averaged over the seed pairs, with a bootstrap interval over seeds (`verdicts.seed_bootstrap`:
    a draw averages the pairs of distinct drawn seeds); a layer matches in fewer than half its neurons when its
    upper bound is below `subspace_half`. Shown when every layer does, partly shown when some do, not shown when
    none do (layers are not independent units: no interval over layers). `match_scores` is (pairs, layers, ε);
    `pairs` the seeds of each pair."""
    rules = rules or protocol.rules()
    scores = np.asarray(match_scores, dtype=float)[:, :, int(np.argmax(eps))]
    by_pair = {frozenset(map(int, pair)): row for pair, row in zip(pairs, scores)}
    seeds = sorted({int(s) for pair in pairs for s in pair})
    rule = "book/protocol.md, Chapter 7: a layer's upper bound (bootstrap over seeds) below subspace_half"
    if len(seeds) < 2:
        return verdicts.claim({"verdict": verdicts.NOT_TESTABLE, "n": scores.shape[1], "interval": None}, rule)

    def per_layer(drawn: list) -> np.ndarray:
        rows = [by_pair[frozenset((a, b))] for i, a in enumerate(drawn) for b in drawn[i + 1:] if a != b]
        return np.mean(rows, axis=0) if rows else np.full(scores.shape[1], np.nan)

    boot = verdicts.seed_bootstrap(seeds, per_layer, rules["pair_bootstrap_resamples"], rules["level"])
    low, high = boot["interval"]
    below = high < rules["subspace_half"]
    verdict = verdicts.fraction_verdict(int(below.sum()), len(below), min_models=1)
    if len(seeds) < rules["min_models"]:   # one pair: the interval is that pair's value, at most suggestive
        verdict = verdicts.suggestive(len(seeds)) if below.all() else verdicts.NOT_SHOWN
    return verdicts.claim({"verdict": verdict,
                           "n": len(below), "k": int(below.sum()), "interval": None,
                           "layer_means": boot["estimate"].tolist(),
                           "layer_intervals": [[float(a), float(b)] for a, b in zip(low, high)],
                           "seeds": len(seeds), "pairs": len(pairs), "undefined_resamples": boot["undefined"],
                           "test": f"bootstrap over {len(seeds)} seeds, per layer"}, rule)


def rank_sentence(rank_corr: float) -> str:
    """What a Spearman correlation of mean CKA with the ε for half the neurons says (high CKA, low ε: alike)."""
    if rank_corr <= -0.5:
        return "the two measures rank the layers alike (more similar under CKA, closer subspaces)"
    return "they rank the layers in opposite orders" if rank_corr >= 0.5 else "the rankings are only loosely related"


def truncation_sentence(top_cka: float, top_match: float) -> str:
    """How the measures react to keeping only a layer's top directions: 'hardly notices' is CKA >= 0.95, 'loses
    most neurons' a match below one half."""
    hardly_notices, loses_most = top_cka >= 0.95, top_match < 0.5
    return f"CKA is {top_cka:.3f} and the match {top_match:.2f}: " + (
        "CKA, which weights directions by their variance, hardly notices, while the match, which asks every neuron "
        "to lie within ε of the other span, loses most neurons" if hardly_notices and loses_most else
        "the match loses most neurons, and CKA drops too" if loses_most else
        "on this layer the two measures react alike")


def invariance_checks(model, images, layer: str, energy_kept: float, eps: float) -> dict:
    """Linear CKA and the match at `eps` between one layer's neurons and (a) an invertible mixing of its channels,
    (b) its top directions holding `energy_kept` of the uncentred energy: {"checks", "kept", "channels"}."""
    acts = subspace.neuron_matrix(capture_outputs(model, images, [layer])[0]).astype(np.float64)
    mix = np.random.default_rng(1).standard_normal((acts.shape[0], acts.shape[0])) + 2 * np.eye(acts.shape[0])
    u, s, vt = np.linalg.svd(acts, full_matrices=False)
    energy = np.cumsum(s ** 2) / np.sum(s ** 2)   # the share of the uncentred energy
    kept = int(np.searchsorted(energy, energy_kept)) + 1
    transformed = {"channels mixed by an invertible matrix": mix @ acts,
                   "only the top directions kept": (u[:, :kept] * s[:kept]) @ vt[:kept]}
    checks = {k: [float(cka.feature_space_linear_cka(acts.T, t.T)),
                  float(subspace.LayerPair.from_activations(acts, t).score(eps))] for k, t in transformed.items()}
    return {"checks": checks, "kept": kept, "channels": int(acts.shape[0])}


def simple_layers(scores: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` evenly spaced layers (indices) with a non-empty maximum match (a simple match lives inside it)."""
    candidates = np.flatnonzero(np.asarray(scores) > 0)
    if not candidates.size:
        return np.array([], int)
    return candidates[np.unique(np.linspace(0, len(candidates) - 1, count).round().astype(int))]


class MatchStudy:
    """Chapter 7 on a profile: the subspace match and CKA of Chapter 2's base model across its seeds."""

    def __init__(self, profile: Profile):
        self.profile, self.settings = profile, profile.subspace
        self.eps = list(self.settings.eps)
        self.runs = records.load_runs(profile, profiles.cka_base_grid(profile)[:-1])  # no plain control
        self.images = runs.cka_images(self.runs[0], self.settings.examples)
        self.layers = subspace.relu_layer_names(self.runs[0].architecture)  # no checkpoint needed
        self.pairs = list(itertools.combinations(range(len(self.runs)), 2))

    def pair_scores(self, run_a, run_b, layers: list[str]) -> tuple[dict, np.ndarray, np.ndarray]:
        """A pair's layers and channels, match scores (layers x eps) and the ε matching half the neurons (recorded)."""
        return runs.run_match_scores(run_a, run_b, self.images, self.settings.batch_size, layers, self.eps)

    def matched_cka(self, run_a, run_b) -> np.ndarray:
        """Linear CKA of each post-ReLU layer with the same layer of the other run, on the same images."""
        matrix = runs.run_cka(run_a, self.images, self.settings.batch_size, 1, run_b=run_b, layers=self.layers)
        return np.diagonal(matrix)

    def recorded(self, run_a, kind: str, compute, suffix: str = ".npz", **settings):
        """A record of `kind` in run_a's folder on this study's images, computed on a miss."""
        key = {"examples": runs.examples_key(self.images), "layers": self.layers, **settings}
        return run_a.record(kind, VERSIONS[kind], key, compute, suffix)

    # -- across seeds ----------------------------------------------------------------------------

    def across_seeds(self) -> dict[str, str]:
        """Every pair's scores (pairs, layers, eps), ε for half the neurons and CKA (pairs, layers)."""
        self.base = {p: self.pair_scores(self.runs[p[0]], self.runs[p[1]], self.layers) for p in self.pairs}
        self.scores = np.stack([self.base[p][1] for p in self.pairs])
        self.half_eps = np.stack([self.base[p][2] for p in self.pairs])
        self.cka = np.stack([self.matched_cka(self.runs[i], self.runs[j]) for i, j in self.pairs])
        self.by_eps = self.scores.mean(axis=(0, 1))
        low_eps, half = self.scores[:, :, 0].mean(0), self.half_eps.mean(0)
        lowest, highest = int(np.nanargmin(half)), int(np.nanargmax(half))
        return {"examples": str(self.settings.examples),
                "score_by_eps": ", ".join(f"{s:.2f} at ε = {e:g}" for e, s in zip(self.eps, self.by_eps)),
                "cka_mean": f"{self.cka.mean():.2f}", "cka_min": f"{self.cka.min():.2f}",
                "low_eps": f"{self.eps[0]:g}", "low_eps_range": f"{low_eps.min():.2f}–{low_eps.max():.2f}",
                "half_eps_range": f"{half[lowest]:.2f} ({self.layers[lowest]}) to "
                                  f"{half[highest]:.2f} ({self.layers[highest]})"}

    def verdict(self) -> dict[str, str]:
        """Wang et al.'s finding, layer by layer, at the loosest ε: the verdict the claims table shows."""
        seeds = [[self.runs[i].config.seed, self.runs[j].config.seed] for i, j in self.pairs]
        self.claim = subspace_claim(self.scores, self.eps, seeds)
        self.wang_verdict = self.claim["verdict"]
        loosest = int(np.argmax(self.eps))
        bounds = self.claim.get("layer_intervals") or [[np.nan, np.nan]] * len(self.layers)
        high = [f"{name} ({score:.2f}, upper bound {bound[1]:.2f})" for name, score, bound in
                zip(self.layers, self.scores[:, :, loosest].mean(0), bounds) if not bound[1] < 0.5]
        return {"wang_verdict": self.wang_verdict, "low_layers": f"{self.claim.get('k', 0)} of {len(self.layers)}",
                "loose_eps": f"{self.eps[loosest]:g}", "wang_n": verdicts.describe(self.claim),
                "high_layers": ", ".join(high) or "none"}

    # -- the authors' sampling -------------------------------------------------------------------

    def sampling(self) -> dict[str, str]:
        """The first pair's scores from the authors' sampled coordinates against the exact Grams."""
        run_a, run_b = (self.runs[i] for i in self.pairs[0])

        def compute():
            sampled = subspace.model_neuron_moments(
                run_a.model, run_b.model, self.images.images, self.layers, batch_size=self.settings.batch_size,
                n_samples=self.settings.samples, draws=self.settings.draws, seed=0)
            return {"scores": subspace.moment_match_scores(sampled, self.eps)}

        self.sampled = self.recorded(run_a, "match_sampled", compute, b=run_b.name, batch=self.settings.batch_size,
                                   samples=self.settings.samples, draws=self.settings.draws, seed=0,
                                   eps=self.eps)["scores"]
        self.exact = self.base[self.pairs[0]][1]
        self.gap = np.abs(self.sampled - self.exact)
        return {"n_samples": f"{self.settings.samples:,}", "n_draws": str(self.settings.draws),
                "paper_samples": f"{subspace.PAPER_SAMPLES:,}", "paper_draws": str(subspace.PAPER_DRAWS),
                "sampling_gap": f"{self.gap.mean():.3f} (largest {self.gap.max():.3f})"}

    # -- simple matches --------------------------------------------------------------------------

    def simple_matches(self) -> dict[str, str]:
        """Simple-match sizes of a few neurons in evenly spaced layers of the first pair whose maximum match is not
        empty (a simple match lives inside it)."""
        eps, settings = self.settings.simple_eps, self.settings
        self.simple_n_a = self.base[self.pairs[0]][0]["n_a"]
        run_a, run_b = (self.runs[i] for i in self.pairs[0])

        def compute():
            grams = runs.neuron_grams(run_a, run_b, self.images, settings.batch_size, self.layers)
            pairs = [subspace.LayerPair.from_gram(g, n) for g, n in zip(grams["grams"], grams["n_a"])]
            scores = np.array([pair.score(eps) for pair in pairs])
            sizes = {self.layers[i]: [int(size) for size in pairs[i].simple_match_sizes(
                eps, max_neurons=settings.simple_neurons, seed=0)["sizes"]]
                for i in simple_layers(scores, settings.simple_layers)}
            return {"scores": scores.tolist(), "sizes": sizes}

        stored = self.recorded(run_a, "match_simple", compute, ".json", b=run_b.name, batch=settings.batch_size,
                               eps=eps, simple_layers=settings.simple_layers, neurons=settings.simple_neurons, seed=0)
        self.simple_scores = np.array(stored["scores"])
        candidates = np.flatnonzero(self.simple_scores > 0)
        self.simple_chosen = simple_layers(self.simple_scores, settings.simple_layers)
        self.simple_sizes = stored["sizes"]
        sizes = [s for per_layer in self.simple_sizes.values() for s in per_layer]
        return {"simple_eps_text": f"{eps:g}", "simple_candidates": f"{candidates.size} of {len(self.layers)}",
                "simple_summary": f"median {np.median(sizes):.0f}, range {min(sizes)}–{max(sizes)} neurons"
                if sizes else "none (the maximum matches are empty)"}

    # -- where the measures disagree -------------------------------------------------------------

    def disagreement(self) -> dict[str, str]:
        """Spearman correlation over layers of CKA with the ε for half the neurons, and both measures on one real
        layer after (a) an invertible mixing of its channels, (b) keeping only its top directions.

        CKA here treats the example x position coordinates as observations and the channels as features, the same
        vectors the match uses (the feature-space form: no n x n Gram over ~10^5 coordinates)."""
        half, cka_by_layer = self.half_eps.mean(0), self.cka.mean(0)
        self.rank_corr = stats.spearmanr(cka_by_layer, half).statistic if len(self.layers) > 2 else float("nan")
        self.layer = self.layers[len(self.layers) // 2]
        run_a = self.runs[self.pairs[0][0]]
        stored = self.recorded(run_a, "match_invariance", lambda: invariance_checks(
            run_a.model, self.images.images, self.layer, self.settings.energy_kept, self.eps[0]), ".json",
            layer=self.layer, energy_kept=self.settings.energy_kept, eps=self.eps[0], mix_seed=1)
        self.kept, channels = stored["kept"], stored["channels"]
        self.checks = {k: tuple(v) for k, v in stored["checks"].items()}
        (mix_cka, _), (top_cka, top_match) = self.checks.values()
        return {"rank_corr": f"{self.rank_corr:+.2f}", "rank_sentence": rank_sentence(self.rank_corr),
                "mix_cka": f"{mix_cka:.2f}", "trunc_keep": f"{self.kept} of {channels}",
                "probe_layer": self.layer, "energy_kept": f"{self.settings.energy_kept:.0%}",
                "trunc_sentence": truncation_sentence(top_cka, top_match)}

    # -- the block under the match ---------------------------------------------------------------

    def block_match(self, seed_models: list[BlockAnalysis]) -> dict[str, str]:
        """Every seed-study model with a block against each other seed: match at the loosest ε and the ε for half
        the neurons, inside and outside its own block (as Chapter 4 splits CKA by each seed's own block)."""
        self.block: dict[str, dict] = {}
        sentences = []
        for owner in (m for m in seed_models if m.block is not None):
            names = [layer.name for layer in owner.run.layers()]
            layers = subspace.relu_layer_names(owner.run.architecture)
            positions = np.array([names.index(n) for n in layers])
            inside = (positions >= owner.block.start) & (positions <= owner.block.end)
            rows = []
            for other in (m for m in seed_models if m is not owner):
                _, scores, half_eps = self.pair_scores(owner.run, other.run, layers)
                top = scores[:, -1]
                rows.append({"other_seed": other.run.config.seed, "score_inside": float(top[inside].mean()),
                             "score_outside": float(top[~inside].mean()),
                             "half_eps_inside": float(np.nanmean(half_eps[inside])),
                             "half_eps_outside": float(np.nanmean(half_eps[~inside])), "scores": scores,
                             "half_eps": half_eps})
            keys = ("score_inside", "score_outside", "half_eps_inside", "half_eps_outside")
            b = {"seed": owner.run.config.seed, "eps": self.eps[-1],
                 **{key: float(np.mean([r[key] for r in rows])) for key in keys}, "pairs": rows}
            self.block[owner.run.config.name()] = b
            farther = b["half_eps_inside"] > b["half_eps_outside"]
            sentences.append(
                f"{owner.label} matches the other seeds in {b['score_inside']:.2f} of the neurons inside its block and "
                f"{b['score_outside']:.2f} outside (ε = {b['eps']:g}); half the neurons match at ε = "
                f"{b['half_eps_inside']:.2f} inside against {b['half_eps_outside']:.2f} outside, so the block's "
                "subspaces are " + ("farther from the other seeds' than the rest of the network's" if farther else
                                    "no farther from the other seeds' than the rest of the network's"))
        return {"block_sentence": "; ".join(sentences) + " (Chapter 4 asks the same question under CKA)"
                if sentences else "no seed has a block, so this profile cannot ask"}

    # -- the record ------------------------------------------------------------------------------

    def record(self, planted: dict) -> dict:
        """The chapter's results payload (`widedeep.book.results`); `planted` holds the planted example's numbers."""
        return {
            "settings": self.profile.section_values("subspace"), "planted": planted,
            "base": {"models": [r.config.name() for r in self.runs], "layers": self.layers, "eps": self.eps,
                     "pairs": [[self.runs[i].config.seed, self.runs[j].config.seed] for i, j in self.pairs],
                     "match_scores": self.scores, "linear_cka": self.cka, "mean_score_by_eps": self.by_eps},
            "sampling": {"pair": list(self.pairs[0]), "n_samples": self.settings.samples,
                         "draws": self.settings.draws, "exact": self.exact, "sampled": self.sampled,
                         "mean_abs_gap": float(self.gap.mean()), "max_abs_gap": float(self.gap.max())},
            "simple_matches": {"eps": self.settings.simple_eps, "sizes": self.simple_sizes},
            "disagreement": {"spearman_cka_vs_match": self.rank_corr, "layer": self.layer,
                             "checks": {k: {"linear_cka": c, "match": m} for k, (c, m) in self.checks.items()},
                             "kept_directions": self.kept},
            "block": self.block, "verdicts": {"wang_low_match": self.wang_verdict},
            "claims": {"wang_low_match": self.claim}}
