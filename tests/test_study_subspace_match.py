"""Chapter 7's study as a function: canned records of three seeds in, a typed result out, whatever ran before."""

import types

import numpy as np
import pytest

from widedeep import profiles
from widedeep.analyses import runs
from widedeep.book import results, sentences
from widedeep.measures import subspace
from widedeep.studies import stored, subspace_match

SMOKE = profiles.load_profile("smoke")
LAYERS = [f"relu{i}" for i in range(5)]
EPS = SMOKE.subspace.eps


def fake_run(seed: int):
    """A run as the study reads it: its name, seed and records (the canned values below), never its model."""
    canned = {"match_sampled": {"scores": np.full((5, len(EPS)), 0.25)},
              "match_simple": {"scores": [0.0, 0.5, 0.0, 0.4, 0.3], "sizes": {"relu1": [2, 4], "relu4": [3]}},
              "match_invariance": {"checks": {"mixed": [0.7, 1.0], "top directions": [0.97, 0.2]}, "kept": 3,
                                   "channels": 8}}
    config = types.SimpleNamespace(seed=seed, name=lambda: f"s{seed}")
    return types.SimpleNamespace(name=f"s{seed}", config=config, architecture=None,
                                 record=lambda kind, version, key, compute, suffix=".npz": canned[kind])


@pytest.fixture
def seeds(monkeypatch):
    """Three seeds whose pairs match in 0.2 of each layer's neurons at every ε, CKA 0.9 between the same layers."""
    def match_scores(run_a, run_b, images, batch_size, layers, eps):
        scores = np.tile(np.linspace(0.1, 0.3, len(eps)), (len(layers), 1))
        return {"names": layers, "n_a": [8] * len(layers)}, scores, np.full(len(layers), 0.6)

    monkeypatch.setattr(runs, "cka_images", lambda run, examples: types.SimpleNamespace(images=None))
    monkeypatch.setattr(runs, "examples_key", lambda images: "planted")
    monkeypatch.setattr(runs, "run_match_scores", match_scores)
    monkeypatch.setattr(runs, "run_cka", lambda a, images, batch, passes, run_b, layers: np.full((5, 5), 0.9))
    monkeypatch.setattr(subspace, "relu_layer_names", lambda architecture: LAYERS)
    return subspace_match.Models(tuple(fake_run(s) for s in range(3)), ())


def test_the_planted_example_recovers_the_planted_neurons():
    planted, matches = subspace_match.planted_example(EPS)
    assert planted["score"] == 12 / 22 and planted["mixed_match"] == 1.0 and planted["mixed_cka"] < 0.95
    assert all([list(idx) for idx in match] == [list(range(6))] * 2 for match in matches)


def test_the_match_study_reads_its_records_and_judges_wangs_finding(seeds):
    result = subspace_match.study(seeds, SMOKE.subspace)
    assert len(result.pairs) == 3 and result.scores.shape == (3, 5, len(EPS)) and np.all(result.cka == 0.9)
    assert result.claims["wang_low_match"]["verdict"] == result.verdicts["wang_low_match"]
    assert result.gap.max() == pytest.approx(0.15)          # sampled 0.25 against exact 0.1 at the smallest ε
    assert list(result.simple_chosen) == [1, 4] and result.kept == 3
    assert sentences.subspace_block(result)["block_sentence"].startswith("no seed has a block")
    assert "loses most neurons" in sentences.subspace_disagreement(result)["trunc_sentence"]


def test_the_result_is_the_schema_and_the_same_whatever_ran_before(seeds):
    first = subspace_match.study(seeds, SMOKE.subspace)
    subspace_match.study(subspace_match.Models(seeds.seeds[:2], ()), SMOKE.subspace)
    np.testing.assert_equal(stored(first), stored(subspace_match.study(seeds, SMOKE.subspace)))
    assert tuple(stored(first)) == results.CHAPTERS[subspace_match.CHAPTER].keys
    assert stored(first)["settings"] == SMOKE.section_values("subspace")
