"""Exact float32 on CUDA: TF32 off for matrix products and convolutions inside a block.

Layer: below everything that computes (only torch). PyTorch lets cuDNN convolutions use TF32 (a 10-bit
mantissa) by default and may let matrix products do so too; the published runs and every measure are
float32, so training and the Gram products turn it off where they run. On a CPU it changes nothing.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch


@contextmanager
def _ieee(backend, legacy_flag: str) -> Iterator[None]:
    """Set one backend's float32 precision to IEEE inside the block, restoring it after."""
    if hasattr(backend, "fp32_precision"):  # new API; mixing it with the legacy flag raises in torch >= 2.9
        previous = backend.fp32_precision
        backend.fp32_precision = "ieee"
        try:
            yield
        finally:
            backend.fp32_precision = previous
    else:  # pragma: no cover - older torch
        previous = getattr(backend, legacy_flag)
        setattr(backend, legacy_flag, False)
        try:
            yield
        finally:
            setattr(backend, legacy_flag, previous)


@contextmanager
def no_tf32(convolutions: bool = True) -> Iterator[None]:
    """No TF32 inside the block: CUDA matrix products, and cuDNN convolutions unless `convolutions=False`."""
    with ExitStack() as stack:
        stack.enter_context(_ieee(torch.backends.cuda.matmul, "allow_tf32"))
        if convolutions:
            cudnn = torch.backends.cudnn
            stack.enter_context(_ieee(getattr(cudnn, "conv", cudnn), "allow_tf32"))
        yield


def tf32_in_use() -> dict[str, bool]:
    """Whether CUDA matrix products and cuDNN convolutions may use TF32 now (for tests and provenance)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    conv = getattr(cudnn, "conv", cudnn)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return {"matmul": matmul.fp32_precision == "tf32", "conv": conv.fp32_precision == "tf32"}
    return {"matmul": bool(matmul.allow_tf32), "conv": bool(cudnn.allow_tf32)}  # pragma: no cover
