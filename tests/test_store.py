"""The run store: atomic writes, stable hashes, JSON of NumPy values, checkpoints, damaged files, run locks."""

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

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


# --- Damaged JSON ----------------------------------------------------------------------------------

def test_invalid_json_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"status": "complete", "epochs": [')
    with pytest.raises(store.CorruptFileError, match=f"{path} is not valid JSON .*line 1.*rm '{path}'"):
        store.read_json(path)
    with pytest.raises(store.CorruptFileError, match="Do this instead"):
        store.read_json(path, advice="Do this instead.")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(store.CorruptFileError, match="not valid JSON"):
        store.read_json(path)


def test_a_damaged_cache_says_it_is_recomputed_once_deleted(tmp_path):
    path = tmp_path / "probes.json"
    path.write_text("{not json")
    with pytest.raises(store.CorruptFileError, match=f"rm '{path}'.*computed again"):
        store.cached_json(path, lambda: {"a": 1})
    path.unlink()
    assert store.cached_json(path, lambda: {"a": 1}) == {"a": 1}


# --- Checkpoints: checksum and payload in one file ---------------------------------------------------

def test_a_checkpoint_is_one_file_that_carries_its_checksum(tmp_path):
    path = tmp_path / "checkpoint.pt"
    store.save_checkpoint(path, {"w": torch.arange(5.0), "epoch": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no sidecar, no temporary file
    assert path.read_bytes().startswith(store.CHECKPOINT_HEADER)
    state = store.load_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(5.0)) and state["epoch"] == 3
    payload = bytearray(path.read_bytes())
    payload[-10] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(store.CorruptCheckpointError, match="does not match the SHA-256 it carries.*rm '"):
        store.load_checkpoint(path)


def _legacy_checkpoint(path, state, sidecar=True):
    """A checkpoint as stored before the checksum moved into the file: bare torch.save bytes + .sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    if sidecar:
        path.with_name(path.name + ".sha256").write_text(hashlib.sha256(buffer.getvalue()).hexdigest())


def test_old_checkpoints_with_a_sidecar_still_load_and_are_still_checked(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _legacy_checkpoint(path, {"w": torch.ones(3)})
    assert torch.equal(store.load_checkpoint(path)["w"], torch.ones(3))
    (tmp_path / "checkpoint.pt.sha256").write_text("0" * 64)
    with pytest.raises(store.CorruptCheckpointError, match="checkpoint.pt.sha256"):
        store.load_checkpoint(path)
    # Saving over an old checkpoint drops its sidecar, which described the old bytes.
    store.save_checkpoint(path, {"w": torch.zeros(3)})
    assert not (tmp_path / "checkpoint.pt.sha256").exists()
    assert torch.equal(store.load_checkpoint(path)["w"], torch.zeros(3))


def test_truncated_old_checkpoint_without_sidecar_is_still_detected(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _legacy_checkpoint(path, {"w": torch.ones(1000)}, sidecar=False)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(store.CorruptCheckpointError, match="cannot be read"):
        store.load_checkpoint(path)


def test_concurrent_readers_and_writers_never_see_a_false_corruption(tmp_path):
    """Two writers replace one checkpoint over and over while two readers load it: every load is whole."""
    path = tmp_path / "checkpoint.pt"
    store.save_checkpoint(path, {"version": 0, "w": torch.zeros(20_000)})
    writes, done, problems, loads = 150, threading.Event(), [], []

    def write(offset):
        for i in range(writes):
            version = 2 * i + offset
            store.save_checkpoint(path, {"version": version, "w": torch.full((20_000,), float(version))})

    def read():
        while not done.is_set():
            try:
                state = store.load_checkpoint(path)
            except Exception as error:  # a false alarm is exactly what this test looks for
                problems.append(repr(error)[:200])
                continue
            loads.append(state["version"])
            if not torch.equal(state["w"], torch.full((20_000,), float(state["version"]))):
                problems.append(f"torn checkpoint at version {state['version']}")

    writers = [threading.Thread(target=write, args=(k,)) for k in (1, 2)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert problems == []
    assert len(set(loads)) > 10  # the readers really saw many different versions go by
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# --- The run lock ---------------------------------------------------------------------------------

def test_run_lock_is_reentrant_and_another_thread_waits_saying_so_once(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with store.run_lock(run_dir):
        with store.run_lock(run_dir):  # nested in one thread: no deadlock
            pass
    held, order = threading.Event(), []

    def hold():
        with store.run_lock(run_dir):
            held.set()
            time.sleep(0.5)
            order.append("holder done")

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    with pytest.raises(TimeoutError, match=f"{run_dir} is still locked"):
        with store.run_lock(run_dir, timeout=0.05):
            pass
    capsys.readouterr()
    with store.run_lock(run_dir, waiting_message="WAITING FOR THE OTHER ONE"):
        order.append("waiter in")
    holder.join()
    assert order == ["holder done", "waiter in"]
    assert capsys.readouterr().err.count("WAITING FOR THE OTHER ONE") == 1


HOLD_LOCK = """
import sys, time
from widedeep import store
with store.run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def test_the_lock_of_a_holder_killed_by_sigkill_is_released_by_the_os(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env=_env_with_this_library())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            with store.run_lock(run_dir, timeout=0.2):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        start = time.perf_counter()
        with store.run_lock(run_dir, timeout=5):  # no stale lock to break by hand
            pass
        assert time.perf_counter() - start < 5
    finally:
        holder.kill()
        holder.wait()


def _env_with_this_library() -> dict:
    """The environment for a child Python that imports this checkout's widedeep."""
    library = str(Path(store.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([library, os.environ.get("PYTHONPATH", "")])}
