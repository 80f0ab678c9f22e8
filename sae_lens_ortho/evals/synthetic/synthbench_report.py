"""Tables, JSON and plots of a SynthSAEBench run (:func:`write_synthbench_report`).

The table follows SAELens's SynthSAEBench columns (F1, MCC, uniqueness, explained variance, L0, dead latents,
precision, recall) plus absorption and rare latents: mean ± std over seeds per arm, then for every arm with a
different base in the run (an ``*_ortho`` twin and its base, or ``--pair ARM=BASE``) the paired Δ ± standard error
over seeds. On the 16k config the published rows are printed beside ours.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from sae_lens_ortho.evals.synthetic.scales import PUBLISHED_16K
from sae_lens_ortho.evals.synthetic.synthbench import SynthBenchResults

__all__ = [
    "METRICS",
    "best_builtin",
    "comparisons",
    "format_leaderboard",
    "format_synthbench_table",
    "harm_check",
    "takeaway",
    "verdict",
    "winners",
    "write_synthbench_report",
]

# key -> (label, higher is better?)
METRICS: dict[str, tuple[str, bool | None]] = {
    "f1": ("F1", True),
    "mcc": ("MCC", True),
    "uniqueness": ("uniqueness", True),
    "explained_variance": ("explained variance", True),
    "l0": ("L0", None),
    "dead_latents": ("dead latents", False),
    "rare_latents": ("rare latents (< 1e-4)", False),
    "precision": ("precision", True),
    "recall": ("recall", True),
    "absorption_score": ("absorption score", False),
}


def comparisons(results: SynthBenchResults, pairs: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(arm, base arm) pairs to report paired deltas for: explicit ``pairs``, else each arm whose base
    architecture is another arm's architecture (the first such arm)."""
    arms = results.settings.arms
    if pairs:
        return [(a, b) for a, b in pairs.items()]
    out = []
    for arm in arms:
        if arm.base != arm.architecture:
            base = next((b.name for b in arms if b.architecture == arm.base and not b.overrides), None)
            base = base or next((b.name for b in arms if b.architecture == arm.base), None)
            if base is not None:
                out.append((arm.name, base))
    return out


def harm_check(results: SynthBenchResults, arm: str, base: str, l0: int | None = None) -> list[str]:
    """The do-no-harm criteria ``arm`` violates against ``base`` (empty: no harm): paired Δ MCC and Δ F1 not
    below -1 standard error, |Δ explained variance| <= 0.01, dead latents at most the base's + 1% of the width
    (means over seeds)."""
    bad = []
    for key in ("mcc", "f1"):
        mean, se, n = results.paired_delta(arm, base, key, l0)
        if n and mean < -(0.0 if math.isnan(se) else se):
            bad.append(f"Δ {METRICS[key][0]} {mean:+.3f} < -1 SE ({se:.3f})")
    ev, _, n = results.paired_delta(arm, base, "explained_variance", l0)
    if n and abs(ev) > 0.01:
        bad.append(f"|Δ explained variance| {abs(ev):.3f} > 0.01")
    dead, _, n = results.paired_delta(arm, base, "dead_latents", l0)
    width = results.settings.scale().d_sae
    if n and dead > 0.01 * width:
        bad.append(f"Δ dead latents {dead:+.1f} > 1% of the width ({0.01 * width:g})")
    return bad


def verdict(results: SynthBenchResults, arm: str, base: str, l0: int | None = None) -> str:
    """One line: harm (which criteria), or no harm, plus the metrics with a paired gain beyond 2 SE."""
    harm = harm_check(results, arm, base, l0)
    gains = []
    for key in ("f1", "mcc", "uniqueness"):
        mean, se, n = results.paired_delta(arm, base, key, l0)
        if n > 1 and se > 0 and mean > 2 * se:
            gains.append(f"{METRICS[key][0]} {mean:+.3f} ± {se:.3f}")
    head = f"**{arm} vs {base}**: " + (("harm: " + "; ".join(harm)) if harm else "no harm")
    return head + (f"; gain beyond 2 SE: {', '.join(gains)}" if gains else "; no gain beyond 2 SE")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} ± {statistics.stdev(values):.3f}"


def _delta(mean: float, se: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "–"
    sig = "" if math.isnan(se) or se == 0 else (" *" if abs(mean) > 2 * se else "")
    return f"{mean:+.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}") + sig


