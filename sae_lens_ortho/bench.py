"""``make bench``: speed and memory of the ortho machinery, as ratios measured side by side in one process.

    python -m sae_lens_ortho.bench --out docs/performance.md            # CPU default, < 15 min on 2 cores
    python -m sae_lens_ortho.bench --size full --device cuda --out ...   # the full grid, for a GPU
    python -m sae_lens_ortho.bench --size quick                          # seconds; what tests/test_bench.py runs

Five tables:
1. pair selection: exact co-activation selection vs seed 000's chunked dense scan (chunk 512) vs the full n x n
   matrix (where it fits), each row checking that the selected pair sets agree;
2. training step: SAELens ``topk`` vs ``topk_ortho`` (decoder penalty off / on) through SAELens's own
   ``SAETrainer.step`` (same d_in, d_sae, k, batch, Adam, identical initial weights and batches);
3. decoder penalty: Gram identity (d x d) vs the m x m Gram, equal values;
4. gradient accumulation: one step with and without ``ortho_micro_batch_size`` (time, peak memory, agreement);
5. seed mechanisms: a ``standard_ortho`` step with the LayerNorm encoder, local competition or dictionary
   management on, against the plain one.

Peak memory: CUDA ``max_memory_allocated``; on CPU the peak resident set of a forked child that runs only the
measured call (its growth over the child's starting size).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lens_ortho.core.kernels import cpu_sort_backend
from sae_lens_ortho.core.memory import vm_kib
from sae_lens_ortho.core.pairs import (
    _ranking_key,
    cofiring_correlations,
    column_inv_norms,
    dense_top_pairs,
    n_selected_pairs,
    select_top_slots,
)
from sae_lens_ortho.core.penalties import decoder_gram_penalty

GRIDS: dict[str, dict[str, Any]] = {
    "quick": dict(
        select=[(1024, 8, 256), (1024, 16, 256)],  # (d_sae, k, batch)
        dense_max=1024,
        full_max=1024,
        all_k_max=1024,
        step=[(64, 1024, 16, 256)],  # (d_in, d_sae, k, batch)
        step_repeats=2,
        decoder=[(1024, 64)],
        decoder_full_max=1024,
        micro=[
            ("topk", 64, 1024, 16, 512, 128),
            ("standard", 64, 512, 0, 256, 64),
        ],  # (arch, d_in, d_sae, k, batch, micro)
        mechanisms=(64, 512, 256, 5),  # (d_in, d_sae, batch, sparsifying steps before timing)
    ),
    "cpu": dict(
        select=[(n, k, 4096) for n in (4096, 16384, 32768, 65536) for k in (32, 64, 128)],
        dense_max=32768,
        full_max=4096,
        all_k_max=4096,
        step=[(512, 16384, 32, 2048), (512, 16384, 64, 2048), (512, 32768, 64, 2048), (2304, 16384, 64, 2048)],
        step_repeats=5,
        decoder=[(16384, 512), (16384, 2304), (65536, 2304)],
        decoder_full_max=16384,
        micro=[("topk", 512, 16384, 64, 4096, 1024), ("standard", 512, 4096, 0, 2048, 256)],
        mechanisms=(512, 4096, 2048, 30),
    ),
    "full": dict(
        select=[(n, k, 4096) for n in (4096, 16384, 32768, 65536) for k in (32, 64, 128)],
        dense_max=65536,
        full_max=32768,
        all_k_max=65536,
        step=[(512, 16384, 64, 4096), (512, 32768, 64, 4096), (2304, 16384, 64, 4096), (2304, 65536, 64, 4096)],
        step_repeats=10,
        decoder=[(16384, 2304), (65536, 2304)],
        decoder_full_max=65536,
        micro=[("topk", 2304, 65536, 64, 8192, 1024), ("standard", 2304, 16384, 0, 4096, 512)],
        mechanisms=(2304, 16384, 4096, 100),
    ),
}


# ----------------------------------------------------------------------------------------------- measuring
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(fn: Callable[[], Any], device: str, small_blocks: bool = True) -> int:
    """Peak extra memory (bytes) of one call of ``fn``.

    CUDA: ``max_memory_allocated`` over the call. CPU: the process's peak resident set (VmHWM), reset just
    before the call through /proc/self/clear_refs, minus the resident set at that moment (Linux only).
    """
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # While measuring, glibc serves every allocation above 64 KiB by mmap and returns freed memory at once, so
    # the resident set follows the tensors; timing runs keep glibc's usual (large-block) behaviour.
    if small_blocks:
        _mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        (base,) = vm_kib("VmRSS")
        fn()
        return max(vm_kib("VmHWM")[0] - base, 0) * 1024
    finally:
        _mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's dynamic threshold's ceiling


_M_MMAP_THRESHOLD = -3


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _mallopt(param: int, value: int) -> None:
    try:
        _libc().mallopt(param, value)
    except (OSError, AttributeError):  # not glibc: measure as is
        pass


def _malloc_trim() -> None:
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


def once(fn: Callable[[], Any], device: str) -> tuple[float, int, Any]:
    """One call measured for both wall time and peak extra memory (for calls long enough not to need warm-up)."""
    out: list[Any] = []

    def run() -> None:
        t = time.perf_counter()
        out.append(fn())
        _sync(device)
        out.append(time.perf_counter() - t)

    # Long calls allocate large blocks that glibc maps anyway: keep its normal mode so the time is not inflated.
    mem = peak_memory(run, device, small_blocks=False)
    return out[1], mem, out[0]


def trainer(sae: Any, batch: int, device: str, **cfg: Any) -> Any:
    """SAELens's own SAETrainer around ``sae`` (Adam; no data provider: steps are fed by hand)."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = {"lr_end": 3e-5, **cfg}
    config = SAETrainerConfig(total_training_samples=10**9, train_batch_size_samples=batch, device=device, **cfg)
    return SAETrainer(cfg=config, sae=sae, data_provider=iter(()))


def timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[float, Any]:
    """Median wall time over ``repeats`` calls after one warm-up call; returns (seconds, last result)."""
    out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


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
        acts, vals, idx = topk_batch(b, n, k, device, seed=n + k)
        m = n_selected_pairs(n, 0.001)
        t_exact, exact = timed(functools.partial(select_exact, vals, idx, n, m), device, 3)
        mem_exact = peak_memory(functools.partial(select_exact, vals, idx, n, m), device)
        row: dict[str, Any] = dict(d_sae=n, k=k, batch=b, pairs=m, exact_s=t_exact, exact_mem=mem_exact)
        # The O(b n^2) references cost the same for every k: on big dictionaries run them for k = 64 only.
        reference_k = n <= grid["all_k_max"] or k == 64
        if n <= grid["dense_max"] and reference_k:
            t_dense, mem_dense, dense = once(functools.partial(select_chunked, acts, m), device)
            row.update(
                dense_s=t_dense, dense_mem=mem_dense, speedup=t_dense / t_exact, agree_dense=agreement(exact, dense)
            )
        if n <= grid["full_max"] and reference_k:
            t_full, mem_full, full = once(functools.partial(select_full, acts, m), device)
            row.update(full_s=t_full, full_mem=mem_full, agree_full=agreement(exact, full))
        rows.append(row)
        print(_selection_line(row), flush=True)
        del acts, vals, idx
        gc.collect()
    return rows


def _selection_line(r: dict[str, Any]) -> str:
    def g(key: str, fmt: Callable[[Any], str]) -> str:
        return fmt(r[key]) if key in r else "—"

    return (
        f"| {r['d_sae']:,} | {r['k']} | {r['batch']:,} | {r['pairs']:,} | {r['exact_s']:.3f} | {_fmt_bytes(r['exact_mem'])} "
        f"| {g('dense_s', lambda v: f'{v:.2f}')} | {g('dense_mem', _fmt_bytes)} | {g('speedup', lambda v: f'{v:.0f}x')} "
        f"| {g('full_s', lambda v: f'{v:.2f}')} | {g('full_mem', _fmt_bytes)} "
        f"| {g('agree_dense', str)} | {g('agree_full', str)} |"
    )


