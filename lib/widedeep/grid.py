"""The training grid: every unfinished run of a list of configs, trained as Ray tasks on all cores, GPUs or a cluster.

    run_grid(configs, "runs")                       # a local Ray instance, one single-threaded model per core
    run_grid(configs, "runs", address="auto")       # a running Ray cluster whose machines share "runs"

Nothing comes back through Ray but a one-line summary per model: each task trains into the run
store (`train.train_or_load`), and the caller loads the models from there. A task whose worker dies
is retried (`max_retries`) and resumes from the run's last checkpoint, so it ends with the weights
of an uninterrupted run. Progress is read from the store too (each run's `metrics.json` counts its
steps every epoch), so it survives worker deaths and needs no channel back from the workers.

The local instance listens on loopback only: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes every Ray
process bind 127.0.0.1 (with ray 2.60 a plain `ray.init()` binds the interface address even when
asked for 127.0.0.1); it has no dashboard, sends no usage statistics and is shut down at the end.

In-process training (no Ray) is used when at most one model is missing, when one core is all there
is, when ray is not installed, or when `engine="in-process"` (`$WIDEDEEP_RAY=0`, `--in-process`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from widedeep import store
from widedeep.train import TrainConfig, TrainedRun, default_device, is_complete, train_or_load

ENGINES = ("auto", "ray", "in-process")
RAY_ENGINE_ENV = "WIDEDEEP_RAY"          # "0": train in this process, never through Ray
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": every Ray process binds 127.0.0.1
OBJECT_STORE_BYTES = 100 * 2 ** 20       # models come back through the run store, not Ray's object store


def training_cost(config: TrainConfig) -> float:
    """A relative cost of training `config` (images seen x layers x width^2), to start the costliest first.

    A ViT's width is an embedding dimension, not a multiplier: it counts as depth x width / 16, which puts
    the measured rates in order (`benchmarks/results/vit_throughput.txt`: ViT-4 d32 costs about a third of a
    ResNet-20 x1, ViT-16 d32 about a sixth of a ResNet-110 x1; the ViTs' small products are overhead-bound).
    """
    size = config.depth * config.width / 16 if config.arch == "vit" else config.depth * config.width ** 2
    return config.total_steps * config.batch_size * size


def images_to_train(config: TrainConfig) -> int:
    """Training images the whole schedule of `config` processes (the unit of the grid's progress)."""
    return config.total_steps * config.batch_size


def images_done(config: TrainConfig, runs_dir: str | Path) -> int:
    """Training images of `config` already in its run's `metrics.json` (0 when it has not started)."""
    path = Path(runs_dir) / config.name() / "metrics.json"
    try:
        return int(store.read_json(path)["steps"]) * config.batch_size
    except (OSError, ValueError, KeyError):  # not started yet; files are written atomically, never half
        return 0


def unfinished(configs: list[TrainConfig], runs_dir: str | Path) -> list[TrainConfig]:
    """The configs without a finished run, without repeats, costliest first (so the longest start first)."""
    todo = [c for c in dict.fromkeys(configs) if not is_complete(c, runs_dir)]
    return sorted(todo, key=training_cost, reverse=True)


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ray_installed() -> bool:
    """Whether ray can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def choose_engine(engine: str, n_todo: int, address: str | None = None) -> str:
    """`ray` or `in-process` for `n_todo` missing models under the requested `engine` (see the module doc)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
    if engine == "auto" and os.environ.get(RAY_ENGINE_ENV, "1") == "0":
        engine = "in-process"
    if address is not None:
        if engine == "in-process":
            raise ValueError(f"an address ({address}) joins a Ray cluster; it cannot be combined with in-process "
                             f"training (drop --in-process or unset {RAY_ENGINE_ENV}=0)")
        engine = "ray"
    if engine == "ray" and not ray_installed():
        raise RuntimeError("ray is not installed: pip install -r requirements.txt (it pins ray), or train in "
                           f"this process with --in-process / {RAY_ENGINE_ENV}=0")
    if engine == "auto":
        parallel = available_cores() > 1 or _cuda_count() > 0
        engine = "ray" if n_todo > 1 and parallel and ray_installed() else "in-process"
    return engine


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def task_resources(cluster: dict, threads: int = 1, gpus_per_model: float = 0.25,
                   device: str | None = None) -> dict:
    """Ray resources one training task asks for, given the cluster's resources (`ray.cluster_resources()`).

    Without GPUs: `threads` CPUs. With GPUs (and `gpus_per_model` > 0): that share of a GPU, and a
    CPU request small enough that every GPU share can be taken at once (Ray asks one CPU per task by
    default, which would leave most of a small machine's GPU shares idle).
    """
    if not 0 <= gpus_per_model <= 1:
        raise ValueError(f"gpus_per_model must be in [0, 1] (the share of one GPU a model asks for); "
                         f"got {gpus_per_model!r}")
    if threads < 1:
        raise ValueError(f"threads must be a positive integer; got {threads!r}")
    gpus, cpus = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    if gpus > 0 and gpus_per_model > 0 and device != "cpu":
        slots = int(gpus / gpus_per_model + 1e-9)
        return {"num_gpus": gpus_per_model, "num_cpus": min(float(threads), cpus / max(slots, 1))}
    if cpus < threads:
        raise ValueError(f"each model asks for {threads} CPU threads but the Ray cluster has {cpus:g} CPUs; "
                         f"lower --threads")
    return {"num_cpus": threads, "num_gpus": 0}


@dataclass(frozen=True)
class Finished:
    """What a training task sends back: the run's name, accuracies, wall time and where it trained.

    `stopped_at` is set (and the accuracies are NaN) when the run stopped at its deadline: its last
    epoch is checkpointed and the next `train` resumes it.
    """

    name: str
    train_acc: float
    test_acc: float
    wall_time_s: float
    node: str
    stopped_at: tuple[int, int] | None = None   # (epochs done, epochs in all) of a run stopped at its deadline

    def line(self) -> str:
        """The one line printed when the model is done (the node only off this machine: it fits a page)."""
        where = "" if self.node in ("127.0.0.1", "localhost") else f" on {self.node}"
        if self.stopped_at is not None:
            done, total = self.stopped_at
            return f"stopped {self.name} at its deadline: epoch {done} of {total} checkpointed (resumes){where}"
        return (f"done {self.name}: train acc {self.train_acc:.3f}, test {self.test_acc:.3f}, "
                f"{self.wall_time_s:.0f} s{where}")


class DeadlineReached(Exception):
    """Raised after an epoch's checkpoint once a run is past its deadline: it stops cleanly and resumes later."""

    def __init__(self, epoch: int):
        super().__init__(f"deadline reached after epoch {epoch}")
        self.epoch = epoch


def now() -> float:
    """The clock deadlines are read from (`time.time`; a name of its own so tests can move it)."""
    import time

    return time.time()


def _finished(run: TrainedRun, node: str) -> Finished:
    final = run.metrics["final"]
    return Finished(run.config.name(), final["train_acc"], final["test_acc"], run.metrics["wall_time_s"], node)


def _train_until(config: TrainConfig, runs_dir, device, deadline: float | None, node: str,
                 on_epoch_end=None) -> Finished:
    """Train (or resume, or find) one run; past `deadline` (a time.time()) it stops after an epoch's checkpoint."""
    def after_epoch(epoch: int, record: dict) -> None:
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if deadline is not None and now() >= deadline and epoch < config.total_epochs:
            raise DeadlineReached(epoch)

    if deadline is not None and now() >= deadline and not is_complete(config, runs_dir):
        nan = float("nan")  # started after its deadline (waited for a core): not started at all
        done = images_done(config, runs_dir) // max(config.steps_per_epoch * config.batch_size, 1)
        return Finished(config.name(), nan, nan, nan, node, (done, config.total_epochs))
    try:
        run = train_or_load(config, runs_dir, device or default_device(), allow_train=True, progress=False,
                            on_epoch_end=after_epoch)
    except DeadlineReached as stop:
        nan = float("nan")
        return Finished(config.name(), nan, nan, nan, node, (stop.epoch, config.total_epochs))
    return _finished(run, node)


def _train_task(config: TrainConfig, runs_dir: str, threads: int, device: str | None,
                deadline: float | None = None) -> Finished:
    """One Ray task: train (or resume, or find) one run in the store, single-threaded unless told otherwise."""
    import ray
    import torch

    torch.set_num_threads(threads)  # one model per core: two 1-thread processes beat one 2-thread one
    return _train_until(config, runs_dir, device, deadline, ray.util.get_node_ip_address())


class GridProgress:
    """One terminal progress bar over the grid (models done/total, images/s, time left) and a line per model."""

    def __init__(self, todo: list[TrainConfig], n_total: int, runs_dir: str | Path, enabled: bool = True,
                 lines: bool = True):
        self.todo, self.runs_dir, self.lines = todo, runs_dir, lines
        self.n_total, self.n_done = n_total, n_total - len(todo)
        self.finished: set[str] = set()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=sum(map(images_to_train, todo)), initial=self._images(), unit="img",
                            unit_scale=True, smoothing=0.05, desc=self._desc(), dynamic_ncols=True)

    def _desc(self) -> str:
        return f"models {self.n_done}/{self.n_total}"

    def _images(self) -> int:
        return sum(images_to_train(c) if c.name() in self.finished else images_done(c, self.runs_dir)
                   for c in self.todo)

    def refresh(self) -> None:
        """Re-read every unfinished run's progress from the store."""
        if self.bar is not None:
            self.bar.update(self._images() - self.bar.n)

    def done(self, finished: Finished) -> None:
        """Count one finished model (or one stopped at its deadline) and print its line."""
        if finished.stopped_at is None:
            self.finished.add(finished.name)
            self.n_done += 1
        if self.bar is not None:
            self.bar.set_description(self._desc(), refresh=False)
            self.refresh()
        self._write(finished.line())

    def failed(self, config: TrainConfig, error: BaseException) -> None:
        """Print the line of a model whose training failed."""
        first_line = (str(error).splitlines() or [""])[0][:300]
        self._write(f"FAILED {config.name()}: {type(error).__name__}: {first_line}")

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)  # above the bar, which is redrawn below it
        elif self.lines:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()


