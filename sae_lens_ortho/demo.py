"""Embedded demo: SAELens ``topk`` vs ``topk_ortho`` at matched k on the same synthetic ground truth, over seeds.

Run ``python -m sae_lens_ortho.demo --out demo_out`` (``make demo``). Offline, CPU, a few minutes.

What it does:

1. Builds one ground truth with ``sae_lens.synthetic`` (it depends on ``data_seed`` only): a ``FeatureDictionary``
   of ``n_features`` unit vectors in ``d_in`` dimensions and an ``ActivationGenerator`` with two kinds of structure:

   * correlated groups: a Gaussian-copula correlation matrix makes small groups of features fire together
     (latent correlation ``group_correlation`` inside a group, 0 elsewhere);
   * a hierarchy: ``n_parents`` parent features, each with ``children_per_parent`` children, applied with SAELens's
     ``HierarchyNode`` / ``hierarchy_modifier`` (a child fires only when its parent fires, with probability
     ``child_given_parent`` given the parent). This is the known-answer set-up for feature absorption.
2. Per seed, trains every architecture in ``architectures`` at the same ``k`` with SAELens's own ``train_toy_sae``
   (the real ``SAETrainer``). Before each run the torch RNG is reset to the seed, so all architectures start from
   identical weights and see the identical stream of training batches: the only difference is the ortho loss.
   Optionally (``sweep_ks``) the first ``sweep_seeds`` seeds are also trained at other k, for the metrics-vs-L0 plot.
3. Evaluates each SAE with ``eval_sae_on_synthetic_data`` (MCC, uniqueness, precision/recall/F1, explained variance,
   L0, dead latents, shrinkage), :func:`absorption_scores` on the hierarchy, and this package's diagnostics on a
   held-out batch (top-p latent pair correlation, mean pair cosine, decoder max cosine, near-duplicate decoders).
   The same diagnostics on the ground truth itself are a reference column.
4. Writes ``report.md`` (mean ± std over seeds, paired Δ, a verdict per headline metric), ``results.json`` and PNG
   plots (metrics vs L0, histogram of latent pair correlations).

``run_demo(settings)`` returns a :class:`DemoResults`; ``write_report`` / ``format_table`` / ``write_plots`` render it.
Adding a metric means adding a key to the dict built in :func:`evaluate_sae` (and, optionally, to ``METRICS`` for its
label / valid range).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

__all__ = [
    "DemoSettings",
    "GroundTruth",
    "RunResult",
    "DemoResults",
    "AbsorptionResult",
    "METRICS",
    "HEADLINE_METRICS",
    "PLOT_FILES",
    "absorption_scores",
    "build_ground_truth",
    "build_sae",
    "evaluate_sae",
    "ground_truth_diagnostics",
    "run_demo",
    "format_table",
    "summary_lines",
    "write_plots",
    "write_report",
    "main",
]


@dataclass
class DemoSettings:
    """Everything that defines a demo run. Defaults are the embedded default demo (about 5 min on 2 idle CPU cores)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    """Training seeds. Each seed re-seeds SAE initialisation, the training stream and the held-out batches;
    the table shows mean ± std over seeds. The ground truth depends only on ``data_seed``."""

    architectures: tuple[str, ...] = ("topk", "topk_ortho")
    """Registered SAELens training architectures to compare (all trained at the same ``k``)."""

    # --- ground truth ---------------------------------------------------------------------------------
    data_seed: int = 1234
    """Seed of the ground truth (feature directions, which features are grouped / in the hierarchy)."""

    n_features: int = 64
    """Number of ground-truth features."""

    d_in: int = 32
    """Dimension of the synthetic activations (features are in superposition when n_features > d_in)."""

    firing_prob_max: float = 0.15
    """Firing probability of the most frequent feature; probabilities fall linearly to ``firing_prob_min``."""

    firing_prob_min: float = 0.03
    """Firing probability of the least frequent feature."""

    n_groups: int = 8
    """Number of groups of mutually correlated features (the features are assigned at random)."""

    group_size: int = 3
    """Features per correlated group."""

    group_correlation: float = 0.9
    """Correlation of the latent Gaussians inside a group (Gaussian copula), in [0, 1)."""

    n_parents: int = 4
    """Number of parent features of the hierarchy (drawn at random among the features not in a correlated group)."""

    children_per_parent: int = 2
    """Children of each parent: a child fires only when its parent fires (SAELens ``hierarchy_modifier``).
    n_groups * group_size + n_parents * (1 + children_per_parent) <= n_features."""

    child_given_parent: float = 0.4
    """P(child fires | parent fires), independently for each child. Parents keep their linear firing probability."""

    magnitude_mean: float = 1.0
    """Mean firing magnitude of every feature."""

    magnitude_std: float = 0.2
    """Standard deviation of the firing magnitude (folded at 0 by the generator's ReLU)."""

    # --- SAE and training -----------------------------------------------------------------------------
    d_sae: int = 64
    """SAE width (latents)."""

    k: int = 6
    """TopK k, the same for every architecture (the table's k)."""

    training_samples: int = 3_000_000
    """Training samples per SAE (steps = ceil(training_samples / batch_size))."""

    batch_size: int = 1024
    """Training batch size."""

    lr: float = 3e-3
    """Adam learning rate (constant, then linear decay over the last ``lr_decay_steps`` steps)."""

    lr_decay_steps: int = 1000
    """Steps of linear learning-rate decay to 0 at the end of training (``train_toy_sae``'s argument)."""

    sweep_ks: tuple[int, ...] = (4, 8)
    """Extra k values trained (for every architecture) only for the metrics-vs-L0 plot; not in the table."""

    sweep_seeds: int = 1
    """How many of ``seeds`` (the first ones) the ``sweep_ks`` runs use."""

    # --- ortho ----------------------------------------------------------------------------------------
    ortho_coefficient: float = 1.0
    """``topk_ortho``'s ``ortho_coefficient`` (weight of mean |C_ij| over the selected pairs)."""

    ortho_pair_fraction: float = 0.05
    """``topk_ortho``'s ``ortho_pair_fraction`` p (with 64 latents, 0.05 selects 101 of the 2016 pairs)."""

    ortho_weighting: str = "abs"
    """``topk_ortho``'s ``ortho_weighting``."""

    ortho_warm_up_steps: int = 0
    """``topk_ortho``'s ``ortho_warm_up_steps``."""

    ortho_decoder_coefficient: float = 0.0
    """``topk_ortho``'s ``ortho_decoder_coefficient`` (0 = activation penalty only)."""

    # --- evaluation -----------------------------------------------------------------------------------
    eval_samples: int = 100_000
    """Held-out samples for ``eval_sae_on_synthetic_data``."""

    diag_samples: int = 16_384
    """Held-out samples for the absorption, pair and decoder diagnostics."""

    diag_pair_fraction: float | None = None
    """p of the top-pair diagnostic, the same for every model (None: ``ortho_pair_fraction``)."""

    duplicate_thresholds: tuple[float, ...] = (0.8, 0.9)
    """A latent has a near-duplicate decoder when max_{j != i} |cos(d_i, d_j)| exceeds the threshold."""

    absorption_drop_threshold: float = 0.5
    """A parent-child pair counts as absorbed when the parent latent's activation drop is at least this ..."""

    absorption_mix_threshold: float = 0.5
    """... and the child latent's parent share (beta / alpha) is at least this."""

    plots: bool = True
    """Write the PNG plots (needs matplotlib)."""

    # --- machine --------------------------------------------------------------------------------------
    device: str = "cpu"
    """Torch device for data, training and evaluation."""

    threads: int | None = 1
    """``torch.set_num_threads`` for the run (0 or None: leave torch's default). The matrices are tiny: one thread is
    about as fast as two and does not slow to a crawl when other processes share the cores."""

    progress: bool = True
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        self.architectures = tuple(self.architectures)
        self.duplicate_thresholds = tuple(float(t) for t in self.duplicate_thresholds)
        self.sweep_ks = tuple(int(k) for k in self.sweep_ks)
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if self.n_groups * self.group_size + self.n_parents * (1 + self.children_per_parent) > self.n_features:
            raise ValueError("n_groups * group_size + n_parents * (1 + children_per_parent) must be <= n_features")
        if self.n_parents < 0 or self.children_per_parent < 0:
            raise ValueError("n_parents and children_per_parent must be >= 0")
        if not 0 < self.child_given_parent <= 1:
            raise ValueError("child_given_parent must be in (0, 1]")
        if not 0 <= self.group_correlation < 1:
            raise ValueError("group_correlation must be in [0, 1)")
        if not 0 < self.firing_prob_min <= self.firing_prob_max < 1:
            raise ValueError("need 0 < firing_prob_min <= firing_prob_max < 1")
        for k in (self.k, *self.sweep_ks):
            if not 1 <= k <= self.d_sae:
                raise ValueError("need 1 <= k <= d_sae (k and every sweep k)")
        if self.sweep_seeds < 0:
            raise ValueError("sweep_seeds must be >= 0")
        if self.training_samples < self.batch_size:
            raise ValueError("training_samples must be >= batch_size")

    @property
    def diag_p(self) -> float:
        return self.ortho_pair_fraction if self.diag_pair_fraction is None else self.diag_pair_fraction

    @property
    def training_steps(self) -> int:
        return math.ceil(self.training_samples / self.batch_size)

    @property
    def extra_ks(self) -> tuple[int, ...]:
        """The sweep k values other than ``k`` (deduplicated, in order)."""
        return tuple(dict.fromkeys(k for k in self.sweep_ks if k != self.k))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Metric key -> (label, lower bound, upper bound, higher_is_better). Bounds are the metric's valid range
