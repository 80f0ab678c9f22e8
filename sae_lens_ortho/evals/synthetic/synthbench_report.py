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

__all__ = ["METRICS", "comparisons", "format_synthbench_table", "harm_check", "verdict", "write_synthbench_report"]

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


def write_plots(results: SynthBenchResults, out: Path) -> list[Path]:
    """metric-vs-L0 plots (F1, MCC, explained variance, absorption), one line per arm, error bars = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    l0s = results.settings.l0s
    keys = ["f1", "mcc", "explained_variance", "absorption_score"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        for arm in results.settings.arms:
            xs, ys, es = [], [], []
            for l0 in l0s:
                runs = [r for r in results.runs if r.arm == arm.name and r.l0_target == l0 and key in r.metrics]
                if runs:
                    xs.append(statistics.fmean(r.metrics["l0"] for r in runs))
                    v = [r.metrics[key] for r in runs]
                    ys.append(statistics.fmean(v))
                    es.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm.name)
        ax.set_xlabel("L0")
        ax.set_title(METRICS[key][0])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"SynthSAEBench {results.settings.config}: {len(results.settings.seeds)} seeds")
    fig.tight_layout()
    path = out / "synthbench_vs_l0.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write_synthbench_report(results: SynthBenchResults, out: Path | str, pairs: dict[str, str] | None = None) -> Path:
    """Write ``report.md``, ``results.json`` and the plots under ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = results.settings
    scale = s.scale()
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=1, default=str))
    plots = write_plots(results, out)
    lines = [
        f"# SynthSAEBench `{s.config}`",
        "",
        f"{scale.num_features} true features in {scale.hidden_dim} dimensions; SAEs of width {scale.d_sae}, "
        f"{s.training_samples:,} training samples, lr {s.lr}, batch {scale.batch_size}; seeds "
        f"{', '.join(map(str, s.seeds))}; every arm of a seed from the same initial weights and batches. "
        f"Evaluation: SAELens's `eval_sae_on_synthetic_data` on {s.eval_samples:,} samples; absorption and rare "
        f"latents on {s.heldout_samples:,} held-out samples. {results.wall_seconds / 60:.1f} min.",
        "",
    ]
    for l0 in s.l0s:
        lines += [f"## Target L0 {l0}", "", format_synthbench_table(results, l0, pairs), ""]
        lines += [f"- {verdict(results, a, b, l0)}" for a, b in comparisons(results, pairs)] + [""]
        if s.config == "16k":
            lines += [_published_table(l0), ""]
    lines += [
        "Δ columns: paired by seed, ± standard error over seeds; `*` marks |Δ| > 2 SE. Do-no-harm: Δ MCC and Δ F1 "
        "not below -1 SE, |Δ explained variance| <= 0.01, dead latents at most the base's + 1% of the width.",
        "",
    ]
    lines += [f"![metrics vs L0]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