def format_synthbench_table(results: SynthBenchResults, l0: int, pairs: dict[str, str] | None = None) -> str:
    """Markdown table at one target L0: metrics by arm (mean ± std over seeds), then paired Δ ± SE columns
    (``*``: |Δ| > 2 SE)."""
    arms = [a.name for a in results.settings.arms]
    comps = comparisons(results, pairs)
    head = ["metric", *arms, *[f"Δ {a} − {b}" for a, b in comps]]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for key, (label, _) in METRICS.items():
        cells = [_mean_std(list(results.values(a, key, l0).values())) for a in arms]
        if all(c == "–" for c in cells):
            continue
        cells += [_delta(*results.paired_delta(a, b, key, l0)) for a, b in comps]
        rows.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(rows)


def _published_table(l0: int) -> str:
    rows = PUBLISHED_16K.get(l0)
    if not rows:
        return ""
    keys = ["f1", "mcc", "uniqueness", "explained_variance"]
    out = [f"Published SynthSAEBench-16k at L0 {l0} (Chanin & Garriga-Alonso 2026):", "",
           "| architecture | " + " | ".join(METRICS[k][0] for k in keys) + " |", "|---|" + "---:|" * len(keys)]  # fmt: skip
    for arch, vals in rows.items():
        out.append(f"| {arch} | " + " | ".join(f"{vals[k][0]:.3f}" if k in vals else "–" for k in keys) + " |")
    return "\n".join(out)


def _is_builtin(results: SynthBenchResults, arm: str) -> bool:
    """Whether ``arm`` trains an architecture that SAELens itself registers (not one of our twins or a user's)."""
    from sae_lens.registry import get_sae_training_class

    spec = next(a for a in results.settings.arms if a.name == arm)
    return get_sae_training_class(spec.architecture)[1].__module__.split(".")[0] == "sae_lens"


def _base_arm(results: SynthBenchResults, arm: str, pairs: dict[str, str] | None) -> str | None:
    return dict(comparisons(results, pairs)).get(arm)


def best_builtin(results: SynthBenchResults, metric: str, l0: int | None = None) -> str | None:
    """The built-in arm with the highest mean ``metric`` at ``l0`` (None when the run has none)."""
    means = {a.name: statistics.fmean(v) for a in results.settings.arms
             if _is_builtin(results, a.name) and (v := list(results.values(a.name, metric, l0).values()))}  # fmt: skip
    return max(means, key=lambda a: means[a]) if means else None


def _gain(results: SynthBenchResults, arm: str, other: str | None, metric: str, l0: int) -> bool:
    """A paired gain of ``arm`` over ``other`` beyond 2 SE (at least 2 seeds)."""
    if other is None or other == arm:
        return False
    mean, se, n = results.paired_delta(arm, other, metric, l0)
    return n > 1 and se > 0 and mean > 2 * se


def winners(results: SynthBenchResults, l0: int, pairs: dict[str, str] | None = None) -> list[str]:
    """Arms that win at ``l0``: a paired gain beyond 2 SE on F1 or on MCC over their base and over the best
    built-in (by that metric), with no harm against their base (:func:`harm_check`)."""
    out = []
    for arm in (a.name for a in results.settings.arms):
        base = _base_arm(results, arm, pairs)
        if base is None or harm_check(results, arm, base, l0):
            continue
        if any(_gain(results, arm, base, m, l0) and _gain(results, arm, best_builtin(results, m, l0), m, l0)
               for m in ("f1", "mcc")):  # fmt: skip
            out.append(arm)
    return out


