"""Seed 003's batch-wise feature grouping, and an orthogonality penalty restricted to each group.

Seed 003 (sec. 4.2) partitions the dictionary into G = 8 groups, ``g_i = argmax_k sim(f_i, mu_k)``, "where
f_i are feature vectors and mu_k are group centroids updated using exponential moving averages", one update
per batch. Reading chosen here:

* f_i is feature i's **decoder direction** d_i (row i of ``W_dec`` [n, d]). A centroid must live in a space
  that is the same from batch to batch; an activation column lives in "batch space" (its rows are different
  tokens every batch), so averaging it over time means nothing, while the decoder row is the feature's
  persistent identity and is the quantity seed 003's penalty acts on. sim is cosine similarity.
* Centroids are an EMA of the mean *unit* decoder direction of their current members:
  ``mu_k <- decay * mu_k + (1 - decay) * mean_{i in k} d^_i``; a group with no members keeps its centroid.
  Centroids are not renormalised (cosine assignment ignores their scale).
* Each step: assign with the current centroids, then update them with that assignment (online k-means).
* The grouped penalty is sum_g sum_{i != j in g} (d^_i . d^_j)^2. Seed 003's eq. 2 sums over all pairs and
  leaves the grouping's role in the loss unstated; restricting the penalty to within-group pairs (the
  directions that are close to each other) is the project's operationalisation. G = 1 recovers eq. 2
  exactly (:func:`sae_lens_ortho.core.penalties.decoder_gram_penalty`).

Everything is a pure tensor function without host synchronisation, except ``init_centroids`` (run once).
``grouped_decoder_penalty`` never builds an n x n matrix nor an n x d x d tensor: it forms one d x d Gram
per group with a masked matmul (time G x the full Gram, O(G n d^2); memory O(n d + G d^2), also in backward).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sae_lens_ortho.core.numerics import fp32_region, full_precision, unit_rows

__all__ = [
    "assign_and_update",
    "assign_groups",
    "group_sizes",
    "grouped_decoder_penalty",
    "init_centroids",
    "unit_rows",
    "update_centroids",
]


@full_precision
@torch.no_grad()
def init_centroids(W_dec: Tensor, G: int = 8, generator: torch.Generator | None = None) -> Tensor:
    """[G, d] float32 centroids: the unit decoder directions of G distinct random features."""
    n = W_dec.shape[0]
    if not 1 <= G <= n:
        raise ValueError(f"need 1 <= G <= n_features, got G={G}, n={n}")
    gen_device = generator.device if generator is not None else W_dec.device
    rows = torch.randperm(n, generator=generator, device=gen_device)[:G].to(W_dec.device)
    return unit_rows(W_dec.detach()[rows]).float()


@full_precision
@torch.no_grad()
def assign_groups(W_dec: Tensor, centroids: Tensor) -> Tensor:
    """[n] int64 ``argmax_k cos(d_i, mu_k)`` (ties and all-zero rows: the lowest k)."""
    # |d_i| does not change the argmax over k, so only the centroids need normalising.
    W = W_dec.detach().to(torch.promote_types(W_dec.dtype, torch.float32))
    return (W @ unit_rows(centroids.detach()).to(W.dtype).T).argmax(1)


def group_sizes(assignment: Tensor, G: int) -> Tensor:
    """[G] int64 number of features in each group (sums to n)."""
    return torch.bincount(assignment, minlength=G)


@full_precision
@torch.no_grad()
def update_centroids(centroids: Tensor, W_dec: Tensor, assignment: Tensor, decay: float = 0.99) -> Tensor:
    """EMA step ``mu_k <- decay mu_k + (1 - decay) mean_{i: a_i = k} d^_i``; empty groups keep ``mu_k``.

    Returns a new [G, d] tensor in the dtype of ``centroids`` (the caller copies it into its buffer).
    """
    G = centroids.shape[0]
    normed = unit_rows(W_dec.detach()).to(centroids.dtype)
    sums = torch.zeros_like(centroids).index_add_(0, assignment, normed)
    counts = group_sizes(assignment, G).to(centroids.dtype)[:, None]
    mean = sums / counts.clamp_min(1)
    return torch.where(counts > 0, decay * centroids + (1.0 - decay) * mean, centroids)


def assign_and_update(W_dec: Tensor, centroids: Tensor, decay: float = 0.99) -> tuple[Tensor, Tensor]:
    """One grouping step per batch: (assignment by the current centroids, centroids updated with it)."""
    assignment = assign_groups(W_dec, centroids)
    return assignment, update_centroids(centroids, W_dec, assignment, decay)


class _GroupedGramSq(torch.autograd.Function):
    """sum_g |D_g^T D_g|_F^2 for the row groups of ``normed`` [n, d], in O(n d + G d^2) memory.

    Forward builds each group's d x d Gram from a masked copy (freed at once); backward uses
    d/dx_i sum_g |D_g^T D_g|_F^2 = 4 Gram_{a_i} x_i, again one masked matmul per group, so no per-group
    n x d tensor is kept for backward (plain autograd would keep G of them).
    """

    @staticmethod
    def forward(ctx, normed: Tensor, assignment: Tensor, G: int) -> Tensor:  # type: ignore[override]
        grams = normed.new_empty(G, normed.shape[1], normed.shape[1])
        for g in range(G):  # G is a small static count, not a loop over features
            member = (assignment == g)[:, None]
            grams[g] = torch.where(member, normed, 0.0).T @ normed
        ctx.save_for_backward(normed, assignment, grams)
        return grams.pow(2).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        normed, assignment, grams = ctx.saved_tensors
        d_normed = torch.zeros_like(normed)
        with fp32_region():  # a caller may take this gradient inside autocast (micro-batch accumulation does)
            for g in range(grams.shape[0]):
                member = (assignment == g)[:, None]
                d_normed = torch.where(member, normed @ grams[g], d_normed)
        return d_normed * (4 * grad), None, None


@full_precision
def grouped_decoder_penalty(
    W_dec: Tensor,
    assignment: Tensor,
    G: int,
    reduction: Literal["sum", "mean"] = "sum",
) -> Tensor:
    """sum over groups g of sum_{i != j, a_i = a_j = g} (d^_i . d^_j)^2, exactly, for decoder rows [n, d].

    Per-group Gram identity: sum_g |D^_g^T D^_g|_F^2 - sum_i |d^_i|^4 (zero rows stay zero and add nothing).
    ``assignment`` [n] int64 in [0, G) (not checked: checking would sync). ``mean`` divides by the number of
    within-group ordered pairs sum_g s_g (s_g - 1) (clamped to >= 1), i.e. the mean squared within-group
    cosine. Differentiable w.r.t. ``W_dec``; the assignment is a constant.
    """
    normed = unit_rows(W_dec)
    own = normed.pow(2).sum(1).pow(2).sum()
    total = (_GroupedGramSq.apply(normed, assignment, G) - own).clamp_min(0)  # >= 0; rounding could dip below
    if reduction == "mean":
        sizes = group_sizes(assignment, G).to(total.dtype)
        return total / (sizes * (sizes - 1)).sum().clamp_min(1)
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return total
