"""The benchmark's machinery: order-statistic intervals, paired timing, variants, the stability comparison, and the
quick and GPU runs at a tiny size on CPU.

Timings are never asserted (they are claims for the benchmark, not for a unit test); what is asserted is the
statistics against exact answers, the pairing, and the columns that compare results."""

import json
import resource
import sys
from math import comb
from pathlib import Path

import pytest
import torch

from sae_lens_ortho import OrthoTrainingSAE
from sae_lens_ortho.bench import gpu, stability
from sae_lens_ortho.bench.cli import main
from sae_lens_ortho.bench.measure import Interval, order_statistic_ranks, paired_times, steady_heap
from sae_lens_ortho.bench.steps import StepRow, default_clock
from sae_lens_ortho.bench.variants import BASES, DEFAULTS, Shape, build_sae, preset_variant, variants_for


@pytest.fixture
def one_thread():
    """The bench runs single-threaded here (as the stability command does); the session's setting comes back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _table(text: str, title: str) -> list[list[str]]:
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    headers = ("| d", "| m ", "| architecture", "| variant")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(headers)]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


# ------------------------------------------------------------------------------------------------ statistics
def _coverage(n: int, l: int) -> float:
    """P(x_(l) <= median <= x_(n+1-l)) = 1 - 2 P(Binomial(n, 1/2) <= l - 1)."""
    return 1 - 2 * sum(comb(n, i) for i in range(l)) / 2**n


@pytest.mark.parametrize("n", range(6, 61))
def test_interval_ranks_are_the_widest_with_95_percent_coverage(n: int) -> None:
    lo, hi = order_statistic_ranks(n)
    assert hi == n + 1 - lo
    assert _coverage(n, lo) >= 0.95 > _coverage(n, lo + 1)


def test_interval_ranks_match_the_published_table() -> None:
    # Conover, Practical Nonparametric Statistics: ranks of the 95% interval for the median
    assert [order_statistic_ranks(n) for n in (6, 15, 20, 25)] == [(1, 6), (4, 12), (6, 15), (8, 18)]
    with pytest.raises(ValueError, match="too few"):
        order_statistic_ranks(5)


def test_interval_and_verdicts() -> None:
    xs = [float(x) for x in [9, 1, 8, 2, 7, 3, 6, 4, 5, 10, 11, 12, 13, 14, 15]]
    iv = Interval.of(xs)
    assert (iv.median, iv.lo, iv.hi) == (8.0, 4.0, 12.0)
    assert Interval(1.05, 1.02, 1.08).verdict(1.10) == "meets"
    assert Interval(1.12, 1.11, 1.15).verdict(1.10) == "misses"
    assert Interval(1.09, 1.05, 1.12).verdict(1.10) == "straddles"
    assert Interval(1.10, 1.10, 1.10).verdict(1.10) == "meets"


def test_paired_timing_runs_every_variant_once_per_repetition_in_alternating_order() -> None:
    calls: list[tuple[str, int]] = []
    fns = {name: (lambda rep, name=name: calls.append((name, rep))) for name in "abc"}
    times = paired_times(fns, repeats=4, device="cpu", warm_up=1)
    assert calls[:3] == [("a", 0), ("b", 0), ("c", 0)]  # warm-up
    assert calls[3:] == [
        *[(n, 0) for n in "abc"],
        *[(n, 1) for n in "cba"],
        *[(n, 2) for n in "abc"],
        *[(n, 3) for n in "cba"],
    ]
    assert all(len(v) == 4 for v in (*times.wall.values(), *times.cpu.values()))
    # ratios are taken within a repetition
    times.wall = {"a": [1.0, 2.0, 4.0, 8.0], "b": [2.0, 2.0, 2.0, 2.0]}
    assert times.ratios("b", "a") == [2.0, 1.0, 0.5, 0.25]


def _page_faults_of_fresh_64_mib_tensors(n: int = 3) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        x = torch.empty(16 * 2**20)  # 64 MiB: above glibc's largest mmap threshold
        x.fill_(1.0)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_steady_heap_reuses_freed_memory_without_page_faults() -> None:
    pages = 64 * 2**20 // resource.getpagesize()
    assert _page_faults_of_fresh_64_mib_tensors() >= pages  # glibc's default: mmapped afresh
    with steady_heap() as took:
        assert took
        # the heap grows to fit them, or free chunks that an earlier malloc_trim emptied are faulted back in, once
        _page_faults_of_fresh_64_mib_tensors(8)
        assert _page_faults_of_fresh_64_mib_tensors() < pages // 10
    assert _page_faults_of_fresh_64_mib_tensors() >= pages  # the defaults are back (mmap above 32 MiB)


# --------------------------------------------------------------------------------------------------- variants
def test_every_default_builds_its_architecture_at_the_rows_sizes() -> None:
    shape = Shape(8, 64, 4, 16)
    for v in DEFAULTS:
        cfg = v.config(shape, "cpu")
        base = BASES[v.base](shape, "cpu")
        assert cfg.architecture() == f"{v.base}_ortho" and base.architecture() == v.base
        assert (cfg.d_in, cfg.d_sae) == (base.d_in, base.d_sae) == (8, 64)
        assert getattr(cfg, "k", 4) == getattr(base, "k", 4) == 4
        assert isinstance(build_sae(cfg), OrthoTrainingSAE) and not isinstance(build_sae(base), OrthoTrainingSAE)
    assert [v.name for v in variants_for("topk")] == ["topk_ortho", "topk_ortho+decoder", "coactive_decoder_topk"]


def test_a_preset_recipe_keeps_its_fields_at_the_rows_sizes() -> None:
    from sae_lens_ortho.presets import PRESETS

    v = preset_variant("selective_decorrelation", base="standard")
    cfg = v.config(Shape(8, 64, 4, 16), "cpu")
    preset = PRESETS["selective_decorrelation"]().sae
    assert (cfg.d_in, cfg.d_sae) == (8, 64)
    assert cfg.ortho_weighting == preset.ortho_weighting == "hinge"
    assert cfg.ortho_adaptive == preset.ortho_adaptive
    assert [x.name for x in variants_for("standard", ["selective_decorrelation"])] == [
        "standard_ortho",
        "selective_decorrelation",
    ]


# -------------------------------------------------------------------------------------------------- stability
def _row(variant: str, wall: float, cpu: float, peak: float) -> StepRow:
    return StepRow(
        variant, "topk", Shape(8, 64, 4, 16), True, 15, "cpu", 1.0, wall, Interval(wall, wall, wall),
        Interval(cpu, cpu, cpu), 100, peak,
    )  # fmt: skip


def test_stability_comparison_applies_both_bounds() -> None:
    a = [_row("x", 1.05, 1.04, 1.010), _row("y", 1.20, 1.20, 1.100)]
    close = [_row("y", 1.23, 1.18, 1.105), _row("x", 1.03, 1.06, 1.015)]
    assert all(d.within() for d in stability.compare(a, close))
    assert not stability.compare(a, [_row("y", 1.24, 1.2, 1.1), close[1]])[1].within()  # time off by 0.04
    assert not stability.compare(a, [close[0], _row("x", 1.05, 1.04, 1.025)])[0].within()  # memory by 0.015
    with pytest.raises(ValueError, match="different rows"):
        stability.compare(a, a[:1])
    table = stability.comparison_table(a, close)
    assert "within the stability bound" in table and "NOT" not in table


def test_stability_block_replaces_only_its_part_of_the_file() -> None:
    text = "# Performance\n\nintro\n"
    once = stability.replace_block(text, "first")
    assert once.startswith(text.rstrip()) and "first" in once
    twice = stability.replace_block(once + "\n## Later section\n", "second")
    assert "first" not in twice and "second" in twice and twice.endswith("## Later section\n")
    assert twice.count(stability.BEGIN) == 1


def test_step_rows_round_trip_through_json() -> None:
    r = _row("x", 1.05, 1.04, 1.01)
    assert StepRow.from_json(json.loads(json.dumps(r.to_json()))) == r


# ------------------------------------------------------------------------------------------------- the runs
def test_quick_bench_writes_every_table_and_the_results_agree(tmp_path: Path, one_thread: None) -> None:
    out = tmp_path / "performance.md"
    main(["--size", "quick", "--out", str(out), "--json", str(tmp_path / "steps.json"), "--repeats", "6"])
    text = out.read_text()
    selection = _table(text, "Pair selection")
    assert selection and all(row[-2] == "exact" and row[-1] == "exact" for row in selection)
    steps = _table(text, "Training step")
    assert [row[0] for row in steps] == [
        "topk_ortho", "topk_ortho+decoder", "coactive_decoder_topk", "batchtopk_ortho", "standard_ortho",
    ]  # fmt: skip
    payload = json.loads((tmp_path / "steps.json").read_text())
    assert "torch threads 1" in payload["environment"] and len(payload["rows"]) == 5
    decoder = _table(text, "Decoder penalty")
    assert decoder and all(float(row[7]) < 1e-5 for row in decoder)  # identity == m x m Gram
    micro = _table(text, "Gradient accumulation")
    assert [row[0] for row in micro] == ["topk_ortho", "standard_ortho"]
    assert all(float(row[-1]) < 1e-4 for row in micro)  # same gradient with and without micro-batches
    mechanisms = _table(text, "Seed mechanisms")
    assert next(row[0] for row in mechanisms) == "standard_ortho" and len(mechanisms) == 4


def test_gpu_script_at_a_tiny_size_on_cpu(tmp_path: Path, one_thread: None) -> None:
    """``make bench-gpu``'s script, unchanged but for the grid and device: every file, every family, memory from
    the allocator, selection checks, and a failing row that is logged without losing the others."""
    out = tmp_path / "gpu"
    gpu.main(["--out", str(out), "--size", "quick", "--device", "cpu", "--recipe", "no_such_preset:topk"])
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "performance_gpu.md", "selection.json", "steps.json"]
    rows = [StepRow.from_json(d) for d in json.loads((out / "steps.json").read_text())]
    # the topk row failed (the unknown preset raises); the other families ran
    assert [(r.base, r.variant) for r in rows] == [("batchtopk", "batchtopk_ortho"), ("standard", "standard_ortho")]
    for r in rows:
        assert r.repeats == 15 and r.wall.lo <= r.wall.median <= r.wall.hi and r.cpu.lo <= r.cpu.hi
        assert r.base_peak > 0 and r.peak_ratio > 0 and r.clock == "cpu"
    text = (out / "performance_gpu.md").read_text()
    assert "step topk at" in text and "failed (KeyError" in text
    assert "FAILED: step topk" in (out / "log.txt").read_text()
    selection = json.loads((out / "selection.json").read_text())
    assert len(selection) == 2 and all(r["agree_dense"] == r["agree_full"] == "exact" for r in selection)
    assert all(row[-1] == "exact" for row in _table(text, "Pair selection"))


def test_the_judged_clock_is_cpu_time_on_cpu_and_wall_time_on_cuda() -> None:
    assert default_clock("cpu") == "cpu" and default_clock("cuda") == default_clock("cuda:0") == "wall"


def test_gpu_script_refuses_cuda_without_a_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu.main(["--out", "unused", "--device", "cuda"])