class GridError(RuntimeError):
    """Some models of the grid failed to train; the others are in the store."""


def run_grid(configs: list[TrainConfig], runs_dir: str | Path = "runs", *, address: str | None = None,
             engine: str = "auto", threads: int = 1, gpus_per_model: float = 0.25, device: str | None = None,
             num_cpus: int | None = None, max_retries: int = 3, progress: bool = True,
             lines: bool | None = None, poll_s: float = 1.0, deadline: float | None = None) -> list[Finished]:
    """Train every config without a finished run in `runs_dir`; return what finished now, in order of completion.

    `address`: join that Ray cluster (`auto`, or HOST:PORT of its head); else a local instance with
    `num_cpus` CPUs (default: the cores available) is started and shut down here, unless this
    process is already connected to Ray. `progress`: the bar; `lines` (default: as `progress`): a
    printed line per finished model. `deadline` (a `time.time()`): runs still training then stop after
    their next epoch's checkpoint (returned with `stopped_at`; the next call resumes them), and runs
    not yet started then are not started. Raises GridError naming the models that failed, after the
    others have finished.
    """
    runs_dir = str(runs_dir)
    unique = list(dict.fromkeys(configs))
    todo = unfinished(unique, runs_dir)
    if not todo:
        return []
    chosen = choose_engine(engine, len(todo), address)
    bar = GridProgress(todo, len(unique), runs_dir, progress, progress if lines is None else lines)
    try:
        if chosen == "in-process":
            finished, failures = _run_in_process(todo, runs_dir, device, bar, deadline)
        else:
            with ray_session(address, num_cpus) as ray:
                resources = task_resources(ray.cluster_resources(), threads, gpus_per_model, device)
                finished, failures = _run_on_ray(ray, todo, runs_dir, threads, device, resources, max_retries,
                                                 bar, poll_s, deadline)
    finally:
        bar.close()
    if failures:
        names = ", ".join(c.name() for c, _ in failures)
        raise GridError(f"{len(failures)} of {len(todo)} models failed to train ({names}); the other models are "
                        f"in {runs_dir}. Rerun to retry them (finished epochs are kept). First error: "
                        f"{failures[0][1]}") from failures[0][1]
    return finished


