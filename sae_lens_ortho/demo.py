"""Embedded demo: SAELens ``topk`` vs ``topk_ortho`` at matched k on the same synthetic ground truth.

Run ``python -m sae_lens_ortho.demo --out demo_out`` (``make demo``). Offline, CPU, a couple of minutes.

What it does, per seed:

1. Builds one ground truth with ``sae_lens.synthetic``: a ``FeatureDictionary`` of ``n_features`` unit vectors
   in ``d_in`` dimensions and an ``ActivationGenerator`` whose Gaussian-copula correlation matrix makes small
   groups of features fire together (latent correlation ``group_correlation`` inside a group, 0 elsewhere).
2. Trains every architecture in ``architectures`` with SAELens's own ``train_toy_sae`` (the real
   ``SAETrainer``: coefficient schedulers, ``training_forward_pass``, gradient clipping, TopK aux loss).
   Before each run the torch RNG is reset to the same seed, so the two SAEs start from identical weights and
   see the identical stream of training batches: the only difference is the ortho loss.
3. Evaluates each with ``eval_sae_on_synthetic_data`` (MCC, uniqueness, precision/recall/F1, explained
   variance, L0, dead latents, shrinkage) and this package's diagnostics on a held-out batch (mean correlation
   of the top-p most correlated latent pairs, mean pair cosine, decoder max cosine, near-duplicate decoders).
   The same diagnostics on the ground truth itself are reported as a reference column.

``run_demo(settings)`` returns a :class:`DemoResults`; ``write_report`` / ``format_table`` render it. Adding a
metric means adding a key to the dict built in :func:`evaluate_sae` (and, optionally, to ``METRICS`` for its
label / valid range); seeds are a list in :class:`DemoSettings` and the table shows mean ± std across them.
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
    "METRICS",
    "build_ground_truth",
    "build_sae",
    "evaluate_sae",
    "ground_truth_diagnostics",
    "run_demo",
    "format_table",
    "write_report",
    "main",
]


@dataclass
class DemoSettings:
    """Everything that defines a demo run. Defaults are the embedded default demo (< 3 min on 2 CPU cores)."""

    seeds: tuple[int, ...] = (0,)
    """Training seeds. Each seed re-seeds SAE initialisation, the training stream and the held-out batches;
    the table shows mean ± std over seeds. The ground truth depends only on ``data_seed``."""

    architectures: tuple[str, ...] = ("topk", "topk_ortho")
    """Registered SAELens training architectures to compare (all trained at the same ``k``)."""

    # --- ground truth ---------------------------------------------------------------------------------
    data_seed: int = 1234
    """Seed of the ground truth (feature directions, which features are grouped). Fixed across ``seeds``."""

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
    """Features per correlated group (n_groups * group_size <= n_features; the rest are independent)."""

    group_correlation: float = 0.9
    """Correlation of the latent Gaussians inside a group (Gaussian copula), in [0, 1)."""

    magnitude_mean: float = 1.0
    """Mean firing magnitude of every feature."""

    magnitude_std: float = 0.2
    """Standard deviation of the firing magnitude (folded at 0 by the generator's ReLU)."""

    # --- SAE and training -----------------------------------------------------------------------------
    d_sae: int = 64
    """SAE width (latents)."""

    k: int = 6
    """TopK k, the same for every architecture."""

    training_samples: int = 3_000_000
    """Training samples per SAE (steps = ceil(training_samples / batch_size))."""

    batch_size: int = 1024
    """Training batch size."""

    lr: float = 3e-3
    """Adam learning rate (constant, then linear decay over the last ``lr_decay_steps`` steps)."""

    lr_decay_steps: int = 1000
    """Steps of linear learning-rate decay to 0 at the end of training (``train_toy_sae``'s argument)."""

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
    """Held-out samples for the pair / decoder diagnostics."""

    diag_pair_fraction: float | None = None
    """p of the top-pair diagnostic, the same for every model (None: ``ortho_pair_fraction``)."""

    duplicate_thresholds: tuple[float, ...] = (0.8, 0.9)
    """A latent has a near-duplicate decoder when max_{j != i} |cos(d_i, d_j)| exceeds the threshold."""

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
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.n_groups * self.group_size > self.n_features:
            raise ValueError("n_groups * group_size must be <= n_features")
        if not 0 <= self.group_correlation < 1:
            raise ValueError("group_correlation must be in [0, 1)")
        if not 0 < self.firing_prob_min <= self.firing_prob_max < 1:
            raise ValueError("need 0 < firing_prob_min <= firing_prob_max < 1")
        if not 1 <= self.k <= self.d_sae:
            raise ValueError("need 1 <= k <= d_sae")
        if self.training_samples < self.batch_size:
            raise ValueError("training_samples must be >= batch_size")

    @property
    def diag_p(self) -> float:
        return self.ortho_pair_fraction if self.diag_pair_fraction is None else self.diag_pair_fraction

    @property
    def training_steps(self) -> int:
        return math.ceil(self.training_samples / self.batch_size)

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
    "best_cos_independent": ("best decoder |cos| per true feature, independent", 0.0, 1.0, True),
    "explained_variance": ("explained variance", None, 1.0, True),
    "shrinkage": ("shrinkage |x_hat|/|x|", 0.0, None, None),
    "sae_l0": ("L0 (SAE)", 0.0, None, None),
    "true_l0": ("L0 (ground truth)", 0.0, None, None),
    "dead_latents": ("dead latents", 0.0, None, False),
    "top_pair_corr": ("mean corr of top-p latent pairs", 0.0, 1.0, None),
    "top_pair_corr_max": ("max latent pair corr", 0.0, 1.0, None),
    "mean_pair_cosine": ("mean latent pair cosine (all pairs)", 0.0, 1.0, None),
    "decoder_max_cos_max": ("decoder max |cos|, max over latents", 0.0, 1.0, False),
    "decoder_max_cos_mean": ("decoder max |cos|, mean over latents", 0.0, 1.0, False),
    "frac_dup_0.8": ("frac latents with a decoder dup (|cos|>0.8)", 0.0, 1.0, False),
    "frac_dup_0.9": ("frac latents with a decoder dup (|cos|>0.9)", 0.0, 1.0, False),
    "train_seconds": ("train time (s)", 0.0, None, None),
}


