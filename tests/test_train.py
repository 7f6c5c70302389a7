"""Training: cached, resumable with identical weights, damaged run files named, one trainer per run."""

import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from widedeep import store
from widedeep.train import TrainConfig, _optimizer, cosine_lr, is_complete, native_bfloat16, train_or_load

TINY = dict(depth=8, width=1, n_train=200, n_val=100, n_test=100, image_size=16, epochs=3, batch_size=50,
            lr=0.05, bn_momentum=0.1, eval_every=1)


class Killed(Exception):
    pass


def _kill_after(epoch):
    def callback(done, record):
        if done == epoch:
            raise Killed

    return callback


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    config = TrainConfig(**TINY)
    straight = train_or_load(config, tmp_path / "a", device="cpu", progress=False)
    with pytest.raises(Killed):
        train_or_load(config, tmp_path / "b", device="cpu", progress=False, on_epoch_end=_kill_after(1))
    partial = store.load_checkpoint(tmp_path / "b" / config.name() / "checkpoint.pt")
    assert partial["epoch"] == 1 and not is_complete(config, tmp_path / "b")
    resumed = train_or_load(config, tmp_path / "b", device="cpu", progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [h["train_loss"] for h in resumed.metrics["epochs"]] == [h["train_loss"] for h in straight.metrics["epochs"]]
    assert resumed.metrics["final"] == straight.metrics["final"]


def test_finished_runs_load_from_the_store(tmp_path):
    config = TrainConfig(**TINY)
    first = train_or_load(config, tmp_path, device="cpu", progress=False)
    calls = []
    again = train_or_load(config, tmp_path, device="cpu", progress=False, on_epoch_end=lambda *a: calls.append(a))
    assert calls == []  # nothing retrained
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])
    run_dir = tmp_path / config.name()
    assert json.loads((run_dir / "config.json").read_text())["depth"] == 8
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete" and len(metrics["epochs"]) == 3
    assert {"val_acc", "test_acc", "train_acc_augmented", "wall_s"} <= set(metrics["epochs"][-1])
    assert metrics["hardware"] and metrics["versions"]["torch"] == torch.__version__
    with pytest.raises(FileNotFoundError, match="allow_train"):
        train_or_load(TrainConfig(**{**TINY, "seed": 1}), tmp_path, allow_train=False)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_is_reported_with_what_to_do(tmp_path, damage):
    config = TrainConfig(**{**TINY, "epochs": 1})
    train_or_load(config, tmp_path, device="cpu", progress=False)
    path = tmp_path / config.name() / "checkpoint.pt"
    payload = bytearray(path.read_bytes())
    if damage == "truncate":
        payload = payload[: len(payload) // 2]
    else:
        payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    metrics_before = (tmp_path / config.name() / "metrics.json").read_bytes()
    with pytest.raises(store.CorruptCheckpointError, match="rm '"):
        train_or_load(config, tmp_path, device="cpu", progress=False)
    assert (tmp_path / config.name() / "metrics.json").read_bytes() == metrics_before  # nothing lost


@pytest.mark.parametrize("change, message", [
    ({"width": 0}, "width"), ({"depth": 21}, "6n\\+2"), ({"dataset": "imagenet"}, "unknown dataset"),
    ({"n_train": 205}, "multiple"), ({"batch_size": 500}, "batch_size"), ({"epochs": 0}, "epochs"),
    ({"image_size": 0}, "image_size must be None .* or an integer >= 4"), ({"image_size": -16}, "image_size"),
    ({"image_size": 2}, "image_size"), ({"image_size": 16.0}, "image_size"), ({"image_size": True}, "image_size"),
    ({"width": float("inf")}, "finite"),
])
def test_bad_configs_are_refused_before_training(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY, **change})


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match="unknown training option.*'widht'"):
        TrainConfig.from_dict({**TINY, "widht": 2})