def format_leaderboard(results: SynthBenchResults, l0: int, pairs: dict[str, str] | None = None) -> str:
    """Markdown leaderboard at one target L0, best mean F1 first: each arm's means and its paired Δ ± SE against
    its base and against the best built-in arm (by that metric)."""
    arms = [a.name for a in results.settings.arms if results.values(a.name, "f1", l0)]
    f1 = {a: statistics.fmean(results.values(a, "f1", l0).values()) for a in arms}
    best = {m: best_builtin(results, m, l0) for m in ("f1", "mcc")}
    won = set(winners(results, l0, pairs))
    head = ["arm", "F1", "MCC", "expl. var.", "L0", "dead", "Δ F1 vs base", "Δ MCC vs base",
            f"Δ F1 vs {best['f1'] or 'best built-in'}", f"Δ MCC vs {best['mcc'] or 'best built-in'}", "verdict"]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for arm in sorted(arms, key=lambda a: -f1[a]):
        base = _base_arm(results, arm, pairs)
        cells = [_mean_std(list(results.values(arm, k, l0).values()))
                 for k in ("f1", "mcc", "explained_variance", "l0", "dead_latents")]  # fmt: skip
        cells += [_delta(*results.paired_delta(arm, base, m, l0)) if base else "–" for m in ("f1", "mcc")]
        for m in ("f1", "mcc"):
            other = best[m]
            cells.append(_delta(*results.paired_delta(arm, other, m, l0)) if other and other != arm else "–")
        if arm in won:
            verdict = "**wins**"
        elif base is None:
            verdict = "built-in" if _is_builtin(results, arm) else "–"
        else:
            verdict = "harm" if harm_check(results, arm, base, l0) else "no harm, no win"
        rows.append("| " + " | ".join([arm, *cells, verdict]) + " |")
    return "\n".join(rows)


def takeaway(
    results: SynthBenchResults, l0: int, pairs: dict[str, str] | None = None, total_jobs: int | None = None
) -> str:
    """The report's first paragraph: what the run shows at ``l0`` and how sure it is, in plain words."""
    s = results.settings
    arms = [a.name for a in s.arms if results.values(a.name, "f1", l0)]
    if not arms:
        return "Nothing finished at this L0."
    f1 = {a: statistics.fmean(results.values(a, "f1", l0).values()) for a in arms}
    top = max(arms, key=lambda a: f1[a])
    seeds = len({r.seed for r in results.runs if r.l0_target == l0})
    ranking = " > ".join(f"{a} {f1[a]:.3f}" for a in sorted(arms, key=lambda a: -f1[a]))
    parts = [f"**What this run shows (L0 {l0}).** Highest F1 (higher is better): {top}. By F1: {ranking}."]
    best = best_builtin(results, "f1", l0)
    if best and best != top:
        parts.append(f"Best SAELens built-in: {best}.")
    won = winners(results, l0, pairs)
    if won:
        parts.append(f"Beats its base and the best built-in by more than 2 standard errors (paired by seed), "
                     f"without harm: {', '.join(won)}.")  # fmt: skip
    elif seeds > 1 and any(_base_arm(results, a, pairs) for a in arms):
        parts.append("No arm beats both its base and the best built-in by more than 2 standard errors.")
    if seeds < 2:
        parts.append("How sure: one seed, so there are no error bars and no arm can be called a winner: treat "
                     "every difference as a single observation (rerun with `--seeds 0 1 2` for paired standard "
                     "errors).")  # fmt: skip
    else:
        parts.append(f"How sure: {seeds} seeds, every arm of a seed from the same initial weights and data; a "
                     "difference counts only beyond 2 standard errors of the paired deltas.")  # fmt: skip
    if total_jobs is not None and len(results.runs) < total_jobs:
        parts.append(f"Partial: {len(results.runs)} of {total_jobs} jobs finished; rerun the same command to add "
                     "the rest.")  # fmt: skip
    return " ".join(parts)


_PLOT_KEYS = ("f1", "mcc", "explained_variance", "dead_latents")


def _plot_title(key: str) -> str:
    label, higher = METRICS[key]
    return f"{label} ({'higher' if higher else 'lower'} is better)"


