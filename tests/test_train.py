"""Training: cached, resumable with identical weights, corrupt checkpoints detected, recipe as specified."""

import json
import math

import pytest
import torch

from widedeep import store
from widedeep.train import TrainConfig, _optimizer, cosine_lr, is_complete, train_or_load

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


def test_truncated_checkpoint_without_sidecar_is_still_detected(tmp_path):
    path = tmp_path / "checkpoint.pt"
    store.save_checkpoint(path, {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:100])
    (tmp_path / "checkpoint.pt.sha256").unlink()
    with pytest.raises(store.CorruptCheckpointError, match="cannot be read"):
        store.load_checkpoint(path)


@pytest.mark.parametrize("change, message", [
    ({"width": 0}, "width"), ({"depth": 21}, "6n\\+2"), ({"dataset": "imagenet"}, "unknown dataset"),
    ({"n_train": 205}, "multiple"), ({"batch_size": 500}, "batch_size"), ({"epochs": 0}, "epochs"),
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

    exact, mixed = TrainConfig(**TINY), TrainConfig(**{**TINY, "precision": "bfloat16"})
    assert exact.name() != mixed.name()
    # A float32 run with no minimum of steps hashes exactly as runs stored before these fields existed.
    legacy = {k: v for k, v in asdict(exact).items() if k not in ("precision", "min_steps")}
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

    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        assert train.native_bfloat16("cpu")
    assert not train.native_bfloat16("meta")


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
