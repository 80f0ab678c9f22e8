"""Differentiable orthogonality penalties (pure tensor functions, no SAELens import).

* ``selective_activation_penalty``: the seeds' penalty on the selected most-correlated pairs, with gradients
  flowing through the activations (and through the column norms of the cosine).
* ``decoder_gram_penalty``: sum over all i != j of (d^_i . d^_j)^2 for unit-normalised decoder rows, exactly,
  through the Gram identity  sum_{i!=j} (d^_i.d^_j)^2 = |D^T D|_F^2 - sum_i |d^_i|^4  (O(n d^2), d x d memory).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .pairs import (
    PairStats,
    _safe_rsqrt,
    choose_method,
    cofiring_correlations,
    column_inv_norms,
    dense_top_pairs,
    n_pairs,
    n_selected_pairs,
    pair_stats_dense,
    select_top_slots,
)

__all__ = [
    "Weighting",
    "SelectedPairs",
    "select_pairs_for_penalty",
    "pair_penalty",
    "selective_activation_penalty",
    "decoder_gram_penalty",
    "dense_pair_correlations",
]

Weighting = Literal["abs", "squared", "hinge", "scaled"]


class SelectedPairs(NamedTuple):
    """Fixed-size selection used inside a training step (no host sync; invalid entries masked)."""

    keys: Tensor
    """[m] int64 pair keys i*n+j, best first; entries with ``valid == False`` are padding."""
    corr: Tensor
    """[m] float32 C_ij, differentiable w.r.t. the activations."""
    valid: Tensor
    """[m] bool, C_ij > 0."""
    stats: PairStats
    """Exact statistics of C over all pairs (for thresholds and diagnostics)."""


class _DensePairCorr(torch.autograd.Function):
    """C_s = sum_r F[r, i_s] F[r, j_s] for given pairs, with O(b*n + m) memory in both directions.

    Forward gathers column pairs in chunks; backward scatters through a sparse n x n matrix of the incoming
    gradients (dF = F @ (W + W^T)), so the b x m gathered tensor is never kept for backward.
    """

    @staticmethod
    def forward(ctx, normed: Tensor, i: Tensor, j: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(normed, i, j)
        out = torch.empty(i.numel(), dtype=normed.dtype, device=normed.device)
        for s in range(0, i.numel(), chunk):
            e = s + chunk
            out[s:e] = (normed[:, i[s:e]] * normed[:, j[s:e]]).sum(0)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        normed, i, j = ctx.saved_tensors
        n = normed.shape[1]
        rows = torch.cat([i, j])
        cols = torch.cat([j, i])
        weights = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), torch.cat([grad, grad]).to(normed.dtype), (n, n), check_invariants=False
        )
        d_normed = torch.sparse.mm(weights, normed.T).T
        return d_normed, None, None, None


def dense_pair_correlations(normed: Tensor, keys: Tensor, chunk: int = 4096) -> Tensor:
    """Differentiable C for the pairs ``keys`` (i*n+j) of a column-normalised batch [b, n]."""
    n = normed.shape[1]
    return _DensePairCorr.apply(normed, keys // n, keys % n, chunk)


def select_pairs_for_penalty(
    acts: Tensor,
    p: float,
    *,
    width: int | None = None,
    method: Literal["auto", "sparse", "dense"] = "auto",
    chunk_size: int = 512,
    sparse: tuple[Tensor, Tensor] | None = None,
) -> SelectedPairs:
    """Select the top-p pairs of ``acts`` [b, n] and return their C_ij *with gradients* plus exact stats.

    ``width`` is the maximum number of non-zeros per row (``k`` for TopK). With it, the sparse path runs with
    static shapes and no host synchronisation. Without it, the width is read from the batch (one sync).
    ``sparse`` may pass the rows' non-zeros as (values, indices) [b, w] when the encoder already has them
    (TopK does), sparing a top-w scan of ``acts``; values must carry the gradient.
    """
    b, n = acts.shape
    m = n_selected_pairs(n, p)
    if sparse is not None and width is None:
        width = sparse[1].shape[1]
    if width is None and method != "dense":
        width = int((acts != 0).sum(1).max().item())
    if method == "auto":
        method = choose_method(width or n, n)
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
        return SelectedPairs(cof.keys[top], cof.corr[top], valid, stats)
    if method == "dense":
        normed = acts.float() * column_inv_norms(acts)
        keys, corr_sel, n_positive = dense_top_pairs(normed.detach(), m, chunk_size)
        corr = dense_pair_correlations(normed, keys)
        stats = pair_stats_dense(normed)._replace(n_cofiring=n_positive)
        return SelectedPairs(keys, corr, corr_sel > 0, stats)
    raise ValueError(f"method must be 'auto', 'sparse' or 'dense', got {method!r}")


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


def decoder_gram_penalty(W_dec: Tensor, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """sum_{i != j} (d^_i . d^_j)^2 over all pairs of unit-normalised rows of ``W_dec`` [n, d], exactly.

    Uses |D^^T D^|_F^2 - sum_i |d^_i|^4 (a d x d Gram, O(n d^2)); zero rows stay zero. ``mean`` divides by
    n(n-1), the number of ordered pairs, so the value is the mean squared cosine.
    """
    W = W_dec.to(torch.promote_types(W_dec.dtype, torch.float32))
    normed = W * _safe_rsqrt(W.pow(2).sum(1, keepdim=True))
    gram = normed.T @ normed
    own = normed.pow(2).sum(1).pow(2).sum()
    total = gram.pow(2).sum() - own
    if reduction == "mean":
        n = W.shape[0]
        return total / max(n * (n - 1), 1)
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return total
