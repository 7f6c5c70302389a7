"""Chapter 4's study as a function: planted analysed runs in, a typed result out, the same whatever ran before."""

import numpy as np
import pytest

from test_structure import PARAMS, analysed
from widedeep import profiles
from widedeep.analyses import first_pc
from widedeep.book import results
from widedeep.studies import pca, stored

SMOKE = profiles.load_profile("smoke")


@pytest.fixture
def planted_records(monkeypatch):
    """Two seeds of the planted layout (seed 0 with a block, seed 1 without) and the records the study reads."""
    blocked, unblocked = analysed(0), analysed(1, with_block=False)
    faded = np.where(blocked.stream_cka == 0.97, 0.6, blocked.stream_cka)   # the first PC carried the block
    monkeypatch.setattr(first_pc, "without_first_pc", lambda m, cka: faded if m is blocked else m.stream_cka)
    monkeypatch.setattr(first_pc, "pc1_similarity", lambda m, cka: np.eye(len(m.stream)))
    diagonal = np.where(np.isin(np.arange(len(blocked.stream)), np.arange(2, 6)), 0.3, 0.9)
    monkeypatch.setattr(first_pc, "cross_seed", lambda models, cka: {(0, 1): np.diag(diagonal)})
    settings = pca.Settings(SMOKE.cka, PARAMS, None, {m.run.config.name(): "seed_study" for m in (blocked, unblocked)},
                            tuple(m.run.config.name() for m in (blocked, unblocked)))
    return [blocked, unblocked], settings


def test_the_pca_study_finds_the_planted_block_and_its_first_pc(planted_records):
    models, settings = planted_records
    result = pca.study(models, settings)
    blocked = models[0].run.config.name()
    assert result.blocks_broken == [blocked] and [m.run.config.name() for m in result.broken] == [blocked]
    assert result.focus() == [models[0]] and list(result.pc1_similarity) == [blocked]
    assert result.cross_split == {0: pytest.approx((0.3, 0.9))}
    assert result.models[blocked]["cross_seed_pairs"] == {"1": pytest.approx([0.3, 0.9])}
    assert result.claims["first_pc"]["verdict"].startswith("not testable")   # PARAMS finds blocks with a PC1 rule


def test_the_result_is_the_results_schema_and_the_same_whatever_ran_before(planted_records):
    models, settings = planted_records
    first = pca.study(models, settings)
    pca.study(models[::-1], settings)                   # another call, in another order, in between
    again = pca.study(models, settings)
    np.testing.assert_equal(stored(first), stored(again))   # NaN (no block) equals NaN
    assert tuple(stored(first)) == results.CHAPTERS[pca.CHAPTER].keys   # fields, in order, are the file's keys
    with pytest.raises(AttributeError):
        first.claims = {}                                                 # frozen
