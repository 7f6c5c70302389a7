"""The training grid on Ray: same weights as sequential training, GPU shares packed, dead workers retried
bit-identically, clusters joined through --address (on loopback, and across two network namespaces).

Every Ray process these tests start listens on loopback or inside network namespaces the tests create.
Tests marked `slow` (each over ~30 s here with the cores busy) run with `pytest -m slow tests/test_grid.py`.
"""

import contextlib
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from widedeep import grid, store
from widedeep.grid import train_grid
from widedeep.train import TrainConfig, is_complete, train_or_load

pytest.importorskip("ray", reason="ray is pinned in requirements.txt; pip install -r requirements.txt")

TINY = dict(depth=8, width=1, n_train=200, n_val=100, n_test=100, image_size=16, epochs=2, batch_size=50,
            lr=0.05, bn_momentum=0.1, eval_every=1)
SMOKE_GRID = [TrainConfig(**{**TINY, "depth": depth, "seed": seed}) for depth in (8, 14) for seed in (0, 1)]
LIB = str(Path(grid.__file__).resolve().parents[1])
RAY = str(Path(sys.executable).parent / "ray")


def _same_weights(a, b) -> bool:
    return all(torch.equal(value, b.state_dict()[key]) for key, value in a.state_dict().items())


def _sequential(configs, runs_dir):
    """The reference: in this process, one after another, single-threaded like a grid worker (the thread count
    changes the order of floating-point sums, and so the last bits of the weights)."""
    return [train_or_load(c, runs_dir, "cpu", progress=False) for c in configs]


