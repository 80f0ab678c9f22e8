"""Exact selection of the most-correlated feature pairs of a batch of SAE activations.

Everything here is a pure tensor function (no SAELens import). The quantity is the one the seed papers
penalise: for activation columns f_i, f_j of a batch ``acts`` [b, n],

    C_ij = f_i . f_j / (|f_i| |f_j|)            (0 when either column is all zero)

Two exact algorithms compute the top pairs (i < j) by C_ij:

* ``sparse``: for activations with at most ``w`` non-zeros per row (TopK: w = k) only pairs that co-fire in
  some row can have C_ij != 0, so we enumerate the b*w*(w-1)/2 co-firing products, sum them per pair after
  one sort of the pair keys, and rank. O(b*w^2) time and memory, never an n x n matrix, and free of
  host synchronisation (all sizes are static), so it runs inside a CUDA training step.
* ``dense``: a chunked scan of the normalised Gram C = F^T F (seed 000's method), keeping a running top-m.
  Memory is bounded by ``chunk_size * n``.

Ranking is by (C_ij descending, i ascending, j ascending): ties are broken deterministically. Pairs with
C_ij <= 0 are never selected.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from sae_lens_ortho.core.kernels import reverse_arange, sort_int64
from sae_lens_ortho.core.numerics import (
    fp32_region,
    full_precision,
    pow2_factors,
    reciprocal,
    unit_columns,
    unit_rows,
    unit_sparse_columns,
)

__all__ = [
    "MAX_DENSE_FEATURES",
    "CoFiring",
    "PairSelection",
    "PairStats",
    "choose_method",
    "cofiring_correlations",
    "column_inv_norms",
    "dense_top_pairs",
    "n_pairs",
    "n_selected_pairs",
    "pair_stats_dense",
    "select_top_slots",
    "top_correlated_pairs",
    "top_decoder_pairs",
]

Method = Literal["auto", "sparse", "dense"]
_LOW32 = (1 << 32) - 1
# The dense scan packs pair keys i*n+j into 32 bits of its ranking key.
MAX_DENSE_FEATURES = 65536
# Bits available for packing (pair key, position) into one sortable int64 (patched in a test to reach the fallback).
_PACK_BITS = 63


class PairSelection(NamedTuple):
    """The selected pairs, most correlated first."""

    i: Tensor
    """[m] int64 feature index of the first member, ``i < j``."""
    j: Tensor
    """[m] int64 feature index of the second member."""
    corr: Tensor
    """[m] float32 C_ij, sorted descending (ties: smaller i, then smaller j first)."""


class PairStats(NamedTuple):
    """Exact statistics of C_ij over all n(n-1)/2 pairs i < j (zeros included)."""

    n_pairs: int
    """n(n-1)/2."""
    sum_corr: Tensor
    """Sum of C_ij over all pairs (float64 scalar)."""
    sum_corr_sq: Tensor
    """Sum of C_ij^2 over all pairs (float64 scalar)."""
    n_cofiring: Tensor
    """Number of pairs with C_ij > 0, i.e. pairs that co-fire somewhere in the batch (int64 scalar)."""

    @property
    def mean(self) -> Tensor:
        return self.sum_corr / max(self.n_pairs, 1)

    @property
    def std(self) -> Tensor:
        mean = self.mean
        return (self.sum_corr_sq / max(self.n_pairs, 1) - mean * mean).clamp_min(0).sqrt()


class CoFiring(NamedTuple):
    """All co-firing products of a sparse batch, sorted by pair, with one slot per distinct pair (fixed sizes)."""

    sorted_keys: Tensor
    """[N] int64 pair key i*n + j of every co-firing product, ascending."""
    slot: Tensor
    """[N] slot of each product (0, 1, ... in key order; products of one pair share a slot); int32, or int64
    beyond 2^31 products."""
    corr: Tensor
    """[N] float32 C_ij of each slot (differentiable w.r.t. the activations); 0 in unused slots."""
    n: int
    """Number of features."""

    def keys_of(self, slots: Tensor) -> Tensor:
        """Pair keys of the given slots (-1 for unused slots), by binary search in the monotone slot ids."""
        pos = torch.searchsorted(self.slot, slots.to(self.slot.dtype))
        inside = pos < self.slot.numel()
        pos = pos.clamp_max(self.slot.numel() - 1)
        hit = inside & (self.slot[pos] == slots)
        return torch.where(hit, self.sorted_keys[pos], torch.full_like(pos, -1))


def n_pairs(n: int) -> int:
    return n * (n - 1) // 2


def n_selected_pairs(n: int, p: float) -> int:
    """``ceil(p * n(n-1)/2)``: how many pairs a pair fraction ``p`` asks for."""
    if not 0 < p <= 1:
        raise ValueError(f"pair fraction p must be in (0, 1], got {p}")
    # Subtract a hair before ceil so that p * N computed as 134217.00000000003 gives 134217, not 134218.
    return min(n_pairs(n), math.ceil(p * n_pairs(n) - 1e-9))


def column_inv_norms(acts: Tensor) -> Tensor:
    """1/|f_i| per column of ``acts`` [b, n] in float32, 0 for all-zero (dead) columns, never inf/NaN (capped at
    the float32 maximum for norms below ~3e-39). Computed from exactly rescaled columns, so it is exact for every
    representable norm (a plain sum of squares underflows below ~1e-19), and ``acts * column_inv_norms(acts)``
    equals :func:`~sae_lens_ortho.core.numerics.unit_columns` bit for bit. Not differentiable."""
    with torch.no_grad(), fp32_region():
        a = acts.detach().float()
        exponent = torch.frexp(a.abs().amax(0)).exponent
        f1, f2 = pow2_factors(exponent, a.dtype)
        # 1 / norm of the column scaled by 2^-e (that norm is in [0.5, sqrt(b)]), then scaled back by 2^-e.
        recip = reciprocal(a.mul(f1).mul_(f2).pow_(2).sum(0).sqrt_())
        return (recip * f1 * f2).nan_to_num(posinf=torch.finfo(torch.float32).max)


def _ranking_key(corr: Tensor, tiebreak: Tensor) -> Tensor:
    """An int64 whose descending order is (corr descending, tiebreak ascending), exactly.

    Non-negative float32 values order like their bit patterns, so the top 32 bits carry ``corr`` (negative
    values are clamped to 0: they are never selected) and the low 32 bits the inverted tie-break (< 2^32).
    """
    bits = corr.detach().float().clamp_min(0).contiguous().view(torch.int32).to(torch.int64)
    return (bits << 32) | (_LOW32 - tiebreak)


@full_precision
def cofiring_correlations(vals: Tensor, idx: Tensor, n: int) -> CoFiring:
    """Exact C_ij for every pair that co-fires in a sparse batch.

    ``vals`` / ``idx`` [b, w] hold each row's (at most) w non-zero activations and their feature indices
    (e.g. ``acts.topk(k)``). Zero entries are allowed (they add nothing); indices within a row must be
    distinct. Returns one slot per distinct co-firing pair, computed in O(b*w^2) without host syncs; the
    slot correlations carry gradients to ``vals`` (through the products and the column norms).
    """
    if vals.shape != idx.shape or vals.ndim != 2:
        raise ValueError(f"vals and idx must both be [batch, width], got {tuple(vals.shape)} and {tuple(idx.shape)}")
    b, w = vals.shape
    device = vals.device
    if w < 2 or b == 0:
        empty = torch.zeros(1, dtype=torch.int64, device=device)
        return CoFiring(empty - 1, empty, vals.new_zeros(1, dtype=torch.float32), n)
    vals = vals.float()
    idx = idx.long()
    # Sort each row by feature index so that position a < c implies idx[a] < idx[c]: pair keys need no min/max.
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    # [b*w] unit-column entries, small enough to stay in cache; exact at any scale, bounded gradient (numerics).
    normed = unit_sparse_columns(vals, idx, n).reshape(-1)
    a, c, where, t_bits, pos_bits = _pair_layout(b, w, str(device))
    with torch.no_grad():
        keys = idx[:, a]  # [b, P]; row-local gathers. In-place ops below: each [b, P] temporary costs memory traffic.
        keys.mul_(n).add_(idx[:, c])
        if max(n * n - 1, 1).bit_length() + pos_bits <= _PACK_BITS:
            # One sort of (key, row, t) packed in an int64 orders the products by pair and remembers where each
            # came from, without an argsort or a random gather over the b*P products.
            packed = sort_int64(keys.bitwise_left_shift_(pos_bits).bitwise_or_(where).view(-1))
            del keys
            keys = packed >> pos_bits
            row = (packed >> t_bits).bitwise_and_((1 << (pos_bits - t_bits)) - 1).mul_(w)
            t = packed.bitwise_and_((1 << t_bits) - 1)
        else:  # astronomically many features: fall back to an argsort
            n_per_row = a.numel()
            keys, order = keys.view(-1).sort()
            row = (order // n_per_row).mul_(w)
            t = order.remainder_(n_per_row)
        # The graph keeps these three [b*P] index tensors until backward: int32 halves them (b*P < 2^31 here).
        index_dtype = torch.int32 if keys.numel() < 2**31 else torch.int64
        flat_a = a[t].add_(row).to(index_dtype)
        flat_c = c[t].add_(row).to(index_dtype)
        del row, t
        new_slot = torch.empty_like(keys, dtype=torch.bool)
        new_slot[0] = True
        torch.ne(keys[1:], keys[:-1], out=new_slot[1:])
        slot = new_slot.cumsum(0, dtype=index_dtype).sub_(1)
        del new_slot
    # Gathers from the [b*w] vector (cache-resident); their backward is a cheap index_add into it.
    prods = normed[flat_a] * normed[flat_c]
    corr = torch.zeros(keys.numel(), device=device, dtype=torch.float32).index_add(0, slot, prods)
    return CoFiring(keys, slot, corr, n)


@functools.lru_cache(maxsize=8)
def _pair_layout(b: int, w: int, device: str) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """Per batch shape: the (a, c) positions of each row's w(w-1)/2 pairs and each product's packed position
    (row << t_bits | t). Cached: every training step of a run has the same shape."""
    a, c = torch.triu_indices(w, w, 1, device=device)
    t_bits = max(a.numel() - 1, 1).bit_length()
    pos_bits = t_bits + max(b - 1, 1).bit_length()
    where = (torch.arange(b, device=device) << t_bits)[:, None] | torch.arange(a.numel(), device=device)
    return a, c, where, t_bits, pos_bits


def select_top_slots(corr: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Indices of the ``m`` largest entries of ``corr`` (ties: lower index first) and a validity mask.

    The slots of ``cofiring_correlations`` are in key order, so "lower index" means smaller (i, j).
    Fixed output size and no host sync; ``valid`` marks the entries with corr > 0.
    """
    m = min(m, corr.numel())
    rank = corr.detach().float().clamp_min(0).view(torch.int32).to(torch.int64)
    rank.bitwise_left_shift_(32).bitwise_or_(reverse_arange(corr.numel(), str(corr.device)))
    top = rank.topk(m, sorted=True).indices
    return top, corr.detach()[top] > 0