@dataclass
class GroundTruth:
    """The synthetic data every architecture of one demo is trained and evaluated on."""

    feature_dict: Any
    """``sae_lens.synthetic.FeatureDictionary`` (n_features x d_in)."""
    generator: Any
    """``sae_lens.synthetic.ActivationGenerator`` with the grouped correlation matrix."""
    groups: list[list[int]]
    """Feature indices of each correlated group."""
    correlation_matrix: torch.Tensor
    """The latent Gaussian correlation matrix (given to the generator in its exact low-rank + diagonal form)."""


@dataclass
class RunResult:
    """One trained SAE: its metrics and (in memory only) the SAE itself."""

    seed: int
    architecture: str
    metrics: dict[str, float]
    sae_class: str
    ortho_step: int | None
    """The SAE's ``ortho_step`` buffer after training (None for architectures without one)."""
    sae: Any = field(default=None, repr=False, compare=False)


@dataclass
class DemoResults:
    settings: DemoSettings
    runs: list[RunResult]
    ground_truth: list[dict[str, float]]
    """Per seed, the pair / decoder diagnostics of the ground truth itself (reference column)."""
    groups: list[list[int]]
    """Feature indices of each correlated ground-truth group."""
    wall_seconds: float
    environment: dict[str, str]

    def values(self, architecture: str, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if r.architecture == architecture and metric in r.metrics]

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """{architecture (and "ground truth"): {metric: (mean, std over seeds)}}."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for arch in self.settings.architectures:
            out[arch] = {}
            for m in _metric_keys(self):
                v = self.values(arch, m)
                if v:
                    out[arch][m] = (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
        gt: dict[str, tuple[float, float]] = {}
        for m in _metric_keys(self):
            v = [g[m] for g in self.ground_truth if m in g]
            if v:
                gt[m] = (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
        out["ground truth"] = gt
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "runs": [{f.name: getattr(r, f.name) for f in fields(r) if f.name != "sae"} for r in self.runs],
            "ground_truth": self.ground_truth,
            "groups": self.groups,
            "summary": {a: {m: list(v) for m, v in s.items()} for a, s in self.summary().items()},
            "wall_seconds": self.wall_seconds,
            "environment": self.environment,
        }


def _metric_keys(results: DemoResults) -> list[str]:
    seen: dict[str, None] = {k: None for k in METRICS}
    for r in results.runs:
        for k in r.metrics:
            seen.setdefault(k, None)
    present = {k for r in results.runs for k in r.metrics} | {k for g in results.ground_truth for k in g}
    return [k for k in seen if k in present]


# ------------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------------


def build_ground_truth(settings: DemoSettings) -> GroundTruth:
    """Feature dictionary + correlated activation generator, determined by ``settings.data_seed`` alone."""
    from sae_lens.synthetic import (
        ActivationGenerator,
        FeatureDictionary,
        LowRankCorrelationMatrix,
        linear_firing_probabilities,
    )

    s = settings
    gen = torch.Generator().manual_seed(s.data_seed)
    perm = torch.randperm(s.n_features, generator=gen).tolist()
    groups = [sorted(perm[g * s.group_size : (g + 1) * s.group_size]) for g in range(s.n_groups)]
    # Equicorrelated groups are exactly a low-rank-plus-diagonal correlation: z_i = sqrt(rho) g_group + sqrt(1-rho) e_i.
    # SAELens samples that form with one small matmul (a full matrix goes through MultivariateNormal, ~50x slower).
    factor = torch.zeros(s.n_features, max(s.n_groups, 1))
    diag = torch.ones(s.n_features)
    for g, grp in enumerate(groups):
        factor[grp, g] = math.sqrt(s.group_correlation)
        diag[grp] = 1.0 - s.group_correlation
    corr = factor @ factor.T + torch.diag(diag)
    probs = linear_firing_probabilities(s.n_features, max_prob=s.firing_prob_max, min_prob=s.firing_prob_min)
    # The orthogonalising initializer runs a short optimisation from torch's global RNG state: seed it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.data_seed)
        feature_dict = FeatureDictionary(s.n_features, s.d_in, device=s.device, seed=s.data_seed)
    generator = ActivationGenerator(
        s.n_features,
        firing_probabilities=probs,
        std_firing_magnitudes=s.magnitude_std,
        mean_firing_magnitudes=s.magnitude_mean,
        correlation_matrix=LowRankCorrelationMatrix(factor.to(s.device), diag.to(s.device)),
        device=s.device,
    )
    return GroundTruth(feature_dict, generator, groups, corr)


def build_sae(architecture: str, settings: DemoSettings) -> Any:
    """A fresh training SAE of a registered architecture, with the demo's sizes and ortho fields."""
    import sae_lens_ortho  # noqa: F401  (registers topk_ortho)
    from sae_lens.registry import get_sae_training_class

    sae_cls, cfg_cls = get_sae_training_class(architecture)
    kwargs: dict[str, Any] = {"d_in": settings.d_in, "d_sae": settings.d_sae, "device": settings.device}
    names = {f.name for f in fields(cfg_cls)}
    if "k" in names:
        kwargs["k"] = settings.k
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
    """Per true feature, the best |cos| with any decoder row, averaged over grouped and over independent features."""
    from sae_lens.util import cosine_similarities

    best = cosine_similarities(W_dec.detach().float(), gt.feature_dict.feature_vectors.detach().float()).abs().max(0).values
    grouped = torch.zeros_like(best, dtype=torch.bool)
    for grp in gt.groups:
        grouped[grp] = True
    out = {}
    if grouped.any():
        out["best_cos_grouped"] = float(best[grouped].mean())
    if (~grouped).any():
        out["best_cos_independent"] = float(best[~grouped].mean())
    return out


