"""The pair-selection and decoder-penalty tables: each fast path against its references, with agreement checks.

1. pair selection: exact co-activation selection vs seed 000's chunked dense scan (chunk 512) vs the full n x n
   matrix (where it fits), each row checking that the selected pair sets agree;
2. decoder penalty: Gram identity (d x d) vs the m x m Gram, equal values.

Peak memory is torch's allocation accounting (``core.memory.peak_allocated_bytes``); a reference that runs once
is timed inside that measurement (the profiler's per-op cost is microseconds against seconds).
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable
from typing import Any

import torch

from sae_lens_ortho.bench.measure import fmt_bytes, sync, timed
from sae_lens_ortho.core.memory import peak_allocated_bytes
from sae_lens_ortho.core.pairs import (
    _ranking_key,
    cofiring_correlations,
    column_inv_norms,
    dense_top_pairs,
    n_selected_pairs,
    select_top_slots,
)
from sae_lens_ortho.core.penalties import decoder_gram_penalty


def once(fn: Callable[[], Any], device: str) -> tuple[float, int, Any]:
    """One call measured for both wall time and peak memory (for calls long enough not to need warm-up)."""
    seconds: list[float] = []

    def run() -> Any:
        t = time.perf_counter()
        out = fn()
        sync(device)
        seconds.append(time.perf_counter() - t)
        return out

    mem, out = peak_allocated_bytes(run, device)
    return seconds[0], mem, out


def peak(fn: Callable[[], Any], device: str) -> int:
    return peak_allocated_bytes(fn, device)[0]


# ------------------------------------------------------------------------------------------ pair selection
def topk_batch(b: int, n: int, k: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TopK activations with a low-rank structure (so real pairs correlate): (acts, values, indices)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    rank = 64
    pre = (torch.randn(b, rank, generator=g) @ torch.randn(rank, n, generator=g)).to(device)
    pre += 0.5 * torch.randn(b, n, generator=g).to(device)
    vals, idx = pre.topk(k, dim=1)
    vals = vals.relu()
    acts = torch.zeros_like(pre).scatter_(1, idx, vals)
    return acts, vals, idx


def select_exact(vals: torch.Tensor, idx: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    cof = cofiring_correlations(vals, idx, n)
    top, valid = select_top_slots(cof.corr, m)
    return cof.keys_of(top)[valid], cof.corr[top][valid]


def select_chunked(acts: torch.Tensor, m: int, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    keys, corr, _ = dense_top_pairs(acts * column_inv_norms(acts), m, chunk)
    keep = corr > 0
    return keys[keep], corr[keep]


def select_full(acts: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = acts.shape[1]
    normed = acts * column_inv_norms(acts)
    c = torch.triu(normed.T @ normed, diagonal=1)
    keys = torch.arange(n * n, device=acts.device).view(n, n)
    top = _ranking_key(c, keys).view(-1).topk(m).indices
    del keys
    corr = c.view(-1)[top]
    keep = corr > 0
    return top[keep], corr[keep]


def agreement(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], tol: float = 1e-5) -> str:
    """'exact' when the ranked pair lists are identical; else whether they differ only among float near-ties."""
    ka, ca = a
    kb, cb = b
    if ka.numel() == kb.numel() and torch.equal(ka, kb):
        return "exact"
    if ka.numel() != kb.numel():
        return f"DIFFER ({ka.numel()} vs {kb.numel()} pairs)"
    if not torch.allclose(ca, cb, atol=tol):
        return "DIFFER (values)"
    cutoff = float(ca[-1])
    sa = set(ka[ca > cutoff + tol].tolist())
    sb = set(kb[cb > cutoff + tol].tolist())
    return "same up to ties" if sa == sb else "DIFFER (sets)"


def bench_selection(grid: dict[str, Any], device: str) -> list[dict[str, Any]]:
    rows = []
    for n, k, b in grid["select"]:
        rows.append(selection_row(grid, n, k, b, device))
        print(_selection_line(rows[-1]), flush=True)
    return rows


def selection_row(grid: dict[str, Any], n: int, k: int, b: int, device: str) -> dict[str, Any]:
    """Exact selection at (d_sae n, k, batch b), and the references where the grid runs them."""
    acts, vals, idx = topk_batch(b, n, k, device, seed=n + k)
    m = n_selected_pairs(n, 0.001)
    t_exact, exact = timed(functools.partial(select_exact, vals, idx, n, m), device, 3)
    mem_exact = peak(functools.partial(select_exact, vals, idx, n, m), device)
    row: dict[str, Any] = dict(d_sae=n, k=k, batch=b, pairs=m, exact_s=t_exact, exact_mem=mem_exact)
    # The O(b n^2) references cost the same for every k: on big dictionaries run them for k = 64 only.
    reference_k = n <= grid["all_k_max"] or k == 64
    if n <= grid["dense_max"] and reference_k:
        t_dense, mem_dense, dense = once(functools.partial(select_chunked, acts, m), device)
        row.update(dense_s=t_dense, dense_mem=mem_dense, speedup=t_dense / t_exact, agree_dense=agreement(exact, dense))
    if n <= grid["full_max"] and reference_k:
        t_full, mem_full, full = once(functools.partial(select_full, acts, m), device)
        row.update(full_s=t_full, full_mem=mem_full, agree_full=agreement(exact, full))
    del acts, vals, idx
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def _selection_line(r: dict[str, Any]) -> str:
    def g(key: str, fmt: Callable[[Any], str]) -> str:
        return fmt(r[key]) if key in r else "—"

    return (
        f"| {r['d_sae']:,} | {r['k']} | {r['batch']:,} | {r['pairs']:,} | {r['exact_s']:.3f} | {fmt_bytes(r['exact_mem'])} "
        f"| {g('dense_s', lambda v: f'{v:.2f}')} | {g('dense_mem', fmt_bytes)} | {g('speedup', lambda v: f'{v:.0f}x')} "
        f"| {g('full_s', lambda v: f'{v:.2f}')} | {g('full_mem', fmt_bytes)} "
        f"| {g('agree_dense', str)} | {g('agree_full', str)} |"
    )


SELECTION_HEADER = (
    "| d_sae | k | batch | pairs selected | exact s | exact peak mem | chunked scan s | chunked peak mem "
    "| exact speed-up | full n×n s | full n×n peak mem | agree (chunked) | agree (full) |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


# ------------------------------------------------------------------------------------------ decoder penalty
def naive_gram_penalty(W: torch.Tensor) -> torch.Tensor:
    normed = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    g = normed @ normed.T
    return g.pow(2).sum() - g.diagonal().pow(2).sum()


def bench_decoder(grid: dict[str, Any], device: str) -> list[dict[str, Any]]:
    rows = []
    for m, d in grid["decoder"]:
        W = torch.randn(m, d, generator=torch.Generator().manual_seed(m + d)).to(device).requires_grad_(True)

        def gram_identity() -> torch.Tensor:
            out = decoder_gram_penalty(W, "sum")
            out.backward()
            return out.detach()

        t_id, v_id = timed(gram_identity, device, 2)
        mem_id = peak(gram_identity, device)
        row: dict[str, Any] = dict(m=m, d=d, identity_s=t_id, identity_mem=mem_id, value=float(v_id))
        if m <= grid["decoder_full_max"]:

            def full() -> torch.Tensor:
                out = naive_gram_penalty(W)
                out.backward()
                return out.detach()

            t_full, mem_full, v_full = once(full, device)
            row.update(
                full_s=t_full,
                full_mem=mem_full,
                full_value=float(v_full),
                rel_diff=abs(float(v_full) - float(v_id)) / abs(float(v_full)),
            )
        rows.append(row)
        print(_decoder_line(row), flush=True)
    return rows


def _decoder_line(r: dict[str, Any]) -> str:
    full = (
        f"{r['full_s']:.3f} | {fmt_bytes(r['full_mem'])} | {r['full_s'] / r['identity_s']:.0f}x | {r['rel_diff']:.1e}"
        if "full_s" in r
        else "— | — | — | —"
    )
    return (
        f"| {r['m']:,} | {r['d']:,} | {r['identity_s']:.3f} | {fmt_bytes(r['identity_mem'])} | {full} "
        f"| {r['value']:.6g} |"
    )


DECODER_HEADER = (
    "| m (d_sae) | d | Gram identity s (fwd+bwd) | identity peak mem | m×m Gram s | m×m peak mem | speed-up | rel. diff "
    "| value |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