@full_precision
def dense_top_pairs(normed: Tensor, m: int, chunk_size: int = 512) -> tuple[Tensor, Tensor, Tensor]:
    """Top-m pairs of the column-normalised batch ``normed`` [b, n] by a chunked Gram scan.

    Returns (keys [m'], corr [m'] float32, n_positive int64 scalar): the best m' = min(m, n(n-1)/2) pair keys
    i*n+j with their C_ij (ranked, C may be <= 0 at the tail, which callers drop), and the count of pairs
    with C_ij > 0. Peak extra memory ~ chunk_size * n * 12 bytes. Requires n <= 65536 (keys < 2^32).
    """
    _b, n = normed.shape
    if n > MAX_DENSE_FEATURES:
        raise ValueError(f"dense_top_pairs supports n <= 65536 features, got {n}; use the sparse method")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    normed = normed.detach().float()
    device = normed.device
    m = min(m, n_pairs(n))
    best_rank = torch.empty(0, dtype=torch.int64, device=device)
    n_positive = torch.zeros((), dtype=torch.int64, device=device)
    cols = torch.arange(n, device=device)
    for start in range(0, n - 1, chunk_size):
        stop = min(start + chunk_size, n - 1)
        rows = torch.arange(start, stop, device=device)
        block = normed[:, start:stop].T @ normed  # [c, n]
        upper = cols[None, :] > rows[:, None]
        block = torch.where(upper, block, torch.zeros((), device=device))
        n_positive += (block > 0).sum()
        keys = rows[:, None] * n + cols[None, :]
        rank = _ranking_key(block, keys).reshape(-1)
        # Lower-triangle entries carry corr 0 and can only be picked where fewer than m positives exist; they
        # are then dropped by the caller's corr > 0 filter together with the genuine zeros.
        rank = rank.topk(min(m, rank.numel()), sorted=False).values
        merged = torch.cat([best_rank, rank])
        best_rank = merged.topk(min(m, merged.numel()), sorted=False).values
    best_rank = best_rank.sort(descending=True).values
    keys = _LOW32 - (best_rank & _LOW32)
    corr = (best_rank >> 32).to(torch.int32).view(torch.float32)
    return keys, corr, n_positive


