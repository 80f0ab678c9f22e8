"""Peak extra memory of one step's pair selection, estimated from its sizes, and the memory a device has free.

Measured on CPU (``python tests/reliability_probe.py footprint`` re-measures them) for a forward and backward
pass of ``select_pairs_for_penalty`` plus ``pair_penalty``:

* co-firing path: ~``SPARSE_BYTES_PER_PRODUCT`` bytes per co-firing product, b*w(w-1)/2 of them (int64 pair keys
  and their packed sort, positions, slot ids, int32 gather indices kept for backward, float32 products and
  their gradient), plus ``BYTES_PER_SELECTED_PAIR`` per ranked pair (top-k keys, ranks, gathered correlations);
* dense scan: ``DENSE_BYTES_PER_CHUNK_ENTRY`` per entry of one [chunk, n] block (the Gram block, its mask,
  pair keys and ranking keys), ``DENSE_BYTES_PER_ACTIVATION`` per entry of the [b, n] batch (the scaled and
  unit copies, the sparse backward's output), ``DENSE_BYTES_PER_ROW_PAIR`` per entry of the b x b Gram of the exact
  statistics, and the ranked pairs.

Measured (CPU, peak resident set over one forward + backward, three runs on a shared machine; the readings vary
by up to a third): co-firing path 91-107 bytes per product at p = 0.001 (b 1024-2048, d_sae 4k-16k, k 32-64) and
773-893 MiB for b 4096, k 64, d_sae 4096, p = 1.0 (8.3M products and as many ranked pairs; estimate 1,118 MiB);
dense scan 190-263 MiB at b 1024, d_sae 4096 (estimate 276 MiB) and 405-607 MiB at b 2048, d_sae 8192
(estimate 922 MiB).

The figures are deliberately on the high side: they decide whether to fail before the allocator does.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

__all__ = [
    "SelectionFootprint",
    "SelectionMemoryError",
    "available_bytes",
    "cofiring_products",
    "dense_selection_bytes",
    "format_bytes",
    "sparse_selection_bytes",
]

SPARSE_BYTES_PER_PRODUCT = 110
BYTES_PER_SELECTED_PAIR = 32
DENSE_BYTES_PER_CHUNK_ENTRY = 48
DENSE_BYTES_PER_ACTIVATION = 40
DENSE_BYTES_PER_ROW_PAIR = 20


class SelectionMemoryError(MemoryError):
    """A batch's pair selection would need more memory than is free (raised before allocating it)."""


class SelectionFootprint(NamedTuple):
    method: str
    """``sparse`` or ``dense``: the path the estimate is for."""
    bytes: int
    """Estimated peak extra bytes of one step's selection (forward and backward)."""
    detail: str
    """How the figure was obtained, for error messages."""


def cofiring_products(batch: int, width: int) -> int:
    """b * w(w-1)/2: the products the co-firing path sorts (w = non-zeros per row, k for TopK)."""
    return batch * width * (width - 1) // 2


def sparse_selection_bytes(batch: int, width: int, n_ranked: int) -> SelectionFootprint:
    """The co-firing path for ``batch`` rows of at most ``width`` non-zeros, ranking ``n_ranked`` pairs."""
    products = cofiring_products(batch, width)
    ranked = min(n_ranked, products)
    total = SPARSE_BYTES_PER_PRODUCT * products + BYTES_PER_SELECTED_PAIR * ranked
    detail = (
        f"co-firing path: {batch} x {width}*{width - 1}/2 = {products:,} co-firing products at "
        f"~{SPARSE_BYTES_PER_PRODUCT} bytes, plus {ranked:,} ranked pairs at ~{BYTES_PER_SELECTED_PAIR} bytes"
    )
    return SelectionFootprint("sparse", total, detail)


def dense_selection_bytes(batch: int, n: int, n_ranked: int, chunk_size: int) -> SelectionFootprint:
    """The chunked scan of ``n`` features over ``batch`` rows in ``chunk_size`` columns, ranking ``n_ranked``."""
    chunk = min(chunk_size, max(n - 1, 1))
    total = (
        DENSE_BYTES_PER_CHUNK_ENTRY * chunk * n
        + DENSE_BYTES_PER_ACTIVATION * batch * n
        + DENSE_BYTES_PER_ROW_PAIR * batch * batch
        + BYTES_PER_SELECTED_PAIR * n_ranked
    )
    detail = (
        f"dense scan: [{chunk} x {n}] blocks (ortho_chunk_size {chunk_size}) over a [{batch} x {n}] batch, "
        f"plus {n_ranked:,} ranked pairs"
    )
    return SelectionFootprint("dense", total, detail)


def available_bytes(device: torch.device | str) -> int | None:
    """Memory a new allocation on ``device`` can still get, or None where it cannot be read.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds unused. CPU: ``MemAvailable`` of
    /proc/meminfo (Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type == "cpu" and os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units up to TiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
