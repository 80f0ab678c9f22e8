"""Rendering of a demo's results: the side-by-side table, the per-metric verdicts, the plots and ``report.md``.

:func:`format_table`, :func:`summary_lines` (``HEADLINE_METRICS``), :func:`write_plots` (``PLOT_FILES``) and
:func:`write_report` (``report.md``, ``results.json`` and the plots). Re-exported by :mod:`sae_lens_ortho.evals.synthetic.run`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

from sae_lens_ortho.evals.synthetic.results import DemoResults, _metric_keys
from sae_lens_ortho.evals.synthetic.settings import METRICS, DemoSettings, _cli_args, _field_docs, _mean_std

# Metrics that get a one-line verdict in the report: key -> which direction is "better" (the penalty's own
# target, the top-pair correlation, is reported as "lower" without calling it better).
HEADLINE_METRICS: dict[str, str] = {
    "mcc": "higher",
    "uniqueness": "higher",
    "f1": "higher",
    "explained_variance": "higher",
    "dead_latents": "lower",
    "absorption_score": "lower",
    "absorption_frac": "lower",
    "top_pair_corr": "target",
    "decoder_max_cos_mean": "lower",
}

PLOT_FILES = ("metrics_vs_l0.png", "pair_correlations.png")


def _fmt(mean: float, std: float, n: int) -> str:
    digits = 3 if abs(mean) < 100 else 1
    s = f"{mean:.{digits}f}"
    if n > 1:
        s += f" ± {std:.{digits}f}"
    return s


def format_table(results: DemoResults, markdown: bool = False) -> str:
    """Side-by-side table: one row per metric, one column per architecture, a ground-truth column and
    the difference of the last architecture to the first (mean ± std over seeds when there are several)."""
    summ = results.summary()
    archs = list(results.settings.architectures)
    n = len(results.settings.seeds)
    cols = ["metric", *archs, "ground truth"]
    show_delta = len(archs) >= 2
    if show_delta:
        cols.append(f"Δ ({archs[-1]} − {archs[0]})")
    rows = []
    for key in _metric_keys(results):
        label = METRICS.get(key, (key,))[0]
        if key == "top_pair_corr":
            label += f" (p={results.settings.diag_p:g})"
        row = [label]
        for a in archs:
            row.append(_fmt(*summ[a][key], n) if key in summ[a] else "")
        gt = summ["ground truth"].get(key)
        row.append(_fmt(*gt, 1) if gt else "")
        if show_delta:
            diffs = results.paired_deltas(key)
            if diffs:
                cell = f"{statistics.fmean(diffs):+.3f}"
                if len(diffs) > 1:  # paired over seeds: same seed, same start, same batches
                    cell += f" ± {statistics.stdev(diffs):.3f}"
                row.append(cell)
            else:
                row.append("")
        rows.append(row)
    if markdown:
        rows = [[c.replace("|", "\\|") for c in r] for r in rows]
        lines = [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]

    def fmt_row(r: Sequence[object]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt_row(cols), "  ".join("-" * w for w in widths), *[fmt_row(r) for r in rows]])


def _verdict(results: DemoResults, key: str, direction: str) -> str | None:
    """One honest line for a headline metric: both means, the paired Δ, seed wins, and a verdict."""
    archs = results.settings.architectures
    if len(archs) < 2:
        return None
    a, b = results.values(archs[0], key), results.values(archs[-1], key)
    diffs = results.paired_deltas(key)
    if not a or not b or not diffs:
        return None
    label = METRICS.get(key, (key,))[0]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n > 1 else float("inf")
    sign = -1.0 if direction in ("lower", "target") else 1.0
    favourable = sum(1 for d in diffs if sign * d > 1e-12)
    unfavourable = sum(1 for d in diffs if sign * d < -1e-12)
    word, other = ("lower", "higher") if sign < 0 else ("higher", "lower")
    tied = n - favourable - unfavourable
    counts = (
        f"{archs[-1]} {word} on {favourable}/{n} seed(s)"
        + (f", {other} on {unfavourable}" if unfavourable else "")
        + (f", tied on {tied}" if tied else "")
    )
    head = (
        f"- **{label}**: {archs[0]} {_fmt(*_mean_std(a), len(a))}, {archs[-1]} {_fmt(*_mean_std(b), len(b))}; "
        f"paired Δ {mean:+.3f}" + (f" ± {sd:.3f}" if n > 1 else "") + f" ({counts}). "
    )
    if all(abs(d) <= 1e-12 for d in diffs):
        return head + "No difference."
    if n == 1:
        clear = False
        tail = "One seed only: no spread estimate, so no verdict."
    else:
        clear = abs(mean) > 2 * se and (favourable == n or unfavourable == n)
        tail = ""
    if direction == "target":
        if clear and sign * mean > 0:
            tail = f"The penalty lowers it, as designed (the truth's own value is {_gt_value(results, key)})."
        elif clear:
            tail = "The penalty does **not** lower it here."
        elif not tail:
            tail = "No clear change (|Δ| within 2 standard errors or mixed signs)."
        return head + tail
    if clear:
        tail = f"**{archs[-1]} better.**" if sign * mean > 0 else f"**{archs[-1]} worse.**"
    elif not tail:
        tail = "No clear difference (|Δ| within 2 standard errors or mixed signs across seeds)."
    return head + tail


def _gt_value(results: DemoResults, key: str) -> str:
    v = results.summary()["ground truth"].get(key)
    return f"{v[0]:.3f}" if v else "n/a"


def summary_lines(results: DemoResults) -> list[str]:
    """The report's per-metric verdicts (see :data:`HEADLINE_METRICS`)."""
    return [line for key, d in HEADLINE_METRICS.items() if (line := _verdict(results, key, d)) is not None]


