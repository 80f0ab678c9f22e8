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
* "Stronger" compares strengths s_i = a_i * scale_i when a per-feature ``scale`` [n] (> 0) is given, else a_i.
  An SAE passes its decoder row norms, so s_i is the size of feature i's contribution to the reconstruction:
  it does not change when the norms are folded into the encoder (a_i * |d_i|, |d_i| -> 1), so a folded SAE
  makes the same decisions. Whether an entry is active is always read from a_i > 0.

Dense activations (e.g. a ReLU SAE, where a row may have thousands of non-zeros early in training) have two
exact paths besides the top-``width`` one: :func:`suppression_mask_dense` compares every feature with its
neighbourhood in both directions, O(b n r) whatever the sparsity; :func:`update_coactivation_history_dense`
counts co-firing with a chunked F^T F matmul, O(b n^2) flops and O(n^2) selection, instead of sorting b w^2 pair
keys. Both give bit-identical results to the sparse functions (tested).

Everything but :func:`row_width` (one host sync, to size the top-``width`` path exactly) has static shapes
and no host synchronisation, so it can run inside every training step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "CoactivationTable",
    "empty_coactivation_table",
    "forget_features",
    "local_competition",
    "local_competition_dense",
    "neighborhood_radius",
    "neighborhoods",
    "row_width",
    "suppression_mask",
    "suppression_mask_dense",
    "update_coactivation_history",
    "update_coactivation_history_dense",
]

# Elements per chunk of the dense paths' [rows, n, r] / [rows, n] temporaries (64 MiB of float32).
CHUNK_ELEMENTS = 1 << 24

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


def suppression_mask(vals: Tensor, idx: Tensor, hoods: Tensor, scale: Tensor | None = None) -> Tensor:
    """[b, w] bool: the active entries of ``vals`` / ``idx`` [b, w] that have a strictly stronger active
    competitor in their row (competitors: either one in the other's neighbourhood, ``hoods`` from
    :func:`neighborhoods`). With ``scale`` [n] (> 0), strength is ``vals * scale[idx]`` (activity is still
    ``vals > 0``). O(b w^2 log r + b w r); no gradient."""
    b, w = vals.shape
    if hoods.shape[1] == 0 or w < 2:
        return torch.zeros_like(vals, dtype=torch.bool)
    with torch.no_grad():
        idx = idx.long()
        active = vals.detach() > 0
        v = vals.detach() if scale is None else vals.detach() * scale.detach().to(vals.dtype)[idx]
        row_hoods = hoods[idx]  # [b, w, r]
        query = idx[:, None, :].expand(b, w, w).contiguous()  # query[., a, c] = idx[c]
        found = torch.searchsorted(row_hoods, query).clamp_max(hoods.shape[1] - 1)
        in_hood = row_hoods.gather(2, found) == query  # [b, a, c]: idx[c] in hood(idx[a])
        compete = in_hood | in_hood.transpose(1, 2)
        stronger = (v[:, None, :] > v[:, :, None]) & active[:, None, :]  # [b, a, c]: c beats a
        return (compete & stronger).any(2) & active


def local_competition(
    vals: Tensor, idx: Tensor, hoods: Tensor, gamma: float = 0.3, scale: Tensor | None = None
) -> Tensor:
    """``vals`` with every entry of :func:`suppression_mask` scaled by (1 - gamma); differentiable w.r.t. vals."""
    mask = suppression_mask(vals, idx, hoods, scale)
    return vals * torch.where(mask, 1.0 - gamma, 1.0).to(vals.dtype)


def local_competition_dense(
    acts: Tensor, hoods: Tensor, width: int, gamma: float = 0.3, scale: Tensor | None = None
) -> Tensor:
    """Dense variant on ``acts`` [b, n]: competition among each row's ``width`` largest entries (exact when
    rows have at most ``width`` non-zeros, e.g. width = k for TopK); other entries pass through.

    With ``scale`` the ``width`` entries are still the largest *activations* (so exactness needs width >= the
    row's non-zeros); strengths for the comparison are ``acts * scale``."""
    width = max(min(width, acts.shape[1]), 1)
    idx = acts.detach().topk(width, dim=1).indices
    vals = local_competition(acts.gather(1, idx), idx, hoods, gamma, scale)
    return acts.scatter(1, idx, vals)


def row_width(acts: Tensor) -> int:
    """Largest number of non-zeros in a row of ``acts`` [b, n] (one host synchronisation)."""
    return int((acts != 0).sum(1).max().item()) if acts.numel() else 0


