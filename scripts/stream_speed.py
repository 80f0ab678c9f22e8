"""Rows/s of SAELens's synthetic generator at a scale, in large and small chunks, side by side in one process.

    python scripts/stream_speed.py --config proxy --chunks 16384 1024 --seconds 5 --rounds 4

Rounds alternate the chunk sizes, so machine load shifts both alike; one torch thread (as a synthbench worker).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sae_lens_ortho.evals.synthetic.scales import get_scale
from sae_lens_ortho.evals.synthetic.synthbench import build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="proxy")
    p.add_argument("--chunks", type=int, nargs="+", default=[16384, 1024])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = build_model(get_scale(args.config)).activation_generator
    rates: dict[int, list[float]] = {c: [] for c in args.chunks}
    for _ in range(args.rounds):
        for chunk in args.chunks:
            rows, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                gen.sample(chunk)
                rows += chunk
            rates[chunk].append(rows / (time.perf_counter() - t0))
    for chunk, r in rates.items():
        print(f"chunk {chunk:>6}: {statistics.median(r):>9,.0f} rows/s (median of {len(r)} rounds)")


if __name__ == "__main__":
    main()
