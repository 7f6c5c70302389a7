"""The run store: atomic writes, stable hashes, JSON of NumPy values."""

import numpy as np

from widedeep import store


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    store.write_json(tmp_path / "a" / "x.json", {"v": np.float32(0.5), "a": np.arange(3), "i": np.int64(2)})
    store.write_npz(tmp_path / "a" / "y.npz", m=np.eye(2))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json", "y.npz"]
    assert store.read_json(tmp_path / "a" / "x.json") == {"v": 0.5, "a": [0, 1, 2], "i": 2}
    assert np.array_equal(np.load(tmp_path / "a" / "y.npz")["m"], np.eye(2))


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    store.write_json(path, {"v": 1})
    try:
        store.write_json(path, {"v": object()})
    except TypeError:
        pass
    assert store.read_json(path) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_config_hash_ignores_key_order_and_sees_values():
    assert store.config_hash({"a": 1, "b": 2}) == store.config_hash({"b": 2, "a": 1})
    assert store.config_hash({"a": 1}) != store.config_hash({"a": 2})


def test_provenance_names_profile_commit_hardware_and_versions():
    p = store.provenance("smoke", 1.234)
    assert p["profile"] == "smoke" and p["wall_time_s"] == 1.2 and p["hardware"] and p["commit"]
    assert {"python", "torch", "numpy", "widedeep"} <= set(p["versions"])


def test_write_json_is_strict_json_with_undefined_values_as_null(tmp_path):
    path = tmp_path / "r.json"
    store.write_json(path, {"a": float("nan"), "b": [np.float64("inf"), 1.5], "c": np.array([np.nan, 2.0]),
                            "d": np.float32(0.25)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert store.read_json(path) == {"a": None, "b": [None, 1.5], "c": [None, 2.0], "d": 0.25}
