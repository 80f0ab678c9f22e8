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

The decoder forms (``decoder_penalty_bytes``, ``decoder_selection_bytes``) depend on the dictionary only, not on
the batch. Measured with :func:`sae_lens_ortho.core.memory.peak_allocated_bytes` (torch's own accounting, exact and
repeatable; forward and backward, CPU, float32; n x d of 4096 x 64, 2048 x 256, 8192 x 32):

* ``gram``: 4.1 x the n*d float32 entries of W_dec (unit rows, their gradient, the d x d Gram);
* ``chunk_max``: 5.0-5.5 x the K*s^2 float32 cosines of its [K, s, s] block (s = ceil(n/K)) while they dominate;
  up to 9 x at K 16, d 256, where the [K, s, d] chunks and W_dec's copies count as much;
* ``grouped``: 2 x the G*d^2 float32 entries of its per-group Grams while they dominate, else ~20 bytes per entry
  of W_dec;
* ``ortho_select_by="decoder"``: 0.94-1.1 x the dense scan's chunk term plus its ranked pairs (chunk 128-512).

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
    "decoder_penalty_bytes",
    "decoder_selection_bytes",
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
    """What the estimate is for: ``sparse`` or ``dense`` (the activation pair selection's paths), ``decoder``
    (``ortho_select_by="decoder"``), or a decoder penalty form (``gram``, ``grouped``, ``chunk_max``)."""
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


def decoder_penalty_bytes(form: str, n: int, d: int, *, groups: int = 8, chunks: int = 4) -> SelectionFootprint:
    """The decoder penalty ``form`` (``ortho_decoder_penalty``) on W_dec [n, d], forward and backward."""
    if form == "chunk_max":
        k = max(1, min(chunks, n))
        size = -(-n // k)
        total = 24 * k * size * size + 8 * k * size * d + 16 * n * d
        detail = (
            f"{k} chunk(s) of {size:,} features (ortho_decoder_chunks {chunks}, d_sae {n:,}): a [{k} x {size:,} x "
            f"{size:,}] block of cosines at ~24 bytes per entry"
        )
    elif form == "grouped":
        total = 8 * groups * d * d + 24 * n * d + 4 * n * groups
        detail = f"{groups:,} [{d} x {d}] group Grams (ortho_groups {groups}, d_in {d}) at ~8 bytes per entry"
    else:
        total = 20 * n * d + 16 * d * d
        detail = f"unit decoder rows [{n:,} x {d}] and a [{d} x {d}] Gram at ~20 bytes per entry"
    return SelectionFootprint(form, total, detail)


def decoder_selection_bytes(n: int, d: int, n_ranked: int, chunk_size: int) -> SelectionFootprint:
    """``ortho_select_by="decoder"``: the chunked scan of the n x n cosines of W_dec [n, d]'s unit rows, ranking
    ``n_ranked`` pairs, and the penalty on them (O(n d + m), as the activation path's decoder target)."""
    chunk = min(chunk_size, max(n - 1, 1))
    total = DENSE_BYTES_PER_CHUNK_ENTRY * chunk * n + BYTES_PER_SELECTED_PAIR * n_ranked + 16 * n * d
    detail = (
        f"decoder pair scan: [{chunk} x {n:,}] blocks (ortho_chunk_size {chunk_size}) at ~"
        f"{DENSE_BYTES_PER_CHUNK_ENTRY} bytes per entry, plus {n_ranked:,} ranked pairs"
    )
    return SelectionFootprint("decoder", total, detail)


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
