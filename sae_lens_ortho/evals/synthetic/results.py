"""What a demo run produces: the ground truth, one trained SAE's result, and all results with their summaries.

Kept apart from the runner so that the settings, the report and the runner import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from sae_lens_ortho.evals.synthetic.settings import METRICS, DemoSettings, _mean_std


@dataclass
class GroundTruth:
    """The synthetic data every architecture of one demo is trained and evaluated on."""

    feature_dict: Any
    """``sae_lens.synthetic.FeatureDictionary`` (n_features x d_in)."""
    generator: Any
    """``sae_lens.synthetic.ActivationGenerator`` with the grouped correlation matrix and the hierarchy modifier."""
    groups: list[list[int]]
    """Feature indices of each correlated group."""
    correlation_matrix: torch.Tensor
    """The latent Gaussian correlation matrix (given to the generator in its exact low-rank + diagonal form)."""
    hierarchy: list[tuple[int, list[int]]] = field(default_factory=list)
    """(parent feature, [child features]) of each hierarchy tree (depth 1)."""


@dataclass
class RunResult:
    """One trained SAE: its metrics and (in memory only) the SAE itself."""

    seed: int
    architecture: str
    metrics: dict[str, float]
    sae_class: str
    ortho_step: int | None
    """The SAE's ``ortho_step`` buffer after training (None for architectures without one)."""
    k: int = 0
    """The TopK k this SAE was trained at (``settings.k`` for the table's runs, else a ``sweep_ks`` value)."""
    absorption_pairs: list[dict[str, Any]] = field(default_factory=list)
    """Per parent-child pair: the matched latents, drop, mix, score (see :func:`absorption_scores`)."""
    sae: Any = field(default=None, repr=False, compare=False)
    pair_corr: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """C_ij of every co-firing latent pair on the held-out diagnostics batch (for the histogram; not in JSON)."""


@dataclass
class DemoResults:
    settings: DemoSettings
    runs: list[RunResult]
    ground_truth: list[dict[str, float]]
    """Per seed, the diagnostics of the ground truth itself (reference column)."""
    groups: list[list[int]]
    """Feature indices of each correlated ground-truth group."""
    wall_seconds: float
    environment: dict[str, str]
    hierarchy: list[tuple[int, list[int]]] = field(default_factory=list)
    """(parent, children) of each hierarchy tree."""
    gt_pair_corr: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """C_ij of every co-firing pair of true features on the first seed's diagnostics batch."""

    @property
    def main_runs(self) -> list[RunResult]:
        """The runs at the table's k (the sweep runs are for the L0 plot only)."""
        return [r for r in self.runs if r.k == self.settings.k]

    def values(self, architecture: str, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.main_runs if r.architecture == architecture and metric in r.metrics]

    def paired_deltas(self, metric: str) -> list[float]:
        """Per seed, last architecture minus first (same seed: same start, same batches)."""
        archs = self.settings.architectures
        by = {(r.seed, r.architecture): r.metrics.get(metric) for r in self.main_runs}
        out = []
        for seed in self.settings.seeds:
            a, b = by.get((seed, archs[0])), by.get((seed, archs[-1]))
            if a is not None and b is not None:
                out.append(b - a)
        return out

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """{architecture (and "ground truth"): {metric: (mean, std over seeds)}}."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for arch in self.settings.architectures:
            out[arch] = {}
            for m in _metric_keys(self):
                v = self.values(arch, m)
                if v:
                    out[arch][m] = _mean_std(v)
        gt: dict[str, tuple[float, float]] = {}
        for m in _metric_keys(self):
            v = [g[m] for g in self.ground_truth if m in g]
            if v:
                gt[m] = _mean_std(v)
        out["ground truth"] = gt
        return out

    def to_json(self) -> dict[str, Any]:
        skip = {"sae", "pair_corr"}
        return {
            "settings": self.settings.to_dict(),
            "runs": [{f.name: getattr(r, f.name) for f in fields(r) if f.name not in skip} for r in self.runs],
            "ground_truth": self.ground_truth,
            "groups": self.groups,
            "hierarchy": [{"parent": p, "children": c} for p, c in self.hierarchy],
            "summary": {a: {m: list(v) for m, v in s.items()} for a, s in self.summary().items()},
            "paired_delta": {m: self.paired_deltas(m) for m in _metric_keys(self) if self.paired_deltas(m)},
            "wall_seconds": self.wall_seconds,
            "environment": self.environment,
        }


def _metric_keys(results: DemoResults) -> list[str]:
    seen: dict[str, None] = {k: None for k in METRICS}
    for r in results.runs:
        for k in r.metrics:
            seen.setdefault(k, None)
    present = {k for r in results.main_runs for k in r.metrics} | {k for g in results.ground_truth for k in g}
    return [k for k in seen if k in present]
