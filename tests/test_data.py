"""Data: subsets are balanced, seeded and disjoint from validation; bad input gets a clear error."""

import gzip
import pickle
from unittest import mock

import numpy as np
import pytest
import torch

from widedeep import data


@pytest.fixture(scope="module")
def splits():
    return data.make_splits("fashion_mnist", n_train=500, n_val=200, data_seed=0, image_size=16, n_test=1000)


def test_subset_sizes_and_class_balance(splits):
    assert len(splits.train) == 500 and len(splits.val) == 200 and len(splits.test) == 1000
    assert splits.train.labels.bincount(minlength=10).tolist() == [50] * 10
    assert splits.val.labels.bincount(minlength=10).tolist() == [20] * 10
    assert splits.test.labels.bincount(minlength=10).tolist() == [100] * 10
    assert splits.train.images.shape == (500, 1, 16, 16)
    assert splits.train.images.dtype == torch.float32
    assert 0 <= splits.train.images.min() and splits.train.images.max() <= 1


def _rows(images):
    return {tuple(x.flatten().tolist()) for x in images}


def test_validation_is_held_out_from_training(splits):
    assert not _rows(splits.train.images) & _rows(splits.val.images)


def test_subsets_are_deterministic_nested_and_seeded(splits):
    again = data.make_splits("fashion_mnist", 500, 200, 0, 16, 1000)
    assert torch.equal(again.train.images, splits.train.images) and torch.equal(again.val.labels, splits.val.labels)
    smaller = data.make_splits("fashion_mnist", 100, 200, 0, 16, 1000)
    assert _rows(smaller.train.images) <= _rows(splits.train.images)  # nested for one data seed
    other = data.make_splits("fashion_mnist", 500, 200, 1, 16, 1000)
    assert not torch.equal(other.train.images, splits.train.images)


def test_native_size_matches_the_idx_files():
    full = data.load_split("fashion_mnist", train=False)
    assert full.images.shape == (10_000, 1, 28, 28) and len(full.classes) == 10


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "mnist-fashion"}, "unknown dataset"),
    ({"n_train": 0}, "positive multiple"),
    ({"n_train": 105}, "positive multiple"),
    ({"n_train": 59_990, "n_val": 1000}, "exceeds"),
    ({"n_test": 10_010}, "n_test"),
])
def test_bad_requests_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.make_splits(**{"name": "fashion_mnist", "n_train": 100, "n_val": 100, **kwargs})


def test_missing_files_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEDEEP_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_split("fashion_mnist", train=True, root=tmp_path / "empty", download=False)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.load_split("cifar10", train=True, root=tmp_path / "empty", download=False)


def _write_cifar(root, name, n_per_file, num_classes, rng):
    """Small files in torchvision's python-pickle CIFAR layout."""
    if name == "cifar10":
        folder, files, label_key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + [
            "test_batch"], "labels"
        meta_file, meta_key = "batches.meta", "label_names"
    else:
        folder, files, label_key = root / "cifar-100-python", ["train", "test"], "fine_labels"
        meta_file, meta_key = "meta", "fine_label_names"
    folder.mkdir(parents=True)
    written = {}
    for f in files:
        images = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = (np.arange(n_per_file) % num_classes).tolist()
        with open(folder / f, "wb") as fh:
            pickle.dump({"data": images, label_key: labels}, fh)
        written[f] = (images, labels)
    with open(folder / meta_file, "wb") as fh:
        pickle.dump({meta_key: [f"class{i}" for i in range(num_classes)]}, fh)
    return written


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_through_torchvision(tmp_path, name, num_classes):
    written = _write_cifar(tmp_path, name, 200, num_classes, np.random.default_rng(0))
    # Only the MD5 checks of the real archives are mocked: our small files cannot match them.
    with mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True), \
            mock.patch("torchvision.datasets.cifar.CIFAR10._check_integrity", return_value=True):
        test = data.load_split(name, train=False, root=tmp_path)
        train = data.load_split(name, train=True, root=tmp_path)
    images, labels = written["test_batch" if name == "cifar10" else "test"]
    assert test.images.shape == (200, 3, 32, 32) and train.labels.shape[0] == (1000 if name == "cifar10" else 200)
    # Channel-first conversion is right: pixel (c, y, x) of image 0 is byte c*1024 + y*32 + x.
    assert test.images[0, 2, 3, 4].item() == pytest.approx(images[0, 2 * 1024 + 3 * 32 + 4] / 255)
    assert test.labels.tolist() == labels and len(test.classes) == num_classes


