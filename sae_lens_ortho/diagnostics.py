"""Cheap, exact disentanglement diagnostics (pure tensor functions, no SAELens import).

None of these builds an n x n matrix: pair statistics come from closed forms or from the co-firing pairs, and
decoder cosines are scanned in column chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .pairs import _safe_rsqrt, column_inv_norms, n_pairs

__all__ = ["mean_pair_cosine", "pair_set_jaccard", "decoder_max_cosine", "selection_summary"]


def mean_pair_cosine(acts: Tensor) -> Tensor:
    """Exact mean of C_ij over all n(n-1)/2 pairs of activation columns, in O(b*n).

    For non-negative activations sum_{i != j} C_ij = |sum_i f^_i|^2 - sum_i |f^_i|^2 with f^_i the unit columns
    (dead columns count as zero vectors, so their pairs contribute C = 0).
    """
    normed = acts.detach().float() * column_inv_norms(acts)
    row_sum = normed.sum(1).double()
    own = normed.pow(2).sum().double()
    n = acts.shape[1]
    return (row_sum.pow(2).sum() - own) / max(2 * n_pairs(n), 1)


def pair_set_jaccard(keys_a: Tensor, keys_b: Tensor) -> Tensor:
    """|A & B| / |A | B| of two sets of pair keys; negative keys are padding and ignored. 1.0 if both empty."""
    a = keys_a[keys_a >= 0].unique()
    b = keys_b[keys_b >= 0].unique()
    union = a.numel() + b.numel()
    if union == 0:
        return torch.tensor(1.0)
    inter = torch.isin(a, b).sum()
    return inter.double() / (union - inter).double()


@torch.no_grad()
def decoder_max_cosine(W_dec: Tensor, chunk_size: int = 4096) -> Tensor:
    """Per feature, max_{j != i} |cos(d_i, d_j)| over decoder rows [n, d], scanning chunk_size rows at a time."""
    W = W_dec.detach().float()
    normed = W * _safe_rsqrt(W.pow(2).sum(1, keepdim=True))
    n = W.shape[0]
    out = torch.empty(n, device=W.device)
    for start in range(0, n, chunk_size):
        block = (normed[start : start + chunk_size] @ normed.T).abs()
        rows = torch.arange(block.shape[0], device=W.device)
        block[rows, rows + start] = -1.0  # exclude i == j
        out[start : start + chunk_size] = block.max(1).values
    return out


def selection_summary(corr: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """Number, max and mean of the valid selected pair correlations (0 when none)."""
    c = torch.where(valid, corr.detach().float(), torch.zeros_like(corr, dtype=torch.float32))
    count = valid.sum()
    return {
        "selected_pairs": count,
        "selected_corr_max": c.max() if c.numel() else torch.tensor(0.0),
        "selected_corr_mean": c.sum() / count.clamp_min(1),
    }
