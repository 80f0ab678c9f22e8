"""``make bench-gpu``: the GPU run, sized for one H200 in under 8 minutes, everything under one folder.

    python -m sae_lens_ortho.bench.gpu --out bench_out/gpu                 # on the GPU (grid h200)
    python -m sae_lens_ortho.bench.gpu --out /tmp/g --size quick --device cpu   # what the test suite runs

Writes into ``--out`` (flat, four files, so a tool that returns a few files from one folder gets them all):
``performance_gpu.md`` (environment, step table, selection table), ``steps.json`` and ``selection.json`` (the
rows), ``log.txt`` (progress and any error's traceback). Every file is rewritten after each row, so a run cut
short still leaves what it measured. A row that raises (out of memory, say) is logged and skipped; rows not
started before ``--budget-min`` has passed are listed as skipped.

Step table: at d_in 2,304, d_sae 16k and 65k, k 64, batch 4,096, every ``*_ortho`` default and recipe
(``bench/variants.py``) against its SAELens base, 21 paired repetitions, CUDA peak memory
(``max_memory_allocated``); selection table up to 65k latents.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from sae_lens_ortho.bench.cli import command_line, environment
from sae_lens_ortho.bench.grids import GRIDS
from sae_lens_ortho.bench.selection import SELECTION_HEADER, _selection_line, selection_row
from sae_lens_ortho.bench.steps import CPU_TARGETS, GPU_TARGETS, StepRow, bench_row, default_clock, step_table
from sae_lens_ortho.bench.variants import variants_for


class Report:
    """The output folder, rewritten whole after every row."""

    def __init__(self, out: Path, header: str, targets: Any):
        self.out, self.header, self.targets = out, header, targets
        self.steps: list[StepRow] = []
        self.selection: list[dict[str, Any]] = []
        self.notes: list[str] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.txt").write_text("")

    def log(self, line: str) -> None:
        print(line, flush=True)
        with open(self.out / "log.txt", "a") as f:
            f.write(line + "\n")

    def write(self) -> None:
        parts = [self.header, "## Training step (SAETrainer.step, Adam)", step_table(self.steps, self.targets)]
        selection = "\n".join([SELECTION_HEADER, *map(_selection_line, self.selection)])
        parts += ["## Pair selection (p = 0.001)", selection]
        if self.notes:
            parts += ["## Notes", "\n".join(f"- {n}" for n in self.notes)]
        (self.out / "performance_gpu.md").write_text("\n\n".join(parts) + "\n")
        (self.out / "steps.json").write_text(json.dumps([r.to_json() for r in self.steps], indent=1))
        (self.out / "selection.json").write_text(json.dumps(self.selection, indent=1))

    def failed(self, what: str) -> None:
        self.log(f"FAILED: {what}\n{traceback.format_exc()}")
        self.notes.append(f"{what}: failed ({traceback.format_exc().strip().splitlines()[-1]}); see log.txt")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The GPU run: step and selection tables into one folder.")
    p.add_argument("--out", default="bench_out/gpu", help="folder to write (created)")
    p.add_argument("--size", choices=sorted(GRIDS), default="h200")
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, help="step-table repetitions (default: the grid's)")
    p.add_argument("--budget-min", type=float, default=6.0, help="start no row after this many minutes")
    p.add_argument("--recipe", action="append", default=[], metavar="PRESET[:BASE]", help="add a preset")
    p.add_argument("--only", choices=["step", "select"], action="append", help="run only these tables")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.repeats is not None and args.repeats < 6:
        raise SystemExit(f"--repeats must be at least 6, got {args.repeats}")
    start = time.perf_counter()
    deadline = start + 60 * args.budget_min
    grid = GRIDS[args.size]
    cuda = args.device.startswith("cuda")
    targets = GPU_TARGETS if cuda else CPU_TARGETS
    header = f"# Performance on GPU\n\n`{command_line(argv, 'sae_lens_ortho.bench.gpu')}`\n\n{environment(args.device)}"
    report = Report(Path(args.out), header, targets)
    report.log(header)
    parts = args.only or ["step", "select"]
    repeats = args.repeats or grid["step_repeats"]
    if "step" in parts:
        for base, shape in grid["step"]:
            what = f"step {base} at {shape}"
            if time.perf_counter() > deadline:
                report.notes.append(f"{what}: skipped (time budget of {args.budget_min} min)")
                continue
            try:
                variants = variants_for(base, args.recipe)
                clock = default_clock(args.device)
                rows = bench_row(shape, base, variants, args.device, repeats, targets, rss=not cuda, clock=clock)
            except Exception:  # noqa: BLE001  (one failed row must not lose the others)
                report.failed(what)
            else:
                report.steps += rows
                for r in rows:
                    report.log(f"{what}: {r.variant} {r.wall.text()} peak {r.peak_ratio:.3f}x")
            report.write()
    if "select" in parts:
        for n, k, b in grid["select"]:
            what = f"selection at d_sae {n}, k {k}, batch {b}"
            if time.perf_counter() > deadline:
                report.notes.append(f"{what}: skipped (time budget of {args.budget_min} min)")
                continue
            try:
                report.selection.append(selection_row(grid, n, k, b, args.device))
            except Exception:  # noqa: BLE001
                report.failed(what)
            else:
                report.log(_selection_line(report.selection[-1]))
            report.write()
    report.notes.append(f"wall time of the run: {(time.perf_counter() - start) / 60:.1f} min")
    report.write()
    report.log(f"wrote {report.out}")


if __name__ == "__main__":
    main()