SELECTION_HEADER = (
    "| d_sae | k | batch | pairs selected | exact s | exact peak mem | chunked scan s | chunked peak mem "
    "| exact speed-up | full n×n s | full n×n peak mem | agree (chunked) | agree (full) |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


# -------------------------------------------------------------------------------------------- training step
def bench_steps(grid: dict[str, Any], device: str) -> list[dict[str, Any]]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    from sae_lens_ortho.saes.topk import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig

    rows = []
    for d_in, d_sae, k, batch in grid["step"]:
        variants: dict[str, Callable[[], Any]] = {
            "topk": lambda: TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device=device)),
            "topk_ortho": lambda: TopKOrthoTrainingSAE(
                TopKOrthoTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device=device, ortho_coefficient=1.0)
            ),
            "topk_ortho+decoder": lambda: TopKOrthoTrainingSAE(
                TopKOrthoTrainingSAEConfig(
                    d_in=d_in, d_sae=d_sae, k=k, device=device, ortho_coefficient=1.0, ortho_decoder_coefficient=1.0
                )
            ),
        }
        g = torch.Generator().manual_seed(0)
        batches = [torch.randn(batch, d_in, generator=g).to(device) for _ in range(2)]
        trainers = {}
        for name, make in variants.items():
            torch.manual_seed(0)  # identical initial weights for every variant
            trainers[name] = trainer(make(), batch, device)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for tr in trainers.values():  # warm-up
            tr.step(batches[0])
        _sync(device)
        for rep in range(grid["step_repeats"]):
            for name, tr in trainers.items():  # interleaved, so drift hits all variants alike
                t = time.perf_counter()
                tr.step(batches[rep % 2])
                _sync(device)
                times[name].append(time.perf_counter() - t)
        mems = {name: peak_memory(lambda tr=tr: tr.step(batches[0]), device) for name, tr in trainers.items()}
        med = {name: statistics.median(v) for name, v in times.items()}
        row = dict(
            d_in=d_in,
            d_sae=d_sae,
            k=k,
            batch=batch,
            **{f"{n}_s": v for n, v in med.items()},
            **{f"{n}_mem": v for n, v in mems.items()},
        )
        row["ratio"] = med["topk_ortho"] / med["topk"]
        row["ratio_dec"] = med["topk_ortho+decoder"] / med["topk"]
        row["mem_ratio"] = mems["topk_ortho"] / max(mems["topk"], 1)
        row["mem_ratio_dec"] = mems["topk_ortho+decoder"] / max(mems["topk"], 1)
        rows.append(row)
        print(_step_line(row), flush=True)
        del trainers
        gc.collect()
    return rows


def _step_line(r: dict[str, Any]) -> str:
    return (
        f"| {r['d_in']:,} | {r['d_sae']:,} | {r['k']} | {r['batch']:,} | {r['topk_s']:.3f} | {r['topk_ortho_s']:.3f} "
        f"| {r['topk_ortho+decoder_s']:.3f} | {r['ratio']:.3f}x | {r['ratio_dec']:.3f}x "
        f"| {_fmt_bytes(r['topk_mem'])} | {r['mem_ratio']:.3f}x | {r['mem_ratio_dec']:.3f}x |"
    )


STEP_HEADER = (
    "| d_in | d_sae | k | batch | topk step s | topk_ortho step s | +decoder step s | time ratio | time ratio (+decoder) "
    "| topk peak step mem | mem ratio | mem ratio (+decoder) |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
        mem_id = peak_memory(gram_identity, device)
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
        f"{r['full_s']:.3f} | {_fmt_bytes(r['full_mem'])} | {r['full_s'] / r['identity_s']:.0f}x | {r['rel_diff']:.1e}"
        if "full_s" in r
        else "— | — | — | —"
    )
    return (
        f"| {r['m']:,} | {r['d']:,} | {r['identity_s']:.3f} | {_fmt_bytes(r['identity_mem'])} | {full} "
        f"| {r['value']:.6g} |"
    )