# (None: unbounded); they are checked by the tests. Order here is the table's row order.
METRICS: dict[str, tuple[str, float | None, float | None, bool | None]] = {
    "mcc": ("MCC (decoder vs truth, Hungarian)", 0.0, 1.0, True),
    "uniqueness": ("uniqueness", 0.0, 1.0, True),
    "precision": ("precision (latent on → its feature on)", 0.0, 1.0, True),
    "recall": ("recall (feature on → its latent on)", 0.0, 1.0, True),
    "f1": ("F1", 0.0, 1.0, True),
    "best_cos_grouped": ("best decoder |cos| per true feature, correlated groups", 0.0, 1.0, True),
    "best_cos_hierarchy": ("best decoder |cos| per true feature, hierarchy", 0.0, 1.0, True),
    "best_cos_independent": ("best decoder |cos| per true feature, independent", 0.0, 1.0, True),
    "explained_variance": ("explained variance", None, 1.0, True),
    "shrinkage": ("shrinkage |x_hat|/|x|", 0.0, None, None),
    "sae_l0": ("L0 (SAE)", 0.0, None, None),
    "true_l0": ("L0 (ground truth)", 0.0, None, None),
    "dead_latents": ("dead latents", 0.0, None, False),
    "absorption_score": ("absorption score, mean over parent–child pairs", 0.0, 1.0, False),
    "absorption_frac": ("fraction of parent–child pairs absorbed", 0.0, 1.0, False),
    "absorption_drop": ("parent-latent activation drop when the child fires", 0.0, 1.0, False),
    "absorption_mix": ("parent share in the child's latent (β/α, clipped)", 0.0, 1.0, False),
    "top_pair_corr": ("mean corr of top-p latent pairs", 0.0, 1.0, None),
    "top_pair_corr_max": ("max latent pair corr", 0.0, 1.0, None),
    "mean_pair_cosine": ("mean latent pair cosine (all pairs)", 0.0, 1.0, None),
    "decoder_max_cos_max": ("decoder max |cos|, max over latents", 0.0, 1.0, False),
    "decoder_max_cos_mean": ("decoder max |cos|, mean over latents", 0.0, 1.0, False),
    "frac_dup_0.8": ("frac latents with a decoder dup (|cos|>0.8)", 0.0, 1.0, False),
    "frac_dup_0.9": ("frac latents with a decoder dup (|cos|>0.9)", 0.0, 1.0, False),
    "train_seconds": ("train time (s)", 0.0, None, None),
}

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


