"""Chapter 2's study as a function: planted heatmaps as the runs' records, a typed result out."""

import types

import numpy as np
import pytest

from widedeep import profiles
from widedeep.analyses import checks, runs
from widedeep.book import results
from widedeep.studies import cka, stored

SMOKE = profiles.load_profile("smoke")
KINDS = ["stem", "stream", "inside", "stream", "inside", "stream", "head"]


def fake_run(name: str):
    """A run as the study reads it: a name and its layers' kinds (its heatmaps are planted below)."""
    return types.SimpleNamespace(config=types.SimpleNamespace(name=lambda: name), layers=lambda: KINDS)


@pytest.fixture
def planted(monkeypatch):
    """Residual heatmap with a checkerboard (stream layers alike), a plain one without; cross-model heatmaps."""
    kinds = np.array(KINDS)
    stream = (kinds == "stream")[:, None] & (kinds == "stream")[None, :]
    heatmaps = {"residual": np.where(stream, 0.9, 0.3), "plain": np.full((7, 7), 0.3)}
    for matrix in heatmaps.values():
        np.fill_diagonal(matrix, 1.0)

    def run_cka(run_a, images, batch_size, passes, run_b=None, **_):
        if run_b is None:
            return heatmaps["plain" if run_a.config.name() == "plain" else "residual"]
        return np.full((7, 9 if run_b.config.name() == "deep" else 7), 0.5)

    monkeypatch.setattr(runs, "cka_images", lambda run, examples: None)
    monkeypatch.setattr(runs, "run_cka", run_cka)
    return cka.Models((fake_run("s0"), fake_run("s1"), fake_run("s2")), fake_run("plain"), fake_run("wide"),
                      fake_run("deep"))


def test_the_cka_study_checks_cka_then_reads_the_runs(planted):
    result = cka.study(planted, SMOKE.cka)
    assert all(result.property_checks[k] == pytest.approx(1, abs=1e-10) for k in checks.CKA_INVARIANT_TO)
    assert result.one_batch[0] == pytest.approx(result.one_batch[1], abs=1e-10)
    assert set(result.minibatch_error_by_batch_size) == set(cka.BATCH_SIZES)
    assert result.checkerboard_contrast == pytest.approx({"residual": 0.6, "plain": 0.0})
    assert result.checkerboard_verdict.startswith("a clear checkerboard")
    assert len(result.pairs) == 3 and result.cross_seed_matched_mean_per_pair == pytest.approx([0.5] * 3)
    assert result.wide_deep.shape == (7, 9) and result.wide_vs_deep_relative_depth_mean == pytest.approx(0.5)
    assert result.run_roles == {"residual": "s0", "plain": "plain", "wide": "wide", "deep": "deep",
                                "seeds": ["s0", "s1", "s2"]}


def test_the_result_is_the_schema_and_the_same_whatever_ran_before(planted):
    first = cka.study(planted, SMOKE.cka)
    cka.study(planted, profiles.with_values(SMOKE, cka_examples=400).cka)   # another study in between
    np.testing.assert_equal(stored(first), stored(cka.study(planted, SMOKE.cka)))
    assert tuple(stored(first)) == results.CHAPTERS[cka.CHAPTER].keys
    assert [stored(first)[k] for k in ("cka_examples", "cka_batch_size", "cka_passes")] == list(
        SMOKE.section_values("cka").values())
