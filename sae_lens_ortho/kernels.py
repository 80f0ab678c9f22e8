"""Device-specific fast paths for the few primitives that dominate pair selection. Pure functions, same results
on every device (tested against torch's own ops)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["sort_int64", "reverse_arange"]


def sort_int64(x: Tensor) -> Tensor:
    """Ascending sort of a 1-D int64 tensor, values only.

    On x86 CPUs NumPy's vectorised sort (x86-simd-sort) is ~3x faster than ``torch.sort`` for the tens of
    millions of packed pair keys a TopK batch produces; elsewhere (CUDA) ``torch.sort`` is the fast one.
    """
    if x.device.type == "cpu" and x.dtype == torch.int64 and x.ndim == 1:
        return torch.from_numpy(np.sort(x.numpy()))
    return x.sort().values


@functools.lru_cache(maxsize=4)
def reverse_arange(size: int, device: str) -> Tensor:
    """(2^32 - 1) - arange(size) as int64: the tie-break half of a ranking key, cached because every training
    step of a given shape needs the same one (and allocating it is a measurable share of the step on CPU)."""
    return ((1 << 32) - 1) - torch.arange(size, device=device)
