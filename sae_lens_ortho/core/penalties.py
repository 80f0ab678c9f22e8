"""Differentiable orthogonality penalties (pure tensor functions, no SAELens import).

* ``selective_activation_penalty``: the seeds' penalty on the selected most-correlated pairs, with gradients
  flowing through the activations (and through the column norms of the cosine).
* ``decoder_gram_penalty``: sum over all i != j of (d^_i . d^_j)^2 for unit-normalised decoder rows, exactly,
  through the Gram identity  sum_{i!=j} (d^_i.d^_j)^2 = |D^T D|_F^2 - sum_i |d^_i|^4  (O(n d^2), d x d memory).
* Seed 004's statistical pair filter: ``select_pairs_for_penalty(..., z=2, min_pairs=10)`` ranks the top
  k = max(min_pairs, ceil(p N)) pairs and keeps those with C_ij > mu + z sigma of all off-diagonal C_ij
  (``apply_zscore_filter``, ``n_ranked_pairs``); mu and sigma are exact, from ``PairStats``.
* ``chunk_max_cos_penalty``: OrtSAE-style mean_i max_{j != i in i's chunk} cos^2(d_i, d_j) over random chunks
  of the dictionary, O(n^2 d / K).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from sae_lens_ortho.core.footprint import SelectionMemoryError, cofiring_products
from sae_lens_ortho.core.numerics import (
    capped_inverse,
    fp32_region,
    full_precision,
    pow2_factors,
    reciprocal,
    unit_columns,
    unit_rows,
)
from sae_lens_ortho.core.pairs import (
    MAX_DENSE_FEATURES,
    PairStats,
    _row_width,
    choose_method,
    cofiring_correlations,
    dense_top_pairs,
    n_pairs,
    n_selected_pairs,
    pair_stats_dense,
    select_top_slots,
)
from sae_lens_ortho.core.schedules import mean_plus_std_threshold

__all__ = [
    "SelectedPairs",
    "Weighting",
    "apply_zscore_filter",
    "chunk_max_cos_penalty",
    "chunk_max_cos_penalty_for_perm",
    "decoder_gram_penalty",
    "dense_pair_correlations",
    "n_ranked_pairs",
    "pair_penalty",
    "select_pairs_for_penalty",
    "selected_decoder_cosines",
    "selective_activation_penalty",
]

Weighting = Literal["abs", "squared", "hinge", "scaled"]


class SelectedPairs(NamedTuple):
    """Fixed-size selection used inside a training step (no host sync; invalid entries masked)."""

    keys: Tensor
    """[m] int64 pair keys i*n+j, best first; entries with ``valid == False`` are padding."""
    corr: Tensor
    """[m] float32 C_ij, differentiable w.r.t. the activations."""
    valid: Tensor
    """[m] bool, C_ij > 0 (and, with a z filter, C_ij > mu + z sigma)."""
    stats: PairStats
    """Exact statistics of C over all pairs (for thresholds and diagnostics)."""


class _DensePairCorr(torch.autograd.Function):
    """C_s = sum_r F[r, i_s] F[r, j_s] for given pairs, with O(b*n + m) memory in both directions.

    Forward gathers pairs of columns in chunks from a transient row-major copy (whole rows are contiguous: 5-7x
    faster on CPU than gathering strided columns, docs/performance.md); backward scatters through a sparse n x n
    matrix of the incoming gradients (dF = F @ (W + W^T)), so the b x m gathered tensor is never kept for backward.
    """

    @staticmethod
    def forward(ctx, normed: Tensor, i: Tensor, j: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(normed, i, j)
        return _row_pair_dots(normed.T.contiguous(), i, j, chunk)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        normed, i, j = ctx.saved_tensors
        with fp32_region():  # a caller may take this gradient inside autocast (micro-batch accumulation does)
            d_normed = _pair_matmul(grad, grad, i, j, normed.T).T
        return d_normed, None, None, None


def _pair_matmul(w_ij: Tensor, w_ji: Tensor, i: Tensor, j: Tensor, rows: Tensor) -> Tensor:
    """A @ rows for the n x n matrix A with A[i_s, j_s] = w_ij[s] and A[j_s, i_s] = w_ji[s] (repeats summed), as a
    sparse product: O(m d) work, never an n x n matrix."""
    n = rows.shape[0]
    index = torch.stack([torch.cat([i, j]), torch.cat([j, i])])
    a = torch.sparse_coo_tensor(index, torch.cat([w_ij, w_ji]).to(rows.dtype), (n, n), check_invariants=False)
    return torch.sparse.mm(a, rows)


def _row_pair_dots(rows: Tensor, i: Tensor, j: Tensor, chunk: int) -> Tensor:
    """rows[i_s] . rows[j_s] for every pair, gathering ``chunk`` pairs of (contiguous) rows at a time."""
    out = torch.empty(i.numel(), dtype=rows.dtype, device=rows.device)
    for s in range(0, i.numel(), chunk):
        e = s + chunk
        out[s:e] = (rows.index_select(0, i[s:e]) * rows.index_select(0, j[s:e])).sum(1)
    return out


class _RowPairCosines(torch.autograd.Function):
    """cos(w_i, w_j) for given pairs of rows of W [n, d]: ``unit_rows(W)`` followed by the pairs' dot products,
    fused, with the same exactness at every scale and the same bounded gradient (``core.numerics``).

    Only the cheap parts touch all of W (a max and a norm per row, one exact power-of-two rescaling); the pairs
    gather whole rows, which are contiguous (gathering the columns of ``unit_rows(W).T`` was 16x slower on CPU,
    docs/performance.md). Backward, with y the unit rows and g_i = sum_s grad_s y_j the gradient reaching y_i,
    unit_rows' backward (g_i - y_i (y_i . g_i)) / |w_i| needs y_i . g_i = sum_s grad_s cos_s, a segment sum, and
    g = A @ y one sparse product.
    """

    @staticmethod
    def forward(ctx, W: Tensor, i: Tensor, j: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        low, high = torch.aminmax(W, dim=1, keepdim=True)
        exponent = torch.frexp(torch.maximum(high, -low)).exponent  # 0 for all-zero rows
        f1, f2 = pow2_factors(exponent, W.dtype)
        scaled = (W * f1).mul_(f2)  # exact: powers of two; max |entry| in [0.5, 1)
        norm = torch.linalg.vector_norm(scaled, dim=1, keepdim=True)  # in [0.5, sqrt(d)], or 0
        rec = reciprocal(norm).squeeze(1)
        cos = _row_pair_dots(scaled, i, j, chunk).mul_(rec[i]).mul_(rec[j])
        ctx.save_for_backward(scaled, rec, capped_inverse(exponent, norm), i, j, cos)
        return cos

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scaled, rec, inv, i, j, cos = ctx.saved_tensors
        with fp32_region():
            grad = grad.to(scaled.dtype)
            # g = A @ y with y = scaled * rec: the rec of the gathered row folds into A's entries.
            g = _pair_matmul(grad * rec[j], grad * rec[i], i, j, scaled)
            along = grad * cos
            radial = torch.zeros_like(rec).index_add_(0, i, along).index_add_(0, j, along)  # y_i . g_i
            return g.sub_(scaled * (rec * radial)[:, None]).mul_(inv), None, None, None


def dense_pair_correlations(normed: Tensor, keys: Tensor, chunk: int = 512) -> Tensor:
    """Differentiable C for the pairs ``keys`` (i*n+j) of a column-normalised batch [b, n]."""
    n = normed.shape[1]
    return _DensePairCorr.apply(normed, keys // n, keys % n, chunk)


@full_precision
def select_pairs_for_penalty(
    acts: Tensor,
    p: float,
    *,
    width: int | None = None,
    method: Literal["auto", "sparse", "dense"] = "auto",
    chunk_size: int = 512,
    sparse: tuple[Tensor, Tensor] | None = None,
    z: float | None = None,
    min_pairs: int = 0,
    max_cofiring_products: int | None = None,
) -> SelectedPairs:
    """Select the top-p pairs of ``acts`` [b, n] and return their C_ij *with gradients* plus exact stats.

    ``width`` is the maximum number of non-zeros per row (``k`` for TopK). With it, the sparse path runs with
    static shapes and no host synchronisation. Without it, the width is read from the batch (one sync).
    ``sparse`` may pass the rows' non-zeros as (values, indices) [b, w] when the encoder already has them
    (TopK does), sparing a top-w scan of ``acts``; values must carry the gradient.
    ``min_pairs`` raises the number of ranked pairs to k = max(min_pairs, ceil(p N)) and ``z`` keeps, among
    them, only C_ij > mu + z sigma of all pairs (seed 004: z=2, min_pairs=10); the defaults change nothing.
    ``max_cofiring_products`` caps b * w(w-1)/2 on the co-firing path (its memory, ~110 bytes each): ``auto``
    then takes the dense scan for a batch above the cap, ``sparse`` raises :class:`SelectionMemoryError`.
    """
    b, n = acts.shape
    m = n_ranked_pairs(n, p, min_pairs)
    if sparse is not None and width is None:
        width = sparse[1].shape[1]
    if width is None and method != "dense":
        width = _row_width(acts)
    over_cap = max_cofiring_products is not None and cofiring_products(b, min(width or n, n)) > max_cofiring_products
    if method == "auto":
        method = choose_method(width or n, n)
        if method == "sparse" and over_cap and n <= MAX_DENSE_FEATURES:
            method = "dense"
    if method == "sparse" and over_cap:
        raise SelectionMemoryError(
            f"the co-firing pair selection of this batch would sort {cofiring_products(b, min(width or n, n)):,} "
            f"products (batch {b}, widest row {width}), more than the {max_cofiring_products:,} that fit in memory"
        )
    if method == "sparse":
        assert width is not None
        if sparse is not None:
            vals, idx = sparse
        else:
            width = max(min(width, n), 1)
            # Non-zeros of each row (TopK: exactly its k entries); gather keeps the gradient path to acts.
            idx = acts.detach().abs().topk(width, dim=1).indices
            vals = acts.gather(1, idx)
        cof = cofiring_correlations(vals, idx, n)
        top, valid = select_top_slots(cof.corr, m)
        corr_all = cof.corr.detach().double()
        stats = PairStats(n_pairs(n), corr_all.sum(), corr_all.pow(2).sum(), (cof.corr.detach() > 0).sum())
        return _zscore_filter_if(SelectedPairs(cof.keys_of(top), cof.corr[top], valid, stats), z)
    if method == "dense":
        normed = unit_columns(acts)
        keys, corr_sel, n_positive = dense_top_pairs(normed.detach(), m, chunk_size)
        corr = dense_pair_correlations(normed, keys)
        stats = pair_stats_dense(normed)._replace(n_cofiring=n_positive)
        return _zscore_filter_if(SelectedPairs(keys, corr, corr_sel > 0, stats), z)
    raise ValueError(f"method must be 'auto', 'sparse' or 'dense', got {method!r}")


@full_precision
def selected_decoder_cosines(W_dec: Tensor, keys: Tensor) -> Tensor:
    """cos(d_i, d_j) of the decoder rows of the pairs ``keys`` (i*n+j) of ``W_dec`` [n, d], differentiable.

    O(n d + m) memory in both directions: the m dot products are taken 512 pairs of rows at a time and the
    backward scatters through a sparse n x n matrix, never an [m, d] tensor. Zero rows have cosine 0 with
    everything. Exact at every scale, float32 under autocast, the gradient bounded for tiny rows as
    :func:`~sae_lens_ortho.core.numerics.unit_rows`' is.
    """
    n = W_dec.shape[0]
    W = W_dec.to(torch.promote_types(W_dec.dtype, torch.float32))
    return _RowPairCosines.apply(W, keys // n, keys % n, 512)


def n_ranked_pairs(n: int, p: float, min_pairs: int = 0) -> int:
    """k = max(min_pairs, ceil(p * N)), capped at N = n(n-1)/2: how many top pairs are ranked (seed 004)."""
    return min(n_pairs(n), max(min_pairs, n_selected_pairs(n, p)))


def apply_zscore_filter(sel: SelectedPairs, z: float) -> SelectedPairs:
    """Seed 004's statistical threshold: keep only the selected pairs with C_ij > mu + z sigma.

    mu and sigma are the exact mean and population std of C over all n(n-1)/2 pairs (``sel.stats``), so no
    n x n matrix is needed. Same fixed shapes; only ``valid`` changes (filtered pairs become padding).
    """
    threshold = mean_plus_std_threshold(sel.stats, z)
    return sel._replace(valid=sel.valid & (sel.corr.detach().double() > threshold))


def _zscore_filter_if(sel: SelectedPairs, z: float | None) -> SelectedPairs:
    return sel if z is None else apply_zscore_filter(sel, z)


def pair_penalty(
    corr: Tensor,
    valid: Tensor,
    weighting: Weighting = "abs",
    tau: Tensor | float = 0.0,
) -> Tensor:
    """Mean over the valid selected pairs of phi(C_ij); 0 when no pair is valid (never NaN).

    weighting: ``abs`` |C| (seeds 001, 004), ``squared`` C^2, ``hinge`` ReLU(|C| - tau) (seed 002),
    ``scaled`` (|C| / tau) * |C|, i.e. seed 000's tau_ij = tau_base * |r_ij| / r_thresh with tau = r_thresh
    (tau_base is the coefficient).
    """
    a = corr.abs()
    if weighting == "abs":
        phi = a
    elif weighting == "squared":
        phi = a * a
    elif weighting == "hinge":
        phi = (a - tau).clamp_min(0)
    elif weighting == "scaled":
        phi = a * a / tau
    else:
        raise ValueError(f"weighting must be one of abs, squared, hinge, scaled; got {weighting!r}")
    phi = torch.where(valid, phi, torch.zeros_like(phi))
    return phi.sum() / valid.sum().clamp_min(1)


def selective_activation_penalty(
    acts: Tensor,
    p: float = 0.001,
    *,
    weighting: Weighting = "abs",
    tau: Tensor | float = 0.0,
    width: int | None = None,
) -> Tensor:
    """The seeds' selective orthogonality penalty in one call: mean phi(C_ij) over the top-p pairs."""
    sel = select_pairs_for_penalty(acts, p, width=width)
    return pair_penalty(sel.corr, sel.valid, weighting, tau)