def test_weight_decay_only_on_kernels_and_cosine_schedule():
    config = TrainConfig(**TINY)
    model = config.build_model()
    decayed, free = _optimizer(model, config).param_groups
    assert decayed["weight_decay"] == config.weight_decay and free["weight_decay"] == 0
    assert all(p.dim() > 1 for p in decayed["params"]) and all(p.dim() == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))
    assert cosine_lr(0.01, 0, 100) == 0.01 and cosine_lr(0.01, 100, 100) == pytest.approx(0)
    assert cosine_lr(0.01, 50, 100) == pytest.approx(0.005)
    assert math.isclose(cosine_lr(1, 25, 100), 0.5 * (1 + math.cos(math.pi / 4)))


def test_run_names_are_readable_and_unique():
    a, b = TrainConfig(**TINY), TrainConfig(**{**TINY, "lr": 0.1})
    assert a.name().startswith("fmnist16-resnet8x1-n200-s0-") and a.name() != b.name()
    assert TrainConfig(**{**TINY, "residual": False}).name().startswith("fmnist16-plain8x1")


needs_native_bfloat16 = pytest.mark.skipif(
    not native_bfloat16("cpu"), reason="this CPU has no native bfloat16 (no AVX512-BF16 or AMX, or oneDNN capped "
                                       "below it): autocast would be emulated, and check_precision refuses it")


