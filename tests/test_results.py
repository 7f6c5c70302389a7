"""The results schema: every committed results file follows it, and bad payloads are refused before writing."""

import json
from pathlib import Path

import numpy as np
import pytest

from widedeep import profiles, protocol
from widedeep.book import results

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "results").glob("*/*.json"))
NAME = "fmnist16-resnet20x1-n500-s0-1a2b3c4d"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_results_file_follows_the_schema(path):
    document = results.read(path)
    assert document["schema_version"] == results.SCHEMA_VERSION
    assert path.stem in results.CHAPTERS


def test_the_committed_cpu_results_cover_every_chapter_from_one_run():
    """The published cpu run: every chapter's results, all written under one protocol hash."""
    committed = {p.stem: results.read(p) for p in COMMITTED if p.parent.name == "cpu"}
    assert set(committed) == set(results.CHAPTERS)
    assert len({results.run_of(document) for document in committed.values()}) == 1


def test_files_of_earlier_schemas_are_refused_with_what_to_do():
    for version in (1, 2, None):
        with pytest.raises(results.SchemaError, match=rf"schema_version is {version}, this code reads 3; rebuild"):
            results.validate(minimal("06_errors", schema_version=version), "06_errors")
    without_protocol = minimal("06_errors")
    del without_protocol["provenance"]["protocol"]
    with pytest.raises(results.SchemaError, match="provenance must hold"):
        results.validate(without_protocol, "06_errors")


CLAIM = {"verdict": "shown", "n": 5, "mean": 0.1, "interval": [0.05, 0.15], "rule": "book/protocol.md, Chapter 4"}


def test_judging_chapters_need_their_verdict_objects():
    document = minimal("04_pca")
    del document["claims"]
    with pytest.raises(results.SchemaError, match=r"lacks \['claims'\]"):
        results.validate(document, "04_pca")
    results.validate(minimal("04_pca", claims={"seeds_unique": CLAIM}), "04_pca")


@pytest.mark.parametrize("claim, message", [
    ({**CLAIM, "verdict": "probably"}, "is not a verdict"),
    ({k: v for k, v in CLAIM.items() if k != "n"}, "a verdict object holds"),
    ({k: v for k, v in CLAIM.items() if k != "rule"}, "a verdict object holds"),
    ({**CLAIM, "n": -1}, "not a count"),
    ({**CLAIM, "interval": [0.1]}, "neither None nor"),
    ({**CLAIM, "rule": ""}, "name the rule"),
])
def test_verdict_objects_off_the_schema_are_refused(claim, message):
    with pytest.raises(results.SchemaError, match=message):
        results.validate(minimal("04_pca", claims={"seeds_unique": claim}), "04_pca")


def minimal(chapter: str, **changes) -> dict:
    """A valid document of `chapter` with placeholder values (one model where it keeps a table of models)."""
    schema = results.CHAPTERS[chapter]
    document = {"schema_version": results.SCHEMA_VERSION,
                "provenance": {k: "x" for k in results.PROVENANCE_KEYS},
                **{key: {} for key in schema.keys}}
    for table in schema.model_tables:
        document[table] = {NAME: {"depth": 20, "width": 1, "n_train": 500, "seed": 0}}
    document.update(changes)
    return document


def test_a_valid_document_passes_and_its_label_is_derived():
    results.validate(minimal("03_block_structure", trends={"capacity": "shown", "data": "partly shown"}),
                     "03_block_structure")
    assert results.label({"depth": 20, "width": 1, "n_train": 500, "seed": 0}) == "ResNet-20 ×1, n=500, s0"


@pytest.mark.parametrize("change, message", [
    ({"schema_version": None}, "schema_version is None"),
    ({"models": [{"name": NAME}]}, "models must map run names"),
    ({"models": {"ResNet-20 ×1, n=500, s0": {"depth": 20, "width": 1, "n_train": 500, "seed": 0}}},
     "is not a run name"),
    ({"models": {NAME: {"depth": 56, "width": 1, "n_train": 500, "seed": 0}}}, "not the model its name names"),
    ({"models": {NAME: {"depth": 20}}}, "lacks"),
    ({"trends": {"capacity": "probably"}}, "'probably' is not a verdict"),
    ({"surprise": 1}, "unknown keys"),
])
def test_documents_off_the_schema_are_refused_naming_the_key(change, message):
    with pytest.raises(results.SchemaError, match=message):
        results.validate(minimal("03_block_structure", **change), "03_block_structure")


def test_write_checks_before_writing_and_converts_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEDEEP_ROOT", str(tmp_path))
    monkeypatch.setenv("WIDEDEEP_RUNS", str(tmp_path / "store"))   # its own run store (and smoke results) too
    (tmp_path / "book" / "profiles").mkdir(parents=True)
    (tmp_path / "book" / "profiles" / "smoke.yaml").write_text((REPO / "book" / "profiles" / "smoke.yaml").read_text())
    profile = profiles.load_profile("smoke")
    payload = {key: {} for key in results.CHAPTERS["04_pca"].keys}
    with pytest.raises(protocol.ProtocolError, match="no protocol page"):
        results.write(profile, "04_pca", 1.0, **payload)
    (tmp_path / "book" / "protocol.md").write_text((REPO / "book" / "protocol.md").read_text())
    with pytest.raises(results.SchemaError, match="not written"):
        results.write(profile, "04_pca", 1.0, **{**payload, "models": [1, 2]})
    assert not (profile.results_dir / "04_pca.json").exists()
    path = results.write(profile, "04_pca", 1.0, **{**payload, "blocks_broken": np.array([1, 2]),
                                                     "cross_seed_matched_stream_mean": np.float64("nan")})
    stored = json.loads(path.read_text())
    assert stored["blocks_broken"] == [1, 2] and stored["cross_seed_matched_stream_mean"] is None
    assert results.read(path)["provenance"]["profile"] == "smoke"
    assert results.run_of(results.read(path)) == protocol.protocol_hash(profile)


def test_keyed_tables_refuse_a_repeated_run():
    rows = [{"name": NAME, "depth": 20}, {"name": NAME, "depth": 20}]
    with pytest.raises(results.SchemaError, match="appears twice"):
        results.keyed(rows)
    assert results.keyed(rows[:1]) == {NAME: {"depth": 20}}
