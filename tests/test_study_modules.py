"""Every study module follows the one shape a newcomer can rely on (CONTRIBUTING.md, "A chapter")."""

import dataclasses
import inspect
from pathlib import Path

from widedeep import studies
from widedeep.book import results

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_each_study_is_named_as_its_chapter_and_declares_its_schema():
    found = studies.chapters()
    assert found, "no study module found"
    for chapter, module in found.items():
        assert (BOOK / f"{chapter}.md").exists(), f"{module.__name__}: no page book/{chapter}.md"
        assert module.__name__ == f"widedeep.studies.{chapter[3:]}", f"{chapter} is studied in {module.__name__}"
        assert dataclasses.is_dataclass(module.RESULT) and module.RESULT.__dataclass_params__.frozen, chapter
        assert list(inspect.signature(module.study).parameters)[-1] == "settings", chapter
        assert inspect.signature(module.study).return_annotation in (module.RESULT.__name__, module.RESULT)
        stored = studies.stored_keys(module.RESULT)
        assert set(module.MODEL_TABLES) <= set(stored), chapter
        assert results.CHAPTERS[chapter].keys == stored        # the results schema is the result's stored fields


def test_drawn_fields_stay_out_of_the_results_file():
    @dataclasses.dataclass(frozen=True)
    class Result:
        kept: int
        shown: list = studies.drawn()

    assert studies.stored_keys(Result) == ("kept",) and studies.stored(Result(1, [2])) == {"kept": 1}


def test_each_study_declares_the_runs_its_chapter_reads():
    """`configs(profile)` of every study, together, are the profile's required runs (the pipeline trains those)."""
    from widedeep import experiments, pipeline, profiles

    for name in ("smoke", "cpu"):
        profile = profiles.load_profile(name)
        declared = {c for module in studies.chapters().values() for c in module.configs(profile)}
        assert declared == set(experiments.required_runs(profile)), name
        assert pipeline.chapter_runs(profile)["06_errors"] == [
            c for side in experiments.errors_grid(profile).values() for c in side]
