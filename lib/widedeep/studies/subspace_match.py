"""Chapter 7's study (book/07_subspace_match.md): the subspace match of Wang et al. beside CKA on the book's models.

Layer: studies (on `widedeep.measures.subspace`, `analyses.matching` for the claim and the record kinds,
the run records of `analyses.runs`). `models(profile)` reads Chapter 2's base model over its seeds and
the seed study's analysed models from their records; `study(models, settings)` takes them and the
profile's `Subspace` section and returns `SubspaceMatchResult`: the planted example, every post-ReLU
layer's maximum-match scores for every seed pair beside linear CKA, Wang et al.'s finding judged, the
exact Grams against the authors' sampled protocol, simple-match sizes, where the measures disagree on
one real layer, and each blocked seed's block under the match. Its stored fields are
`results/<profile>/07_subspace_match.json`; what a step reads from a run is a record (scores, not
Grams), so the chapter builds without a checkpoint where its records are present.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from widedeep import experiments, records
from widedeep.analyses import checks, matching, runs, structure
from widedeep.analyses.structure import BlockAnalysis
from widedeep.measures import cka, subspace
from widedeep.profiles import Profile, Subspace
from widedeep.studies import drawn, section_values
from widedeep.train import TrainConfig

CHAPTER = "07_subspace_match"


@dataclass(frozen=True)
class Models:
    """Chapter 7's runs: Chapter 2's base model over its seeds (no plain control) and the seed study, analysed."""

    seeds: tuple[records.Run, ...]
    seed_study: tuple[BlockAnalysis, ...]


def configs(profile: Profile) -> list[TrainConfig]:
    """The runs Chapter 7 reads: Chapter 2's base model over its seeds (no plain control) and the seed study."""
    return experiments.cka_base_grid(profile)[:-1] + experiments.seed_study_grid(profile)


def models(profile: Profile) -> Models:
    """The chapter's runs, read through their records."""
    return Models(tuple(records.load_runs(profile, experiments.cka_base_grid(profile)[:-1])),
                  tuple(structure.analyse_all(experiments.seed_study_grid(profile), profile)))


@dataclass(frozen=True)
class SubspaceMatchResult:
    """Chapter 7's results: the stored fields are `07_subspace_match.json`'s keys, in order; the drawn ones feed
    the page (named as its tables and figures read them)."""

    settings: dict                   # the profile's subspace_* keys
    planted: dict                    # the planted example: score, and an invertible mixing under both measures
    base: dict                       # every seed pair's scores (pairs, layers, ε) and linear CKA (pairs, layers)
    sampling: dict                   # the authors' sampled coordinates against the exact Grams, first pair
    simple_matches: dict
    disagreement: dict               # rank correlation over layers, both measures on one transformed real layer
    block: dict                      # per blocked seed: the match inside and outside its block, against each seed
    verdicts: dict
    claims: dict
    section: Subspace = drawn()
    models: Models = drawn()
    planted_matches: tuple = drawn()                 # per ε: the planted pair's maximum match (indices a, b)
    eps: list[float] = drawn()
    layers: list[str] = drawn()                      # the post-ReLU layers
    pairs: list[tuple[int, int]] = drawn()           # seed pairs, as indices into models.seeds
    channels: list[int] = drawn()                    # channels of each layer (first pair)
    scores: np.ndarray = drawn()                     # (pairs, layers, ε)
    half_eps: np.ndarray = drawn()                   # (pairs, layers): ε that matches half the neurons
    cka: np.ndarray = drawn()                        # (pairs, layers): linear CKA of each layer with its counterpart
    by_eps: np.ndarray = drawn()
    claim: dict = drawn()
    exact: np.ndarray = drawn()
    sampled: np.ndarray = drawn()
    gap: np.ndarray = drawn()
    simple_scores: np.ndarray = drawn()
    simple_chosen: np.ndarray = drawn()
    simple_sizes: dict[str, list[int]] = drawn()
    simple_n_a: list[int] = drawn()
    rank_corr: float = drawn()
    layer: str = drawn()                             # the real layer the invariances are shown on
    kept: int = drawn()
    layer_channels: int = drawn()
    checks: dict[str, tuple[float, float]] = drawn()   # transformation -> (linear CKA, match)
    block_labels: dict[str, str] = drawn()           # run name of a blocked seed -> its label


