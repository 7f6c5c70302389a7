"""Datasets as in-memory tensors: Fashion-MNIST (offline default), CIFAR-10 and CIFAR-100.

Images are float32 in [0, 1] with no mean/std normalisation (the paper's recipe), kept whole in
memory (and on the training device) so that batching is a tensor index, not a per-image
DataLoader. Training subsets are seeded and class-balanced; the validation split is held out from
the training set, so nothing is ever selected on the test set.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_VALUE_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # IDX type code -> bytes per value


class CorruptDataError(RuntimeError):
    """A dataset file that is there but damaged (cut short, not gzip, not IDX); the message names it."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: classes, channels, native size and whether flips are natural."""

    num_classes: int
    channels: int
    size: int
    flip: bool
    train_size: int
    test_size: int


DATASETS = {
    "fashion_mnist": DatasetInfo(10, 1, 28, True, 60_000, 10_000),
    "cifar10": DatasetInfo(10, 3, 32, True, 50_000, 10_000),
    "cifar100": DatasetInfo(100, 3, 32, True, 50_000, 10_000),
}


@dataclass
class ImageData:
    """A labelled image set: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels: counts must match")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "ImageData":
        """The same data on `device`."""
        return ImageData(self.images.to(device), self.labels.to(device), self.classes)

    def subset(self, index: torch.Tensor) -> "ImageData":
        """The examples at `index`, in that order."""
        return ImageData(self.images[index], self.labels[index], self.classes)

    def first(self, count: int | None) -> "ImageData":
        """The first `count` examples (all of them when `count` is None or at least their number)."""
        if count is None:
            return self
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer or None (all); got {count!r}")
        return self.subset(torch.arange(min(count, len(self))))


@dataclass
class Splits:
    """Training subset, validation split (held out from the training set) and test set."""

    train: ImageData
    val: ImageData
    test: ImageData
    info: DatasetInfo

    def to(self, device) -> "Splits":
        """All three splits on `device`."""
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device), self.info)


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset `name`, or a ValueError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets are cached: `root`, else $WIDEDEEP_DATA, else ~/.cache/widedeep/data."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("WIDEDEEP_DATA", Path.home() / ".cache" / "widedeep" / "data"))


def load_split(name: str, train: bool, root=None, image_size: int | None = None,
               download: bool = True) -> ImageData:
    """Load the whole train or test split of dataset `name`, resized to `image_size` if given (cached)."""
    dataset_info(name)
    return _load_split(name, train, data_root(root), image_size, download)


@lru_cache(maxsize=4)
def _load_split(name: str, train: bool, root: Path, image_size: int | None, download: bool) -> ImageData:
    # Cached per process: a grid of models shares one decoded copy (callers index, never modify it).
    info = dataset_info(name)
    if name == "fashion_mnist":
        images, labels, classes = _load_fashion_mnist(root, train, download)
    else:
        images, labels, classes = _load_cifar(name, root, train, download)
    images = images.float().div_(255)
    if image_size is not None and image_size != info.size:
        images = resize(images, image_size)
    return ImageData(images.contiguous(), labels, classes)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average downsampling (bilinear upsampling) to size x size."""
    if size < 1:
        raise ValueError(f"image_size must be >= 1, got {size}")
    mode = "area" if size < images.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False, "antialias": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kwargs)


