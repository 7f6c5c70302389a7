"""Training that is cached, resumable and deterministic: `train_or_load(config)`.

The recipe is the paper's (`cifar_train.py`): SGD with momentum 0.9, lr 0.01 with cosine decay to
zero, L2 on conv/dense kernels only (Keras 1e-4 = PyTorch weight decay 2e-4), batch 128 with the
last partial batch dropped, random crop + flip, inputs in [0, 1]. We decay per step rather than per
epoch (smoother for the short schedules of small subsets) and select nothing on the test set.

Precision: `precision="bfloat16"` trains under `torch.autocast` with bfloat16 matrix products on the
CPU (where it has native bfloat16, e.g. AVX512-BF16 or AMX) or the GPU; weights, optimiser state and
the loss stay float32. Everything a later chapter reads from a trained model (accuracies,
predictions, the activations behind CKA, first PCs, probes and the subspace match) is computed in
float32 without autocast, whatever the model was trained in.

Schedule: `epochs` passes over the training subset, extended to at least `min_steps` SGD steps, so
that a small subset (where an epoch is a few steps) is trained as long as the paper's models are.

Architectures: `arch="resnet"` (the paper's CIFAR ResNet, every run before Chapter 10) or `arch="vit"`
(Chapter 10's small Vision Transformer: `depth` encoder blocks of embedding dimension `width`, with
`patch_size`, `heads` and `mlp_ratio`). A ViT usually trains with `optimizer="adamw"` (decoupled weight
decay on the dense and patch kernels) and a linear warmup of `warmup_steps` before the cosine decay.
These fields sit at their legacy defaults in every ResNet run, so no ResNet run's name changed.

A run lives in `runs/<readable-name>-<hash>/`: `config.json`, `metrics.json` (per-epoch accuracy,
wall time, hardware, versions) and `checkpoint.pt`, rewritten atomically after every epoch. A killed
run resumes from its last checkpoint and, on the CPU, ends with exactly the weights of an
uninterrupted run: each epoch's shuffling and augmentation come from a generator seeded by
(seed, epoch), and the optimiser state travels in the checkpoint. A process trains a run only while
it holds the run's lock (`store.run_lock`): a second process asking for the same run waits and then
loads the result, and one whose holder died takes the run over from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from widedeep import backends
from widedeep import data as data_module
from widedeep import store
from widedeep.models import (CifarResNet, VisionTransformer, parameter_count, resnet, validate_architecture,
                             validate_patches, validate_vit, vit)

SHORT_DATASET = {"fashion_mnist": "fmnist", "cifar10": "c10", "cifar100": "c100"}
PRECISIONS = ("float32", "bfloat16")
# Fields added after runs were stored: at these values they are left out of the run's hash and
# config file, so every run stored before they existed keeps its name.
LEGACY_DEFAULTS = {"precision": "float32", "min_steps": 0, "pc_reg_strength": 0.0, "pc_reg_threshold": 0.1,
                   "pc_reg_layers": "relu", "snapshot_epochs": (), "arch": "resnet", "patch_size": 4, "heads": 4,
                   "mlp_ratio": 2, "optimizer": "sgd", "warmup_steps": 0}
ARCHS = ("resnet", "vit")
OPTIMIZERS = ("sgd", "adamw")
VIT_ONLY = ("patch_size", "heads", "mlp_ratio")   # fields a ResNet run must leave at their defaults
PC_REG_LAYERS = ("relu", "stream", "add", "all")
MIN_IMAGE_SIZE = 4  # the network halves the image twice: 4 px leaves a 1 x 1 map in the last stage
# The keys a complete run's metrics.json must have (what loading and the chapters read).
COMPLETE_METRICS = ("epochs", "final", "parameters", "wall_time_s", "hardware")
FINAL_METRICS = ("train_acc", "val_acc", "test_acc")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash names the run folder."""

    depth: int = 20
    width: float = 1
    n_train: int = 1000
    seed: int = 0
    dataset: str = "fashion_mnist"
    image_size: int | None = 16      # None keeps the native size (28 px Fashion-MNIST, 32 px CIFAR)
    n_val: int = 1000                # held out from the training split, class-balanced
    n_test: int | None = None        # None: the whole test set
    data_seed: int = 0               # chooses the subset and validation split (fixed across model seeds)
    residual: bool = True            # False: the plain (no shortcut) control
    bn_momentum: float = 0.01        # Keras' 0.99 in PyTorch terms; short (smoke) runs use 0.1 to settle
    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 2e-4       # on conv and dense kernels only
    augment: bool = True             # reflect-padded random crop and horizontal flip
    eval_every: int = 10             # epochs between validation/test evaluations (and always the last)
    precision: str = "float32"       # "bfloat16": autocast matrix products in training (see the module doc)
    min_steps: int = 0               # train at least this many SGD steps (more epochs on small subsets)
    pc_reg_strength: float = 0.0     # first-PC regulariser (Nguyen et al. 2022): loss += strength * relu(share - threshold)
    pc_reg_threshold: float = 0.1    # ... per layer, share = the first PC's share of variance on the minibatch
    pc_reg_layers: str = "relu"      # ... over these layers: relu (every ReLU), stream, add, all (see pc_layers)
    snapshot_epochs: tuple = ()      # epochs after which the weights are also kept in snapshots/ (Chapter 8)
    arch: str = "resnet"             # resnet | vit (Chapter 10: depth = encoder blocks, width = embedding dimension)
    patch_size: int = 4              # ViT: square patches of this many pixels
    heads: int = 4                   # ViT: attention heads (width must be a multiple)
    mlp_ratio: int = 2               # ViT: MLP hidden width over the embedding width
    optimizer: str = "sgd"           # sgd (momentum, L2 on kernels) | adamw (decoupled weight decay on kernels)
    warmup_steps: int = 0            # linear warmup of the learning rate before the cosine decay (0: none)

    def __post_init__(self):
        object.__setattr__(self, "snapshot_epochs", tuple(self.snapshot_epochs))
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        info = data_module.dataset_info(self.dataset)
        size = self.image_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE):
            raise ValueError(f"image_size must be None (the native {info.size} px) or an integer >= "
                             f"{MIN_IMAGE_SIZE} (the network halves it twice); got {size!r}")
        if self.arch == "resnet":
            validate_architecture(self.depth, self.width)
            changed = [k for k in VIT_ONLY if getattr(self, k) != LEGACY_DEFAULTS[k]]
            if changed:
                raise ValueError(f"{changed} set a ViT's shape; a ResNet run (arch='resnet') takes none of them")
        else:
            validate_vit(self.depth, self.width, self.heads, self.mlp_ratio)
            validate_patches(size or info.size, self.patch_size)
            if not self.residual:
                raise ValueError("residual=False (the plain control) exists for ResNets only; a ViT keeps its "
                                 "residual stream")
            if self.pc_reg_strength > 0 and self.pc_reg_layers == "relu":
                raise ValueError("a ViT has no ReLU layers for the first-PC regulariser: use pc_reg_layers "
                                 "'stream', 'add' or 'all'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        data_module._check_counts(self.n_train, self.n_val, info, self.n_test)
        for name in ("epochs", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size {self.batch_size} exceeds n_train {self.n_train}: no full batch to train on")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} in a run's config (profiles may also say "
                             f"'auto'); got {self.precision!r}")
        if not (isinstance(self.pc_reg_strength, (int, float)) and math.isfinite(self.pc_reg_strength)
                and self.pc_reg_strength >= 0):
            raise ValueError(f"pc_reg_strength must be a non-negative number (0: off); got {self.pc_reg_strength!r}")
        if not (isinstance(self.pc_reg_threshold, (int, float)) and 0 <= self.pc_reg_threshold < 1):
            raise ValueError(f"pc_reg_threshold must lie in [0, 1); got {self.pc_reg_threshold!r}")
        if self.pc_reg_layers not in PC_REG_LAYERS:
            raise ValueError(f"pc_reg_layers must be one of {PC_REG_LAYERS}; got {self.pc_reg_layers!r}")
        bad = [e for e in self.snapshot_epochs if isinstance(e, bool) or not isinstance(e, int) or e < 1]
        if bad or len(set(self.snapshot_epochs)) != len(self.snapshot_epochs):
            raise ValueError(f"snapshot_epochs must be distinct positive epochs; got {list(self.snapshot_epochs)}")
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ValueError(f"min_steps must be a non-negative integer (0: epochs alone set the length); "
                             f"got {self.min_steps!r}")
        if (isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0
                or self.warmup_steps >= self.total_steps):
            raise ValueError(f"warmup_steps must be a non-negative integer below the schedule's {self.total_steps} "
                             f"steps (0: no warmup); got {self.warmup_steps!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict, naming any key that is not a config field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known options: {sorted(known)}")
        return cls(**values)

    def stored(self) -> dict:
        """The config as hashed and written to `config.json`: fields at their legacy default left out."""
        values = asdict(self)
        values["snapshot_epochs"] = list(values["snapshot_epochs"])  # as JSON keeps it
        return {k: v for k, v in values.items()
                if not (k in LEGACY_DEFAULTS and v == (list(LEGACY_DEFAULTS[k]) if k == "snapshot_epochs"
                                                       else LEGACY_DEFAULTS[k]))}

    @property
    def steps_per_epoch(self) -> int:
        """SGD steps per epoch (the last partial batch is dropped)."""
        return self.n_train // self.batch_size

    @property
    def total_epochs(self) -> int:
        """Epochs actually trained: `epochs`, or more where `min_steps` asks for more steps."""
        return max(self.epochs, math.ceil(self.min_steps / self.steps_per_epoch))

    @property
    def total_steps(self) -> int:
        """SGD steps of the whole schedule."""
        return self.total_epochs * self.steps_per_epoch

    @property
    def eval_interval(self) -> int:
        """Epochs between evaluations, stretched with the schedule so a run has about epochs/eval_every of them."""
        return self.eval_every * math.ceil(self.total_epochs / self.epochs)

    @property
    def num_classes(self) -> int:
        return data_module.dataset_info(self.dataset).num_classes

    @property
    def in_channels(self) -> int:
        return data_module.dataset_info(self.dataset).channels

    def name(self) -> str:
        """Readable, unique run name, e.g. fmnist16-resnet20x1-n1000-s0-1a2b3c4d (fmnist16-vit4x64-... for a ViT)."""
        size = self.image_size or data_module.dataset_info(self.dataset).size
        family = "vit" if self.arch == "vit" else "resnet" if self.residual else "plain"
        return (f"{SHORT_DATASET[self.dataset]}{size}-{family}{self.depth}x{self.width:g}-n{self.n_train}"
                f"-s{self.seed}-{store.config_hash(self.stored())}")

    def build_model(self) -> CifarResNet | VisionTransformer:
        """A freshly initialised model for this config (seeded)."""
        torch.manual_seed(self.seed)
        if self.arch == "vit":
            size = self.image_size or data_module.dataset_info(self.dataset).size
            return vit(self.depth, self.width, self.num_classes, self.in_channels, size, self.patch_size,
                       self.heads, self.mlp_ratio)
        return resnet(self.depth, self.width, self.num_classes, self.in_channels, self.residual, self.bn_momentum)

    def splits(self) -> data_module.Splits:
        """The data splits this config trains and evaluates on."""
        return data_module.make_splits(self.dataset, self.n_train, self.n_val, self.data_seed, self.image_size,
                                       self.n_test)


class FinalAccuracies:
    """`test_acc` and `val_acc` of a run with `metrics` (a trained run, or one read through its records)."""

    metrics: dict

    @property
    def test_acc(self) -> float:
        return self.metrics["final"]["test_acc"]

    @property
    def val_acc(self) -> float:
        return self.metrics["final"]["val_acc"]


@dataclass
class TrainedRun(FinalAccuracies):
    """A trained model with its config, metrics and folder."""

    config: TrainConfig
    model: CifarResNet
    metrics: dict
    run_dir: Path


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) under which it has no native bfloat16 kernels.
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively (so autocast is fast rather than emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ONEDNN_ISAS_WITHOUT_BF16:
            return False  # oneDNN was capped below its bfloat16 kernels (how tests mimic an AVX2-only CPU)
        # AVX512-BF16 or AMX: oneDNN's bfloat16 kernels run natively; plain AVX512 only emulates them.
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # e.g. Arm with the BF16 extension


def resolve_precision(precision: str, device: str | torch.device | None = None) -> str:
    """A run's precision from a profile's `auto | float32 | bfloat16`: `auto` is bfloat16 where native."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device or default_device()) else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}; got {precision!r}")
    return precision


def check_precision(precision: str, device: str | torch.device | None = None) -> None:
    """Refuse bfloat16 on a device that would only emulate it, saying how to override."""
    device = torch.device(device) if device is not None else default_device()
    if precision == "bfloat16" and not native_bfloat16(device):
        raise RuntimeError(
            f"this profile trains in bfloat16, but this {device.type.upper()} has no native bfloat16 "
            f"(no AVX512-BF16/AMX): autocast would be emulated and slower than float32. Override it with "
            f"-p precision float32 (exact, slower; its runs have other names) or -p precision auto.")


def _autocast(device: torch.device, precision: str):
    # bfloat16 autocast needs no loss scaling (float32's exponent range); float32 runs plainly.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


@torch.inference_mode()
def predict(model: nn.Module, data: data_module.ImageData, batch_size: int = 1000) -> torch.Tensor:
    """Logits (float32, on the CPU) for every example, with BatchNorm in inference mode and no autocast."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for images, _ in data_module.batches(data, batch_size):
        out.append(model(images.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, data: data_module.ImageData, batch_size: int = 1000) -> float:
    """Top-1 accuracy on `data`."""
    return (predict(model, data, batch_size).argmax(1) == data.labels.cpu()).float().mean().item()


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (or AdamW) whose weight decay touches conv/dense kernels only (not norms, biases or position embeddings)."""
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kernel_ids = {id(p) for p in kernels}
    others = [p for p in model.parameters() if id(p) not in kernel_ids]
    groups = [{"params": kernels, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def pc_layers(model: CifarResNet, which: str) -> list[str]:
    """The layers the first-PC regulariser reads: every ReLU, the residual stream, the additions, or all."""
    layers = model.layers()
    if which == "all":
        return [layer.name for layer in layers if layer.kind != "input"]
    if which == "stream":
        return [layer.name for layer in layers if layer.kind == "stream"]
    suffix = (".add",) if which == "add" else ("relu", "relu1", "relu2")
    return [layer.name for layer in layers if layer.name.split(".")[-1] in (s.lstrip(".") for s in suffix)]


class FirstPCRegulariser:
    """The authors' first-PC regulariser (`resnet_cifar_pc_regularize.py`, Nguyen, Raghu & Kornblith 2022).

    Per regularised layer and training step: flatten the minibatch's activations to X (n x p), centre
    each feature, take one power-iteration step v = X^T X u from a persistent, stop-gradient unit
    vector u (one per layer, kept across steps and in the checkpoint), and estimate the first PC's
    share of variance as ||v|| / ||X||_F^2; the loss adds strength * relu(share - threshold). The
    gradient flows through X in both norms, not through u. As in their code, the share is computed in
    float32 (here also under bfloat16 autocast) and u starts from a seeded Gaussian.
    """

    def __init__(self, model: CifarResNet, config: "TrainConfig"):
        self.strength, self.threshold = float(config.pc_reg_strength), float(config.pc_reg_threshold)
        modules = dict(model.named_modules())
        self.names = pc_layers(model, config.pc_reg_layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self.vectors: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + 17)
        self.handles = [modules[name].register_forward_hook(self._keep(name)) for name in self.names]
        self.total, self.steps = 0.0, 0

    def _keep(self, name: str):
        def hook(module, inputs, output):
            if module.training:
                self.outputs[name] = output
        return hook

    def penalty(self) -> torch.Tensor:
        """The regulariser's loss for the last training forward pass (and one power-iteration step per layer)."""
        total = torch.zeros((), dtype=torch.float32)
        for name in self.names:
            x = self.outputs.pop(name).flatten(1).float()
            x = x - x.mean(dim=0, keepdim=True)
            u = self.vectors.get(name)
            if u is None:
                u = torch.randn(x.shape[1], generator=self.generator).to(x.device)
                u = u / u.norm()
            v = x.T @ (x @ u.detach())
            share = v.norm() / (x * x).sum().clamp_min(1e-30)
            self.vectors[name] = (v / v.norm().clamp_min(1e-30)).detach()
            total = total.to(x.device) + torch.relu(share - self.threshold)
        loss = self.strength * total
        self.total, self.steps = self.total + float(loss.detach()), self.steps + 1
        return loss

    def epoch_mean(self) -> float:
        """Mean regulariser loss over the steps since the last call."""
        mean = self.total / max(self.steps, 1)
        self.total, self.steps = 0.0, 0
        return mean

    def close(self) -> None:
        """Remove the hooks (the trained model is returned without them)."""
        for handle in self.handles:
            handle.remove()
        self.outputs.clear()

    def state(self) -> dict:
        """The persistent vectors and generator state, for an exact resume."""
        return {"vectors": dict(self.vectors), "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        self.vectors = {k: v for k, v in state["vectors"].items()}
        self.generator.set_state(state["generator"])


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
             precision: str = "float32", regulariser: "FirstPCRegulariser | None" = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step (forward under the run's precision, float32 loss, backward, update): (logits, loss).

    The returned loss is the cross-entropy; a regulariser's penalty is added to what is minimised.
    """
    with _autocast(images.device, precision):
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
    objective = loss + regulariser.penalty() if regulariser is not None else loss
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return logits, loss


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over total_steps."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def scheduled_lr(config: TrainConfig, step: int) -> float:
    """The learning rate of SGD step `step`: a linear warmup over `warmup_steps`, then cosine decay to 0."""
    warmup = config.warmup_steps
    if warmup == 0:
        return cosine_lr(config.lr, step, config.total_steps)   # exactly the runs trained before warmup existed
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return cosine_lr(config.lr, step - warmup, config.total_steps - warmup)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's shuffling and augmentation (independent of any earlier epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def is_complete(config: TrainConfig, runs_dir: str | Path = "runs") -> bool:
    """Whether a finished run for `config` is in the store."""
    run_dir = Path(runs_dir) / config.name()
    return _read_metrics(run_dir) is not None and (run_dir / "checkpoint.pt").exists()


def _read_metrics(run_dir: Path) -> dict | None:
    """The metrics of a complete run (checked to hold what loading needs), else None."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return None
    advice = (f"Delete it (rm '{path}') and rerun: it is rebuilt from the run's checkpoint (training resumes "
              f"where the checkpoint stopped; a finished run is not retrained).")
    metrics = store.read_json(path, advice)
    if not isinstance(metrics, dict):
        raise store.CorruptFileError(f"{path} holds a JSON {type(metrics).__name__}, not the metrics object of "
                                     f"a run. {advice}")
    if metrics.get("status") != "complete":
        return None
    missing = [key for key in COMPLETE_METRICS if key not in metrics]
    final = metrics.get("final")
    missing += [f"final.{key}" for key in FINAL_METRICS if isinstance(final, dict) and key not in final]
    if final is not None and not isinstance(final, dict):
        missing.append("final (an object)")
    if missing:
        raise store.CorruptFileError(f"{path} says the run is complete but lacks {', '.join(missing)} (a hand "
                                     f"edit, or a file from another version). {advice}")
    return metrics


# Runs each thread is training now: a nested train_or_load of one of them (say from on_epoch_end)
# would train the run twice over itself, so it is refused.
_training = threading.local()


def train_or_load(config: TrainConfig, runs_dir: str | Path = "runs", device: str | torch.device | None = None,
                  allow_train: bool = True, progress: bool = True,
                  on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainedRun:
    """Return the trained model for `config`: loaded from the run store, resumed, or trained from scratch.

    Training happens under the run's lock (`store.run_lock`), so two processes never train one run:
    the second waits, then loads what the first trained. A finished run loads without the lock.
    """
    device = torch.device(device) if device is not None else default_device()
    run_dir = Path(runs_dir) / config.name()
    _check_config_file(run_dir, config)
    if is_complete(config, runs_dir):
        return _load(config, run_dir, device)
    missing = FileNotFoundError(f"no finished run for {config.name()} in {runs_dir}; pass allow_train=True "
                                f"(or run the training chapter) to train it")
    if not allow_train and not run_dir.exists():
        raise missing
    splits = None
    if allow_train:
        # Everything that can refuse the run is checked before the run folder is written.
        check_precision(config.precision, device)
        splits = config.splits()
    waiting = (f"{config.name()}: waiting for another process that is training this run ({run_dir}); "
               f"its result is loaded when it finishes")
    with store.run_lock(run_dir, waiting_message=waiting):
        _check_config_file(run_dir, config)
        if is_complete(config, runs_dir):  # another process finished it while we waited
            return _load(config, run_dir, device)
        if not allow_train:
            raise missing
        active = _training.__dict__.setdefault("runs", set())
        if run_dir.resolve() in active:
            raise RuntimeError(f"train_or_load was called for {config.name()} while this thread is already "
                               f"training it (e.g. from on_epoch_end); load it after training returns")
        active.add(run_dir.resolve())
        try:
            # float32 means IEEE float32: cuDNN would otherwise convolve in TF32 (a no-op on a CPU).
            with backends.no_tf32() if config.precision == "float32" else contextlib.nullcontext():
                return _train(config, run_dir, splits.to(device), device, progress, on_epoch_end)
        finally:
            active.discard(run_dir.resolve())


def _load(config: TrainConfig, run_dir: Path, device: torch.device) -> TrainedRun:
    """The finished run in `run_dir`, its model on `device` in eval mode (a deleted config.json restored)."""
    if not (run_dir / "config.json").exists():
        store.write_json(run_dir / "config.json", config.stored())
    model = config.build_model()
    state = store.load_checkpoint(run_dir / "checkpoint.pt")
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return TrainedRun(config, model, _read_metrics(run_dir), run_dir)


def _train(config: TrainConfig, run_dir: Path, splits: data_module.Splits, device: torch.device, progress: bool,
           on_epoch_end: Callable[[int, dict], None] | None) -> TrainedRun:
    """Train (or resume) the run in `run_dir`; the caller holds its lock."""
    checkpoint_path = run_dir / "checkpoint.pt"
    store.write_json(run_dir / "config.json", config.stored())
    model = config.build_model()
    model.to(device)
    optimizer = _optimizer(model, config)
    history: list[dict] = []
    if checkpoint_path.exists():
        state = store.load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
    steps_per_epoch, total_steps, total_epochs = config.steps_per_epoch, config.total_steps, config.total_epochs
    pad = data_module.crop_padding(splits.train.images.shape[-1]) if config.augment else 0
    flip = config.augment and splits.info.flip
    regulariser = FirstPCRegulariser(model, config) if config.pc_reg_strength > 0 else None
    if regulariser is not None and checkpoint_path.exists():
        regulariser.load_state(state["pc_reg"])
    resumed_at = len(history)
    bar = _progress(range(resumed_at, total_epochs), progress, config.name(), resumed_at, total_epochs)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        generator = epoch_generator(config.seed, epoch)
        # Running sums stay on the device: no host sync per step on a GPU.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        for step, (images, labels) in enumerate(data_module.batches(
                splits.train, config.batch_size, generator, drop_last=True, augment_pad=pad, flip=flip)):
            lr = scheduled_lr(config, epoch * steps_per_epoch + step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, loss = sgd_step(model, optimizer, images, labels, config.precision, regulariser)
            loss_sum += loss.detach().double() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
        loss_sum, correct = loss_sum.item(), correct.item()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"{config.name()}: training loss became {loss_sum} in epoch {epoch + 1}; "
                                     f"lower lr (now {config.lr}) or check the data")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc_augmented": correct / seen,
                  "lr_end": lr}
        last = epoch + 1 == total_epochs
        if (epoch + 1) % config.eval_interval == 0 or last:
            record["val_acc"] = accuracy(model, splits.val)
            record["test_acc"] = accuracy(model, splits.test)
        record["wall_s"] = time.perf_counter() - start
        history.append(record)
        if regulariser is not None:
            record["pc_reg_loss"] = regulariser.epoch_mean()
        if epoch + 1 in config.snapshot_epochs:  # before the checkpoint, so a resumed run never lacks one
            store.save_checkpoint(run_dir / "snapshots" / f"epoch-{epoch + 1}.pt", {"model": model.state_dict()})
        store.save_checkpoint(checkpoint_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                "epoch": epoch + 1, "history": history,
                                                **({"pc_reg": regulariser.state()} if regulariser else {})})
        _write_metrics(config, model, history, splits, run_dir)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc_augmented']:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    if regulariser is not None:
        regulariser.close()
    if resumed_at == total_epochs:
        # Trained to the end but its metrics are not complete (killed between the last checkpoint and
        # its metrics, or metrics.json deleted): rebuilt from the checkpoint, nothing retrained.
        _write_metrics(config, model, history, splits, run_dir)
    model.eval()
    return TrainedRun(config, model, _read_metrics(run_dir), run_dir)


def _write_metrics(config: TrainConfig, model: nn.Module, history: list[dict], splits: data_module.Splits,
                   run_dir: Path) -> None:
    """metrics.json after the epochs in `history`: 'running', or 'complete' with the final accuracies."""
    last = len(history) == config.total_epochs
    metrics = _metrics(config, model, history, status="complete" if last else "running")
    if last:
        metrics["final"] = {"train_acc": accuracy(model, splits.train), "val_acc": history[-1]["val_acc"],
                            "test_acc": history[-1]["test_acc"]}
    store.write_json(run_dir / "metrics.json", metrics)


def _metrics(config: TrainConfig, model: nn.Module, history: list[dict], status: str) -> dict:
    return {"name": config.name(), "status": status, "config": asdict(config),
            "parameters": parameter_count(model), "steps": len(history) * config.steps_per_epoch, "epochs": history,
            "wall_time_s": sum(h["wall_s"] for h in history), "hardware": store.hardware(),
            "threads": torch.get_num_threads(), "versions": store.versions()}


def _check_config_file(run_dir: Path, config: TrainConfig) -> None:
    path = run_dir / "config.json"
    advice = f"Delete it (rm '{path}') and rerun: it is written again from the run's config."
    if path.exists() and store.read_json(path, advice) != config.stored():
        raise RuntimeError(f"{path} holds a different config than {config.name()} (hash collision or a hand "
                           f"edit); move {run_dir} aside and rerun")


def _progress(iterable: Iterable, enabled: bool, name: str, initial: int, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=name, initial=initial, total=total, unit="epoch", leave=False)


def run_summary(run: TrainedRun) -> dict:
    """The row a results table or JSON file keeps for one trained model."""
    c, m = run.config, run.metrics
    return {"name": c.name(), "depth": c.depth, "width": c.width, "n_train": c.n_train, "seed": c.seed,
            "residual": c.residual, "parameters": m["parameters"], "epochs": c.total_epochs,
            "steps": c.total_steps, "precision": c.precision,
            "train_acc": m["final"]["train_acc"], "val_acc": m["final"]["val_acc"],
            "test_acc": m["final"]["test_acc"], "train_wall_time_s": round(m["wall_time_s"], 1),
            "hardware": m["hardware"]}


def measure_throughput(config: TrainConfig, threads: int = 1, steps: int = 6) -> float:
    """Training images per second of `config`'s architecture on this machine: a few timed SGD steps on noise."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = config.build_model().train()
        optimizer = _optimizer(model, config)
        regulariser = FirstPCRegulariser(model, config) if config.pc_reg_strength > 0 else None
        size = config.image_size or data_module.dataset_info(config.dataset).size
        images = torch.rand(config.batch_size, config.in_channels, size, size)
        labels = torch.randint(0, config.num_classes, (config.batch_size,))
        with backends.no_tf32() if config.precision == "float32" else contextlib.nullcontext():
            sgd_step(model, optimizer, images, labels, config.precision, regulariser)  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                sgd_step(model, optimizer, images, labels, config.precision, regulariser)
            elapsed = time.perf_counter() - start
        if regulariser is not None:
            regulariser.close()
        return steps * config.batch_size / elapsed
    finally:
        torch.set_num_threads(previous)