def planted_example(eps: list[float]) -> tuple[dict, tuple]:
    """The planted layers (`checks.planted_layers`, seeded 0): the pair's score at the smallest ε, an invertible
    mixing of the shared neurons under the match and linear CKA, and the maximum match at every ε."""
    layers = checks.planted_layers(np.random.default_rng(0))
    a, b, shared, mixing = (layers[k] for k in ("a", "b", "shared", "mixing"))
    pair = subspace.LayerPair.from_activations(a, b)
    found = {"score": pair.score(eps[0]),
             "mixed_match": subspace.LayerPair.from_activations(shared, mixing @ shared).score(0.0),
             "mixed_cka": cka.feature_space_linear_cka(shared.T, (mixing @ shared).T)}   # samples as rows
    return found, tuple(tuple(list(idx) for idx in pair.maximum_match(e)) for e in eps)


def _block_rows(owner: BlockAnalysis, others: list[BlockAnalysis], images, settings: Subspace, eps: list) -> dict:
    """One blocked seed against each other seed: match at the loosest ε and the ε for half the neurons, inside
    and outside its own block (as Chapter 4 splits CKA by each seed's own block)."""
    names = [layer.name for layer in owner.run.layers()]
    layers = subspace.relu_layer_names(owner.run.architecture)
    positions = np.array([names.index(n) for n in layers])
    inside = (positions >= owner.block.start) & (positions <= owner.block.end)
    rows = []
    for other in others:
        _, scores, half_eps = runs.run_match_scores(owner.run, other.run, images, settings.batch_size, layers, eps)
        top = scores[:, -1]
        rows.append({"other_seed": other.run.config.seed, "score_inside": float(top[inside].mean()),
                     "score_outside": float(top[~inside].mean()),
                     "half_eps_inside": float(np.nanmean(half_eps[inside])),
                     "half_eps_outside": float(np.nanmean(half_eps[~inside])), "scores": scores, "half_eps": half_eps})
    keys = ("score_inside", "score_outside", "half_eps_inside", "half_eps_outside")
    means = {key: float(np.mean([r[key] for r in rows])) for key in keys}
    return {"seed": owner.run.config.seed, "eps": eps[-1], **means, "pairs": rows}


