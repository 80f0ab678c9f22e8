"""The step table: one ``SAETrainer.step`` (SAELens's own trainer, Adam) of each variant against its SAELens base.

Per row (one shape, one base): every SAE starts from the same weights (same seed) and sees the same batches; the
steps are timed paired (``measure.paired_times``; on CPU in ``measure.steady_heap``) and each ratio is the median
of the per-repetition ratios with its 95% interval. Peak memory of one steady-state step (the previous step's
gradients and outputs known) comes from torch's allocation accounting; the RSS growth is a second column on CPU.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sae_lens_ortho.bench.measure import (
    Interval,
    PairedTimes,
    fmt_bytes,
    paired_times,
    rss_peak_bytes,
    steady_heap,
)
from sae_lens_ortho.bench.variants import BASES, Shape, Variant, build_sae, variants_for
from sae_lens_ortho.core.memory import peak_allocated_bytes


@dataclass(frozen=True)
class Targets:
    time: float
    memory: float


CPU_TARGETS = Targets(time=1.10, memory=1.05)
GPU_TARGETS = Targets(time=1.05, memory=1.05)


def default_clock(device: str) -> str:
    """The clock judged against the time target: process CPU time on CPU (it does not count time the process
    waits for a core on a shared machine), wall time on a GPU (where the host's CPU time is only its waiting)."""
    return "wall" if device.startswith("cuda") else "cpu"


@dataclass
class StepRow:
    """One variant against its base at one shape."""

    variant: str
    base: str
    shape: Shape
    judged: bool
    repeats: int
    clock: str
    """The clock whose ratio is judged against the time target: ``cpu`` (process CPU time) or ``wall``."""
    base_s: float
    variant_s: float
    wall: Interval
    cpu: Interval
    base_peak: int
    peak_ratio: float
    base_rss: int = 0
    rss_ratio: float | None = None
    """RSS growth ratio (CPU, a second column); None where not measured."""
    profile: list[str] = field(default_factory=list)
    """Top ops by self time of one variant step, recorded where a judged row misses or straddles a target."""

    @property
    def judged_time(self) -> Interval:
        return self.cpu if self.clock == "cpu" else self.wall

    def verdicts(self, targets: Targets) -> tuple[str, str]:
        if not self.judged:
            return "—", "—"
        return self.judged_time.verdict(targets.time), "meets" if self.peak_ratio <= targets.memory else "misses"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StepRow:
        d = dict(d)
        d["shape"] = Shape(**d["shape"])
        d["wall"], d["cpu"] = Interval(**d["wall"]), Interval(**d["cpu"])
        return cls(**d)


def trainer(sae: Any, batch: int, device: str, **cfg: Any) -> Any:
    """SAELens's own SAETrainer around ``sae`` (Adam; no data provider: steps are fed by hand)."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = {"lr_end": 3e-5, **cfg}
    config = SAETrainerConfig(total_training_samples=10**9, train_batch_size_samples=batch, device=device, **cfg)
    return SAETrainer(cfg=config, sae=sae, data_provider=iter(()))


def bench_row(
    shape: Shape,
    base: str,
    variants: list[Variant],
    device: str,
    repeats: int,
    targets: Targets,
    rss: bool = True,
    clock: str = "cpu",
    ci_width: float | None = None,
    max_repeats: int | None = None,
) -> list[StepRow]:
    """Paired timing and memory of ``variants`` against SAELens's ``base`` at ``shape``.

    With ``ci_width``, repetitions are added beyond ``repeats`` (up to ``max_repeats``) until the interval of
    every variant's ``clock`` ratio is at most that wide."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(shape.batch, shape.d_in, generator=g).to(device) for _ in range(2)]
    configs = {base: BASES[base](shape, device), **{v.name: v.config(shape, device) for v in variants}}
    trainers = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)  # identical initial weights for every variant
        trainers[name] = trainer(build_sae(cfg), shape.batch, device)

    def step_of(tr: Any) -> Any:
        def step(rep: int = 0) -> None:
            tr.step(batches[rep % 2])

        return step

    calls = {name: step_of(tr) for name, tr in trainers.items()}

    def wide(t: PairedTimes) -> bool:
        return ci_width is not None and any(
            (iv := Interval.of(t.ratios(v.name, base, clock))).hi - iv.lo > ci_width for v in variants
        )

    with steady_heap() if device == "cpu" else contextlib.nullcontext():
        times = paired_times(calls, repeats, device, warm_up=2, more=wide, max_repeats=max_repeats)
    peaks = {name: peak_allocated_bytes(call, device, warm_calls=1)[0] for name, call in calls.items()}
    rss_peaks = {name: rss_peak_bytes(call, device) for name, call in calls.items()} if rss else {}
    rows = []
    for v in variants:
        row = StepRow(
            variant=v.name,
            base=base,
            shape=shape,
            judged=v.judged,
            repeats=len(times.wall[base]),
            clock=clock,
            base_s=Interval.of(times.wall[base]).median,
            variant_s=Interval.of(times.wall[v.name]).median,
            wall=Interval.of(times.ratios(v.name, base, "wall")),
            cpu=Interval.of(times.ratios(v.name, base, "cpu")),
            base_peak=peaks[base],
            peak_ratio=peaks[v.name] / max(peaks[base], 1),
        )
        if rss_peaks:
            row.base_rss = rss_peaks[base]
            row.rss_ratio = rss_peaks[v.name] / max(rss_peaks[base], 1)
        if v.judged and (row.judged_time.verdict(targets.time) != "meets" or row.peak_ratio > targets.memory):
            row.profile = top_ops(calls[v.name])
        rows.append(row)
    del trainers, calls
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def top_ops(call: Any, n: int = 8) -> list[str]:
    """The ``n`` ops with the largest self time (CPU, or CUDA on a GPU) over one call, as text lines."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        call()
    averages = prof.key_averages()
    key = "self_cpu_time_total"
    if torch.cuda.is_available():  # torch >= 2.4 names it "device"; older releases "cuda"
        key = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
    events = sorted(averages, key=lambda e: getattr(e, key, 0), reverse=True)[:n]
    return [f"{e.key}: {getattr(e, key, 0) / 1e3:.1f} ms ({e.count} calls)" for e in events]


def bench_steps(
    grid: list[tuple[str, Shape]],
    device: str,
    repeats: int,
    targets: Targets,
    recipes: list[str] = [],  # noqa: B006
    skip: tuple[str, ...] = (),
    rss: bool = True,
    **timing: Any,
) -> list[StepRow]:
    """Every row of ``grid``; ``timing``: ``clock``, ``ci_width``, ``max_repeats`` of :func:`bench_row`."""
    rows: list[StepRow] = []
    for base, shape in grid:
        variants = variants_for(base, recipes, skip)
        if not variants:
            continue
        new = bench_row(shape, base, variants, device, repeats, targets, rss=rss, **timing)
        rows += new
        for row in new:
            print(step_line(row, targets), flush=True)
    return rows


STEP_HEADER = (
    "| variant | vs | d_in | d_sae | k | batch | reps | base step s | step s | wall-time ratio [95%] "
    "| CPU-time ratio [95%] | base peak (torch) | peak ratio | RSS ratio | time | memory |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def step_line(r: StepRow, targets: Targets) -> str:
    s = r.shape
    time_v, mem_v = r.verdicts(targets)
    rss = "—" if r.rss_ratio is None else f"{r.rss_ratio:.3f}x"
    return (
        f"| {r.variant} | {r.base} | {s.d_in:,} | {s.d_sae:,} | {s.k if r.base != 'standard' else '—'} "
        f"| {s.batch:,} | {r.repeats} | {r.base_s:.3f} | {r.variant_s:.3f} | {r.wall.text()} | {r.cpu.text()} "
        f"| {fmt_bytes(r.base_peak)} | {r.peak_ratio:.3f}x | {rss} | {time_v} | {mem_v} |"
    )


def step_table(rows: list[StepRow], targets: Targets) -> str:
    clocks = sorted({"process CPU time" if r.clock == "cpu" else "wall time" for r in rows})
    lines = [
        f"Judged: {' and '.join(clocks) or 'time'} ratio ≤ {targets.time:.2f}x, torch peak ratio ≤ "
        f"{targets.memory:.2f}x (`meets`: the whole 95% interval is within; `straddles`: it contains the target).",
        "",
        STEP_HEADER,
        *(step_line(r, targets) for r in rows),
    ]
    profiles = [r for r in rows if r.profile]
    if profiles:
        lines.append("")
        lines.append(
            f"Rows that miss or straddle a target (time ≤ {targets.time:.2f}x, memory ≤ {targets.memory:.2f}x): "
            "the ops with the largest self time in one step of the variant."
        )
        for r in profiles:
            k = f", k {r.shape.k}" if r.base != "standard" else ""
            lines.append(f"\n- {r.variant} at d_in {r.shape.d_in:,}, d_sae {r.shape.d_sae:,}{k}:")
            lines += [f"  - {op}" for op in r.profile]
    return "\n".join(lines)
