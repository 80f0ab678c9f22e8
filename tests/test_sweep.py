"""The study harness: one result file per (arm, seed, L0), reruns skip finished jobs and refuse other settings,
worker processes give the same numbers as one process, Ctrl-C on the real CLI keeps what finished, progress lines
carry rows/s and an ETA, and the leaderboard names winners only beyond 2 SE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch

from sae_lens_ortho.evals.synthetic.sweep import _Rate, run_sweep
from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchResults, SynthBenchRun, SynthBenchSettings, parse_arms
from sae_lens_ortho.evals.synthetic.synthbench_report import format_leaderboard, takeaway, winners

CHILD = Path(__file__).with_name("synthbench_child.py")


def _settings(**kw):
    base = dict(config="tiny", arms=parse_arms(["topk", "batchtopk"]), seeds=(0,), heldout_samples=4096,
                eval_samples=4096, progress=False)  # fmt: skip
    return SynthBenchSettings(**{**base, **kw})


def test_result_files_are_reused_and_other_settings_refused(tiny, tmp_path):
    first = run_sweep(_settings(), tmp_path)
    files = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert files == ["batchtopk__seed0__l04.json", "topk__seed0__l04.json"]
    assert (first.done, first.total, first.reused) == (2, 2, 0)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    again = run_sweep(_settings(arms=parse_arms(["topk", "batchtopk", "topk_ortho"])), tmp_path)
    assert (again.done, again.total, again.reused) == (3, 3, 2)  # only the new arm trained
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())  # finished files untouched
    assert [r.metrics for r in again.results.runs[:2]] == [r.metrics for r in first.results.runs]
    with pytest.raises(ValueError, match=r"topk__seed0__l04.json was made with other settings \(lr differ\)"):
        run_sweep(_settings(lr=1e-3), tmp_path)


def test_worker_processes_give_the_numbers_of_one_process(tiny, tmp_path):
    one = run_sweep(_settings(epoch_rows=8192, cache_dir=str(tmp_path / "c1")), tmp_path / "one")
    two = run_sweep(_settings(epoch_rows=8192), tmp_path / "two", jobs=2)
    assert [r.metrics for r in one.results.runs] == [r.metrics for r in two.results.runs]
    assert all(r.cpu_seconds is not None and 0 < r.cpu_seconds for r in two.results.runs)
    assert (tmp_path / "two" / "streams").is_dir()  # the workers shared the stream through the cache


def test_ctrl_c_keeps_finished_jobs_and_a_rerun_finishes_the_rest(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, str(CHILD), "--config", "tiny", "--arm", "topk", "--arm", "batchtopk", "--arm",
            "topk_ortho", "--seeds", "0", "1", "--jobs", "2", "--samples", "204800", "--eval-samples", "4096",
            "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((out / "runs").glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, text
    assert "Traceback" not in text, text
    kept = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert 1 <= len(kept) < 6 and not list((out / "runs").glob(".*tmp"))
    assert "interrupted:" in text and "rerun the same command" in text
    assert f"Partial: {len(kept)} of 6 jobs finished" in (out / "report.md").read_text()
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    rerun = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(kept)} already done, {6 - len(kept)} to run" in rerun.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 6


def test_progress_lines_give_rows_per_second_and_eta(monkeypatch):
    lines: list[str] = []
    clock = iter([0.0, 0.0, 10.0, 20.0])
    monkeypatch.setattr("sae_lens_ortho.evals.synthetic.sweep.time.perf_counter", lambda: next(clock))
    rate = _Rate("topk seed 0", 1000, lines.append, every=5)
    rate(100)  # the first call fixes where counting starts (rows already cached do not count)
    rate(300)  # 200 rows in 10 s -> 20 rows/s, 700 left -> 35 s
    assert lines == ["  topk seed 0:  30% of 1,000 rows, 20 rows/s, ETA 35s"]


def _results(f1: dict[str, list[float]], mcc: dict[str, list[float]] | None = None) -> SynthBenchResults:
    arms = parse_arms(["topk", "batchtopk", "matryoshka_batchtopk", "twin=matryoshka_batchtopk_ortho"])
    runs = []
    for arm in arms:
        for seed, v in enumerate(f1[arm.name]):
            m = (mcc or f1)[arm.name][seed]
            metrics = {"f1": v, "mcc": m, "explained_variance": 0.8, "l0": 8.0, "dead_latents": 0.0}
            runs.append(SynthBenchRun(arm.name, arm.architecture, seed, 8, metrics, 1.0))
    settings = SynthBenchSettings(config="mini", arms=arms, seeds=(0, 1, 2), l0s=(8,))
    return SynthBenchResults(settings, runs, {}, 1.0, {})


def test_the_leaderboard_crowns_a_paired_gain_beyond_2_se_over_base_and_best_builtin():
    base = {"topk": [0.5, 0.52, 0.51], "batchtopk": [0.6, 0.62, 0.61], "matryoshka_batchtopk": [0.7, 0.72, 0.71]}
    win = _results({**base, "twin": [0.72, 0.74, 0.735]})  # +0.02, +0.02, +0.025 over matryoshka
    assert winners(win, 8) == ["twin"]
    board = format_leaderboard(win, 8)
    assert board.splitlines()[2].startswith("| twin |") and "**wins**" in board
    assert "Δ F1 vs matryoshka_batchtopk" in board
    assert "Beats its base and the best built-in" in takeaway(win, 8)
    noisy = _results({**base, "twin": [0.73, 0.69, 0.74]})  # mean +0.0133, but the SE is larger than half of it
    assert winners(noisy, 8) == []
    assert "No arm beats both" in takeaway(noisy, 8)
    one_seed = SynthBenchResults(win.settings, [r for r in win.runs if r.seed == 0], {}, 1.0, {})
    assert winners(one_seed, 8) == [] and "one seed, so there are no error bars" in takeaway(one_seed, 8)


def test_the_gpu_script_at_micro_on_cpu_sizes_the_budget_and_trains_every_arm(tmp_path):
    """``make synthbench-gpu``'s script, unchanged but for the scale and device: it measures steps/s, picks the
    budget that fits its minutes (here the 16-step floor), and trains every arm into one folder."""
    from sae_lens_ortho.evals.synthetic import gpu

    out = tmp_path / "g"
    assert gpu.main(["--out", str(out), "--config", "micro", "--device", "cpu", "--minutes", "0.4"]) == 0
    budget = json.loads((out / "budget.json").read_text())
    assert budget["training_samples"] == 16 * 1024 and budget["steps_per_second"] > 0
    assert budget["probe_arm"] == "matryoshka_coactive_0.03"
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(r["arm"] for r in runs) == ["batchtopk", "matryoshka_batchtopk", "matryoshka_coactive_0.03"]
    assert {"report.md", "log.txt", "synthbench.png", "runs"} <= {p.name for p in out.iterdir()}
    assert "steps/s" in (out / "log.txt").read_text()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            gpu.main(["--out", str(out), "--device", "cuda"])


def _runs(
    values: Mapping[str, Sequence[tuple[float, float, float]]], seconds: float = 100.0, cpu: float | None = None
) -> SynthBenchResults:
    """Results of the built-ins from (F1, MCC, dead) per seed."""
    arms = parse_arms(list(values))
    runs = [SynthBenchRun(a.name, a.architecture, seed, 8, {"f1": f1, "mcc": mcc, "dead_latents": dead}, seconds, cpu)
            for a in arms for seed, (f1, mcc, dead) in enumerate(values[a.name])]  # fmt: skip
    return SynthBenchResults(SynthBenchSettings(config="mini", arms=arms, seeds=(0, 1, 2), l0s=(8,)), runs, {}, 1.0, {})


def test_faithfulness_criteria_have_known_answers():
    from sae_lens_ortho.evals.synthetic.faithfulness import faithfulness, format_faithfulness

    good = {"topk": [(0.50, 0.66, 0), (0.52, 0.67, 0), (0.51, 0.66, 1)],
            "batchtopk": [(0.64, 0.73, 1), (0.64, 0.73, 0), (0.65, 0.74, 2)],
            "matryoshka_batchtopk": [(0.77, 0.76, 1), (0.76, 0.75, 0), (0.78, 0.76, 2)]}  # fmt: skip
    assert all(c.passed for c in faithfulness(_runs(good), _runs(good))), format_faithfulness(
        faithfulness(_runs(good), _runs(good))
    )
    # BatchTopK ahead of Matryoshka at 2x: the ordering fails there and the sign of their Δ flips.
    flipped = {**good, "batchtopk": [(0.80, 0.78, 0), (0.81, 0.79, 0), (0.82, 0.80, 0)]}
    failed = {c.name for c in faithfulness(_runs(good), _runs(flipped)) if not c.passed}
    assert "2x: Matryoshka − BatchTopK, F1 > 2 SE" in failed
    assert "every Δ beyond 2 SE keeps its sign at 2x budget" in failed
    assert not any(n.startswith("1x") for n in failed)
    dead = {**good, "topk": [(0.50, 0.66, 9), (0.52, 0.67, 3), (0.51, 0.66, 4)]}  # mean 5.33 > 1% of 512
    assert {c.name for c in faithfulness(_runs(dead), _runs(good)) if not c.passed} == {"1x: topk dead ≤ 1% of 512"}
    slow = [c for c in faithfulness(_runs(good, seconds=301), _runs(good)) if not c.passed]
    assert [c.name for c in slow] == ["one SAE in ≤ 5 min (base budget)"]
    # CPU seconds, where recorded, judge speed: a job slowed by a busy machine is not a slow job
    assert all(c.passed for c in faithfulness(_runs(good, seconds=900, cpu=200), _runs(good)))