DECODER_HEADER = (
    "| m (d_sae) | d | Gram identity s (fwd+bwd) | identity peak mem | m×m Gram s | m×m peak mem | speed-up | rel. diff "
    "| value |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


# ----------------------------------------------------------------------------------------------- micro-batches
def bench_micro(grid: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """SAETrainer.step with and without ``ortho_micro_batch_size`` from identical weights: time, peak memory,
    and the largest gradient difference (relative to the largest gradient entry, per parameter)."""
    from sae_lens.saes.sae import TrainStepInput

    from sae_lens_ortho.saes.standard import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig
    from sae_lens_ortho.saes.topk import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig

    rows = []
    for arch, d_in, d_sae, k, batch, micro in grid["micro"]:
        x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(0)).to(device)
        stats: dict[str, tuple[float, int, list[torch.Tensor]]] = {}
        for name, mb in (("full", None), ("micro", micro)):
            torch.manual_seed(0)
            kw = dict(d_in=d_in, d_sae=d_sae, device=device, ortho_coefficient=1.0, ortho_micro_batch_size=mb)
            sae = (
                TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(k=k, **kw))
                if arch == "topk"
                else StandardOrthoTrainingSAE(StandardOrthoTrainingSAEConfig(**kw))
            )
            tr = trainer(sae, batch, device)
            state = {k_: v.clone() for k_, v in sae.state_dict().items()}
            t, _ = timed(lambda tr=tr: tr.step(x), device, 2)
            sae.load_state_dict(state)  # same start for the measured and compared step
            tr.optimizer.state.clear()
            mem = peak_memory(lambda tr=tr: tr.step(x), device)
            sae.load_state_dict(state)
            sae.zero_grad()
            sae.training_forward_pass(TrainStepInput(x, tr.get_coefficients(), None, 0, False)).loss.backward()
            stats[name] = (
                t,
                mem,
                [torch.zeros_like(q) if q.grad is None else q.grad.clone() for q in sae.parameters()],
            )
        diff = max(
            (a - b).abs().max().item() / a.abs().max().clamp_min(1e-30).item()
            for a, b in zip(stats["full"][2], stats["micro"][2])
        )
        row = dict(
            arch=arch,
            d_in=d_in,
            d_sae=d_sae,
            k=k,
            batch=batch,
            micro=micro,
            full_s=stats["full"][0],
            micro_s=stats["micro"][0],
            full_mem=stats["full"][1],
            micro_mem=stats["micro"][1],
            diff=diff,
        )
        rows.append(row)
        print(_micro_line(row), flush=True)
        del stats
        gc.collect()
    return rows


def _micro_line(r: dict[str, Any]) -> str:
    return (
        f"| {r['arch']}_ortho | {r['d_in']:,} | {r['d_sae']:,} | {r['k'] or '—'} | {r['batch']:,} | {r['micro']:,} "
        f"| {r['full_s']:.3f} | {r['micro_s'] / r['full_s']:.2f}x | {_fmt_bytes(r['full_mem'])} "
        f"| {_fmt_bytes(r['micro_mem'])} | {r['micro_mem'] / max(r['full_mem'], 1):.2f}x | {r['diff']:.1e} |"
    )


