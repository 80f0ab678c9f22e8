"""``make bench``: speed and memory of the ortho machinery, as ratios measured side by side in one process.

    python -m sae_lens_ortho.bench --out bench_out/performance.md        # CPU grid, every table
    python -m sae_lens_ortho.bench --size quick                           # seconds; what tests/test_bench.py runs
    python -m sae_lens_ortho.bench.stability --out docs/performance.md   # the step table twice, compared
    python -m sae_lens_ortho.bench.gpu --out bench_out/gpu                # ``make bench-gpu``: one H200

Modules: ``measure`` (paired timing, order-statistic intervals, RSS), ``variants`` (what the step table compares:
the ``*_ortho`` defaults and recipes against their SAELens bases), ``grids`` (sizes), ``steps`` (the step
table), ``selection`` (pair selection and decoder penalty), ``training`` (micro-batches, seed mechanisms),
``stability`` (two runs compared), ``gpu`` (the GPU run), ``cli``. Peak memory is torch's own allocation
accounting (``sae_lens_ortho.core.memory.peak_allocated_bytes``).
"""

from sae_lens_ortho.bench.cli import main

__all__ = ["main"]