def _ray_env(**extra) -> dict:
    """Environment of the Ray processes a test starts: loopback-only, no usage report, a fresh cluster token."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([LIB, os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


# ---- without Ray processes -------------------------------------------------------------------------------


def test_unfinished_runs_are_unique_and_costliest_first(tmp_path, one_thread):
    small, big = TrainConfig(**TINY), TrainConfig(**{**TINY, "depth": 14, "width": 2})
    done = TrainConfig(**{**TINY, "seed": 3, "epochs": 1})
    train_or_load(done, tmp_path, "cpu", progress=False)
    assert grid.unfinished([small, big, small, done], tmp_path) == [big, small]
    assert grid.images_to_train(small) == small.total_steps * small.batch_size == 2 * 4 * 50
    assert grid.images_done(done, tmp_path) == grid.images_to_train(done) and grid.images_done(small, tmp_path) == 0
    assert grid.run_grid([done], tmp_path) == []  # nothing to train: no engine started


def test_gpu_shares_ask_for_a_cpu_share_that_lets_every_share_run():
    assert grid.task_resources({"CPU": 2.0}) == {"num_cpus": 1, "num_gpus": 0}
    packed = grid.task_resources({"CPU": 2.0, "GPU": 1.0}, threads=1, gpus_per_model=0.25)
    assert packed["num_gpus"] == 0.25 and 4 * packed["num_cpus"] <= 2
    assert grid.task_resources({"CPU": 16.0, "GPU": 1.0}, 1, 0.25)["num_cpus"] == 1  # no more than its threads
    assert grid.task_resources({"CPU": 2.0, "GPU": 1.0}, 1, 0.25, device="cpu")["num_gpus"] == 0
    with pytest.raises(ValueError, match="gpus_per_model"):
        grid.task_resources({"CPU": 2.0, "GPU": 1.0}, 1, 1.5)
    with pytest.raises(ValueError, match="lower --threads"):
        grid.task_resources({"CPU": 2.0}, threads=4)


def test_engine_choice(monkeypatch):
    monkeypatch.delenv(grid.RAY_ENGINE_ENV, raising=False)
    monkeypatch.setattr(grid, "available_cores", lambda: 2)
    assert grid.choose_engine("auto", 1) == "in-process"  # one model: no cluster to start
    assert grid.choose_engine("auto", 2) == "ray"
    assert grid.choose_engine("auto", 1, address="auto") == "ray"
    monkeypatch.setenv(grid.RAY_ENGINE_ENV, "0")
    assert grid.choose_engine("auto", 5) == "in-process"
    with pytest.raises(ValueError, match="in-process"):
        grid.choose_engine("in-process", 2, address="10.0.0.1:6379")
    with pytest.raises(ValueError, match="engine must be"):
        grid.choose_engine("threads", 2)
    assert [grid.is_loopback(a) for a in ("127.0.0.1:6379", "localhost:1", "[::1]:6379", "10.231.0.1:6379")] \
        == [True, True, True, False]


def test_in_process_grid_trains_prints_a_line_per_model_and_loads_in_order(tmp_path, capsys, one_thread):
    configs = SMOKE_GRID[:2]
    runs = train_grid(configs[::-1] + configs[:1], tmp_path, device="cpu", progress=False, engine="in-process")
    assert [r.config for r in runs] == configs[::-1] + configs[:1]
    finished = grid.run_grid(SMOKE_GRID[2:3], tmp_path, engine="in-process", progress=False, lines=True)
    out = capsys.readouterr().out
    assert out.count("done ") == 1 and f"done {SMOKE_GRID[2].name()}: train acc " in out and " test " in out
    assert finished[0].name == SMOKE_GRID[2].name() and finished[0].wall_time_s > 0


def test_a_failing_model_is_named_after_the_others_finish(tmp_path, one_thread):
    bad = TrainConfig(**{**TINY, "lr": 1e30})  # its loss overflows in the first epoch
    with pytest.raises(grid.GridError, match=f"1 of 2 models failed to train \\({bad.name()}\\).*loss became"):
        grid.run_grid([bad, SMOKE_GRID[0]], tmp_path, engine="in-process", progress=False)
    assert is_complete(SMOKE_GRID[0], tmp_path) and not is_complete(bad, tmp_path)


# ---- a local Ray instance --------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_ray_grid_trains_the_weights_of_sequential_training(tmp_path, capsys, one_thread):
    expected = _sequential(SMOKE_GRID, tmp_path / "sequential")
    finished = grid.run_grid(SMOKE_GRID, tmp_path / "ray", engine="ray", num_cpus=2, progress=True)
    import ray

    assert not ray.is_initialized()  # the local instance is shut down at the end
    assert sorted(f.name for f in finished) == sorted(c.name() for c in SMOKE_GRID)
    assert {f.node for f in finished} == {"127.0.0.1"}
    out = capsys.readouterr()
    assert out.out.count("done ") == 4 and "models 4/4" in out.err and "img/s" in out.err
    runs = train_grid(SMOKE_GRID, tmp_path / "ray", device="cpu", progress=False)  # all in the store: loads
    for run, reference in zip(runs, expected):
        assert _same_weights(run.model, reference.model), run.config.name()
        assert run.metrics["final"] == reference.metrics["final"]


def test_local_ray_instance_listens_on_loopback_only():
    psutil = pytest.importorskip("psutil")
    with grid.ray_session(num_cpus=1) as ray:
        assert ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid()  # a worker is up
        processes = psutil.Process().children(recursive=True)
        listening = [(p.name(), c.laddr.ip) for p in processes for c in p.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
    assert {"gcs_server", "raylet"} <= {name for name, _ in listening}
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip in listening), listening


def test_four_quarter_gpu_tasks_run_at_once_on_two_cpus(tmp_path):
    """A logical GPU (this machine has none): the grid's request packs four models on it, Ray's default does not."""

    def meet(folder, index, expected, timeout_s):
        Path(folder, str(index)).touch()
        deadline = time.monotonic() + timeout_s
        while len(os.listdir(folder)) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(os.listdir(folder)) >= expected  # all four were running at the same time

    with grid.ray_session(num_cpus=2, num_gpus=1) as ray:
        resources = grid.task_resources(ray.cluster_resources(), threads=1, gpus_per_model=0.25)
        task = ray.remote(meet)
        (tmp_path / "grid").mkdir()
        assert ray.get([task.options(**resources).remote(str(tmp_path / "grid"), i, 4, 120) for i in range(4)]) \
            == [True] * 4
        (tmp_path / "default").mkdir()  # one CPU a task, Ray's default: two at a time, the first two give up
        met = ray.get([task.options(num_gpus=0.25).remote(str(tmp_path / "default"), i, 4, 5) for i in range(4)])
        assert not all(met)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_its_run_ends_bit_identical(tmp_path, one_thread):
    psutil = pytest.importorskip("psutil")
    config = TrainConfig(**{**TINY, "depth": 14, "epochs": 12})
    expected = _sequential([config], tmp_path / "sequential")[0]
    metrics_path = tmp_path / "ray" / config.name() / "metrics.json"
    killed = {}

    def kill_mid_run():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            with contextlib.suppress(OSError, ValueError):
                metrics = store.read_json(metrics_path)
                if metrics["status"] == "running" and len(metrics["epochs"]) >= 2:
                    for process in psutil.Process().children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            if "_train_task" in " ".join(process.cmdline()):
                                killed.update(pid=process.pid, epochs=metrics["epochs"])
                                process.kill()
            time.sleep(0.02)

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    killer.start()
    finished = grid.run_grid([config], tmp_path / "ray", engine="ray", num_cpus=1, progress=False)
    killer.join(5)
    assert killed, "the training worker was never seen mid-run"
    assert len(killed["epochs"]) < config.total_epochs and [f.name for f in finished] == [config.name()]
    resumed = train_or_load(config, tmp_path / "ray", "cpu", allow_train=False)
    assert _same_weights(resumed.model, expected.model)
    assert resumed.metrics["final"] == expected.metrics["final"]
    # The retry resumed from the checkpoint rather than starting over: the epochs before the kill are the same records.
    assert resumed.metrics["epochs"][:len(killed["epochs"])] == killed["epochs"]


def _train_same_run(runs_dir, config, barrier, log):
    torch.set_num_threads(1)
    barrier.wait()
    train_or_load(config, runs_dir, "cpu", progress=False,
                  on_epoch_end=lambda epoch, record: open(log, "a").write(f"{os.getpid()} {epoch}\n"))


@pytest.mark.slow
@pytest.mark.xfail(not hasattr(store, "run_lock"), reason="needs store.run_lock from the robust branch", strict=False)
def test_two_processes_never_train_the_same_run_at_once(tmp_path, one_thread):
    """Two commands started by hand on one run: one trains it, the other waits and loads it."""
    config = TrainConfig(**{**TINY, "epochs": 6})
    expected = _sequential([config], tmp_path / "sequential")[0]
    context = multiprocessing.get_context("spawn")
    barrier, log = context.Barrier(2), tmp_path / "epochs.log"
    workers = [context.Process(target=_train_same_run, args=(tmp_path / "shared", config, barrier, log))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert [w.exitcode for w in workers] == [0, 0]
    trained = [line.split() for line in log.read_text().splitlines()]
    assert len({pid for pid, _ in trained}) == 1 and [int(e) for _, e in trained] == list(range(1, 7))
    assert _same_weights(train_or_load(config, tmp_path / "shared", "cpu", allow_train=False).model, expected.model)


# ---- joining a running cluster ---------------------------------------------------------------------------


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_started(node: subprocess.Popen, timeout_s: float = 180) -> None:
    """Wait for `ray start` to say its node is up (the head accepts drivers; a worker node has registered)."""
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in node.log_path.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not come up: {node.log_path.read_text()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def _ray_node(args: list[str], env: dict, netns: str | None = None):
    """A `ray start --block` node in its own session, stopped (it and only its processes) on exit."""
    temp_dir = tempfile.mkdtemp(prefix="wdray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    command = (["ip", "netns", "exec", netns] if netns else []) + [
        RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}", *args]
    log_path = Path(temp_dir, "start.log")
    log = open(log_path, "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = log_path
    try:
        _wait_until_started(process)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of this node's own session is left
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _train_command(runs_dir, address: str) -> list[str]:
    """`widedeep train` on the smoke profile at one epoch (a grid of ~10 small models) into `runs_dir`."""
    return [sys.executable, "-m", "widedeep.cli", "train", "--profile", "smoke",
            "-p", "epochs", "1", "--address", address, "--no-progress"]


def _smoke_runs(runs_dir):
    from widedeep import experiments, profiles

    return experiments.runs_trainable_here(profiles.load_profile("smoke", {"epochs": 1}))[0]


@pytest.mark.slow
def test_address_joins_a_head_started_on_loopback(tmp_path):
    port = _free_loopback_port()
    env = _ray_env(**{grid.LOOPBACK_ENV: "0"})
    with _ray_node(["--head", "--include-dashboard=false", f"--port={port}", "--num-cpus=2"], env) as head:
        for address, extra in ((f"127.0.0.1:{port}", {}), ("auto", {"RAY_ADDRESS": f"127.0.0.1:{port}"})):
            runs_dir = tmp_path / address.replace(":", "_")
            done = subprocess.run(_train_command(runs_dir, address), capture_output=True,
                                  env={**env, **extra, "WIDEDEEP_RUNS": str(runs_dir)},
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"on the Ray cluster at {address}" in done.stdout
            assert all(is_complete(c, runs_dir) for c in _smoke_runs(runs_dir))
            assert done.stdout.count("done ") == len(_smoke_runs(runs_dir))
        assert head.poll() is None  # the command left the cluster running (it only disconnected)


NETNS_ADDRESSES = ("10.231.0.1", "10.231.0.2")


@pytest.fixture
def two_namespaces():
    """Two network namespaces joined by a veth pair (10.231.0.1/24 and .2), removed afterwards."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("the two-node test needs root and iproute2 (`ip netns`) to create network namespaces")
    tag = f"{os.getpid() % 100000}"
    names, links = [f"wdA{tag}", f"wdB{tag}"], [f"wdvA{tag}", f"wdvB{tag}"]

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    try:
        for name in names:
            ip("netns", "add", name)
    except subprocess.CalledProcessError as error:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        pytest.skip(f"cannot create network namespaces here ({error.stderr.strip()}); the two-node test needs them")
    try:
        ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for name, link, address in zip(names, links, NETNS_ADDRESSES):
            ip("link", "set", link, "netns", name)
            ip("-n", name, "addr", "add", f"{address}/24", "dev", link)
            ip("-n", name, "link", "set", link, "up")
            ip("-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.slow
def test_two_node_cluster_in_network_namespaces_trains_the_grid(tmp_path, two_namespaces):
    head_ns, worker_ns = two_namespaces
    head_ip, worker_ip = NETNS_ADDRESSES
    env = {**_ray_env(), "WIDEDEEP_RUNS": str(tmp_path)}   # the store the nodes share: this test's folder
    env.pop(grid.LOOPBACK_ENV, None)  # real addresses: the namespaces' own
    address = f"{head_ip}:6379"
    with _ray_node(["--head", "--include-dashboard=false", f"--node-ip-address={head_ip}", "--port=6379", "--num-cpus=1"], env, head_ns):
        with _ray_node([f"--address={address}", f"--node-ip-address={worker_ip}", "--num-cpus=1"], env, worker_ns):
            done = subprocess.run(["ip", "netns", "exec", worker_ns, *_train_command(tmp_path, address)], env=env,
                                  capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    configs = _smoke_runs(tmp_path)
    assert all(is_complete(c, tmp_path) for c in configs)
    lines = [line for line in done.stdout.splitlines() if line.startswith("done ")]
    assert len(lines) == len(configs)
    assert any(line.endswith(f"on {head_ip}") for line in lines) and any(line.endswith(f"on {worker_ip}") for line in lines)
