"""Local competition between co-firing features (seed 004, section 4.2), as pure tensor functions.

Seed 004 keeps a co-activation history  H_ij <- beta H_ij + (1 - beta) a_i a_j  (beta = 0.99), gives each feature
a neighbourhood of radius  r_i = min(r_max, |{j : H_ij > theta_coact}|)  (r_max = 32, theta_coact = 0.1), and inside
a neighbourhood lets the stronger of two active features suppress the weaker by gamma = 0.3.

Readings chosen where the paper is ambiguous:

* ``a_i a_j`` for a batch is the fraction of its rows in which both features fire (activation > 0), so H_ij is
  an EMA of the pair's co-firing rate, in [0, 1]; theta_coact = 0.1 means "co-fire in about 10% of tokens".
* H is stored sparsely, never n x n: a table of the r_max largest entries per feature (``neighbors`` /
  ``history`` [n, r_max], sorted by H descending, then neighbour id ascending; -1 / 0 where empty). Each update
  decays the table, adds the batch's co-firing pairs and keeps the r_max largest per feature; entries pushed out
  (or decayed to exactly 0) are forgotten. So H_ij is exact while (i, j) stays in i's table since its first
  co-firing; a pair that re-enters restarts from its current batch contribution (an underestimate). With
  r_max >= n - 1 nothing is ever pushed out and the table is the exact dense EMA.
* i and j compete when either is in the other's neighbourhood (H_ij > theta or H_ji > theta; the tables of i and
  j are truncated separately, so the relation can be one-sided). Since a table is sorted by H, "H_ij > theta"
  is exactly "j is among i's first r_i neighbours".
* Suppression: an active feature is multiplied by (1 - gamma) once when at least one competitor active in the
  same row is strictly stronger, however many there are (no compounding, values stay >= 0). All decisions use
  the input activations, in parallel (no cascade); equal activations suppress neither.

Everything has static shapes and no host synchronisation, so it can run inside every training step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "CoactivationTable",
    "empty_coactivation_table",
    "update_coactivation_history",
    "neighborhood_radius",
    "neighborhoods",
    "suppression_mask",
    "local_competition",
    "local_competition_dense",
    "forget_features",
]

_FLOAT_BITS = (1 << 31) - 1  # non-negative float32 values order like their (31-bit) bit patterns


class CoactivationTable(NamedTuple):
    """Top-r co-activation history per feature (fixed size; keep it in buffers saved with checkpoints)."""

    neighbors: Tensor
    """[n, r] int64 neighbour feature ids, sorted by history descending then id ascending; -1 = empty."""
    history: Tensor
    """[n, r] float32 H_ij of those neighbours; 0 where empty."""


def empty_coactivation_table(n: int, r_max: int = 32, device: torch.device | str | None = None) -> CoactivationTable:
    return CoactivationTable(
        torch.full((n, r_max), -1, dtype=torch.int64, device=device),
        torch.zeros(n, r_max, dtype=torch.float32, device=device),
    )


def update_coactivation_history(
    table: CoactivationTable, vals: Tensor, idx: Tensor, beta: float = 0.99
) -> CoactivationTable:
    """One EMA step of H from a sparse batch: ``vals`` / ``idx`` [b, w] hold each row's w largest activations and
    their (distinct) feature ids, e.g. TopK's; an entry fires when its value is > 0. Returns the new table.

    The table entries and the batch's b*w*(w-1) ordered co-firing pairs are merged by one sort of pair keys
    i*n + j (duplicates summed per segment), then one more sort ranks each feature's candidates; O((n r + b w^2)
    log) time and memory, never n x n.
    """
    neighbors, history = table
    n, r = neighbors.shape
    b, w = vals.shape
    device = neighbors.device
    pad = n * n  # key of "no pair": sorts after every real key i*n + j and decodes to feature n (dropped)
    with torch.no_grad():
        fires = vals.detach() > 0
        idx = idx.long()
        owner = torch.arange(n, device=device)[:, None]
        table_keys = torch.where(neighbors >= 0, owner * n + neighbors, pad).reshape(-1)
        # All ordered position pairs a != c (H_ij and H_ji live in different tables), built without a boolean
        # mask (which would sync): c runs over a + 1, ..., a + w - 1 modulo w.
        a = torch.arange(w, device=device).repeat_interleave(w - 1)
        c = (a + 1 + torch.arange(w - 1, device=device).repeat(w)) % w
        both = fires[:, a] & fires[:, c]
        batch_keys = torch.where(both, idx[:, a] * n + idx[:, c], pad).reshape(-1)
        keys, order = torch.cat([table_keys, batch_keys]).sort()
        old = torch.cat([history.reshape(-1).float(), history.new_zeros(batch_keys.numel(), dtype=torch.float32)])
        hits = torch.cat([history.new_zeros(table_keys.numel(), dtype=torch.float32), both.reshape(-1).float()])
        total = keys.numel()
        new_seg = torch.ones_like(keys, dtype=torch.bool)
        new_seg[1:] = keys[1:] != keys[:-1]
        seg = new_seg.cumsum(0) - 1
        seg_keys = torch.full_like(keys, pad).scatter_(0, seg, keys)
        # Each key has at most one old value, and hit counts are small integers: both sums are exact.
        seg_old = torch.zeros(total, dtype=torch.float32, device=device).index_add_(0, seg, old[order])
        seg_hits = torch.zeros(total, dtype=torch.float32, device=device).index_add_(0, seg, hits[order])
        h = (beta * seg_old + (1 - beta) * (seg_hits / max(b, 1))).clamp_min(0)
        feat = torch.where(h > 0, seg_keys // n, n)  # padding has h == 0; so do fully decayed entries
        nb = seg_keys % n
        # Rank by (feature ascending, H descending); the stable sort keeps id ascending among equal H.
        rank_key = (feat << 31) | (_FLOAT_BITS - h.view(torch.int32).to(torch.int64))
        order = rank_key.sort(stable=True).indices
        feat, nb, h = feat[order], nb[order], h[order]
        start = torch.searchsorted(feat, torch.arange(n + 1, device=device))
        slot = torch.arange(total, device=device) - start[feat]
        keep = (feat < n) & (slot < r)
        flat = torch.where(keep, feat * r + slot, n * r)  # everything not kept lands in a dropped extra cell
        new_neighbors = torch.full((n * r + 1,), -1, dtype=torch.int64, device=device).scatter_(0, flat, nb)
        new_history = torch.zeros(n * r + 1, dtype=torch.float32, device=device).scatter_(0, flat, h)
    return CoactivationTable(new_neighbors[:-1].view(n, r), new_history[:-1].view(n, r).to(history.dtype))


def neighborhood_radius(history: Tensor, theta_coact: float = 0.1, r_max: int | None = None) -> Tensor:
    """r_i = min(r_max, |{j : H_ij > theta_coact}|) per feature, [n] int64 (r_max defaults to the table width)."""
    count = (history > theta_coact).sum(1)
    return count if r_max is None else count.clamp_max(r_max)


def neighborhoods(table: CoactivationTable, theta_coact: float = 0.1) -> Tensor:
    """[n, r] int64: each feature's neighbourhood (H_ij > theta_coact) as sorted ids, padded with n.

    Sorted so that membership is a binary search; compute once per step and pass to the competition.
    """
    n = table.neighbors.shape[0]
    inside = (table.history > theta_coact) & (table.neighbors >= 0)
    return torch.where(inside, table.neighbors, n).sort(dim=1).values


def suppression_mask(vals: Tensor, idx: Tensor, hoods: Tensor) -> Tensor:
    """[b, w] bool: the active entries of ``vals`` / ``idx`` [b, w] that have a strictly stronger active
    competitor in their row (competitors: either one in the other's neighbourhood, ``hoods`` from
    :func:`neighborhoods`). O(b w^2 log r + b w r); no gradient."""
    b, w = vals.shape
    if hoods.shape[1] == 0 or w < 2:
        return torch.zeros_like(vals, dtype=torch.bool)
    with torch.no_grad():
        v = vals.detach()
        idx = idx.long()
        row_hoods = hoods[idx]  # [b, w, r]
        query = idx[:, None, :].expand(b, w, w).contiguous()  # query[., a, c] = idx[c]
        found = torch.searchsorted(row_hoods, query).clamp_max(hoods.shape[1] - 1)
        in_hood = row_hoods.gather(2, found) == query  # [b, a, c]: idx[c] in hood(idx[a])
        compete = in_hood | in_hood.transpose(1, 2)
        active = v > 0
        stronger = (v[:, None, :] > v[:, :, None]) & active[:, None, :]  # [b, a, c]: c beats a
        return (compete & stronger).any(2) & active


def local_competition(vals: Tensor, idx: Tensor, hoods: Tensor, gamma: float = 0.3) -> Tensor:
    """``vals`` with every entry of :func:`suppression_mask` scaled by (1 - gamma); differentiable w.r.t. vals."""
    mask = suppression_mask(vals, idx, hoods)
    return vals * torch.where(mask, 1.0 - gamma, 1.0).to(vals.dtype)


def local_competition_dense(acts: Tensor, hoods: Tensor, width: int, gamma: float = 0.3) -> Tensor:
    """Dense variant on ``acts`` [b, n]: competition among each row's ``width`` largest entries (exact when
    rows have at most ``width`` non-zeros, e.g. width = k for TopK); other entries pass through."""
    width = max(min(width, acts.shape[1]), 1)
    idx = acts.detach().topk(width, dim=1).indices
    vals = local_competition(acts.gather(1, idx), idx, hoods, gamma)
    return acts.scatter(1, idx, vals)


def forget_features(table: CoactivationTable, mask: Tensor) -> CoactivationTable:
    """Clear the history of the features in ``mask`` [n] bool (e.g. re-initialised ones): their own rows and
    every entry naming them; rows are re-sorted so the remaining entries keep their order, empties last."""
    neighbors, history = table
    gone = mask[:, None] | (mask[neighbors.clamp_min(0)] & (neighbors >= 0))
    history = torch.where(gone, torch.zeros_like(history), history)
    neighbors = torch.where(gone, torch.full_like(neighbors, -1), neighbors)
    order = history.sort(dim=1, descending=True, stable=True).indices  # real entries have H > 0, empties 0
    return CoactivationTable(neighbors.gather(1, order), history.gather(1, order))
