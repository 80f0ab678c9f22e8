"""``python -m sae_lens_ortho.bench``: run the tables of one grid and write them as Markdown (and the step rows as
JSON with ``--json``)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lens_ortho.bench.grids import GRIDS
from sae_lens_ortho.bench.steps import CPU_TARGETS, GPU_TARGETS, bench_steps, default_clock, step_table

TABLES: tuple[str, ...] = ("select", "step", "decoder", "micro", "mechanisms")


def environment(device: str) -> str:
    import sae_lens

    from sae_lens_ortho.core.kernels import cpu_sort_backend

    if device.startswith("cuda"):
        hw = torch.cuda.get_device_name()
    else:
        hw = (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}; numpy {np.__version__}; CPU sort: {cpu_sort_backend()}"
        )
    return (
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}; {platform.node()}; {hw}; Python "
        f"{platform.python_version()}; torch {torch.__version__}; sae-lens {sae_lens.__version__}; "
        f"load average {_load()}"
    )


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Speed and memory of the ortho machinery, measured side by side.")
    p.add_argument("--out", default="bench_out/performance.md", help="Markdown file to write")
    p.add_argument("--json", help="also write the step table's rows to this JSON file")
    p.add_argument("--size", choices=sorted(GRIDS), default="cpu", help="quick (seconds), cpu (default), h200")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", choices=TABLES, action="append", help="run only these tables (repeatable)")
    p.add_argument("--repeats", type=int, help="step-table repetitions (default: the grid's; at least 6)")
    p.add_argument("--max-repeats", type=int, help="with --ci-width: add repetitions (two at a time) up to this many")
    p.add_argument(
        "--ci-width",
        type=float,
        help="add repetitions until every step-table ratio's 95%% interval (judged clock) is at most this wide",
    )
    p.add_argument(
        "--judge",
        choices=["cpu", "wall"],
        help="clock judged against the time target (default: process CPU time on CPU, wall time on CUDA)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--cpu-sort", choices=["auto", "numpy", "torch"], help="fix the CPU sort backend instead of measuring it"
    )
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="PRESET[:BASE]",
        help="add a preset of sae_lens_ortho.presets to the step table (BASE: topk, batchtopk, standard)",
    )
    p.add_argument(
        "--base",
        action="append",
        choices=["topk", "batchtopk", "standard"],
        help="run only the step-table rows of these SAELens bases (repeatable)",
    )
    p.add_argument(
        "--row", type=int, action="append", help="run only these step-table rows (0-based index in the grid)"
    )
    p.add_argument("--no-rss", action="store_true", help="skip the RSS column (one step less per variant)")
    return p


def configure(args: argparse.Namespace) -> None:
    """Process-wide settings from the flags, validated before anything runs."""
    if args.repeats is not None and args.repeats < 6:
        raise SystemExit(f"--repeats must be at least 6 (a 95% interval of the median needs 6), got {args.repeats}")
    if args.max_repeats is not None and args.max_repeats < (args.repeats or 6):
        raise SystemExit(f"--max-repeats must be at least --repeats, got {args.max_repeats}")
    if args.ci_width is not None and args.ci_width <= 0:
        raise SystemExit(f"--ci-width must be > 0, got {args.ci_width}")
    if args.judge is None:
        args.judge = default_clock(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.cpu_sort:
        from sae_lens_ortho.core import kernels

        kernels.CPU_BACKEND = args.cpu_sort


def run_tables(args: argparse.Namespace, parts: list[str], env: str = "") -> list[str]:
    import sae_lens_ortho.bench.selection as selection
    import sae_lens_ortho.bench.training as training

    grid = GRIDS[args.size]
    device = args.device
    # the tables other than the step table: (title, header, rows, line of a row)
    plain: dict[str, tuple[str, str, Callable[..., list[dict[str, Any]]], Callable[[dict[str, Any]], str]]] = {
        "select": (
            "Pair selection (p = 0.001)",
            selection.SELECTION_HEADER,
            selection.bench_selection,
            selection._selection_line,
        ),
        "decoder": ("Decoder penalty", selection.DECODER_HEADER, selection.bench_decoder, selection._decoder_line),
        "micro": (
            "Gradient accumulation (`ortho_micro_batch_size`, SAETrainer.step)",
            training.MICRO_HEADER,
            training.bench_micro,
            training._micro_line,
        ),
        "mechanisms": (
            "Seed mechanisms on standard_ortho (SAETrainer.step)",
            training.MECHANISM_HEADER,
            training.bench_mechanisms,
            training._mechanism_line,
        ),
    }
    sections = []
    for part in (p for p in TABLES if p in parts):
        if part == "step":
            sections.append(_step_section(args, grid, env))
            continue
        title, header, bench, line = plain[part]
        print(header, flush=True)
        rows = bench(grid, device)
        sections.append(f"## {title}\n\n{header}\n" + "\n".join(line(r) for r in rows))
    return sections


def _step_section(args: argparse.Namespace, grid: dict[str, Any], env: str) -> str:
    targets = GPU_TARGETS if args.device.startswith("cuda") else CPU_TARGETS
    start = time.perf_counter()
    rows = bench_steps(
        [
            (base, shape)
            for i, (base, shape) in enumerate(grid["step"])
            if (not args.base or base in args.base) and (not args.row or i in args.row)
        ],
        args.device,
        args.repeats or grid["step_repeats"],
        targets,
        recipes=args.recipe,
        rss=not args.no_rss,
        clock=args.judge,
        ci_width=args.ci_width,
        max_repeats=args.max_repeats,
    )
    minutes = (time.perf_counter() - start) / 60
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": env, "rows": [r.to_json() for r in rows]}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return f"## Training step (SAETrainer.step, Adam; paired repetitions; {minutes:.1f} min)\n\n" + step_table(
        rows, targets
    )


def command_line(argv: list[str] | None, module: str = "sae_lens_ortho.bench") -> str:
    return " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    configure(args)
    parts = args.only or list(TABLES)
    env = environment(args.device)
    print(env, flush=True)
    head = f"# Performance\n\n`{command_line(argv)}`\n\n{env}\n"
    sections = [head, *run_tables(args, parts, env)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")