def study(models: Models, settings: Subspace) -> SubspaceMatchResult:
    """Chapter 7 on Chapter 2's base seeds and the seed study: every step of the match, judged, in one call."""
    s, eps, seeds = settings, list(settings.eps), list(models.seeds)
    planted, planted_matches = planted_example(eps)
    images = runs.cka_images(seeds[0], s.examples)
    layers = subspace.relu_layer_names(seeds[0].architecture)   # no checkpoint needed
    pairs = list(itertools.combinations(range(len(seeds)), 2))

    def recorded(run_a, kind: str, compute, suffix: str = ".npz", **key):
        """A record of `kind` in run_a's folder on this study's images, computed on a miss."""
        return run_a.record(kind, matching.VERSIONS[kind], {"examples": runs.examples_key(images), "layers": layers,
                                                            **key}, compute, suffix)

    # across seeds: every pair's scores, the ε for half the neurons, linear CKA of each layer with its counterpart
    base = {p: runs.run_match_scores(seeds[p[0]], seeds[p[1]], images, s.batch_size, layers, eps) for p in pairs}
    scores = np.stack([base[p][1] for p in pairs])
    half_eps = np.stack([base[p][2] for p in pairs])
    matched_cka = np.stack([np.diagonal(runs.run_cka(seeds[i], images, s.batch_size, 1, run_b=seeds[j], layers=layers))
                            for i, j in pairs])
    seed_pairs = [[seeds[i].config.seed, seeds[j].config.seed] for i, j in pairs]
    claim = matching.subspace_claim(scores, eps, seed_pairs)

    # the authors' sampled coordinates against the exact Grams, on the first pair
    run_a, run_b = (seeds[i] for i in pairs[0])

    def sample():
        moments = subspace.model_neuron_moments(run_a.model, run_b.model, images.images, layers,
                                                batch_size=s.batch_size, n_samples=s.samples, draws=s.draws, seed=0)
        return {"scores": subspace.moment_match_scores(moments, eps)}

    sampled = recorded(run_a, "match_sampled", sample, b=run_b.name, batch=s.batch_size, samples=s.samples,
                       draws=s.draws, seed=0, eps=eps)["scores"]
    exact = base[pairs[0]][1]
    gap = np.abs(sampled - exact)

    # simple matches of a few neurons in evenly spaced layers whose maximum match is not empty
    def simple():
        grams = runs.neuron_grams(run_a, run_b, images, s.batch_size, layers)
        layer_pairs = [subspace.LayerPair.from_gram(g, n) for g, n in zip(grams["grams"], grams["n_a"])]
        found = np.array([pair.score(s.simple_eps) for pair in layer_pairs])
        sizes = {layers[i]: [int(size) for size in layer_pairs[i].simple_match_sizes(
            s.simple_eps, max_neurons=s.simple_neurons, seed=0)["sizes"]] for i in matching.simple_layers(
            found, s.simple_layers)}
        return {"scores": found.tolist(), "sizes": sizes}

    simple_record = recorded(run_a, "match_simple", simple, ".json", b=run_b.name, batch=s.batch_size,
                             eps=s.simple_eps, simple_layers=s.simple_layers, neurons=s.simple_neurons, seed=0)
    simple_scores = np.array(simple_record["scores"])

    # where the measures disagree: ranks over layers, and one real layer transformed
    rank_corr = (stats.spearmanr(matched_cka.mean(0), half_eps.mean(0)).statistic if len(layers) > 2
                 else float("nan"))
    layer, owner = layers[len(layers) // 2], seeds[pairs[0][0]]
    invariance = recorded(owner, "match_invariance", lambda: matching.invariance_checks(
        owner.model, images.images, layer, s.energy_kept, eps[0]), ".json", layer=layer, energy_kept=s.energy_kept,
        eps=eps[0], mix_seed=1)
    transformed = {k: tuple(v) for k, v in invariance["checks"].items()}

    # the block under the match: each blocked seed of the seed study against each other seed
    blocked = [m for m in models.seed_study if m.block is not None]
    block = {m.run.config.name(): _block_rows(m, [o for o in models.seed_study if o is not m], images, s, eps)
             for m in blocked}
    return SubspaceMatchResult(
        settings=section_values(s), planted=planted,
        base={"models": [r.config.name() for r in seeds], "layers": layers, "eps": eps, "pairs": seed_pairs,
              "match_scores": scores, "linear_cka": matched_cka, "mean_score_by_eps": scores.mean(axis=(0, 1))},
        sampling={"pair": list(pairs[0]), "n_samples": s.samples, "draws": s.draws, "exact": exact,
                  "sampled": sampled, "mean_abs_gap": float(gap.mean()), "max_abs_gap": float(gap.max())},
        simple_matches={"eps": s.simple_eps, "sizes": simple_record["sizes"]},
        disagreement={"spearman_cka_vs_match": rank_corr, "layer": layer,
                      "checks": {k: {"linear_cka": c, "match": m} for k, (c, m) in transformed.items()},
                      "kept_directions": invariance["kept"]},
        block=block, verdicts={"wang_low_match": claim["verdict"]}, claims={"wang_low_match": claim},
        section=s, models=models, planted_matches=planted_matches, eps=eps, layers=layers, pairs=pairs,
        channels=base[pairs[0]][0]["n_a"], scores=scores, half_eps=half_eps, cka=matched_cka,
        by_eps=scores.mean(axis=(0, 1)), claim=claim, exact=exact, sampled=sampled, gap=gap,
        simple_scores=simple_scores, simple_chosen=matching.simple_layers(simple_scores, s.simple_layers),
        simple_sizes=simple_record["sizes"], simple_n_a=base[pairs[0]][0]["n_a"], rank_corr=rank_corr, layer=layer,
        kept=invariance["kept"], layer_channels=invariance["channels"], checks=transformed,
        block_labels={m.run.config.name(): m.label for m in blocked})


RESULT = SubspaceMatchResult
MODEL_TABLES = ()
VERDICTS = ("verdicts.*",)