def write_plots(results: SynthBenchResults, out: Path) -> list[Path]:
    """One L0: bars (mean over seeds, std error bar, a dot per seed) per metric. Several L0s: metric vs L0, a
    line per arm. F1, MCC, explained variance and dead latents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    l0s = [l0 for l0 in results.settings.l0s if any(r.l0_target == l0 for r in results.runs)]
    arms = [a.name for a in results.settings.arms if any(r.arm == a.name for r in results.runs)]
    if not l0s or not arms:
        return []
    fig, axes = plt.subplots(1, len(_PLOT_KEYS), figsize=(3.6 * len(_PLOT_KEYS), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes, _PLOT_KEYS):
        for i, arm in enumerate(arms):
            color = colors[i % len(colors)]
            if len(l0s) == 1:
                v = list(results.values(arm, key, l0s[0]).values())
                if v:
                    ax.bar(i, statistics.fmean(v), yerr=statistics.stdev(v) if len(v) > 1 else 0, color=color,
                           capsize=3, alpha=0.8)  # fmt: skip
                    ax.plot([i] * len(v), v, "k.", ms=4)
                continue
            xs, ys, es = [], [], []
            for l0 in l0s:
                runs = [r for r in results.runs if r.arm == arm and r.l0_target == l0 and key in r.metrics]
                if runs:
                    xs.append(statistics.fmean(r.metrics["l0"] for r in runs))
                    v = [r.metrics[key] for r in runs]
                    ys.append(statistics.fmean(v))
                    es.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm, color=color)
        if len(l0s) == 1:
            ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=7)
            lo = min(min(results.values(a, key, l0s[0]).values(), default=0) for a in arms)
            hi = max(max(results.values(a, key, l0s[0]).values(), default=0) for a in arms)
            if key != "dead_latents" and hi > lo:  # zoom on the differences, keep 0 in view for counts
                ax.set_ylim(max(0.0, lo - (hi - lo)), hi + 0.5 * (hi - lo))
        else:
            ax.set_xlabel("L0")
        ax.set_title(_plot_title(key), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    seeds = len({r.seed for r in results.runs})
    if len(l0s) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(arms), 5), fontsize=7)
    spread = "bars: mean, error bar: std over seeds, dots: seeds" if seeds > 1 else "one seed: no error bars"
    where = f"L0 {l0s[0]}" if len(l0s) == 1 else "vs L0"
    fig.suptitle(f"SynthSAEBench {results.settings.config}, {where}, {seeds} seed(s) ({spread})", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if len(l0s) > 1 else 0, 1, 1))
    path = out / ("synthbench.png" if len(l0s) == 1 else "synthbench_vs_l0.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write_synthbench_report(
    results: SynthBenchResults, out: Path | str, pairs: dict[str, str] | None = None, total_jobs: int | None = None
) -> Path:
    """Write ``report.md``, ``results.json`` and the plots under ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = results.settings
    scale = s.scale()
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=1, default=str))
    plots = write_plots(results, out)
    schedule = ""
    if s.lr_warm_up_steps or s.lr_decay_steps:
        schedule = f" (warm-up {s.lr_warm_up_steps} steps, linear decay to 0 over the last {s.lr_decay_steps})"
    replay = f", replaying {s.epoch_rows:,} recorded rows as epochs" if s.epoch_rows else ""
    lines = [f"# SynthSAEBench `{s.config}`", ""]
    lines += [takeaway(results, l0, pairs, total_jobs) for l0 in s.l0s] + [""]
    lines += [
        f"{scale.num_features} true features in {scale.hidden_dim} dimensions; SAEs of width {scale.d_sae}, "
        f"{s.training_samples:,} training samples{replay}, lr {s.lr}{schedule}, batch {scale.batch_size}; seeds "
        f"{', '.join(map(str, s.seeds))}; every arm of a seed from the same initial weights and batches. "
        f"Evaluation: SAELens's `eval_sae_on_synthetic_data` on {s.eval_samples:,} samples; absorption and rare "
        f"latents on {s.heldout_samples:,} held-out samples. {results.wall_seconds / 60:.1f} min.",
        "",
    ]
    for l0 in s.l0s:
        lines += [f"## Target L0 {l0}", "", "Leaderboard:", "", format_leaderboard(results, l0, pairs), ""]
        lines += ["All metrics:", "", format_synthbench_table(results, l0, pairs), ""]
        lines += [f"- {verdict(results, a, b, l0)}" for a, b in comparisons(results, pairs)] + [""]
        if s.config == "16k":
            lines += [_published_table(l0), ""]
    lines += [
        "Δ columns: paired by seed, ± standard error over seeds; `*` marks |Δ| > 2 SE. Do-no-harm: Δ MCC and Δ F1 "
        "not below -1 SE, |Δ explained variance| <= 0.01, dead latents at most the base's + 1% of the width. "
        "**wins**: a gain beyond 2 SE on F1 or MCC over its base and over the best built-in, without harm.",
        "",
    ]
    lines += [f"![SynthSAEBench metrics]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
