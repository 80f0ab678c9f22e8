"""Training tables beyond the step table: gradient accumulation and the seed mechanisms on ``standard_ortho``.

3. gradient accumulation: one step with and without ``ortho_micro_batch_size`` (time, peak memory, agreement);
4. seed mechanisms: a ``standard_ortho`` step with the LayerNorm encoder, local competition or dictionary
   management on, against the plain one.

Peak memory: torch's allocation accounting of one steady-state step (``core.memory.peak_allocated_bytes``).
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from sae_lens_ortho.bench.measure import fmt_bytes, timed
from sae_lens_ortho.bench.steps import trainer
from sae_lens_ortho.core.memory import peak_allocated_bytes


def step_peak(tr: Any, x: torch.Tensor, device: str) -> int:
    return peak_allocated_bytes(lambda: tr.step(x), device, warm_calls=1)[0]


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
            mem = step_peak(tr, x, device)
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
        f"| {r['full_s']:.3f} | {r['micro_s'] / r['full_s']:.2f}x | {fmt_bytes(r['full_mem'])} "
        f"| {fmt_bytes(r['micro_mem'])} | {r['micro_mem'] / max(r['full_mem'], 1):.2f}x | {r['diff']:.1e} |"
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
        rows.append(dict(name=name, l0=l0, s=t, mem=step_peak(tr, x, device)))
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
        f"| {r['ratio']:.2f}x | {fmt_bytes(r['mem'])} | {r['mem_ratio']:.2f}x |"
    )


MECHANISM_HEADER = (
    "| variant | d_in | d_sae | batch | L0 | step s | time ratio | peak step mem | mem ratio |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)
