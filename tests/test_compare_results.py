"""tools/compare_results.py: schema-0 files map onto schema 1, and any changed number is reported."""

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


def test_a_schema_0_file_maps_onto_its_schema_1_rebuild(tmp_path):
    old = {"provenance": {"commit": "a"}, "models": [ROW], "blocks_broken": ["ResNet-56 ×1, n=500, s0"],
           "detector": {}, "cross_seed_matched_stream_mean": 0.5}
    new = {"schema_version": 1, "provenance": {"commit": "b"}, "models": {NAME: {k: v for k, v in ROW.items()
                                                                                if k != "name"}},
           "blocks_broken": [NAME], "detector": {}, "cross_seed_matched_stream_mean": 0.5}
    write(tmp_path / "old", "04_pca", old)
    write(tmp_path / "new", "04_pca", new)
    np.savez(tmp_path / "old" / "04_pca.npz", a=np.array([1.0, np.nan]))
    np.savez(tmp_path / "new" / "04_pca.npz", a=np.array([1.0, np.nan]))
    assert compare_results.compare(tmp_path / "old", tmp_path / "new") == []


def test_a_changed_number_a_missing_key_and_a_changed_array_are_reported(tmp_path):
    write(tmp_path / "old", "01_training", {"provenance": {}, "parameters": {"epochs": 4}, "models": [ROW]})
    changed = {**ROW, "test_acc": 0.5995}
    write(tmp_path / "new", "01_training", {"schema_version": 1, "provenance": {}, "parameters": {},
                                            "models": {NAME: {k: v for k, v in changed.items() if k != "name"}}})
    np.savez(tmp_path / "old" / "x.npz", a=np.zeros(3))
    np.savez(tmp_path / "new" / "x.npz", a=np.ones(3))
    diffs = compare_results.compare(tmp_path / "old", tmp_path / "new")
    assert f"01_training: models.{NAME}.test_acc: 0.5994999999999999 -> 0.5995" in diffs
    assert "01_training: parameters.epochs only in OLD (4)" in diffs
    assert any(d.startswith("x.npz: array a differs") for d in diffs) and len(diffs) == 4  # + "parameters only in NEW ({})"
