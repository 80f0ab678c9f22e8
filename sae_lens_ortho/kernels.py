"""Device-specific fast paths for the few primitives that dominate pair selection. Pure functions, same results
on every device and backend (tested against torch's own ops).

On CPU, NumPy and torch trade places from machine to machine and version to version: NumPy's sort of int64
keys was ~3x faster than ``torch.sort`` in one environment and ~3x slower in another (NumPy 1.26 on an AMD EPYC
VM, where ``np.partition`` in turn beat ``torch.topk`` ~1.7x at 4M keys). So the CPU backend of each primitive
is measured once per process, on first use, on 2^20 (sort) or 2^22 (top-m) random keys (~0.6 s in all), and the
faster one is kept. The results do not depend on the choice (sorting integers has one answer).
``SAE_LENS_ORTHO_CPU_KERNELS=numpy`` or ``=torch`` (or setting ``CPU_BACKEND``) skips the measurement; CUDA
always uses torch.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["sort_int64", "largest_int64", "reverse_arange", "cpu_backend", "CPU_BACKEND"]

CPU_BACKEND = os.environ.get("SAE_LENS_ORTHO_CPU_KERNELS", "auto")
"""``auto`` (measure once per primitive), ``numpy`` or ``torch``."""
# Keys per calibration run: the ordering of the top-m backends flips below a few million keys (a TopK batch of
# 2048 rows at k = 64 has 4.1M co-firing products), the sort's does not.
_CALIBRATION_SIZE = {"sort": 1 << 20, "largest": 1 << 22}


def _np_sort(x: Tensor) -> Tensor:
    return torch.from_numpy(np.sort(x.numpy()))


def _torch_sort(x: Tensor) -> Tensor:
    return x.sort().values


def _np_largest(x: Tensor, m: int) -> Tensor:
    a = x.numpy()
    if m < a.size:  # introselect, O(N); then sort only the m kept values
        a = np.partition(a, a.size - m)[a.size - m:]
    return torch.from_numpy(np.sort(a)[::-1].copy())


def _torch_largest(x: Tensor, m: int) -> Tensor:
    return x.topk(m, sorted=True).values


_BACKENDS: dict[str, dict[str, Callable[..., Tensor]]] = {
    "sort": {"numpy": _np_sort, "torch": _torch_sort},
    "largest": {"numpy": _np_largest, "torch": _torch_largest},
}


@functools.cache
def _measured_backend(primitive: str) -> str:
    """The faster CPU backend of ``primitive``: best of 3 alternating runs on random int64 keys."""
    g = torch.Generator().manual_seed(0)
    size = _CALIBRATION_SIZE[primitive]
    x = torch.randint(0, 1 << 62, (size,), generator=g)
    args = (x,) if primitive == "sort" else (x, size // 32)
    best = {name: float("inf") for name in _BACKENDS[primitive]}
    for _ in range(3):
        for name, fn in _BACKENDS[primitive].items():
            start = time.perf_counter()
            fn(*args)
            best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.__getitem__)


def cpu_backend(primitive: str) -> str:
    """``numpy`` or ``torch``: the CPU backend used for ``primitive`` (``sort`` or ``largest``)."""
    if CPU_BACKEND in ("numpy", "torch"):
        return CPU_BACKEND
    if CPU_BACKEND != "auto":
        raise ValueError(f"SAE_LENS_ORTHO_CPU_KERNELS must be auto, numpy or torch, got {CPU_BACKEND!r}")
    return _measured_backend(primitive)


def _on_cpu_int64(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.int64 and x.ndim == 1


def sort_int64(x: Tensor) -> Tensor:
    """Ascending sort of a 1-D int64 tensor, values only (the packed pair keys of a TopK batch: tens of
    millions). Other dtypes and shapes take ``torch.sort``."""
    if _on_cpu_int64(x):
        return _BACKENDS["sort"][cpu_backend("sort")](x)
    return _torch_sort(x)


def largest_int64(x: Tensor, m: int) -> Tensor:
    """The ``m`` largest values of a 1-D int64 tensor, descending (``x.topk(m).values``); ``m`` <= ``x.numel()``."""
    if not 0 <= m <= x.numel():
        raise ValueError(f"m must be in [0, {x.numel()}], got {m}")
    if _on_cpu_int64(x) and m > 0:
        return _BACKENDS["largest"][cpu_backend("largest")](x, m)
    return _torch_largest(x, m)


@functools.lru_cache(maxsize=4)
def reverse_arange(size: int, device: str) -> Tensor:
    """(2^32 - 1) - arange(size) as int64: the tie-break half of a ranking key, cached because every training
    step of a given shape needs the same one (and allocating it is a measurable share of the step on CPU)."""
    return ((1 << 32) - 1) - torch.arange(size, device=device)