def _load_fashion_mnist(root: Path, train: bool, download: bool):
    """Fashion-MNIST via torchvision, fed offline from the Debian package where it is installed."""
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    source = Path(os.environ.get("WIDEDEEP_FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST))
    if not all((raw / f).exists() for f in FASHION_MNIST_FILES):
        if all((source / f"{f}.gz").exists() or (source / f).exists() for f in FASHION_MNIST_FILES):
            _unpack_idx_files(source, raw)
    for name in FASHION_MNIST_FILES:  # torchvision would call a damaged file missing, or fail on an assert
        path = raw / name
        problem = idx_problem(path) if path.exists() else None
        if problem:
            raise CorruptDataError(f"Fashion-MNIST file {path} is damaged: {problem}. To fix: delete it "
                                   f"(rm '{path}') and rerun; it is unpacked again from {source} (or put a good "
                                   f"copy of {name} there).")
    try:
        dataset = FashionMNIST(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise _missing("Fashion-MNIST", root) from None
        try:
            dataset = FashionMNIST(str(root), train=train, download=True)
        except Exception as error:  # no network: say what to install instead of a socket error
            raise _missing("Fashion-MNIST", root, error) from error
    return dataset.data.unsqueeze(1), dataset.targets.long(), list(dataset.classes)


def idx_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with IDX file `path` (no IDX header, or a size its header does not call for), or None."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_VALUE_BYTES or not 1 <= magic[3] <= 3:
            return "it does not start with an IDX header"
        dims_bytes = f.read(4 * magic[3])
    if len(dims_bytes) < 4 * magic[3]:
        return "its IDX header is cut short"
    dims = [int.from_bytes(dims_bytes[i:i + 4], "big") for i in range(0, len(dims_bytes), 4)]
    expected = 4 + len(dims_bytes) + int(np.prod(dims)) * IDX_VALUE_BYTES[magic[2]]
    size = path.stat().st_size
    if size != expected:
        return (f"it has {size} bytes where its header (shape {tuple(dims)}) calls for {expected}"
                + (" (cut short)" if size < expected else ""))
    return None


def _unpack_idx_files(source: Path, raw: Path) -> None:
    """Copy (gunzipping) the four IDX files into torchvision's raw/ layout, atomically per file, checked first."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        target = raw / name
        if target.exists():
            continue
        gz = source / f"{name}.gz"
        origin = gz if gz.exists() else source / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=raw)
        try:
            with (gzip.open(origin, "rb") if origin == gz else open(origin, "rb")) as fin, os.fdopen(fd, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            problem = idx_problem(tmp)
            if problem:
                raise CorruptDataError(f"Fashion-MNIST file {origin} is damaged: unpacked, {problem}. "
                                       f"{_reinstall_hint(origin, raw)}")
            os.replace(tmp, target)
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise CorruptDataError(f"Fashion-MNIST file {origin} is damaged and cannot be unpacked "
                                   f"({type(error).__name__}: {error}). {_reinstall_hint(origin, raw)}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _reinstall_hint(origin: Path, raw: Path) -> str:
    package = (" (apt-get install --reinstall dataset-fashion-mnist)"
               if origin.parent == DEBIAN_FASHION_MNIST else "")
    return (f"To fix: replace it with a good copy{package}, or put the four unpacked IDX files in {raw} "
            f"(no damaged copy was left there).")


def _load_cifar(name: str, root: Path, train: bool, download: bool):
    """CIFAR-10/100 through torchvision (python-version archives under `root`)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        dataset = cls(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise _missing(name, root) from None
        try:
            dataset = cls(str(root), train=train, download=True)
        except Exception as error:
            raise _missing(name, root, error) from error
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
    return images, torch.as_tensor(dataset.targets, dtype=torch.long), list(dataset.classes)


def _missing(name: str, root: Path, error: Exception | None = None) -> FileNotFoundError:
    hints = {
        "Fashion-MNIST": (f"install the Debian package (apt-get install dataset-fashion-mnist, which `make setup` "
                          f"does; files land in {DEBIAN_FASHION_MNIST}), or put the four IDX files in "
                          f"{root / 'FashionMNIST' / 'raw'}"),
        "cifar10": f"put torchvision's cifar-10-batches-py folder under {root} (or run once with network access)",
        "cifar100": f"put torchvision's cifar-100-python folder under {root} (or run once with network access)",
    }
    reason = f" (download failed: {type(error).__name__}: {error})" if error else ""
    return FileNotFoundError(f"{name} data not found under {root}{reason}. To fix: {hints[name]}. "
                             f"Set $WIDEDEEP_DATA or pass root= to use another folder.")


def balanced_indices(labels: torch.Tensor, per_class: int, generator: torch.Generator,
                     num_classes: int) -> list[torch.Tensor]:
    """For each class, a seeded random permutation of its indices (first `per_class` checked to exist)."""
    out = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} examples, {per_class} requested")
        out.append(members[torch.randperm(len(members), generator=generator)])
    return out


def make_splits(name: str = "fashion_mnist", n_train: int = 1000, n_val: int = 1000, data_seed: int = 0,
                image_size: int | None = None, n_test: int | None = None, root=None,
                download: bool = True) -> Splits:
    """Seeded class-balanced training subset and validation split from the train split, plus the test set.

    Per class, one permutation (seeded by `data_seed`) gives the validation examples first and the
    training examples next, so for a fixed seed smaller training subsets are nested in larger ones
    and never overlap the validation split. `n_test=None` keeps the whole test set; otherwise a
    class-balanced test subset (for quick profiles only).
    """
    info = dataset_info(name)
    _check_counts(n_train, n_val, info, n_test)
    full_train = load_split(name, True, root, image_size, download)
    test = load_split(name, False, root, image_size, download)
    generator = torch.Generator().manual_seed(data_seed)
    val_per, train_per = n_val // info.num_classes, n_train // info.num_classes
    per_class = balanced_indices(full_train.labels, val_per + train_per, generator, info.num_classes)
    val_index = torch.cat([p[:val_per] for p in per_class])
    train_index = torch.cat([p[val_per:val_per + train_per] for p in per_class])
    if n_test is not None:
        test_per = n_test // info.num_classes
        test_index = torch.cat([p[:test_per] for p in balanced_indices(
            test.labels, test_per, torch.Generator().manual_seed(data_seed), info.num_classes)])
        test = test.subset(test_index.sort().values)
    # Sorted indices: the order of the stored subset carries no information about the seed.
    return Splits(full_train.subset(train_index.sort().values), full_train.subset(val_index.sort().values),
                  test, info)


def _check_counts(n_train: int, n_val: int, info: DatasetInfo, n_test: int | None) -> None:
    c = info.num_classes
    for label, n in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n % c:
            raise ValueError(f"{label} must be a positive multiple of the {c} classes (class-balanced); got {n!r}")
    per_class_available = info.train_size // c
    if (n_train + n_val) // c > per_class_available:
        raise ValueError(f"n_train + n_val = {n_train + n_val} exceeds the {info.train_size} training examples "
                         f"({per_class_available} per class); the largest n_train with n_val={n_val} is "
                         f"{info.train_size - n_val}")
    if n_test is not None and (isinstance(n_test, bool) or not isinstance(n_test, int) or n_test <= 0
                               or n_test % c or n_test > info.test_size):
        raise ValueError(f"n_test must be a multiple of {c} up to {info.test_size}, or None for the whole "
                         f"test set; got {n_test!r}")


def crop_padding(image_size: int) -> int:
    """Padding of the random-crop augmentation: 4 px at 32 px, scaled with the image size."""
    return max(1, round(image_size / 8))


def augment(images: torch.Tensor, generator: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Reflect-padded random crop and random horizontal flip of a batch, on the batch's device."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    # Offsets are drawn on the CPU generator so runs are identical across devices.
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    out = padded[torch.arange(n, device=images.device)[:, None, None, None],
                 torch.arange(c, device=images.device)[None, :, None, None], rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


def batches(data: ImageData, batch_size: int, generator: torch.Generator | None = None,
            drop_last: bool = False, augment_pad: int = 0, flip: bool = False
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches; shuffled and augmented when a generator is given."""
    n = len(data)
    if generator is not None:
        order = torch.randperm(n, generator=generator).to(data.labels.device)
    else:
        order = torch.arange(n, device=data.labels.device)
    stop = n - n % batch_size if drop_last else n
    if stop == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} examples with drop_last=True; "
                         f"lower batch_size or raise n_train")
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        images = data.images[index]
        if generator is not None and (augment_pad or flip):
            images = augment(images, generator, augment_pad, flip)
        yield images, data.labels[index]


def shuffled_passes(data: ImageData, batch_size: int, passes: int = 1, seed: int = 0
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches over `passes` reshuffled passes of `data`, unaugmented (the paper's CKA protocol).

    The order depends only on `seed`, so every model compared sees the same batches.
    """
    for index in range(passes):
        yield from batches(data, batch_size, torch.Generator().manual_seed(seed * 7919 + index), drop_last=True)