@full_precision
def decoder_gram_penalty(W_dec: Tensor, reduction: Literal["sum", "mean"] = "mean") -> Tensor:
    """The mean (or, with ``reduction="sum"``, the sum) of (d^_i . d^_j)^2 over all ordered pairs i != j of
    unit-normalised rows of ``W_dec`` [n, d], exactly.

    Uses |D^^T D^|_F^2 - sum_i |d^_i|^4 (a d x d Gram, O(n d^2)); zero rows stay zero. ``mean`` (the default, as
    ``ortho_decoder_reduction``) divides the sum by n(n-1), the number of ordered pairs: the mean squared cosine.
    Computed in float32 even under autocast; the difference is clamped at 0 (the true value is >= 0; rounding of
    a near-orthogonal dictionary's Gram could otherwise give a tiny negative sum of squares).
    """
    W = W_dec.to(torch.promote_types(W_dec.dtype, torch.float32))
    normed = unit_rows(W)
    gram = normed.T @ normed
    own = normed.pow(2).sum(1).pow(2).sum()
    total = (gram.pow(2).sum() - own).clamp_min(0)
    if reduction == "mean":
        n = W.shape[0]
        return total / max(n * (n - 1), 1)
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return total


@full_precision
def chunk_max_cos_penalty_for_perm(W_dec: Tensor, perm: Tensor, n_chunks: int) -> Tensor:
    """mean_i max_{j != i, same chunk} cos^2(d_i, d_j) for decoder rows [n, d], chunks given by ``perm``.

    Feature ``perm[p]`` goes to chunk ``p % K`` with K = min(n_chunks, n), so chunk sizes differ by at most
    one. A feature alone in its chunk contributes 0; zero rows have cosine 0 with everything. The chunks are
    gathered into a zero-padded [K, ceil(n/K), d] tensor and compared with one batched matmul: O(n^2 d / K)
    time, O(n^2 / K) memory. Padding rows are zero vectors, whose cos^2 = 0 never exceeds a real max.
    """
    n, d = W_dec.shape
    if n == 0:
        return W_dec.new_zeros((), dtype=torch.float32)
    K = max(1, min(n_chunks, n))
    size = -(-n // K)
    W = W_dec.to(torch.promote_types(W_dec.dtype, torch.float32))
    normed = unit_rows(W)
    padded = torch.cat([normed, normed.new_zeros(1, d)])  # row n: the zero vector used as padding
    slots = torch.full((size * K,), n, dtype=torch.int64, device=W.device)
    slots[:n] = perm.to(device=W.device, dtype=torch.int64)
    chunks = padded[slots.view(size, K).T]  # [K, size, d]: slot p lands in chunk p % K
    cos2 = torch.bmm(chunks, chunks.transpose(1, 2)).pow(2)
    self_pair = torch.eye(size, dtype=torch.bool, device=W.device)
    best = cos2.masked_fill(self_pair, 0.0).max(dim=2).values  # [K, size]; padding slots give 0
    return best.sum() / n


def chunk_max_cos_penalty(W_dec: Tensor, n_chunks: int, generator: torch.Generator | None = None) -> Tensor:
    """OrtSAE-style penalty over K random chunks of the features, re-drawn on every call.

    A fresh random permutation (from ``generator``; on its device, then moved) splits the n features into
    ``n_chunks`` chunks; see :func:`chunk_max_cos_penalty_for_perm`. No host sync.
    """
    gen_device = generator.device if generator is not None else W_dec.device
    perm = torch.randperm(W_dec.shape[0], generator=generator, device=gen_device)
    return chunk_max_cos_penalty_for_perm(W_dec, perm.to(W_dec.device), n_chunks)