def test_augment_crops_from_the_padded_image_and_flips():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(data.augment(images, generator, pad=0, flip=False), images)
    flipped = data.augment(images, generator, pad=0, flip=True)
    for original, out in zip(images, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(2))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    crops = data.augment(images, generator, pad=2, flip=False)
    for p, crop in zip(padded, crops):
        windows = [p[:, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(crop, w) for w in windows)


def test_batches_drop_the_last_partial_batch_and_shuffle(splits):
    sizes = [len(y) for _, y in data.batches(splits.train, 128, torch.Generator().manual_seed(0), drop_last=True)]
    assert sizes == [128, 128, 128]
    ordered = torch.cat([y for _, y in data.batches(splits.train, 128)])
    assert torch.equal(ordered, splits.train.labels)
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(splits.train, 1000, drop_last=True))


def test_first_takes_a_prefix_or_everything():
    examples = data.ImageData(torch.rand(5, 1, 2, 2), torch.arange(5), ["a"])
    assert examples.first(None) is examples
    assert examples.first(3).labels.tolist() == [0, 1, 2]
    assert len(examples.first(10)) == 5
    with pytest.raises(ValueError, match="positive integer"):
        examples.first(0)


# --- Damaged Fashion-MNIST files ------------------------------------------------------------------

def _idx(array: np.ndarray) -> bytes:
    """`array` (uint8) in the IDX format: magic 0 0 8 ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fashion_source(folder, n=20, compress=True):
    """Small but well-formed Fashion-MNIST files (gzipped as Debian ships them, or not)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in data.FASHION_MNIST_FILES:
        array = rng.integers(0, 256, (n, 28, 28)) if "images" in name else np.arange(n) % 10
        payload = _idx(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)
    return folder


def test_small_well_formed_idx_files_load(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEDEEP_FASHION_MNIST_DIR", str(_fashion_source(tmp_path / "src")))
    test = data.load_split("fashion_mnist", train=False, root=tmp_path / "root", download=False)
    assert test.images.shape == (20, 1, 28, 28) and test.labels.tolist() == [i % 10 for i in range(20)]
    assert data.idx_problem(tmp_path / "root" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte") is None


def test_a_truncated_gz_file_is_named_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    source = _fashion_source(tmp_path / "src")
    gz = source / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    monkeypatch.setenv("WIDEDEEP_FASHION_MNIST_DIR", str(source))
    with pytest.raises(data.CorruptDataError, match=f"{gz} is damaged and cannot be unpacked.*good copy"):
        data.load_split("fashion_mnist", train=True, root=tmp_path / "root", download=False)
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    assert not [p.name for p in raw.iterdir() if "tmp" in p.name or "train-images" in p.name]


def test_a_gz_file_that_unpacks_to_a_short_idx_file_is_named(tmp_path, monkeypatch):
    source = _fashion_source(tmp_path / "src")
    name = "t10k-labels-idx1-ubyte"
    (source / f"{name}.gz").write_bytes(gzip.compress(_idx(np.arange(20) % 10)[:-5]))
    monkeypatch.setenv("WIDEDEEP_FASHION_MNIST_DIR", str(source))
    with pytest.raises(data.CorruptDataError, match=f"{name}.gz is damaged: unpacked, it has 23 bytes where its "
                                                    f"header \\(shape \\(20,\\)\\) calls for 28 \\(cut short\\)"):
        data.load_split("fashion_mnist", train=False, root=tmp_path / "root", download=False)
    assert not (tmp_path / "root" / "FashionMNIST" / "raw" / name).exists()


@pytest.mark.parametrize("damage, problem", [("truncate", "cut short"), ("header", "does not start with an IDX")])
def test_a_damaged_unpacked_idx_file_is_named_not_called_missing(tmp_path, monkeypatch, damage, problem):
    monkeypatch.setenv("WIDEDEEP_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    raw = _fashion_source(tmp_path / "root" / "FashionMNIST" / "raw", compress=False)
    path = raw / ("train-labels-idx1-ubyte" if damage == "truncate" else "train-images-idx3-ubyte")
    payload = path.read_bytes()
    path.write_bytes(payload[:-3] if damage == "truncate" else b"PK\x03\x04" + payload[4:])
    with pytest.raises(data.CorruptDataError, match=f"{path} is damaged: .*{problem}.*rm '{path}'"):
        data.load_split("fashion_mnist", train=True, root=tmp_path / "root", download=True)