def _run_in_process(todo, runs_dir, device, bar: GridProgress, deadline: float | None = None):
    finished, failures = [], []
    for config in todo:
        if deadline is not None and now() >= deadline:
            break  # not started: the next call trains it
        try:
            done = _train_until(config, runs_dir, device, deadline, "this process",
                                on_epoch_end=lambda epoch, record: bar.refresh())
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # the others still train; every failure is reported at the end
            bar.failed(config, error)
            failures.append((config, error))
            continue
        finished.append(done)
        bar.done(done)
    return finished, failures


def _run_on_ray(ray, todo, runs_dir, threads, device, resources, max_retries, bar: GridProgress, poll_s,
                deadline: float | None = None):
    task = ray.remote(_train_task).options(max_retries=max_retries, retry_exceptions=False, **resources)
    pending = {task.remote(config, runs_dir, threads, device, deadline): config for config in todo}
    finished, failures = [], []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
            for ref in ready:
                config = pending.pop(ref)
                try:
                    finished.append(ray.get(ref))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # a task's exception or a worker that died max_retries + 1 times
                    bar.failed(config, error)
                    failures.append((config, error))
                    continue
                bar.done(finished[-1])
            bar.refresh()
    except BaseException:
        for ref in pending:  # on a cluster the tasks would otherwise go on after this command ends
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    return finished, failures


