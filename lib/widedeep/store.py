"""The run store: atomic files, config hashes, checksummed checkpoints, run locks and provenance.

Every file is written to a temporary name in its own folder and moved into place with
`os.replace`, so a killed process leaves either the old file or the new one, never half of one.
A checkpoint carries its SHA-256 in its own first line, so checksum and payload are replaced in
one step and no reader sees a mismatched pair. `run_lock` lets one process at a time train a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from filelock import FileLock, Timeout

# A checkpoint file is this prefix, the payload's SHA-256 in hex, a newline, then torch.save's bytes.
CHECKPOINT_HEADER = b"widedeep-checkpoint sha256:"
_DIGEST_LENGTH = 64


class CorruptFileError(RuntimeError):
    """A stored file that cannot be parsed or trusted; the message names it and what to do."""


class CorruptCheckpointError(CorruptFileError):
    """A checkpoint that cannot be trusted (truncated, checksum mismatch, or not ours)."""


def default_runs_dir() -> Path:
    """The run store: `$WIDEDEEP_RUNS`, else `~/.cache/widedeep/runs` (outside the work tree, as torch hub's cache,
    so a machine that comes back still has its half-trained runs)."""
    configured = os.environ.get("WIDEDEEP_RUNS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "widedeep" / "runs"


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-serialisable config (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as strict JSON (NumPy values converted; NaN and inf, which JSON lacks, become null)."""
    text = json.dumps(_finite(obj), indent=1, default=_json_default, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (Python or NumPy) replaced by None, recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def read_json(path: str | os.PathLike, advice: str | None = None) -> Any:
    """Read a JSON file; one that does not parse raises CorruptFileError naming it and `advice` (what to do)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at line {error.lineno}, column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        advice = advice or f"Restore it, or delete it (rm '{path}') and rerun the step that wrote it."
        raise CorruptFileError(f"{path} is not valid JSON ({reason}{where}): it was damaged, cut short or "
                               f"edited by hand. {advice}") from None


def _json_default(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """Atomically write arrays to a compressed .npz file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically save a checkpoint of tensors and plain values, its SHA-256 in the same file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path = Path(path)
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write_bytes(path, CHECKPOINT_HEADER + digest + b"\n" + payload)
    # A sidecar of the old format would describe the previous file; the new file ignores it anyway.
    _sidecar(path).unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True; a damaged one raises CorruptCheckpointError saying what to do.

    Reads both formats: the checksum in the file's first line, and the older bare torch file with a
    `.sha256` sidecar (checked when present).
    """
    path = Path(path)
    payload = path.read_bytes()
    advice = (f"Delete it (rm '{path}') and rerun: training restarts from scratch for this run only; "
              f"nothing else in {path.parent} is touched.")
    if payload.startswith(CHECKPOINT_HEADER):
        start = len(CHECKPOINT_HEADER)
        expected = payload[start:start + _DIGEST_LENGTH].decode("ascii", errors="replace")
        payload = payload[start + _DIGEST_LENGTH + 1:]
        if expected != hashlib.sha256(payload).hexdigest():
            raise CorruptCheckpointError(f"checkpoint {path} does not match the SHA-256 it carries: the file "
                                         f"was damaged or cut short. {advice}")
    else:
        sidecar = _sidecar(path)
        if sidecar.exists() and sidecar.read_text().strip() != hashlib.sha256(payload).hexdigest():
            raise CorruptCheckpointError(f"checkpoint {path} does not match its SHA-256 ({sidecar.name}): "
                                         f"the file was damaged or replaced. {advice}")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as error:
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: "
                                     f"{str(error)[:200]}). {advice}") from error


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


@contextmanager
def run_lock(run_dir: str | os.PathLike, timeout: float | None = None,
             waiting_message: str | None = None) -> Iterator[None]:
    """Hold the lock of run folder `run_dir` for the body, so one process at a time trains that run.

    An flock on `run_dir/.lock` (filelock), which the operating system releases when its holder dies,
    even by SIGKILL: a crashed holder never leaves a stale lock. Re-entrant within a thread (a nested
    `run_lock` on the same folder returns at once); another thread or process waits, saying so once on
    stderr (`waiting_message`), for `timeout` seconds (None: as long as it takes), then TimeoutError.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # One instance per path (is_singleton) makes nested holds in a thread re-entrant instead of a
    # deadlock; no fallback to a marker file, which a killed holder would leave behind.
    lock = FileLock(run_dir / ".lock", is_singleton=True, fallback_to_soft=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        print(waiting_message or f"waiting for another process that holds the lock of {run_dir}",
              file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise TimeoutError(f"{run_dir} is still locked by another process after {timeout} s "
                               f"({run_dir / '.lock'}); wait for it to finish, or stop it") from None
    try:
        yield
    finally:
        lock.release()


def hardware() -> str:
    """One line naming the accelerator (or CPU model) and core count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), {os.cpu_count()} CPU cores"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {model} ({cpu_features()}), {cores} cores"


def cpu_features() -> str:
    """What the CPU computes with, as torch sees it: 'AVX512, AVX512-BF16', 'AVX2', ... (a machine's kind, since
    the same model name covers CPUs several times apart in speed)."""
    features = [torch.backends.cpu.get_cpu_capability()]
    if platform.machine().lower() in ("x86_64", "amd64"):
        features += [name for name, present in (("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()),
                                                ("AMX", torch.cpu._is_amx_tile_supported())) if present]
    return ", ".join(features)


def versions() -> dict[str, str]:
    """Versions of Python and the packages that change numbers."""
    import torchvision

    from widedeep import __version__

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "widedeep": __version__}


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current commit (with '+dirty' when the tree has uncommitted changes), or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        # Result files are outputs, not code: a chapter that rewrote results/ earlier in the same
        # build does not make the next chapter's provenance "dirty".
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
                               cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(profile: str, wall_time_s: float) -> dict:
    """The provenance block every results file carries."""
    return {"profile": profile, "commit": git_commit(), "hardware": hardware(),
            "wall_time_s": round(float(wall_time_s), 1), "versions": versions()}


def cached_npz(path: str | os.PathLike, compute) -> dict[str, np.ndarray]:
    """Arrays from `path` if it exists, else `compute()` (a dict of arrays) saved there atomically first."""
    path = Path(path)
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    write_npz(path, **arrays)
    return arrays


def cached_json(path: str | os.PathLike, compute) -> Any:
    """The JSON value at `path` if it exists, else `compute()` written there atomically first.

    Both paths return the value as read back from the file, so a first run and a cached rerun see
    the same types (lists, not tuples or arrays; NaN as None).
    """
    path = Path(path)
    if not path.exists():
        write_json(path, compute())
    return read_json(path, advice=f"Delete it (rm '{path}') and rerun: it is computed again.")