@full_precision
def top_decoder_pairs(W_dec: Tensor, m: int, chunk_size: int = 512) -> Tensor:
    """Keys i*n+j (i < j) of the ``m`` pairs of decoder rows of ``W_dec`` [n, d] with the largest cosine, best
    first, exactly (a chunked scan of the normalised Gram, O(n^2 d) time, ``chunk_size`` x n memory); -1 where
    fewer than ``m`` pairs have a positive cosine. Zero rows have cosine 0 with everything. No gradient.
    """
    keys, corr, _ = dense_top_pairs(unit_rows(W_dec.detach()).T, m, chunk_size)
    return torch.where(corr > 0, keys, torch.full_like(keys, -1))


@full_precision
def pair_stats_dense(normed: Tensor) -> PairStats:
    """Exact sums of C_ij and C_ij^2 over all pairs from the column-normalised batch [b, n], in O(b*n + b^2*n).

    sum_{i != j} C_ij   = |sum_i f^_i|^2 - sum_i |f^_i|^2      (row sums of the normalised batch)
    sum_{i != j} C_ij^2 = |F^ F^T|_F^2 - sum_i |f^_i|^4          (b x b Gram instead of n x n)
    The co-firing count needs the pairs themselves and is reported as -1 here.
    """
    normed = normed.detach().float()
    n = normed.shape[1]
    col_sq = normed.pow(2).sum(0).double()  # 1 for live columns, 0 for dead ones
    row_sum = normed.sum(1).double()
    sum_corr = (row_sum.pow(2).sum() - col_sq.sum()) / 2
    gram = normed @ normed.T
    sum_sq = (gram.double().pow(2).sum() - col_sq.pow(2).sum()) / 2
    return PairStats(n_pairs(n), sum_corr, sum_sq, torch.tensor(-1, device=normed.device))