def is_loopback(address: str) -> bool:
    """Whether a Ray address HOST:PORT names this machine's loopback (127.0.0.0/8, ::1 or localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator:
    """Yield the `ray` module connected to the cluster at `address`, or to a new loopback-only local instance.

    A process already connected to Ray keeps its connection (and this does not shut it down).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage over the network
    import ray

    if ray.is_initialized():
        yield ray
        return
    resolved = address
    if address == "auto":
        # Ray's own lookup ($RAY_ADDRESS, else the last `ray start` here), before Ray could rewrite a
        # loopback address into the interface address (it does unless told to stay on loopback).
        from ray._private import services

        try:
            resolved = services.get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise RuntimeError("--address auto found no running Ray cluster on this machine (start one with "
                               "`ray start --head`, or give HOST:PORT of its head)") from None
    loopback = address is None or is_loopback(resolved)
    _bind_loopback(ray, loopback)
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    if address is None:
        cores = num_cpus or available_cores()
        ray.init(address="local", num_cpus=cores, num_gpus=num_gpus if num_gpus is not None else _cuda_count(),
                 include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, **quiet)
    else:
        # The address as given: with `auto` Ray also picks up the token of a local cluster (~/.ray/auth_token);
        # an explicit HOST:PORT of a token-protected cluster needs RAY_AUTH_MODE=token (Ray's rule).
        ray.init(address=address, **quiet)
    try:
        node_ip = ray.util.get_node_ip_address()
        if loopback and not is_loopback(node_ip):  # a safeguard: Ray has changed how it picks addresses
            raise RuntimeError(f"this Ray node uses {node_ip}, not loopback, although {LOOPBACK_ENV}=0 asked for "
                               f"127.0.0.1; check the ray version against requirements.txt")
        yield ray
    finally:
        ray.shutdown()  # stops a local instance; on a cluster it only disconnects this driver


def _bind_loopback(ray, loopback: bool) -> None:
    """Make this driver and the Ray processes it starts bind 127.0.0.1 (`loopback`) or the interface address."""
    from ray._private import ray_constants

    os.environ[LOOPBACK_ENV] = "0" if loopback else "1"  # read by the Ray processes started from here
    # Read once when ray is imported: set it here too, in case ray was imported before this call.
    ray_constants.ENABLE_RAY_CLUSTER = not loopback


def train_grid(configs: list[TrainConfig], runs_dir: str | Path = "runs", device=None, allow_train: bool = True,
               progress: bool = True, **engine) -> list[TrainedRun]:
    """Train what is missing through the grid engine (Ray on every core), then load every config in order.

    `engine` goes to `run_grid` (e.g. `engine="in-process"`, `address="auto"`, `threads=1`).
    """
    if allow_train:
        run_grid(configs, runs_dir, device=None if device is None else str(device), progress=progress, **engine)
    return [train_or_load(c, runs_dir, device, allow_train=False, progress=False) for c in configs]
