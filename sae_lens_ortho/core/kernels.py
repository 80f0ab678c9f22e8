"""Device-specific fast paths for the few primitives that dominate pair selection. Pure functions, same results
on every device and backend (tested against torch's own ops).

On CPU, NumPy's and torch's sort of int64 keys trade places from environment to environment: NumPy's was ~3x
faster than ``torch.sort`` in one and ~3x slower in another (NumPy 1.26, which SAEBench's ``numpy<2`` pin
installs, on an AMD EPYC VM). So the CPU sort is measured once per process, on first use, on 2^20 random keys
(~0.3 s), and the faster one is kept. The result does not depend on the choice (sorting integers has one
answer). ``SAE_LENS_ORTHO_CPU_KERNELS=numpy`` or ``=torch`` (or setting ``CPU_BACKEND``) skips the measurement;
CUDA always uses torch.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["CPU_BACKEND", "cpu_sort_backend", "reverse_arange", "sort_int64"]

CPU_BACKEND = os.environ.get("SAE_LENS_ORTHO_CPU_KERNELS", "auto")
"""``auto`` (measure once per process), ``numpy`` or ``torch``."""
_CALIBRATION_SIZE = 1 << 20


def _np_sort(x: Tensor) -> Tensor:
    return torch.from_numpy(np.sort(x.numpy()))


def _torch_sort(x: Tensor) -> Tensor:
    return x.sort().values


_SORTS: dict[str, Callable[[Tensor], Tensor]] = {"numpy": _np_sort, "torch": _torch_sort}


@functools.cache
def _measured_sort() -> str:
    """The faster CPU sort: best of 3 alternating runs on random int64 keys."""
    x = torch.randint(0, 1 << 62, (_CALIBRATION_SIZE,), generator=torch.Generator().manual_seed(0))
    best = {name: float("inf") for name in _SORTS}
    for _ in range(3):
        for name, sort in _SORTS.items():
            start = time.perf_counter()
            sort(x)
            best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.__getitem__)


def cpu_sort_backend() -> str:
    """``numpy`` or ``torch``: the backend of :func:`sort_int64` on CPU."""
    if CPU_BACKEND in ("numpy", "torch"):
        return CPU_BACKEND
    if CPU_BACKEND != "auto":
        raise ValueError(f"SAE_LENS_ORTHO_CPU_KERNELS must be auto, numpy or torch, got {CPU_BACKEND!r}")
    return _measured_sort()


def sort_int64(x: Tensor) -> Tensor:
    """Ascending sort of a 1-D int64 tensor, values only (the packed pair keys of a TopK batch: tens of
    millions). Other devices, dtypes and shapes take ``torch.sort``."""
    if x.device.type == "cpu" and x.dtype == torch.int64 and x.ndim == 1:
        return _SORTS[cpu_sort_backend()](x)
    return _torch_sort(x)


@functools.lru_cache(maxsize=4)
def reverse_arange(size: int, device: str) -> Tensor:
    """(2^32 - 1) - arange(size) as int64: the tie-break half of a ranking key, cached because every training
    step of a given shape needs the same one (and allocating it is a measurable share of the step on CPU)."""
    return ((1 << 32) - 1) - torch.arange(size, device=device)
