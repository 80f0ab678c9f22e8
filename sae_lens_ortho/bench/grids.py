"""The sizes each table runs at, per ``--size``. Step rows are (SAELens base, shape); the variants measured
against each base are in ``bench/variants.py``."""

from __future__ import annotations

from typing import Any

from sae_lens_ortho.bench.variants import Shape

# (d_sae, k, batch): up to 65k latents, k 32 to 128, batch 4,096
SELECT = [(n, k, 4096) for n in (4096, 16384, 32768, 65536) for k in (32, 64, 128)]

GRIDS: dict[str, dict[str, Any]] = {
    # seconds: what tests/test_bench.py runs (every table, tiny)
    "quick": dict(
        select=[(1024, 8, 256), (1024, 16, 256)],  # (d_sae, k, batch)
        dense_max=1024,
        full_max=1024,
        all_k_max=1024,
        step=[
            ("topk", Shape(64, 1024, 16, 256)),
            ("batchtopk", Shape(64, 1024, 16, 256)),
            ("standard", Shape(64, 512, 0, 256)),
        ],
        step_repeats=15,
        decoder=[(1024, 64)],
        decoder_full_max=1024,
        micro=[
            ("topk", 64, 1024, 16, 512, 128),
            ("standard", 64, 512, 0, 256, 64),
        ],  # (arch, d_in, d_sae, k, batch, micro)
        mechanisms=(64, 512, 256, 5),  # (d_in, d_sae, batch, sparsifying steps before timing)
        mechanism_repeats=2,
    ),
    # 2 CPU cores: the step table is the one the stability check runs twice (docs/performance.md)
    "cpu": dict(
        select=SELECT,
        dense_max=32768,
        full_max=4096,
        all_k_max=4096,
        # batch 1,024: the ratios barely move with the batch (both sides are O(b)), and it halves the run
        step=[
            ("topk", Shape(512, 16384, 32, 1024)),
            ("topk", Shape(512, 16384, 64, 1024)),
            ("topk", Shape(512, 32768, 64, 1024)),
            ("batchtopk", Shape(512, 16384, 64, 1024)),
            ("standard", Shape(512, 4096, 0, 1024)),
        ],
        step_repeats=15,
        decoder=[(16384, 512), (16384, 2304), (65536, 2304)],
        decoder_full_max=16384,
        micro=[("topk", 512, 16384, 64, 4096, 1024), ("standard", 512, 4096, 0, 2048, 256)],
        mechanisms=(512, 4096, 2048, 30),
        mechanism_repeats=5,
    ),
    # one H200 (bench/gpu.py runs the step and selection tables of this grid)
    "h200": dict(
        select=SELECT,
        dense_max=65536,
        full_max=32768,
        all_k_max=4096,
        step=[
            (base, Shape(2304, d_sae, 64, 4096))
            for d_sae in (16384, 65536)
            for base in ("topk", "batchtopk", "standard")
        ],
        step_repeats=21,
        decoder=[(16384, 2304), (65536, 2304)],
        decoder_full_max=65536,
        micro=[("topk", 2304, 65536, 64, 8192, 1024), ("standard", 2304, 16384, 0, 4096, 512)],
        mechanisms=(2304, 16384, 4096, 100),
        mechanism_repeats=10,
    ),
}
GRIDS["full"] = GRIDS["h200"]  # the name the first bench used for the GPU grid
