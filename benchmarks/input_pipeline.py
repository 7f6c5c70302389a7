"""Input pipeline: our in-memory tensor pipeline against a torchvision-style DataLoader loop.

Both loops train the same model with the same optimiser step on the same data; only the input
pipeline differs. Ours indexes whole batches out of a tensor held in memory and augments the batch
at once (`widedeep.data.batches`); the baseline is the usual `Dataset` + per-image
`torchvision.transforms` + `DataLoader`. Runs are interleaved (A, B, A, B, ...) so drift in the
machine's speed hits both alike. Goal: ours >= 1.3x the baseline's images/s.

    .venv/bin/python benchmarks/input_pipeline.py [--steps 8] [--repeats 3] [--image-size 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from widedeep import data, models
from widedeep.store import hardware


class ImageDataset(Dataset):
    """Per-image access with per-image transforms: the common PyTorch pattern."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def train_steps(model, optimizer, batch_iter, steps: int) -> float:
    """Run `steps` SGD steps from `batch_iter` after one warm-up step; return images per second."""
    model.train()
    images, labels = next(batch_iter)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seen, start = 0, time.perf_counter()
    for _ in range(steps):
        images, labels = next(batch_iter)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def ours(train: data.ImageData, batch_size: int, pad: int, seed: int):
    """Endless batches from the in-memory pipeline."""
    epoch = 0
    while True:
        yield from data.batches(train, batch_size, torch.Generator().manual_seed(seed + epoch), drop_last=True,
                                augment_pad=pad, flip=True)
        epoch += 1


def dataloader(train: data.ImageData, batch_size: int, pad: int, workers: int):
    """Endless batches from a torchvision-style DataLoader."""
    size = train.images.shape[-1]
    transform = transforms.Compose([transforms.RandomCrop(size, padding=pad, padding_mode="reflect"),
                                    transforms.RandomHorizontalFlip()])
    loader = DataLoader(ImageDataset(train.images, train.labels, transform), batch_size=batch_size, shuffle=True,
                        drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per pipeline")
    parser.add_argument("--image-size", type=int, default=16, help="pixels (the cpu profile uses 16)")
    parser.add_argument("--widths", type=float, nargs="+", default=[1, 4])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for the baseline")
    args = parser.parse_args()
    splits = data.make_splits("fashion_mnist", n_train=2000, n_val=100, image_size=args.image_size, n_test=100)
    pad = data.crop_padding(args.image_size)
    print(f"ResNet-20 training throughput, batch 128, Fashion-MNIST {args.image_size} px, "
          f"{torch.get_num_threads()} threads, {hardware()}, torch {torch.__version__}")
    print(f"{'model':<14}{'ours img/s':>12}{'DataLoader img/s':>18}{'ratio':>8}")
    for width in args.widths:
        rates = {"ours": [], "loader": []}
        for repeat in range(args.repeats):
            for name in ("ours", "loader"):
                torch.manual_seed(0)
                model = models.resnet(20, width, in_channels=1)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
                batches = (ours(splits.train, 128, pad, repeat) if name == "ours"
                           else dataloader(splits.train, 128, pad, args.workers))
                rates[name].append(train_steps(model, optimizer, batches, args.steps))
        a, b = statistics.median(rates["ours"]), statistics.median(rates["loader"])
        print(f"ResNet-20 x{width:<4g}{a:>12.0f}{b:>18.0f}{a / b:>7.2f}x")


if __name__ == "__main__":
    main()