def suppression_mask_dense(
    acts: Tensor,
    hoods: Tensor,
    scale: Tensor | None = None,
    width: int | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """[b, n] bool :func:`suppression_mask` of dense ``acts`` [b, n], exact for any number of non-zeros.

    ``width`` given: competition among each row's ``width`` largest entries (exact when width >= the row's
    non-zeros; O(b w^2), rows chunked to ``chunk_elements`` of [rows, w, w]). ``width=None``: every feature i
    is compared with its neighbourhood in both directions, j in hood(i) (gather s_j, suppress i if s_j > s_i)
    and i in hood(j) (suppress hood(j)'s members that j beats, scattered back): O(b n r) time, rows chunked to
    ``chunk_elements`` of [rows, n, r], no host sync.
    """
    b, n = acts.shape
    out = torch.zeros_like(acts, dtype=torch.bool)
    if width is not None:
        width = max(min(width, n), 1)
        rows = max(1, chunk_elements // (width * width))  # suppression_mask holds a few [rows, w, w] tensors
        for start in range(0, b, rows):
            part = acts[start : start + rows].detach()
            idx = part.topk(width, dim=1).indices
            mask = suppression_mask(part.gather(1, idx), idx, hoods, scale)
            out[start : start + rows] = torch.zeros_like(part, dtype=torch.bool).scatter_(1, idx, mask)
        return out
    r = hoods.shape[1]
    if r == 0 or b == 0:
        return out
    with torch.no_grad():
        a = acts.detach()
        s = a if scale is None else a * scale.detach().to(a.dtype)
        hoods = hoods.long()
        rows = max(1, chunk_elements // max(n * r, 1))
        for start in range(0, b, rows):
            sc = s[start : start + rows]
            # Column n is the padding of hoods: strength 0, so it never beats anyone; what it "loses" is dropped.
            padded = torch.cat([sc, sc.new_zeros(sc.shape[0], 1)], dim=1)
            theirs = padded[:, hoods]  # [rows, n, r]: s_j for j in hood(i)
            mine = sc[:, :, None]
            # A strictly stronger competitor has s_j > s_i >= 0, so it is active (scales are > 0).
            beaten = (theirs > mine).any(2)
            beats = (mine > theirs).reshape(sc.shape[0], n * r).to(sc.dtype)  # i beats its hood member j
            beaten_back = (
                padded.new_zeros(padded.shape).scatter_add_(1, hoods.reshape(1, n * r).expand(sc.shape[0], -1), beats)[
                    :, :n
                ]
                > 0
            )
            out[start : start + rows] = (beaten | beaten_back) & (a[start : start + rows] > 0)
    return out


def update_coactivation_history_dense(
    table: CoactivationTable, acts: Tensor, beta: float = 0.99, chunk_elements: int = CHUNK_ELEMENTS
) -> CoactivationTable:
    """:func:`update_coactivation_history` from dense ``acts`` [b, n] (fires where > 0), bit-identical to it
    with vals / idx holding every row's non-zeros, and at a cost independent of the row widths.

    Per chunk of c feature rows: co-firing counts F_c^T F (a [c, n] float32 matmul of 0/1: exact integers
    for b < 2^24), the table's old values scattered in, the same EMA formula, then each row's r largest
    H > 0 by one top-k on the key (bits(H) << 32) | (n - 1 - j), which orders H descending then j
    ascending like the sparse function. O(b n^2) flops, O(n^2) selection, O(c n) memory; no host sync.
    """
    neighbors, history = table
    n, r = neighbors.shape
    b = acts.shape[0]
    device = neighbors.device
    assert n < (1 << 31), "feature ids must fit the low 32 bits of the ranking key"
    with torch.no_grad():
        fires = (acts.detach() > 0).to(torch.float32)
        rows = max(1, chunk_elements // max(n, 1))
        new_neighbors = torch.full_like(neighbors, -1)
        new_history = torch.zeros(n, r, dtype=torch.float32, device=device)
        k = min(r, n)
        for i0 in range(0, n, rows):
            i1 = min(n, i0 + rows)
            c = i1 - i0
            # [c, n] co-firing counts, in float32 even under autocast (bf16 would round counts above 256).
            with torch.autocast(device_type=device.type, enabled=False):
                hits = fires[:, i0:i1].T @ fires
            own = torch.arange(c, device=device)
            hits[own, own + i0] = 0  # no self pairs
            nb = neighbors[i0:i1]
            old = torch.zeros(c, n + 1, dtype=torch.float32, device=device)
            old.scatter_(1, torch.where(nb >= 0, nb, n), history[i0:i1].float())  # empties land in column n
            h = (beta * old[:, :n] + (1 - beta) * (hits / max(b, 1))).clamp_min(0)
            ids = torch.arange(n, device=device, dtype=torch.int64)
            key = (h.view(torch.int32).to(torch.int64) << 32) | (n - 1 - ids)
            top = key.topk(k, dim=1).indices
            top_h = h.gather(1, top)
            keep = top_h > 0
            new_neighbors[i0:i1, :k] = torch.where(keep, top, -1)
            new_history[i0:i1, :k] = torch.where(keep, top_h, 0.0)
    return CoactivationTable(new_neighbors, new_history.to(history.dtype))


def forget_features(table: CoactivationTable, mask: Tensor) -> CoactivationTable:
    """Clear the history of the features in ``mask`` [n] bool (e.g. re-initialised ones): their own rows and
    every entry naming them; rows are re-sorted so the remaining entries keep their order, empties last."""
    neighbors, history = table
    gone = mask[:, None] | (mask[neighbors.clamp_min(0)] & (neighbors >= 0))
    history = torch.where(gone, torch.zeros_like(history), history)
    neighbors = torch.where(gone, torch.full_like(neighbors, -1), neighbors)
    order = history.sort(dim=1, descending=True, stable=True).indices  # real entries have H > 0, empties 0
    return CoactivationTable(neighbors.gather(1, order), history.gather(1, order))