@torch.no_grad()
def _heldout_feature_acts(gt: GroundTruth, n: int, seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return gt.generator.sample(n)


@torch.no_grad()
def ground_truth_diagnostics(gt: GroundTruth, settings: DemoSettings, seed: int) -> dict[str, float]:
    """The pair / decoder diagnostics of the true features (what a perfect SAE would score)."""
    acts = _heldout_feature_acts(gt, settings.diag_samples, _diag_seed(seed))
    out = _pair_diagnostics(acts, settings.diag_p)
    out.update(_decoder_diagnostics(gt.feature_dict.feature_vectors, settings.duplicate_thresholds))
    out["true_l0"] = float((acts != 0).float().sum(1).mean())
    return out


def _eval_seed(seed: int) -> int:
    return 1_000_003 + seed


def _diag_seed(seed: int) -> int:
    return 2_000_003 + seed


@torch.no_grad()
def evaluate_sae(sae: Any, gt: GroundTruth, settings: DemoSettings, seed: int) -> dict[str, float]:
    """SAELens's synthetic-data eval plus this package's diagnostics, on held-out batches (seeded by ``seed``)."""
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
    out.update(_pair_diagnostics(latents, settings.diag_p))
    out.update(_decoder_diagnostics(sae.W_dec, settings.duplicate_thresholds))
    return {k: float(v) for k, v in out.items()}


def _train(sae: Any, gt: GroundTruth, settings: DemoSettings) -> None:
    from sae_lens.synthetic import train_toy_sae

    kwargs: dict[str, Any] = dict(
        training_samples=settings.training_samples,
        batch_size=settings.batch_size,
        lr=settings.lr,
        lr_decay_steps=settings.lr_decay_steps,
        device=settings.device,
    )
    if settings.progress:
        train_toy_sae(sae, gt.feature_dict, gt.generator, **kwargs)
    else:  # SAETrainer always opens a tqdm bar; silence it
        import sae_lens.training.sae_trainer as trainer_mod

        orig = trainer_mod.tqdm
        trainer_mod.tqdm = lambda *a, **kw: orig(*a, **{**kw, "disable": True})  # type: ignore[assignment]
        try:
            train_toy_sae(sae, gt.feature_dict, gt.generator, **kwargs)
        finally:
            trainer_mod.tqdm = orig


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
        jobs = [(seed, arch) for seed in settings.seeds for arch in settings.architectures]
        outer = tqdm(jobs, desc="demo", unit="sae", disable=not settings.progress, position=0)
        for seed, arch in outer:
            outer.set_postfix_str(f"seed={seed} {arch}")
            # Same seed before every architecture: identical initial weights and identical training batches.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                sae = build_sae(arch, settings)
                t0 = time.perf_counter()
                _train(sae, gt, settings)
                train_s = time.perf_counter() - t0
            metrics = evaluate_sae(sae, gt, settings, seed)
            metrics["train_seconds"] = train_s
            step = getattr(sae, "ortho_step", None)
            runs.append(RunResult(seed, arch, metrics, type(sae).__name__, None if step is None else int(step), sae))
            if arch == settings.architectures[-1]:
                gt_diags.append(ground_truth_diagnostics(gt, settings, seed))
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
    return DemoResults(settings, runs, gt_diags, gt.groups, time.perf_counter() - start, env)


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
            if key in summ[archs[0]] and key in summ[archs[-1]]:
                diffs = [b - a for a, b in zip(results.values(archs[0], key), results.values(archs[-1], key))]
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


def write_report(results: DemoResults, out: Path | str) -> Path:
    """Write ``report.md`` (table + exact settings) and ``results.json`` into ``out``; return the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = results.settings
    settings_lines = []
    for f in fields(DemoSettings):
        doc = _field_docs().get(f.name, "")
        settings_lines.append(f"| `{f.name}` | `{getattr(s, f.name)!r}` | {doc} |")
    ortho_runs = [r for r in results.runs if r.ortho_step is not None]
    ortho_lines = [
        f"- `{r.architecture}` seed {r.seed}: SAE class `{r.sae_class}`, `ortho_step` = {r.ortho_step} "
        f"(training steps = {s.training_steps})"
        for r in ortho_runs
    ]
    report = f"""# sae-lens-ortho demo: {' vs '.join(s.architectures)} on SAELens synthetic data

Command: `{' '.join(['python -m sae_lens_ortho.demo', *_cli_args(s)])}`
Wall time: {results.wall_seconds:.1f} s ({len(results.runs)} SAEs, {len(s.seeds)} seed(s)).
Environment: {', '.join(f'{k} {v}' for k, v in results.environment.items())}.

Ground truth: {s.n_features} features in d_in = {s.d_in}, firing probabilities linear {s.firing_prob_max} → {s.firing_prob_min},
magnitudes {s.magnitude_mean} ± {s.magnitude_std}, {s.n_groups} groups of {s.group_size} features whose latent Gaussians have
correlation {s.group_correlation} (Gaussian copula; all other pairs independent). Groups: {', '.join(map(str, results.groups))}.
SAEs: d_sae = {s.d_sae}, k = {s.k}, {s.training_samples:,} samples ({s.training_steps} steps of {s.batch_size}), Adam lr {s.lr},
`topk_ortho`: ortho_coefficient = {s.ortho_coefficient}, ortho_pair_fraction = {s.ortho_pair_fraction}, ortho_weighting = {s.ortho_weighting},
ortho_warm_up_steps = {s.ortho_warm_up_steps}, ortho_decoder_coefficient = {s.ortho_decoder_coefficient}. All SAEs
trained with SAELens `train_toy_sae` (the real `SAETrainer`); each architecture starts from the same seed, hence the same initial
weights and the same training batches. Metrics on held-out samples ({s.eval_samples:,} for the SAELens eval,
{s.diag_samples:,} for the pair diagnostics, top-p pairs with p = {s.diag_p}).

## Results{' (mean ± std over seeds)' if len(s.seeds) > 1 else ''}

{format_table(results, markdown=True)}

Reading the table: MCC / uniqueness / F1 / explained variance measure recovery of the ground truth (higher is better).
The pair rows are correlations of the SAE's *latent activation columns*; the ground-truth column gives the same
number for the true features, i.e. what a perfect SAE would score (the true features are correlated by design, so
driving the latent correlations far below the truth is not a goal in itself). Decoder rows: per latent, the largest
|cos| to any other decoder row.

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

def _cli_args(s: DemoSettings) -> list[str]:
    """The flags that reproduce ``s`` from the defaults."""
    d = DemoSettings()
    args: list[str] = []
    for f in fields(DemoSettings):
        v, dv = getattr(s, f.name), getattr(d, f.name)
        if v == dv or f.name in ("progress",):
            continue
        flag = "--samples" if f.name == "training_samples" else "--" + f.name.replace("_", "-")
        if isinstance(v, tuple):
            args += [flag, *[str(x) for x in v]]
        else:
            args += [flag, str(v)]
    return args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sae_lens_ortho.demo",
        description="Train SAELens topk and topk_ortho on the same synthetic ground truth and compare them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output folder for report.md and results.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    docs = _field_docs()
    defaults = DemoSettings()
    for f in fields(DemoSettings):
        if f.name == "progress":
            continue
        flag = "--samples" if f.name == "training_samples" else "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_ = docs.get(f.name, "").replace("%", "%%")
        if isinstance(default, tuple):
            typ = type(default[0]) if default else str
            p.add_argument(flag, dest=f.name, type=typ, nargs="+", default=default, help=help_)
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
    for r in results.runs:
        if r.ortho_step is not None:
            print(f"{r.architecture} seed {r.seed}: {r.sae_class}, ortho_step={r.ortho_step} "
                  f"(training steps {settings.training_steps})")
    print(f"wall time {results.wall_seconds:.1f} s; report: {path}")
    return results


if __name__ == "__main__":
    main()
