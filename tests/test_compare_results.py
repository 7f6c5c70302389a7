"""tools/compare_results.py: two builds of the same numbers compare equal, and any changed number is reported."""

import importlib.util
import json
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location("compare_results", Path(__file__).parents[1] / "tools" / "compare_results.py")
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)

NAME = "fmnist16-resnet56x1-n500-s0-1a2b3c4d"
ROW = {"name": NAME, "depth": 56, "width": 1, "n_train": 500, "seed": 0, "test_acc": 0.5994999999999999}


def write(folder: Path, stem: str, document: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(document))


def entry(**changes) -> dict:
    return {k: v for k, v in {**ROW, **changes}.items() if k != "name"}


def test_two_builds_of_the_same_numbers_compare_equal_whatever_their_provenance(tmp_path):
    document = {"schema_version": 3, "blocks_broken": [NAME], "detector": {}, "cross_seed_matched_stream_mean": 0.5,
                "models": {NAME: entry()}}
    write(tmp_path / "old", "04_pca", {**document, "provenance": {"commit": "a"}, "records": {"x": "cka"}})
    write(tmp_path / "new", "04_pca", {**document, "provenance": {"commit": "b"}, "records": {"y": "cka"}})
    np.savez(tmp_path / "old" / "04_pca.npz", a=np.array([1.0, np.nan]))
    np.savez(tmp_path / "new" / "04_pca.npz", a=np.array([1.0, np.nan]))
    assert compare_results.compare(tmp_path / "old", tmp_path / "new") == []


def test_a_changed_number_a_missing_key_and_a_changed_array_are_reported(tmp_path):
    write(tmp_path / "old", "01_training", {"schema_version": 3, "provenance": {}, "parameters": {"epochs": 4},
                                            "models": {NAME: entry()}})
    write(tmp_path / "new", "01_training", {"schema_version": 3, "provenance": {}, "parameters": {},
                                            "models": {NAME: entry(test_acc=0.5995)}})
    np.savez(tmp_path / "old" / "x.npz", a=np.zeros(3))
    np.savez(tmp_path / "new" / "x.npz", a=np.ones(3))
    diffs = compare_results.compare(tmp_path / "old", tmp_path / "new")
    assert f"01_training: models.{NAME}.test_acc: 0.5994999999999999 -> 0.5995" in diffs
    assert "01_training: parameters.epochs only in OLD (4)" in diffs
    assert any(d.startswith("x.npz: array a differs") for d in diffs) and len(diffs) == 4  # + "parameters only in NEW ({})"


def test_floats_within_the_asked_ulps_count_as_the_same_and_nothing_else_does(tmp_path):
    """The thread count moves the last bits of a few sums (Chapter 2's property checks): `ulps` forgives only that."""
    value = 0.11382919429602469
    write(tmp_path / "old", "02_cka", {"check": value, "count": 3})
    write(tmp_path / "new", "02_cka", {"check": value + 2 * np.spacing(value), "count": 3})
    np.savez(tmp_path / "old" / "02_cka.npz", cka=np.array([1.0, np.nan]))
    np.savez(tmp_path / "new" / "02_cka.npz", cka=np.array([1.0 - np.spacing(1.0), np.nan]))
    assert len(compare_results.compare(tmp_path / "old", tmp_path / "new")) == 2   # exact by default
    assert compare_results.compare(tmp_path / "old", tmp_path / "new", ulps=4) == []
    write(tmp_path / "new", "02_cka", {"check": value * (1 + 1e-9), "count": 3})
    assert compare_results.compare(tmp_path / "old", tmp_path / "new", ulps=4) == [
        f"02_cka: check: {value!r} -> {value * (1 + 1e-9)!r}"]
    assert compare_results.main([str(tmp_path / "old"), str(tmp_path / "new"), "--ulps", "4"]) == 1