@needs_native_bfloat16
def test_bfloat16_run_resumed_after_a_kill_ends_bit_identical(tmp_path):
    config = TrainConfig(**{**TINY, "precision": "bfloat16"})
    straight = train_or_load(config, tmp_path / "a", device="cpu", progress=False)
    with pytest.raises(Killed):
        train_or_load(config, tmp_path / "b", device="cpu", progress=False, on_epoch_end=_kill_after(2))
    resumed = train_or_load(config, tmp_path / "b", device="cpu", progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.metrics["final"] == straight.metrics["final"]
    # bfloat16 really changed the arithmetic: the float32 run ends with other weights.
    exact = train_or_load(TrainConfig(**TINY), tmp_path / "c", device="cpu", progress=False)
    assert not torch.equal(exact.model.logits.weight, straight.model.logits.weight)
    assert straight.model.logits.weight.dtype == torch.float32  # weights stay float32 under autocast


def test_precision_names_a_different_run_and_float32_keeps_the_legacy_name():
    from dataclasses import asdict

    from widedeep import train as train_module

    exact, mixed = TrainConfig(**TINY), TrainConfig(**{**TINY, "precision": "bfloat16"})
    assert exact.name() != mixed.name()
    # A float32 run with no minimum of steps hashes exactly as runs stored before these fields existed.
    legacy = {k: v for k, v in asdict(exact).items() if k not in train_module.LEGACY_DEFAULTS}
    assert exact.name().endswith(store.config_hash(legacy)) and exact.stored() == legacy
    assert mixed.stored()["precision"] == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(**{**TINY, "precision": "float16"})


def test_auto_precision_follows_the_hardware_and_bfloat16_is_refused_where_emulated(monkeypatch):
    from widedeep import train

    monkeypatch.setattr(train, "native_bfloat16", lambda device="cpu": True)
    assert train.resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(train, "native_bfloat16", lambda device="cpu": False)
    assert train.resolve_precision("auto", "cpu") == "float32"
    assert train.resolve_precision("bfloat16", "cpu") == "bfloat16"  # a pinned profile keeps its run names
    with pytest.raises(RuntimeError, match="-p precision float32"):
        train.check_precision("bfloat16", "cpu")
    train.check_precision("float32", "cpu")
    with pytest.raises(ValueError, match="'auto'"):
        train.resolve_precision("half", "cpu")


def test_native_bfloat16_is_asked_of_torch():
    from widedeep import train

    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in train.ONEDNN_ISAS_WITHOUT_BF16
    if (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()) and not capped:
        assert train.native_bfloat16("cpu")
    assert not train.native_bfloat16("meta")


def test_a_onednn_cap_below_bfloat16_means_no_native_bfloat16(monkeypatch):
    from widedeep import train

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert not train.native_bfloat16("cpu")
        with pytest.raises(RuntimeError, match="no native bfloat16"):
            train.check_precision("bfloat16", "cpu")
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
        assert train.native_bfloat16("cpu") == bool(torch.cpu._is_avx512_bf16_supported()
                                                    or torch.cpu._is_amx_tile_supported())


def test_float32_training_turns_tf32_off_and_restores_it(tmp_path, monkeypatch):
    from widedeep import backends, train

    seen = []
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # cuDNN's default
    train_or_load(TrainConfig(**{**TINY, "epochs": 1}), tmp_path, device="cpu", progress=False,
                  on_epoch_end=lambda epoch, record: seen.append(backends.tf32_in_use()))
    assert seen == [{"matmul": False, "conv": False}]
    assert backends.tf32_in_use()["conv"]  # restored after training


@needs_native_bfloat16
def test_predictions_of_a_bfloat16_model_are_float32_without_autocast(tmp_path):
    from widedeep import train

    run = train_or_load(TrainConfig(**{**TINY, "precision": "bfloat16", "epochs": 1}), tmp_path, device="cpu",
                        progress=False)
    data = run.config.splits().test
    logits = train.predict(run.model, data)
    assert logits.dtype == torch.float32
    with torch.inference_mode():
        run.model.eval()
        exact = run.model(data.images[:1000].float())
    assert torch.equal(logits[: len(exact)], exact)


def test_min_steps_extends_small_subsets_and_is_recorded(tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 2, "min_steps": 14, "eval_every": 1})  # 4 steps an epoch
    assert (config.steps_per_epoch, config.total_epochs, config.total_steps) == (4, 4, 16)
    assert config.eval_interval == 2  # the schedule doubled, so evaluations are half as frequent
    assert config.name() != TrainConfig(**{**TINY, "epochs": 2}).name()
    run = train_or_load(config, tmp_path, device="cpu", progress=False)
    assert run.metrics["steps"] == 16 and len(run.metrics["epochs"]) == 4
    assert [("val_acc" in h) for h in run.metrics["epochs"]] == [False, True, False, True]
    assert run.metrics["epochs"][-1]["lr_end"] == pytest.approx(cosine_lr(config.lr, 15, 16))
    assert TrainConfig(**{**TINY, "epochs": 5, "min_steps": 4}).total_epochs == 5  # epochs already enough
    with pytest.raises(ValueError, match="min_steps"):
        TrainConfig(**{**TINY, "min_steps": -1})


# --- Damaged run files ----------------------------------------------------------------------------

def test_a_complete_run_whose_metrics_lack_fields_is_refused_naming_key_and_file(tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 1})
    trained = train_or_load(config, tmp_path, device="cpu", progress=False)
    path = tmp_path / config.name() / "metrics.json"
    metrics = store.read_json(path)
    store.write_json(path, {k: v for k, v in metrics.items() if k != "final"})
    with pytest.raises(store.CorruptFileError, match=f"{path} says the run is complete but lacks final.*rm '{path}'"):
        is_complete(config, tmp_path)
    with pytest.raises(store.CorruptFileError, match="lacks final"):
        train_or_load(config, tmp_path, device="cpu", progress=False)
    store.write_json(path, {**metrics, "final": {"train_acc": 1.0}})
    with pytest.raises(store.CorruptFileError, match="lacks final.val_acc, final.test_acc"):
        train_or_load(config, tmp_path, device="cpu", progress=False)
    # The advice works: deleted, the metrics are rebuilt from the checkpoint without retraining.
    path.unlink()
    calls = []
    again = train_or_load(config, tmp_path, device="cpu", progress=False, on_epoch_end=lambda *a: calls.append(a))
    assert calls == [] and again.metrics["final"] == trained.metrics["final"]
    assert again.metrics["epochs"] == trained.metrics["epochs"] and is_complete(config, tmp_path)