MICRO_HEADER = (
    "| architecture | d_in | d_sae | k | batch | micro-batch | full step s | micro time ratio | full peak mem "
    "| micro peak mem | mem ratio | max rel. grad diff |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


# ------------------------------------------------------------------------------------------ seed mechanisms
MECHANISMS: dict[str, dict[str, Any]] = {
    "standard_ortho": {},
    "+ LayerNorm encoder (000)": dict(ortho_encoder_layer_norm=True),
    "+ local competition (004)": dict(ortho_competition_gamma=0.3),
    "+ dictionary management (004)": dict(ortho_manage_every=1),
}


def bench_mechanisms(grid: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """SAETrainer.step of standard_ortho with each seed mechanism that adds work per step, from the same weights
    on the same structured batch, after a few steps that let the L1 penalty sparsify the ReLU code."""
    from sae_lens_ortho.saes.standard import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig

    d_in, d_sae, batch, warm = grid["mechanisms"]
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(batch, 64, generator=g) * (torch.rand(batch, 64, generator=g) < 0.05)
    x = (codes @ torch.randn(64, d_in, generator=g) + 0.1 * torch.randn(batch, d_in, generator=g)).to(device)
    rows = []
    for name, kw in MECHANISMS.items():
        torch.manual_seed(0)
        sae = StandardOrthoTrainingSAE(
            StandardOrthoTrainingSAEConfig(
                d_in=d_in, d_sae=d_sae, device=device, l1_coefficient=5.0, ortho_coefficient=1.0, **kw
            )
        )
        tr = trainer(sae, batch, device, lr=1e-3, lr_end=1e-3)
        for _ in range(warm):
            out = tr.step(x)
        l0 = float((out.feature_acts > 0).sum(1).float().mean())
        t, _ = timed(lambda tr=tr: tr.step(x), device, grid["step_repeats"])
        rows.append(dict(name=name, l0=l0, s=t, mem=peak_memory(lambda tr=tr: tr.step(x), device)))
        del tr, sae
        gc.collect()
    for row in rows:
        row.update(
            d_in=d_in,
            d_sae=d_sae,
            batch=batch,
            ratio=row["s"] / rows[0]["s"],
            mem_ratio=row["mem"] / max(rows[0]["mem"], 1),
        )
        print(_mechanism_line(row), flush=True)
    return rows


def _mechanism_line(r: dict[str, Any]) -> str:
    return (
        f"| {r['name']} | {r['d_in']:,} | {r['d_sae']:,} | {r['batch']:,} | {r['l0']:.0f} | {r['s']:.3f} "
        f"| {r['ratio']:.2f}x | {_fmt_bytes(r['mem'])} | {r['mem_ratio']:.2f}x |"
    )


MECHANISM_HEADER = (
    "| variant | d_in | d_sae | batch | L0 | step s | time ratio | peak step mem | mem ratio |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


# ----------------------------------------------------------------------------------------------------- main
def environment(device: str) -> str:
    import sae_lens

    if device.startswith("cuda"):
        hw = torch.cuda.get_device_name()
    else:
        hw = (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}; numpy {np.__version__}; CPU sort: {cpu_sort_backend()}"
        )
    return (
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}; {platform.node()}; {hw}; Python "
        f"{platform.python_version()}; torch {torch.__version__}; sae-lens {sae_lens.__version__}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", default="docs/performance.md", help="Markdown file to write")
    parser.add_argument(
        "--size", choices=sorted(GRIDS), default="cpu", help="quick (seconds), cpu (default), full (GPU)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--only",
        choices=["select", "step", "decoder", "micro", "mechanisms"],
        action="append",
        help="run only these tables",
    )
    args = parser.parse_args(argv)
    grid = GRIDS[args.size]
    parts = args.only or ["select", "step", "decoder", "micro", "mechanisms"]
    env = environment(args.device)
    print(env, flush=True)
    sections = [
        f"# Performance\n\n`python -m sae_lens_ortho.bench --size {args.size} --device {args.device}`\n\n{env}\n"
    ]
    if "select" in parts:
        print(SELECTION_HEADER, flush=True)
        sections.append(
            "## Pair selection (p = 0.001)\n\n"
            + SELECTION_HEADER
            + "\n"
            + "\n".join(_selection_line(r) for r in bench_selection(grid, args.device))
        )
    if "step" in parts:
        print(STEP_HEADER, flush=True)
        sections.append(
            "## Training step (SAETrainer.step, Adam)\n\n"
            + STEP_HEADER
            + "\n"
            + "\n".join(_step_line(r) for r in bench_steps(grid, args.device))
        )
    if "decoder" in parts:
        print(DECODER_HEADER, flush=True)
        sections.append(
            "## Decoder penalty\n\n"
            + DECODER_HEADER
            + "\n"
            + "\n".join(_decoder_line(r) for r in bench_decoder(grid, args.device))
        )
    if "micro" in parts:
        print(MICRO_HEADER, flush=True)
        sections.append(
            "## Gradient accumulation (`ortho_micro_batch_size`, SAETrainer.step)\n\n"
            + MICRO_HEADER
            + "\n"
            + "\n".join(_micro_line(r) for r in bench_micro(grid, args.device))
        )
    if "mechanisms" in parts:
        print(MECHANISM_HEADER, flush=True)
        sections.append(
            "## Seed mechanisms on standard_ortho (SAETrainer.step)\n\n"
            + MECHANISM_HEADER
            + "\n"
            + "\n".join(_mechanism_line(r) for r in bench_mechanisms(grid, args.device))
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