def _mean_std(v: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _metric_keys(results: DemoResults) -> list[str]:
    seen: dict[str, None] = {k: None for k in METRICS}
    for r in results.runs:
        for k in r.metrics:
            seen.setdefault(k, None)
    present = {k for r in results.main_runs for k in r.metrics} | {k for g in results.ground_truth for k in g}
    return [k for k in seen if k in present]


# ------------------------------------------------------------------------------------------------------
# Absorption
# ------------------------------------------------------------------------------------------------------


@dataclass
class AbsorptionResult:
    """Absorption of a set of parent-child pairs; see :func:`absorption_scores`."""

    pairs: list[dict[str, Any]]
    """One dict per evaluated pair: parent, child, parent_latent, child_latent, n_alone, n_with, act_alone,
    act_with, drop, alpha, beta, mix, score, absorbed."""
    skipped: list[tuple[int, int]] = field(default_factory=list)
    """(parent, child) pairs with fewer than ``min_samples`` held-out samples in one of the two conditions."""

    def _mean(self, key: str) -> float:
        return statistics.fmean(float(p[key]) for p in self.pairs) if self.pairs else float("nan")

    @property
    def mean_score(self) -> float:
        return self._mean("score")

    @property
    def frac_absorbed(self) -> float:
        return self._mean("absorbed")

    @property
    def mean_drop(self) -> float:
        return self._mean("drop")

    @property
    def mean_mix(self) -> float:
        return self._mean("mix")

    def metrics(self) -> dict[str, float]:
        return {
            "absorption_score": self.mean_score,
            "absorption_frac": self.frac_absorbed,
            "absorption_drop": self.mean_drop,
            "absorption_mix": self.mean_mix,
        }


@torch.no_grad()
def absorption_scores(
    latent_acts: torch.Tensor,
    W_dec: torch.Tensor,
    feature_acts: torch.Tensor,
    feature_vectors: torch.Tensor,
    hierarchy: Sequence[tuple[int, Sequence[int]]],
    *,
    drop_threshold: float = 0.5,
    mix_threshold: float = 0.5,
    min_samples: int = 10,
) -> AbsorptionResult:
    """Feature absorption on a known parent -> child hierarchy (a child fires only when its parent fires).

    Inputs: ``latent_acts`` [b, d_sae] (the SAE's encoding of the held-out batch), ``W_dec`` [d_sae, d_in],
    ``feature_acts`` [b, n_features] (the true feature activations of the same batch), ``feature_vectors``
    [n_features, d_in] and ``hierarchy`` as (parent, children) pairs.

    For each (parent P, child C):

    * ℓ_P, ℓ_C: the latents whose decoder rows have the largest cosine with the true directions f_P, f_C.
    * **drop**: on samples where P fires and none of P's children fires ("alone") versus samples where P and C
      fire ("with"), ``drop = clip(1 - mean act(ℓ_P | with) / mean act(ℓ_P | alone), 0, 1)``: 1 when the parent's
      latent goes silent whenever the child fires. The parent's own magnitude has the same distribution in both
      conditions, so a faithful SAE has drop ≈ 0. (0 when ℓ_P never fires on "alone": the parent is not learned.)
    * **mix**: write ℓ_C's unit decoder row as ``α f_C + β f_P + rest`` (least squares in span{f_C, f_P}, which
      removes the overlap of the true directions in superposition); ``mix = clip(β / α, 0, 1)`` (0 if α <= 0).
      1 when the child's latent reconstructs the parent too (f_C + f_P, equal mean magnitudes), 0 for f_C.
    * **score** = min(drop, mix): 0 for a faithful SAE, 1 for full absorption, r for partial absorption where the
      parent latent keeps 1 - r of its activation and the child latent carries r f_P. It needs both halves: a
      parent latent pushed out of the top k (drop, no mix) or a child latent that double-counts the parent (mix,
      no drop) is not absorption.
    * **absorbed** = drop >= ``drop_threshold`` and mix >= ``mix_threshold``.

    The ground truth itself (latents = true features) scores drop ≈ 0, mix = 0, score = 0.
    """
    la = latent_acts.detach().float()
    fa = feature_acts.detach().float()
    if la.is_sparse:
        la = la.to_dense()
    if fa.is_sparse:
        fa = fa.to_dense()
    dec = W_dec.detach().float()
    dec = dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    feats = feature_vectors.detach().float().to(dec.device)
    feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = dec @ feats.T  # [d_sae, n_features]
    on = fa > 0
    pairs: list[dict[str, Any]] = []
    skipped: list[tuple[int, int]] = []
    for parent, children in hierarchy:
        children = list(children)
        if not children:
            continue
        alone = on[:, parent] & ~on[:, children].any(1)
        lp = int(cos[:, parent].argmax())
        act_alone_all = la[alone, lp]
        for child in children:
            with_c = on[:, parent] & on[:, child]
            n_alone, n_with = int(alone.sum()), int(with_c.sum())
            if n_alone < min_samples or n_with < min_samples:
                skipped.append((parent, child))
                continue
            act_alone = float(act_alone_all.mean())
            act_with = float(la[with_c, lp].mean())
            drop = min(max(1.0 - act_with / act_alone, 0.0), 1.0) if act_alone > 0 else 0.0
            lc = int(cos[:, child].argmax())
            d = dec[lc]
            c = float(feats[child] @ feats[parent])
            g_c, g_p = float(d @ feats[child]), float(d @ feats[parent])
            det = 1.0 - c * c
            if det > 1e-6:
                alpha, beta = (g_c - c * g_p) / det, (g_p - c * g_c) / det
            else:  # parallel true directions: no decomposition possible
                alpha, beta = g_c, 0.0
            mix = min(max(beta / alpha, 0.0), 1.0) if alpha > 1e-6 else 0.0
            score = min(drop, mix)
            pairs.append(
                dict(
                    parent=int(parent), child=int(child), parent_latent=lp, child_latent=lc,
                    n_alone=n_alone, n_with=n_with, act_alone=act_alone, act_with=act_with,
                    drop=drop, alpha=alpha, beta=beta, mix=mix, score=score,
                    absorbed=bool(drop >= drop_threshold and mix >= mix_threshold),
                )
            )  # fmt: skip
    return AbsorptionResult(pairs, skipped)


# ------------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------------


def build_ground_truth(settings: DemoSettings) -> GroundTruth:
    """Feature dictionary + correlated, hierarchical activation generator, determined by ``settings.data_seed``."""
    from sae_lens.synthetic import (
        ActivationGenerator,
        FeatureDictionary,
        HierarchyNode,
        LowRankCorrelationMatrix,
        hierarchy_modifier,
        linear_firing_probabilities,
    )

    s = settings
    gen = torch.Generator().manual_seed(s.data_seed)
    perm = torch.randperm(s.n_features, generator=gen).tolist()
    groups = [sorted(perm[g * s.group_size : (g + 1) * s.group_size]) for g in range(s.n_groups)]
    rest = perm[s.n_groups * s.group_size :]
    hierarchy: list[tuple[int, list[int]]] = []
    for h in range(s.n_parents):
        start = h * (1 + s.children_per_parent)
        hierarchy.append((rest[start], sorted(rest[start + 1 : start + 1 + s.children_per_parent])))
    # Equicorrelated groups are exactly a low-rank-plus-diagonal correlation: z_i = sqrt(rho) g_group + sqrt(1-rho) e_i.
    # SAELens samples that form with one small matmul (a full matrix goes through MultivariateNormal, ~50x slower).
    factor = torch.zeros(s.n_features, max(s.n_groups, 1))
    diag = torch.ones(s.n_features)
    for g, grp in enumerate(groups):
        factor[grp, g] = math.sqrt(s.group_correlation)
        diag[grp] = 1.0 - s.group_correlation
    corr = factor @ factor.T + torch.diag(diag)
    probs = linear_firing_probabilities(s.n_features, max_prob=s.firing_prob_max, min_prob=s.firing_prob_min)
    probs = torch.as_tensor(probs, dtype=torch.float32).clone()
    for _, children in hierarchy:
        # Sampled independently, then zeroed by the modifier when the parent is off: P(child | parent) exactly.
        probs[children] = s.child_given_parent
    modifier = None
    if hierarchy and s.children_per_parent > 0:
        roots = [HierarchyNode(p, children=[HierarchyNode(c) for c in ch]) for p, ch in hierarchy]
        modifier = hierarchy_modifier(roots)
    # The orthogonalising initializer runs a short optimisation from torch's global RNG state: seed it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.data_seed)
        feature_dict = FeatureDictionary(s.n_features, s.d_in, device=s.device, seed=s.data_seed)
    generator = ActivationGenerator(
        s.n_features,
        firing_probabilities=probs.to(s.device),
        std_firing_magnitudes=s.magnitude_std,
        mean_firing_magnitudes=s.magnitude_mean,
        correlation_matrix=LowRankCorrelationMatrix(factor.to(s.device), diag.to(s.device)),
        modify_activations=modifier,
        device=s.device,
    )
    return GroundTruth(feature_dict, generator, groups, corr, hierarchy)


def build_sae(architecture: str, settings: DemoSettings, k: int | None = None) -> Any:
    """A fresh training SAE of a registered architecture, with the demo's sizes and ortho fields."""
    import sae_lens_ortho  # noqa: F401  (registers topk_ortho)
    from sae_lens.registry import get_sae_training_class

    sae_cls, cfg_cls = get_sae_training_class(architecture)
    kwargs: dict[str, Any] = {"d_in": settings.d_in, "d_sae": settings.d_sae, "device": settings.device}
    names = {f.name for f in fields(cfg_cls)}
    if "k" in names:
        kwargs["k"] = settings.k if k is None else k
    if "ortho_coefficient" in names:
        kwargs.update(
            ortho_coefficient=settings.ortho_coefficient,
            ortho_pair_fraction=settings.ortho_pair_fraction,
            ortho_weighting=settings.ortho_weighting,
            ortho_warm_up_steps=settings.ortho_warm_up_steps,
            ortho_decoder_coefficient=settings.ortho_decoder_coefficient,
        )
    return sae_cls(cfg_cls(**kwargs))


@torch.no_grad()
def _all_cofiring_corr(acts: torch.Tensor) -> torch.Tensor:
    """C_ij of every pair i < j that co-fires somewhere in ``acts`` (p = 1 of the exact pair selection)."""
    from .pairs import top_correlated_pairs

    return top_correlated_pairs(acts, 1.0).corr.cpu()


@torch.no_grad()
def _pair_diagnostics(acts: torch.Tensor, p: float) -> dict[str, float]:
    from .diagnostics import mean_pair_cosine
    from .pairs import top_correlated_pairs

    sel = top_correlated_pairs(acts, p)
    return {
        "top_pair_corr": float(sel.corr.mean()) if sel.corr.numel() else 0.0,
        "top_pair_corr_max": float(sel.corr.max()) if sel.corr.numel() else 0.0,
        "mean_pair_cosine": float(mean_pair_cosine(acts)),
    }


@torch.no_grad()
def _decoder_diagnostics(W_dec: torch.Tensor, thresholds: Sequence[float]) -> dict[str, float]:
    from .diagnostics import decoder_max_cosine

    mc = decoder_max_cosine(W_dec)
    out = {"decoder_max_cos_max": float(mc.max()), "decoder_max_cos_mean": float(mc.mean())}
    for t in thresholds:
        out[f"frac_dup_{t:g}"] = float((mc > t).float().mean())
    return out


@torch.no_grad()
def _feature_recovery(W_dec: torch.Tensor, gt: GroundTruth) -> dict[str, float]:
    """Per true feature, the best |cos| with any decoder row, averaged over grouped / hierarchy / independent features."""
    from sae_lens.util import cosine_similarities

    best = cosine_similarities(W_dec.detach().float(), gt.feature_dict.feature_vectors.detach().float()).abs().max(0).values
    kind = torch.zeros_like(best, dtype=torch.long)  # 0 independent, 1 grouped, 2 hierarchy
    for grp in gt.groups:
        kind[grp] = 1
    for parent, children in gt.hierarchy:
        kind[[parent, *children]] = 2
    out = {}
    for name, code in (("best_cos_grouped", 1), ("best_cos_hierarchy", 2), ("best_cos_independent", 0)):
        if (kind == code).any():
            out[name] = float(best[kind == code].mean())
    return out


@torch.no_grad()
def _heldout_feature_acts(gt: GroundTruth, n: int, seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        acts = gt.generator.sample(n)
    return acts.to_dense() if acts.is_sparse else acts


def _absorption(latents: torch.Tensor, W_dec: torch.Tensor, feats: torch.Tensor, gt: GroundTruth,
                settings: DemoSettings) -> AbsorptionResult:
    return absorption_scores(latents, W_dec, feats, gt.feature_dict.feature_vectors, gt.hierarchy,
                             drop_threshold=settings.absorption_drop_threshold,
                             mix_threshold=settings.absorption_mix_threshold)


@torch.no_grad()
def ground_truth_diagnostics(gt: GroundTruth, settings: DemoSettings, seed: int) -> dict[str, float]:
    """The diagnostics of the true features (what a perfect SAE would score)."""
    return _ground_truth_diagnostics(gt, settings, seed)[0]


@torch.no_grad()
def _ground_truth_diagnostics(gt: GroundTruth, settings: DemoSettings, seed: int) -> tuple[dict[str, float], torch.Tensor]:
    acts = _heldout_feature_acts(gt, settings.diag_samples, _diag_seed(seed))
    out = _pair_diagnostics(acts, settings.diag_p)
    out.update(_decoder_diagnostics(gt.feature_dict.feature_vectors, settings.duplicate_thresholds))
    out["true_l0"] = float((acts != 0).float().sum(1).mean())
    if gt.hierarchy:
        out.update(_absorption(acts, gt.feature_dict.feature_vectors, acts, gt, settings).metrics())
    return {k: float(v) for k, v in out.items()}, _all_cofiring_corr(acts)


def _eval_seed(seed: int) -> int:
    return 1_000_003 + seed


def _diag_seed(seed: int) -> int:
    return 2_000_003 + seed


@torch.no_grad()
def evaluate_sae(sae: Any, gt: GroundTruth, settings: DemoSettings, seed: int) -> dict[str, float]:
    """SAELens's synthetic-data eval plus absorption and this package's diagnostics, on held-out batches."""
    return _evaluate(sae, gt, settings, seed)[0]


@torch.no_grad()
def _evaluate(sae: Any, gt: GroundTruth, settings: DemoSettings, seed: int
              ) -> tuple[dict[str, float], list[dict[str, Any]], torch.Tensor]:
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_eval_seed(seed))
        ev = eval_sae_on_synthetic_data(sae, gt.feature_dict, gt.generator, num_samples=settings.eval_samples,
                                        batch_size=min(settings.eval_samples, 20_000))
    out = {
        "mcc": ev.mcc,
        "uniqueness": ev.uniqueness,
        "precision": ev.classification.precision,
        "recall": ev.classification.recall,
        "f1": ev.classification.f1_score,
        "explained_variance": ev.explained_variance,
        "shrinkage": ev.shrinkage,
        "sae_l0": ev.sae_l0,
        "true_l0": ev.true_l0,
        "dead_latents": float(ev.dead_latents),
    }
    out.update(_feature_recovery(sae.W_dec, gt))
    feats = _heldout_feature_acts(gt, settings.diag_samples, _diag_seed(seed))
    latents = sae.encode(gt.feature_dict(feats))
    latents = latents.to_dense() if latents.is_sparse else latents
    absorption_pairs: list[dict[str, Any]] = []
    if gt.hierarchy:
        ab = _absorption(latents, sae.W_dec, feats, gt, settings)
        out.update(ab.metrics())
        absorption_pairs = ab.pairs
    out.update(_pair_diagnostics(latents, settings.diag_p))
    out.update(_decoder_diagnostics(sae.W_dec, settings.duplicate_thresholds))
    return {k: float(v) for k, v in out.items()}, absorption_pairs, _all_cofiring_corr(latents)


def _train(sae: Any, gt: GroundTruth, settings: DemoSettings) -> None:
    from sae_lens.synthetic import train_toy_sae

    kwargs: dict[str, Any] = dict(
        training_samples=settings.training_samples,
        batch_size=settings.batch_size,
        lr=settings.lr,
        lr_decay_steps=settings.lr_decay_steps,
        device=settings.device,
    )
    import sae_lens.training.sae_trainer as trainer_mod

    orig = trainer_mod.tqdm
    # SAETrainer always opens a tqdm bar: nest it under the demo's bar (position 1, cleared when done), or silence it.
    extra = {"position": 1, "leave": False} if settings.progress else {"disable": True}
    trainer_mod.tqdm = lambda *a, **kw: orig(*a, **{**kw, **extra})  # type: ignore[assignment]
    try:
        train_toy_sae(sae, gt.feature_dict, gt.generator, **kwargs)
    finally:
        trainer_mod.tqdm = orig


def _jobs(settings: DemoSettings) -> list[tuple[int, int, str]]:
    """(seed, k, architecture) of every SAE to train: the table's runs first, then the sweep."""
    jobs = [(seed, settings.k, arch) for seed in settings.seeds for arch in settings.architectures]
    for seed in settings.seeds[: settings.sweep_seeds]:
        jobs += [(seed, k, arch) for k in settings.extra_ks for arch in settings.architectures]
    return jobs


def run_demo(settings: DemoSettings | None = None) -> DemoResults:
    """Train and evaluate every architecture on every seed; return all metrics (and the trained SAEs)."""
    settings = settings or DemoSettings()
    start = time.perf_counter()
    old_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        gt = build_ground_truth(settings)
        runs: list[RunResult] = []
        gt_diags: list[dict[str, float]] = []
        gt_pair_corr = None
        for seed in settings.seeds:
            diag, corr = _ground_truth_diagnostics(gt, settings, seed)
            gt_diags.append(diag)
            gt_pair_corr = corr if gt_pair_corr is None else gt_pair_corr
        jobs = _jobs(settings)
        outer = tqdm(jobs, desc="demo", unit="sae", disable=not settings.progress, position=0)
        for seed, k, arch in outer:
            outer.set_postfix_str(f"seed={seed} k={k} {arch}")
            # Same seed before every architecture: identical initial weights and identical training batches.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                sae = build_sae(arch, settings, k=k)
                t0 = time.perf_counter()
                _train(sae, gt, settings)
                train_s = time.perf_counter() - t0
            metrics, ab_pairs, pair_corr = _evaluate(sae, gt, settings, seed)
            metrics["train_seconds"] = train_s
            step = getattr(sae, "ortho_step", None)
            runs.append(RunResult(seed=seed, architecture=arch, metrics=metrics, sae_class=type(sae).__name__,
                                  ortho_step=None if step is None else int(step), k=k,
                                  absorption_pairs=ab_pairs, sae=sae, pair_corr=pair_corr))
        outer.close()
    finally:
        torch.set_num_threads(old_threads)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sae_lens": _version("sae-lens"),
        "sae_lens_ortho": _version("sae-lens-ortho"),
        "threads": str(settings.threads or torch.get_num_threads()),
        "platform": platform.platform(),
    }
    return DemoResults(settings, runs, gt_diags, gt.groups, time.perf_counter() - start, env,
                       hierarchy=gt.hierarchy, gt_pair_corr=gt_pair_corr)


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover
        return "unknown"


