"""Is a CPU scale a faithful proxy of SynthSAEBench-16k? The four criteria of docs/synthbench.md, from two runs.

A proxy is trusted when, over at least 3 seeds, at its budget (``base``) and at twice it (``double``):

1. **the published ordering**: Matryoshka beats BatchTopK on F1 and on MCC by more than 2 SE (paired by seed),
   and BatchTopK is not behind TopK by more than 1 SE;
2. **few dead latents**: TopK, BatchTopK and Matryoshka each leave at most 1% of the width dead (mean over seeds);
3. **stable signs**: every paired Δ between two arms run at both budgets that is beyond 2 SE keeps its sign when
   the budget doubles;
4. **speed**: one SAE trains in at most 5 minutes (the slowest job's CPU seconds on its one thread, where the
   run recorded them, else its wall-clock seconds).

``sae-lens-ortho synthbench --faithfulness BASE/results.json DOUBLE/results.json`` prints the table.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchResults

__all__ = ["Criterion", "faithfulness", "format_faithfulness"]

BUILTINS = ("topk", "batchtopk", "matryoshka_batchtopk")
MAX_SECONDS = 300.0


class Criterion(NamedTuple):
    name: str
    """What is checked."""
    measured: str
    """The figures behind the verdict."""
    passed: bool


def _fmt(mean: float, se: float, n: int) -> str:
    return "–" if n == 0 else f"{mean:+.3f} ± {se:.3f} (n={n})"


def _ordering(res: SynthBenchResults, label: str) -> list[Criterion]:
    out = []
    for metric in ("f1", "mcc"):
        m, se, n = res.paired_delta("matryoshka_batchtopk", "batchtopk", metric)
        ok = n >= 3 and not math.isnan(se) and m > 2 * se
        out.append(Criterion(f"{label}: Matryoshka − BatchTopK, {metric.upper()} > 2 SE", _fmt(m, se, n), ok))
    for metric in ("f1", "mcc"):
        m, se, n = res.paired_delta("batchtopk", "topk", metric)
        ok = n >= 3 and not math.isnan(se) and m >= -se
        out.append(Criterion(f"{label}: BatchTopK − TopK, {metric.upper()} not below −1 SE", _fmt(m, se, n), ok))
    return out


def _dead(res: SynthBenchResults, label: str) -> list[Criterion]:
    width = res.settings.scale().d_sae
    out = []
    for arm in BUILTINS:
        v = list(res.values(arm, "dead_latents").values())
        mean = sum(v) / len(v) if v else math.nan
        ok = bool(v) and mean <= 0.01 * width
        out.append(
            Criterion(f"{label}: {arm} dead ≤ 1% of {width}", f"{mean:.1f} (max {max(v, default=math.nan):.0f})", ok)
        )
    return out


def _signs(base: SynthBenchResults, double: SynthBenchResults) -> Criterion:
    arms = [a.name for a in base.settings.arms if a.name in {b.name for b in double.settings.arms}]
    checked, flipped = 0, []
    for a, b in itertools.permutations(arms, 2):
        if a > b:  # each unordered pair once
            continue
        for metric in ("f1", "mcc"):
            m1, se1, n1 = base.paired_delta(a, b, metric)
            m2, _, n2 = double.paired_delta(a, b, metric)
            if n1 >= 2 and n2 >= 1 and not math.isnan(se1) and abs(m1) > 2 * se1:
                checked += 1
                if m1 * m2 <= 0:
                    flipped.append(f"{a} − {b} {metric.upper()}: {m1:+.3f} → {m2:+.3f}")
    measured = f"{checked} Δ beyond 2 SE checked; " + (
        "none flipped" if not flipped else "flipped: " + "; ".join(flipped)
    )
    return Criterion("every Δ beyond 2 SE keeps its sign at 2x budget", measured, checked > 0 and not flipped)


def _speed(res: SynthBenchResults) -> Criterion:
    """The slowest job, by its CPU seconds where recorded (one thread: its time on an idle core even on a busy
    machine), else by its wall-clock seconds."""
    cpu_of = {id(r): r.cpu_seconds if r.cpu_seconds is not None else r.metrics.get("cpu_seconds") for r in res.runs}
    cpu = all(v is not None for v in cpu_of.values())
    secs = sorted(float(cpu_of[id(r)] or 0.0) if cpu else r.seconds for r in res.runs)
    worst = secs[-1] if secs else math.nan
    kind = "CPU" if cpu else "wall-clock"
    measured = (
        f"slowest {worst:.0f} s, median {secs[len(secs) // 2]:.0f} s ({kind}) over {len(secs)} jobs" if secs else "–"
    )
    return Criterion(f"one SAE in ≤ {MAX_SECONDS / 60:.0f} min (base budget)", measured, worst <= MAX_SECONDS)


def faithfulness(base: SynthBenchResults, double: SynthBenchResults) -> list[Criterion]:
    """Every criterion of the module docstring, for a run at the proxy's budget and one at twice it."""
    return [*_ordering(base, "1x"), *_ordering(double, "2x"), *_dead(base, "1x"), *_dead(double, "2x"),
            _signs(base, double), _speed(base)]  # fmt: skip


def format_faithfulness(criteria: list[Criterion]) -> str:
    rows = ["| criterion | measured | met |", "|---|---|---|"]
    rows += [f"| {c.name} | {c.measured} | {'yes' if c.passed else '**no**'} |" for c in criteria]
    verdict = "faithful" if all(c.passed for c in criteria) else "not faithful"
    return "\n".join(rows) + f"\n\nVerdict: {verdict} ({sum(c.passed for c in criteria)} of {len(criteria)} met)."
