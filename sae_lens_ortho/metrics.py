"""``sae-lens-ortho metrics RUN_DIR``: a training run's ortho metrics from its offline wandb log, without an account.

SAELens logs to wandb; with ``WANDB_MODE=offline`` wandb writes ``wandb/offline-run-*/run-*.wandb`` and nothing
leaves the machine. :mod:`sae_lens_ortho.wandb_offline` reads that file; this module summarises the ortho metrics
(first / last / min / max of each logged series) and draws the training curves a user looks at first, one PNG per
panel plus all panels in ``training_curves.png``:

* ortho loss (``losses/ortho_loss``);
* selected-pair correlation (mean and max |C| of the penalised pairs, and the mean C over all pairs);
* strength / tau (the adaptive strength, the adaptive hinge threshold, the warmed-up coefficients, adaptive L1);
* dead latents (SAELens's ``sparsity/dead_features``);
* decoder penalty (the penalty value and its weighted loss);
* peak memory (CUDA allocated, or the process's resident set on CPU).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_lens_ortho.wandb_offline import find_run_files, read_history

__all__ = ["PANELS", "MetricSummary", "RunMetrics", "load_run_metrics", "metrics_command", "plot_training_curves"]


@dataclass(frozen=True)
class Panel:
    stem: str
    """File name of its PNG (without .png)."""
    title: str
    keys: tuple[str, ...]
    """wandb keys drawn in the panel, as lines; a panel with none of them logged is left out."""
    ylabel: str = ""


PANELS = (
    Panel("ortho_loss", "ortho loss", ("losses/ortho_loss",), "loss"),
    Panel(
        "selected_pair_correlation",
        "selected-pair correlation",
        ("metrics/ortho_selected_corr_mean", "metrics/ortho_selected_corr_max", "metrics/ortho_mean_pair_cosine"),
        "activation cosine",
    ),
    Panel(
        "strength_tau",
        "strength / τ",
        (
            "metrics/ortho_strength",
            "metrics/ortho_tau",
            "details/ortho_coefficient",
            "metrics/ortho_decoder_coefficient",
            "metrics/ortho_l1",
        ),
    ),
    Panel("dead_latents", "dead latents", ("sparsity/dead_features",), "latents"),
    Panel(
        "decoder_penalty", "decoder penalty", ("metrics/ortho_decoder_penalty", "losses/decoder_ortho_loss"), "penalty"
    ),
    Panel("peak_memory", "memory", ("metrics/ortho_peak_memory_mib", "metrics/ortho_memory_mib"), "MiB"),
)
"""The training-curve panels, in the order of ``training_curves.png``."""

CONTEXT_KEYS = ("losses/mse_loss", "metrics/l0", "metrics/explained_variance", "sparsity/dead_features")
"""SAELens's own metrics shown in the summary next to the ortho ones."""


@dataclass(frozen=True)
class MetricSummary:
    key: str
    n: int
    first: float
    last: float
    min: float
    max: float
    first_step: int
    last_step: int


@dataclass
class RunMetrics:
    run_file: Path
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    """{wandb key: (steps, values)} of every numeric ortho / context series, in logging order."""

    @property
    def run_folder(self) -> Path:
        return self.run_file.parent

    def summaries(self) -> list[MetricSummary]:
        out = []
        for key, (steps, values) in self.series.items():
            out.append(
                MetricSummary(key, len(values), values[0], values[-1], min(values), max(values), steps[0], steps[-1])
            )
        return out


def _is_reported(key: str) -> bool:
    name = key.split("/", 1)[-1]
    return name.startswith(("ortho", "decoder_ortho")) or key in CONTEXT_KEYS


def load_run_metrics(path: str | Path) -> RunMetrics:
    """The ortho (and context) series of the newest offline wandb run at ``path`` (a run folder, its ``.wandb``
    file, or a ``wandb/`` folder or its parent). Raises ``FileNotFoundError`` when there is none."""
    files = find_run_files(path)
    if not files:
        raise FileNotFoundError(
            f"no wandb offline run at {path}: SAELens writes one (wandb/offline-run-*/run-*.wandb, under the working "
            "directory or WANDB_DIR) when it logs to wandb (log_to_wandb=True) with WANDB_MODE=offline"
        )
    run = RunMetrics(files[-1])
    for row in read_history(files[-1]):
        step = row.get("_step")
        for key, value in row.items():
            if not _is_reported(key) or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            steps, values = run.series.setdefault(key, ([], []))
            steps.append(int(step) if isinstance(step, (int, float)) else len(steps))
            values.append(float(value))
    run.series = dict(sorted(run.series.items(), key=lambda kv: (kv[0] not in _panel_keys(), kv[0])))
    return run


def _panel_keys() -> list[str]:
    return [k for p in PANELS for k in p.keys]


def format_summary(run: RunMetrics) -> str:
    rows = run.summaries()
    if not rows:
        return f"{run.run_folder}: no ortho metrics logged (is this a *_ortho training run?)"
    width = max(len(r.key) for r in rows)
    lines = [
        f"run: {run.run_folder}",
        f"{'metric':<{width}}  {'n':>4}  {'first':>11}  {'last':>11}  {'min':>11}  {'max':>11}  steps",
    ]
    for r in rows:
        lines.append(
            f"{r.key:<{width}}  {r.n:>4}  {r.first:>11.4g}  {r.last:>11.4g}  {r.min:>11.4g}  {r.max:>11.4g}  "
            f"{r.first_step}-{r.last_step}"
        )
    return "\n".join(lines)


def _draw(ax: Any, run: RunMetrics, panel: Panel) -> bool:
    drawn = False
    for key in panel.keys:
        if key in run.series:
            steps, values = run.series[key]
            ax.plot(steps, values, marker="." if len(values) < 30 else None, label=key.split("/", 1)[-1])
            drawn = True
    if drawn:
        ax.set_title(panel.title)
        ax.set_xlabel("training step")
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return drawn


def plot_training_curves(run: RunMetrics, out: str | Path) -> list[Path]:
    """Write ``<panel>.png`` for every panel with data and ``training_curves.png`` with all of them; returns the
    paths written (none when nothing was logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    present = [p for p in PANELS if any(k in run.series for k in p.keys)]
    written: list[Path] = []
    for panel in present:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        _draw(ax, run, panel)
        fig.tight_layout()
        path = out / f"{panel.stem}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    if present:
        cols = min(3, len(present))
        rows = -(-len(present) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, panel in zip(axes.flat, present):
            _draw(ax, run, panel)
        for ax in list(axes.flat)[len(present) :]:
            ax.set_visible(False)
        fig.suptitle(f"ortho training curves: {run.run_folder.name}", fontsize=10)
        fig.tight_layout()
        path = out / "training_curves.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def metrics_command(path: str, *, out: str | None = None, plots: bool = True, as_json: bool = False) -> int:
    """``sae-lens-ortho metrics``: print the summary, write the PNGs; returns the exit status."""
    try:
        run = load_run_metrics(path)
    except (FileNotFoundError, ValueError) as e:  # ValueError: WandbLogError, a corrupt file
        print(f"sae-lens-ortho metrics: error: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"run": str(run.run_folder), "metrics": [s.__dict__ for s in run.summaries()]}, indent=2))
    else:
        print(format_summary(run))
    if plots and run.series:
        folder = Path(out) if out is not None else run.run_folder / "ortho_metrics"
        written = plot_training_curves(run, folder)
        note = f"wrote {len(written)} PNGs to {folder}" + (f" (overview: {written[-1].name})" if written else "")
        print(note, file=sys.stderr if as_json else sys.stdout)
    return 0