@pytest.mark.parametrize("file", ["metrics.json", "config.json"])
def test_run_files_that_are_not_json_are_named_with_what_to_do(tmp_path, file):
    config = TrainConfig(**{**TINY, "epochs": 1})
    trained = train_or_load(config, tmp_path, device="cpu", progress=False)
    path = tmp_path / config.name() / file
    path.write_text(path.read_text()[:40])  # cut short, as by a full disk or a bad copy
    with pytest.raises(store.CorruptFileError, match=f"{path} is not valid JSON.*rm '{path}'"):
        train_or_load(config, tmp_path, device="cpu", progress=False)
    path.unlink()
    calls = []
    again = train_or_load(config, tmp_path, device="cpu", progress=False, on_epoch_end=lambda *a: calls.append(a))
    assert calls == [] and again.metrics["final"] == trained.metrics["final"]
    assert store.read_json(tmp_path / config.name() / "config.json") == config.stored()


def test_nothing_is_written_when_the_data_cannot_be_loaded(tmp_path, monkeypatch):
    def no_data(self):
        raise FileNotFoundError("Fashion-MNIST data not found (planted)")

    monkeypatch.setattr(TrainConfig, "splits", no_data)
    with pytest.raises(FileNotFoundError, match="planted"):
        train_or_load(TrainConfig(**TINY), tmp_path / "runs", device="cpu", progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_smallest_image_size_allowed_builds_a_working_model():
    config = TrainConfig(**{**TINY, "image_size": 4, "epochs": 1})
    assert config.name().startswith("fmnist4-")
    model = config.build_model()
    assert model(torch.rand(2, 1, 4, 4)).shape == (2, 10)


# --- One run, one trainer: the run lock -----------------------------------------------------------

def test_a_nested_train_or_load_of_the_run_being_trained_is_refused(tmp_path):
    config = TrainConfig(**TINY)

    def nested(epoch, record):
        if epoch == 1:
            train_or_load(config, tmp_path, device="cpu", progress=False)

    with pytest.raises(RuntimeError, match="already training it"):
        train_or_load(config, tmp_path, device="cpu", progress=False, on_epoch_end=nested)
    # A caller that holds the run's lock itself (say a task runner) can still train under it: re-entrant.
    with store.run_lock(tmp_path / config.name()):
        run = train_or_load(config, tmp_path, device="cpu", progress=False)
    assert run.metrics["status"] == "complete" and len(run.metrics["epochs"]) == 3


def test_loading_a_run_that_another_thread_is_training_waits_for_it(tmp_path, capsys):
    config = TrainConfig(**TINY)
    started, trained = threading.Event(), {}

    def train_it():
        trained["run"] = train_or_load(config, tmp_path, device="cpu", progress=False,
                                       on_epoch_end=lambda epoch, record: (started.set(), time.sleep(0.5)))

    trainer = threading.Thread(target=train_it)
    trainer.start()
    started.wait()
    loaded = train_or_load(config, tmp_path, device="cpu", progress=False, allow_train=False)
    trainer.join()
    assert loaded.metrics == trained["run"].metrics and loaded.metrics["status"] == "complete"
    assert capsys.readouterr().err.count(f"{config.name()}: waiting for another process") == 1
    with pytest.raises(FileNotFoundError, match="allow_train"):  # a run nobody trains is still refused
        train_or_load(TrainConfig(**{**TINY, "seed": 7}), tmp_path, allow_train=False)
    assert not (tmp_path / TrainConfig(**{**TINY, "seed": 7}).name()).exists()


def _env_with_this_library() -> dict:
    """The environment for a child Python that imports this checkout's widedeep."""
    library = str(Path(store.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([library, os.environ.get("PYTHONPATH", "")])}


# A child process for the tests below: trains `configs` into `runs` once `go` exists (after loading the
# data and saying `ready`), recording the epochs it trained itself and the weights it ended with; with
# `hang_at_step`, it stops dead in the middle of an epoch instead (to be killed there).
WORKER = """
import hashlib, json, sys, time
from pathlib import Path
import torch
from widedeep import train
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
configs = [train.TrainConfig(**c) for c in spec["configs"]]
for c in configs:
    c.splits()
if spec.get("hang_at_step"):
    make_optimizer, steps = train._optimizer, [0]
    def hanging_optimizer(model, config):
        optimizer = make_optimizer(model, config)
        step = optimizer.step
        def hanging_step(*args, **kwargs):
            steps[0] += 1
            if steps[0] == spec["hang_at_step"]:
                Path(spec["ready"]).touch()
                time.sleep(300)
            return step(*args, **kwargs)
        optimizer.step = hanging_step
        return optimizer
    train._optimizer = hanging_optimizer
else:
    Path(spec["ready"]).touch()
    while not Path(spec["go"]).exists():
        time.sleep(0.01)
trained, weights = {}, {}
for c in configs:
    def count(epoch, record, name=c.name()):
        trained[name] = trained.get(name, 0) + 1
        time.sleep(0.3)  # a longer epoch, so that the other process surely asks while this one trains
    run = train.train_or_load(c, spec["runs"], device="cpu", progress=False, on_epoch_end=count)
    weights[c.name()] = hashlib.sha256(b"".join(v.numpy().tobytes() for v in run.model.state_dict().values())).hexdigest()
Path(spec["out"]).write_text(json.dumps({"trained": trained, "weights": weights}))
"""


def _start_worker(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], env=_env_with_this_library(),
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, processes: list[subprocess.Popen], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        for p in processes:
            assert p.poll() is None, f"worker ended early: {p.stderr.read()}"
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.05)


def test_two_processes_on_one_store_train_each_model_once(tmp_path):
    configs = [TrainConfig(**TINY), TrainConfig(**{**TINY, "seed": 1})]
    go = tmp_path / "go"
    specs = [{"configs": [asdict(c) for c in configs], "runs": str(tmp_path / "runs"), "go": str(go),
              "ready": str(tmp_path / f"ready{i}"), "out": str(tmp_path / f"out{i}.json")} for i in range(2)]
    workers = [_start_worker(spec) for spec in specs]
    try:
        for spec in specs:
            _wait_for(Path(spec["ready"]), workers)
        go.touch()  # both start together: one trains the first model while the other waits for it
        errors = [w.communicate(timeout=120)[1] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0], errors
    outs = [json.loads(Path(spec["out"]).read_text()) for spec in specs]
    for c in configs:
        trainers = [out["trained"].get(c.name(), 0) for out in outs]
        assert sorted(trainers) == [0, c.total_epochs], (c.name(), trainers)  # one trainer, every epoch once
        assert outs[0]["weights"][c.name()] == outs[1]["weights"][c.name()]  # the other loaded its result
    assert sum(e.count("waiting for another process that is training this run") for e in errors) >= 1
    assert all(e.count(f"{c.name()}: waiting") <= 1 for e in errors for c in configs)  # said once per run


def test_a_run_whose_trainer_was_killed_mid_epoch_is_taken_over_and_ends_bit_identical(tmp_path, one_thread):
    config = TrainConfig(**TINY)  # 4 steps an epoch: step 6 is in the middle of epoch 2
    spec = {"configs": [asdict(config)], "runs": str(tmp_path / "runs"), "ready": str(tmp_path / "ready"),
            "out": str(tmp_path / "out.json"), "hang_at_step": 6}
    worker = _start_worker(spec)
    try:
        _wait_for(tmp_path / "ready", [worker])
        run_dir = tmp_path / "runs" / config.name()
        with pytest.raises(TimeoutError):  # the worker holds the run's lock
            with store.run_lock(run_dir, timeout=0.1):
                pass
        assert store.load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        worker.kill()
        worker.communicate()
    epochs = []
    resumed = train_or_load(config, tmp_path / "runs", device="cpu", progress=False,
                            on_epoch_end=lambda epoch, record: epochs.append(epoch))
    assert epochs == [2, 3]  # taken over from the last checkpoint, not restarted
    straight = train_or_load(config, tmp_path / "straight", device="cpu", progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.metrics["final"] == straight.metrics["final"]


def test_first_pc_regulariser_lowers_the_share_it_penalises_and_resumes_bit_identical(tmp_path):
    from widedeep import train
    from widedeep.measures import pca  # noqa: F401  (the analyses' first-PC share is computed independently below)

    base = {**TINY, "epochs": 4}
    plain = train_or_load(TrainConfig(**base), tmp_path / "plain", device="cpu", progress=False)
    config = TrainConfig(**{**base, "pc_reg_strength": 10.0, "pc_reg_threshold": 0.05, "pc_reg_layers": "stream"})
    assert config.name() != plain.config.name()
    regularised = train_or_load(config, tmp_path / "reg", device="cpu", progress=False)
    assert all("pc_reg_loss" in h for h in regularised.metrics["epochs"])
    images = config.splits().test.images[:200]

    def mean_share(model):
        shares = []
        with torch.inference_mode():
            outputs = {}
            hooks = [dict(model.named_modules())[n].register_forward_hook(
                lambda m, i, o, n=n: outputs.__setitem__(n, o)) for n in train.pc_layers(model, "stream")]
            model.eval()(images)
            for h in hooks:
                h.remove()
        for x in outputs.values():
            x = x.flatten(1).double()
            s = torch.linalg.svdvals(x - x.mean(0))
            shares.append(float(s[0] ** 2 / (s ** 2).sum()))
        return sum(shares) / len(shares)

    assert mean_share(regularised.model) < mean_share(plain.model)
    with pytest.raises(Killed):
        train_or_load(config, tmp_path / "killed", device="cpu", progress=False, on_epoch_end=_kill_after(2))
    resumed = train_or_load(config, tmp_path / "killed", device="cpu", progress=False)
    for key, value in regularised.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(ValueError, match="pc_reg_layers"):
        TrainConfig(**{**base, "pc_reg_layers": "convs"})


def test_snapshots_keep_the_weights_of_their_epoch_and_do_not_change_the_run(tmp_path):
    base = {**TINY, "epochs": 3}
    straight = train_or_load(TrainConfig(**{**base, "epochs": 2}), tmp_path / "two", device="cpu", progress=False)
    config = TrainConfig(**{**base, "snapshot_epochs": [1, 2]})
    assert config.snapshot_epochs == (1, 2) and config.name() != TrainConfig(**base).name()
    run = train_or_load(config, tmp_path / "snap", device="cpu", progress=False)
    plain = train_or_load(TrainConfig(**base), tmp_path / "plain", device="cpu", progress=False)
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[key]), key  # snapshots change nothing
    snapshot = store.load_checkpoint(run.run_dir / "snapshots" / "epoch-2.pt")["model"]
    assert sorted(p.name for p in (run.run_dir / "snapshots").iterdir()) == ["epoch-1.pt", "epoch-2.pt"]
    assert train_or_load(config, tmp_path / "snap", device="cpu", progress=False).config == config  # config.json ok
    with pytest.raises(ValueError, match="snapshot_epochs"):
        TrainConfig(**{**base, "snapshot_epochs": [0]})
    # A 3-epoch cosine schedule differs from a 2-epoch one, so epoch 2 of it is not the 2-epoch run's end:
    assert any(not torch.equal(snapshot[k], v) for k, v in straight.model.state_dict().items()
               if v.dtype.is_floating_point)