# ------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------


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
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    fmt_row = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
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
    counts = (f"{archs[-1]} {word} on {favourable}/{n} seed(s)" + (f", {other} on {unfavourable}" if unfavourable else "")
              + (f", tied on {tied}" if tied else ""))
    head = (f"- **{label}**: {archs[0]} {_fmt(*_mean_std(a), len(a))}, {archs[-1]} {_fmt(*_mean_std(b), len(b))}; "
            f"paired Δ {mean:+.3f}" + (f" ± {sd:.3f}" if n > 1 else "") + f" ({counts}). ")
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
    panels = [("mcc", "MCC"), ("f1", "F1"), ("explained_variance", "explained variance"),
              ("absorption_score", "absorption score (lower = less absorption)")]
    panels = [(k, t) for k, t in panels if any(k in r.metrics for r in results.runs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    true_l0 = statistics.fmean(g["true_l0"] for g in results.ground_truth) if results.ground_truth else None
    ks = sorted({r.k for r in results.runs})
    jitter = {a: (i - (len(archs) - 1) / 2) * 0.08 for i, a in enumerate(archs)}
    for ax, (key, title) in zip(axes[0], panels):
        for a in archs:
            rs = [r for r in results.runs if r.architecture == a and key in r.metrics]
            ax.scatter([r.metrics["sae_l0"] + jitter[a] for r in rs], [r.metrics[key] for r in rs], s=22,
                       color=colors[a], alpha=0.75, label=a)
            means = [(statistics.fmean(r.metrics["sae_l0"] for r in rs if r.k == k),
                      statistics.fmean(r.metrics[key] for r in rs if r.k == k)) for k in ks if any(r.k == k for r in rs)]
            if len(means) > 1:
                ax.plot([m[0] + jitter[a] for m in means], [m[1] for m in means], color=colors[a], lw=1, alpha=0.6)
        if true_l0 is not None:
            ax.axvline(true_l0, color="grey", ls="--", lw=1, label=f"true L0 ≈ {true_l0:.2f}")
        ax.set_xlabel("L0 (SAE, = k for TopK)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{' vs '.join(archs)}: one point per seed and k (table: k = {s.k}, {len(s.seeds)} seeds)", fontsize=10)
    fig.tight_layout()
    path = out / PLOT_FILES[0]
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    # 2. latent pair correlations C_ij over all co-firing pairs of the held-out batch, pooled over seeds (per SAE).
    from .pairs import n_selected_pairs

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
        ax1.hist(pooled, bins=bins, weights=weights, histtype="step", lw=1.6, color=color,
                 label=f"{name} ({len(pooled) / len(corrs):.0f} co-firing pairs)")
        ranked = torch.stack([torch.nn.functional.pad(c.sort(descending=True).values[: 3 * max(m, 1)],
                                                      (0, max(0, 3 * max(m, 1) - min(len(c), 3 * max(m, 1)))))
                              for c in corrs]).mean(0)
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
    lines = ["| parent → child | " + " | ".join(f"{a} score (absorbed)" for a in archs) + " |",
             "|---|" + "---:|" * len(archs)]
    for p, c in keys:
        cells = []
        for a in archs:
            ps = [q for r in results.main_runs if r.architecture == a for q in r.absorption_pairs
                  if q["parent"] == p and q["child"] == c]
            cells.append(f"{statistics.fmean(q['score'] for q in ps):.2f} ({sum(q['absorbed'] for q in ps)}/{len(ps)})"
                         if ps else "")
        lines.append(f"| {p} → {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    report = f"""# sae-lens-ortho demo: {' vs '.join(s.architectures)} on SAELens synthetic data

Command: `{' '.join(['python -m sae_lens_ortho.demo', *_cli_args(s)])}`
Wall time: {results.wall_seconds:.1f} s ({len(results.runs)} SAEs: {len(results.main_runs)} at k = {s.k} over {len(s.seeds)} seed(s)
for the table, {n_sweep} at k ∈ {list(s.extra_ks)} for the L0 plot).
Environment: {', '.join(f'{k} {v}' for k, v in results.environment.items())}.

Ground truth (`data_seed` {s.data_seed}): {s.n_features} features in d_in = {s.d_in}, firing probabilities linear
{s.firing_prob_max} → {s.firing_prob_min}, magnitudes {s.magnitude_mean} ± {s.magnitude_std}.
Correlated groups: {s.n_groups} groups of {s.group_size} features whose latent Gaussians have correlation
{s.group_correlation} (Gaussian copula): {', '.join(map(str, results.groups)) or 'none'}.
Hierarchy (SAELens `HierarchyNode` / `hierarchy_modifier`; a child fires only when its parent fires, with
P(child | parent) = {s.child_given_parent}): {hierarchy_txt}. All other features are independent.
SAEs: d_sae = {s.d_sae}, k = {s.k}, {s.training_samples:,} samples ({s.training_steps} steps of {s.batch_size}), Adam lr {s.lr},
`topk_ortho`: ortho_coefficient = {s.ortho_coefficient}, ortho_pair_fraction = {s.ortho_pair_fraction}, ortho_weighting = {s.ortho_weighting},
ortho_warm_up_steps = {s.ortho_warm_up_steps}, ortho_decoder_coefficient = {s.ortho_decoder_coefficient}. All SAEs
trained with SAELens `train_toy_sae` (the real `SAETrainer`); for each seed every architecture starts from the same
initial weights and sees the same training batches. Metrics on held-out samples ({s.eval_samples:,} for the SAELens eval,
{s.diag_samples:,} for absorption and the pair diagnostics, top-p pairs with p = {s.diag_p}).

## Results{f' (mean ± std over {len(s.seeds)} seeds; Δ is paired per seed)' if len(s.seeds) > 1 else ''}

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

{chr(10).join(ortho_lines) if ortho_lines else '(no ortho architecture in this run)'}

## Settings

| field | value | meaning |
|---|---|---|
{chr(10).join(settings_lines)}
"""
    path = out / "report.md"
    path.write_text(report)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=2, default=str))
    return path


def _field_docs() -> dict[str, str]:
    """Field docstrings of DemoSettings (the string literal after each field), read from the source."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(DemoSettings))
    except (OSError, TypeError):  # pragma: no cover
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split()).replace("|", "\\|")
    return docs


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------

# Element type of each tuple field (a default may be empty, so it cannot be read off the default).
_TUPLE_TYPES: dict[str, type] = {"seeds": int, "architectures": str, "sweep_ks": int, "duplicate_thresholds": float}


def _flag(name: str) -> str:
    return "--samples" if name == "training_samples" else "--" + name.replace("_", "-")


def _cli_args(s: DemoSettings) -> list[str]:
    """The flags that reproduce ``s`` from the defaults."""
    d = DemoSettings()
    args: list[str] = []
    for f in fields(DemoSettings):
        v, dv = getattr(s, f.name), getattr(d, f.name)
        if v == dv or f.name in ("progress",):
            continue
        if isinstance(v, tuple):
            args += [_flag(f.name), *[str(x) for x in v]]
        elif isinstance(v, bool):
            args.append(_flag(f.name) if v else "--no-" + _flag(f.name)[2:])
        else:
            args += [_flag(f.name), str(v)]
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sae_lens_ortho.demo",
        description="Train SAELens topk and topk_ortho on the same synthetic ground truth and compare them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output folder for report.md, results.json and the plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    docs = _field_docs()
    defaults = DemoSettings()
    for f in fields(DemoSettings):
        if f.name == "progress":
            continue
        flag = _flag(f.name)
        default = getattr(defaults, f.name)
        help_ = docs.get(f.name, "").replace("%", "%%")
        if isinstance(default, tuple):
            nargs = "*" if f.name == "sweep_ks" else "+"
            p.add_argument(flag, dest=f.name, type=_TUPLE_TYPES.get(f.name, str), nargs=nargs, default=default, help=help_)
        elif default is None:  # optional float (diag_pair_fraction)
            p.add_argument(flag, dest=f.name, type=float, default=None, help=help_)
        elif isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=default, help=help_)
    return p


def main(argv: Sequence[str] | None = None) -> DemoResults:
    args = _parser().parse_args(argv)
    kwargs = {f.name: getattr(args, f.name) for f in fields(DemoSettings) if f.name != "progress"}
    settings = DemoSettings(**kwargs, progress=not args.quiet)
    results = run_demo(settings)
    path = write_report(results, args.out)
    print()
    print(format_table(results))
    print()
    print("\n".join(summary_lines(results)))
    print()
    for r in results.runs:
        if r.ortho_step is not None and r.ortho_step != settings.training_steps:
            print(f"warning: {r.architecture} seed {r.seed} k {r.k}: ortho_step={r.ortho_step} "
                  f"!= training steps {settings.training_steps}")
    print(f"wall time {results.wall_seconds:.1f} s; report: {path}")
    return results


if __name__ == "__main__":
    main()