def write_plots(results: DemoResults, out: Path | str) -> list[Path]:
    """``metrics_vs_l0.png`` and ``pair_correlations.png`` in ``out`` (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = results.settings
    archs = list(s.architectures)
    colors = {a: f"C{i}" for i, a in enumerate(archs)}
    written: list[Path] = []

    # 1. metrics vs L0: one point per (architecture, seed, k), a line through the per-k means.
    panels = [
        ("mcc", "MCC"),
        ("f1", "F1"),
        ("explained_variance", "explained variance"),
        ("absorption_score", "absorption score (lower = less absorption)"),
    ]
    panels = [(k, t) for k, t in panels if any(k in r.metrics for r in results.runs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    true_l0 = statistics.fmean(g["true_l0"] for g in results.ground_truth) if results.ground_truth else None
    ks = sorted({r.k for r in results.runs})
    jitter = {a: (i - (len(archs) - 1) / 2) * 0.08 for i, a in enumerate(archs)}
    for ax, (key, title) in zip(axes[0], panels):
        for a in archs:
            rs = [r for r in results.runs if r.architecture == a and key in r.metrics]
            ax.scatter(
                [r.metrics["sae_l0"] + jitter[a] for r in rs],
                [r.metrics[key] for r in rs],
                s=22,
                color=colors[a],
                alpha=0.75,
                label=a,
            )
            means = [
                (
                    statistics.fmean(r.metrics["sae_l0"] for r in rs if r.k == k),
                    statistics.fmean(r.metrics[key] for r in rs if r.k == k),
                )
                for k in ks
                if any(r.k == k for r in rs)
            ]
            if len(means) > 1:
                ax.plot([m[0] + jitter[a] for m in means], [m[1] for m in means], color=colors[a], lw=1, alpha=0.6)
        if true_l0 is not None:
            ax.axvline(true_l0, color="grey", ls="--", lw=1, label=f"true L0 ≈ {true_l0:.2f}")
        ax.set_xlabel("L0 (SAE, = k for TopK)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"{' vs '.join(archs)}: one point per seed and k (table: k = {s.k}, {len(s.seeds)} seeds)", fontsize=10
    )
    fig.tight_layout()
    path = out / PLOT_FILES[0]
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # 2. latent pair correlations C_ij over all co-firing pairs of the held-out batch, pooled over seeds (per SAE).
    from sae_lens_ortho.core.pairs import n_selected_pairs

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bins = torch.linspace(0, 1, 41).tolist()
    series: list[tuple[str, list[torch.Tensor], str]] = [
        (a, [r.pair_corr for r in results.main_runs if r.architecture == a and r.pair_corr is not None], colors[a])
        for a in archs
    ]
    if results.gt_pair_corr is not None:
        series.append(("ground truth (true features)", [results.gt_pair_corr], "black"))
    m = n_selected_pairs(s.d_sae, s.diag_p) if s.d_sae >= 2 else 0
    for name, corrs, color in series:
        if not corrs:
            continue
        pooled = torch.cat(corrs).numpy()
        weights = [1.0 / len(corrs)] * len(pooled)
        ax1.hist(
            pooled,
            bins=bins,
            weights=weights,
            histtype="step",
            lw=1.6,
            color=color,
            label=f"{name} ({len(pooled) / len(corrs):.0f} co-firing pairs)",
        )
        ranked = torch.stack(
            [
                torch.nn.functional.pad(
                    c.sort(descending=True).values[: 3 * max(m, 1)],
                    (0, max(0, 3 * max(m, 1) - min(len(c), 3 * max(m, 1)))),
                )
                for c in corrs
            ]
        ).mean(0)
        ax2.plot(range(1, len(ranked) + 1), ranked.numpy(), color=color, lw=1.6, label=name)
    ax1.set_yscale("log")
    ax1.set_xlabel("C_ij (cosine of activation columns)")
    ax1.set_ylabel("pairs per SAE")
    ax1.set_title("all co-firing latent pairs, held-out batch", fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    if m:
        ax2.axvline(m, color="grey", ls="--", lw=1, label=f"top-p cut (p={s.diag_p:g}: {m} pairs)")
    ax2.set_xlabel("rank")
    ax2.set_ylabel("C_ij")
    ax2.set_title("most correlated pairs (mean over seeds)", fontsize=10)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = out / PLOT_FILES[1]
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def _absorption_pair_table(results: DemoResults) -> str:
    """Per parent-child pair: mean absorption score and how often it was absorbed, per architecture."""
    archs = list(results.settings.architectures)
    keys = [(p, c) for p, ch in results.hierarchy for c in ch]
    if not keys:
        return ""
    lines = [
        "| parent → child | " + " | ".join(f"{a} score (absorbed)" for a in archs) + " |",
        "|---|" + "---:|" * len(archs),
    ]
    for p, c in keys:
        cells = []
        for a in archs:
            ps = [
                q
                for r in results.main_runs
                if r.architecture == a
                for q in r.absorption_pairs
                if q["parent"] == p and q["child"] == c
            ]
            cells.append(
                f"{statistics.fmean(q['score'] for q in ps):.2f} ({sum(q['absorbed'] for q in ps)}/{len(ps)})"
                if ps
                else ""
            )
        lines.append(f"| {p} → {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ortho_settings_line(s: DemoSettings) -> str:
    if s.ortho_defaults:
        return "`*_ortho` architectures with their default fields."
    return (
        f"`topk_ortho`: ortho_coefficient = {s.ortho_coefficient}, ortho_pair_fraction = {s.ortho_pair_fraction}, "
        f"ortho_weighting = {s.ortho_weighting},\northo_warm_up_steps = {s.ortho_warm_up_steps}, "
        f"ortho_decoder_coefficient = {s.ortho_decoder_coefficient}."
    )


def write_report(results: DemoResults, out: Path | str) -> Path:
    """Write ``report.md`` (table, verdicts, plots, exact settings), ``results.json`` and (``settings.plots``) the
    PNG plots into ``out``; return the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = results.settings
    plot_note = ""
    plot_paths: list[Path] = []
    if s.plots:
        try:
            plot_paths = write_plots(results, out)
        except ImportError as e:  # pragma: no cover - matplotlib is in the eval extra
            plot_note = f"(plots skipped: {e})"
    settings_lines = []
    for f in fields(DemoSettings):
        doc = _field_docs().get(f.name, "")
        settings_lines.append(f"| `{f.name}` | `{getattr(s, f.name)!r}` | {doc} |")
    ortho_runs = [r for r in results.runs if r.ortho_step is not None]
    ortho_lines = [
        f"- `{r.architecture}` seed {r.seed} k {r.k}: SAE class `{r.sae_class}`, `ortho_step` = {r.ortho_step} "
        f"(training steps = {s.training_steps})"
        for r in ortho_runs
    ]
    n_sweep = len(results.runs) - len(results.main_runs)
    hierarchy_txt = "; ".join(f"{p} → {c}" for p, c in results.hierarchy) or "none"
    plots_md = "\n\n".join(f"![{p.stem}]({p.name})" for p in plot_paths) or plot_note or "(plots disabled)"
    report = f"""# sae-lens-ortho demo: {" vs ".join(s.architectures)} on SAELens synthetic data

Command: `{" ".join(["python -m sae_lens_ortho.evals.synthetic.run", *_cli_args(s)])}`
Wall time: {results.wall_seconds:.1f} s ({len(results.runs)} SAEs: {len(results.main_runs)} at k = {s.k} over {len(s.seeds)} seed(s)
for the table, {n_sweep} at k ∈ {list(s.extra_ks)} for the L0 plot).
Environment: {", ".join(f"{k} {v}" for k, v in results.environment.items())}.

Ground truth (`data_seed` {s.data_seed}): {s.n_features} features in d_in = {s.d_in}, firing probabilities linear
{s.firing_prob_max} → {s.firing_prob_min}, magnitudes {s.magnitude_mean} ± {s.magnitude_std}.
Correlated groups: {s.n_groups} groups of {s.group_size} features whose latent Gaussians have correlation
{s.group_correlation} (Gaussian copula): {", ".join(map(str, results.groups)) or "none"}.
Hierarchy (SAELens `HierarchyNode` / `hierarchy_modifier`; a child fires only when its parent fires, with
P(child | parent) = {s.child_given_parent}): {hierarchy_txt}. All other features are independent.
SAEs: d_sae = {s.d_sae}, k = {s.k}, {s.training_samples:,} samples ({s.training_steps} steps of {s.batch_size}), Adam lr {s.lr},
{_ortho_settings_line(s)} All SAEs
trained with SAELens `train_toy_sae` (the real `SAETrainer`); for each seed every architecture starts from the same
initial weights and sees the same training batches. Metrics on held-out samples ({s.eval_samples:,} for the SAELens eval,
{s.diag_samples:,} for absorption and the pair diagnostics, top-p pairs with p = {s.diag_p}).

## Results{f" (mean ± std over {len(s.seeds)} seeds; Δ is paired per seed)" if len(s.seeds) > 1 else ""}

{format_table(results, markdown=True)}

## Summary

{chr(10).join(summary_lines(results))}

"Better"/"worse" needs the paired Δ to exceed 2 standard errors *and* to have the same sign on every seed; with
few seeds that is a low bar for consistency, not a significance test. The ortho settings are the previous sweep's
choice on this `data_seed` before the hierarchy was added; the data was not tuned to favour either architecture.

Reading the table: MCC / uniqueness / F1 / explained variance measure recovery of the ground truth (higher is better).
Absorption (lower is better): for each parent → child pair, *drop* is how much of its activation the parent's
best-matching latent loses on samples where the child also fires (vs. the parent alone), *mix* is the parent share β/α
of the child's best-matching decoder row written as α f_child + β f_parent, *score* = min(drop, mix), *absorbed* =
drop ≥ {s.absorption_drop_threshold} and mix ≥ {s.absorption_mix_threshold}. The ground-truth column scores the true
features themselves (0 by construction). The pair rows are correlations of the SAE's *latent activation columns*; the
ground-truth column gives the same number for the true features (they are correlated by design, so driving latent
correlations far below the truth is not a goal in itself). Decoder rows: per latent, the largest |cos| to any other
decoder row.

### Absorption per parent → child pair (score mean over seeds; absorbed seeds / seeds)

{_absorption_pair_table(results)}

## Plots

{plots_md}

`{PLOT_FILES[0]}`: one point per architecture, seed and k (the table's k plus the `sweep_ks` runs); for TopK the
SAE's L0 is exactly k. `{PLOT_FILES[1]}`: left, the histogram of C_ij over every co-firing latent pair of the held-out
batch (pooled over seeds, scaled per SAE) for each architecture and for the true features; right, the most
correlated pairs by rank, with the top-p cut the penalty acts on.

## Ortho loss check

{chr(10).join(ortho_lines) if ortho_lines else "(no ortho architecture in this run)"}

## Settings

| field | value | meaning |
|---|---|---|
{chr(10).join(settings_lines)}
"""
    path = out / "report.md"
    path.write_text(report)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=2, default=str))
    return path