def choose_method(width: int, n: int) -> Literal["sparse", "dense"]:
    """Cost model measured on CPU (docs/performance.md): the sparse path spends ~100 ns per co-firing product
    (b*w^2/2 of them: key packing, one sort, segment sums), the dense scan ~0.03 ns per multiply-add (b*n^2/2,
    a matmul). Sparse wins while w is below ~n/55; we switch at n/64. Beyond ``MAX_DENSE_FEATURES`` the dense
    scan's pair keys do not fit its 32-bit slots, so the answer is always sparse there."""
    return "sparse" if 64 * width <= n or n > MAX_DENSE_FEATURES else "dense"


def _row_width(acts: Tensor) -> int:
    return int((acts != 0).sum(1).max().item()) if acts.numel() else 0


@full_precision
def top_correlated_pairs(
    acts: Tensor,
    p: float = 0.001,
    *,
    method: Method = "auto",
    chunk_size: int = 512,
    width: int | None = None,
) -> PairSelection:
    """The top fraction ``p`` of feature pairs (i < j) of ``acts`` [b, n] ranked by C_ij, exactly.

    Selects ``ceil(p * n(n-1)/2)`` pairs, or fewer when fewer pairs have C_ij > 0. Pairs are ranked by the signed
    cosine C_ij, not |C_ij|: for non-negative activations (ReLU, TopK) the two agree, but for signed inputs an
    anti-correlated pair (C_ij near -1) is never selected; pass ``acts.abs()`` to rank by co-activation magnitude. ``method="sparse"``
    uses only co-firing pairs (O(b*w^2) for rows with at most ``width`` non-zeros; pass ``width=k`` for
    TopK activations to skip the scan for it), ``"dense"`` a chunked scan bounded by ``chunk_size`` columns,
    ``"auto"`` picks by cost. Any float dtype (bf16 included) is computed in float32. The result is
    detached: for a differentiable penalty see :mod:`sae_lens_ortho.core.penalties`.
    """
    if acts.ndim != 2:
        raise ValueError(f"acts must be [batch, n_features], got shape {tuple(acts.shape)}")
    b, n = acts.shape
    m = n_selected_pairs(n, p) if n >= 2 else 0
    empty = PairSelection(
        *(torch.empty(0, dtype=t, device=acts.device) for t in (torch.int64, torch.int64, torch.float32))
    )
    if m == 0 or b == 0:
        return empty
    acts = acts.detach()
    if method == "auto":
        if width is None:
            width = _row_width(acts)
        method = choose_method(width, n)
    if method == "sparse":
        if width is None:
            width = _row_width(acts)
        width = max(min(width, n), 1)
        vals, idx = acts.float().abs().topk(width, dim=1)
        vals = acts.float().gather(1, idx)
        cof = cofiring_correlations(vals, idx, n)
        top, valid = select_top_slots(cof.corr, m)
        keys, corr = cof.keys_of(top)[valid], cof.corr[top][valid]
    elif method == "dense":
        keys, corr, _ = dense_top_pairs(unit_columns(acts), m, chunk_size)
        keep = corr > 0
        keys, corr = keys[keep], corr[keep]
    else:
        raise ValueError(f"method must be 'auto', 'sparse' or 'dense', got {method!r}")
    return PairSelection(keys // n, keys % n, corr)
