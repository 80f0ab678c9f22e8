"""Embedded demo: SAELens ``topk`` vs ``topk_ortho`` at matched k on the same synthetic ground truth, over seeds.

Run ``python -m sae_lens_ortho.evals.synthetic.run --out toy_out``. Offline, CPU, a few minutes. (``make demo`` is
SynthSAEBench ``mini`` now: :mod:`sae_lens_ortho.evals.synthetic.synthbench_cli`.)

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

This module holds the ground truth, training and evaluation, :func:`run_demo` and the command line, and
re-exports the rest: :class:`DemoSettings` and ``METRICS`` live in :mod:`sae_lens_ortho.evals.synthetic.settings`,
:func:`absorption_scores` in :mod:`sae_lens_ortho.evals.synthetic.absorption`, the rendering in
:mod:`sae_lens_ortho.evals.synthetic.report`.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch
from tqdm.auto import tqdm

from sae_lens_ortho.evals.synthetic.absorption import AbsorptionResult, absorption_scores
from sae_lens_ortho.evals.synthetic.report import (
    HEADLINE_METRICS,
    PLOT_FILES,
    format_table,
    summary_lines,
    write_plots,
    write_report,
)
from sae_lens_ortho.evals.synthetic.results import DemoResults, GroundTruth, RunResult
from sae_lens_ortho.evals.synthetic.settings import METRICS, DemoSettings, _field_docs, _flag

__all__ = [
    "HEADLINE_METRICS",
    "METRICS",
    "PLOT_FILES",
    "AbsorptionResult",
    "DemoResults",
    "DemoSettings",
    "GroundTruth",
    "RunResult",
    "absorption_scores",
    "build_ground_truth",
    "build_sae",
    "evaluate_sae",
    "format_table",
    "ground_truth_diagnostics",
    "main",
    "run_demo",
    "summary_lines",
    "write_plots",
    "write_report",
]


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
    from sae_lens.registry import get_sae_training_class

    import sae_lens_ortho  # noqa: F401  (registers topk_ortho)

    sae_cls, cfg_cls = get_sae_training_class(architecture)
    kwargs: dict[str, Any] = {"d_in": settings.d_in, "d_sae": settings.d_sae, "device": settings.device}
    names = {f.name for f in fields(cfg_cls)}
    if "k" in names:
        kwargs["k"] = settings.k if k is None else k
    if "ortho_coefficient" in names and not settings.ortho_defaults:
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
    from sae_lens_ortho.core.pairs import top_correlated_pairs

    return top_correlated_pairs(acts, 1.0).corr.cpu()


@torch.no_grad()
def _pair_diagnostics(acts: torch.Tensor, p: float) -> dict[str, float]:
    from sae_lens_ortho.core.diagnostics import mean_pair_cosine
    from sae_lens_ortho.core.pairs import top_correlated_pairs

    sel = top_correlated_pairs(acts, p)
    return {
        "top_pair_corr": float(sel.corr.mean()) if sel.corr.numel() else 0.0,
        "top_pair_corr_max": float(sel.corr.max()) if sel.corr.numel() else 0.0,
        "mean_pair_cosine": float(mean_pair_cosine(acts)),
    }


@torch.no_grad()
def _decoder_diagnostics(W_dec: torch.Tensor, thresholds: Sequence[float]) -> dict[str, float]:
    from sae_lens_ortho.core.diagnostics import decoder_max_cosine

    mc = decoder_max_cosine(W_dec)
    out = {"decoder_max_cos_max": float(mc.max()), "decoder_max_cos_mean": float(mc.mean())}
    for t in thresholds:
        out[f"frac_dup_{t:g}"] = float((mc > t).float().mean())
    return out


@torch.no_grad()
def _feature_recovery(W_dec: torch.Tensor, gt: GroundTruth) -> dict[str, float]:
    """Per true feature, the best |cos| with any decoder row, averaged over grouped / hierarchy / independent features."""
    from sae_lens.util import cosine_similarities

    best = (
        cosine_similarities(W_dec.detach().float(), gt.feature_dict.feature_vectors.detach().float())
        .abs()
        .max(0)
        .values
    )
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


def _absorption(
    latents: torch.Tensor, W_dec: torch.Tensor, feats: torch.Tensor, gt: GroundTruth, settings: DemoSettings
) -> AbsorptionResult:
    return absorption_scores(
        latents,
        W_dec,
        feats,
        gt.feature_dict.feature_vectors,
        gt.hierarchy,
        drop_threshold=settings.absorption_drop_threshold,
        mix_threshold=settings.absorption_mix_threshold,
    )


@torch.no_grad()
def ground_truth_diagnostics(gt: GroundTruth, settings: DemoSettings, seed: int) -> dict[str, float]:
    """The diagnostics of the true features (what a perfect SAE would score)."""
    return _ground_truth_diagnostics(gt, settings, seed)[0]


@torch.no_grad()
def _ground_truth_diagnostics(
    gt: GroundTruth, settings: DemoSettings, seed: int
) -> tuple[dict[str, float], torch.Tensor]:
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
def _evaluate(
    sae: Any, gt: GroundTruth, settings: DemoSettings, seed: int
) -> tuple[dict[str, float], list[dict[str, Any]], torch.Tensor]:
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_eval_seed(seed))
        ev = eval_sae_on_synthetic_data(
            sae,
            gt.feature_dict,
            gt.generator,
            num_samples=settings.eval_samples,
            batch_size=min(settings.eval_samples, 20_000),
        )
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
            runs.append(
                RunResult(
                    seed=seed,
                    architecture=arch,
                    metrics=metrics,
                    sae_class=type(sae).__name__,
                    ortho_step=None if step is None else int(step),
                    k=k,
                    absorption_pairs=ab_pairs,
                    sae=sae,
                    pair_corr=pair_corr,
                )
            )
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
    return DemoResults(
        settings,
        runs,
        gt_diags,
        gt.groups,
        time.perf_counter() - start,
        env,
        hierarchy=gt.hierarchy,
        gt_pair_corr=gt_pair_corr,
    )


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover
        return "unknown"


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------

# Element type of each tuple field (a default may be empty, so it cannot be read off the default).
_TUPLE_TYPES: dict[str, type] = {"seeds": int, "architectures": str, "sweep_ks": int, "duplicate_thresholds": float}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sae_lens_ortho.evals.synthetic.run",
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
            p.add_argument(
                flag, dest=f.name, type=_TUPLE_TYPES.get(f.name, str), nargs=nargs, default=default, help=help_
            )
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
            print(
                f"warning: {r.architecture} seed {r.seed} k {r.k}: ortho_step={r.ortho_step} "
                f"!= training steps {settings.training_steps}"
            )
    print(f"wall time {results.wall_seconds:.1f} s; report: {path}")
    return results


if __name__ == "__main__":
    main()
