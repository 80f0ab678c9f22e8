"""The embedded demo: the absorption metric's known answers, and a tiny end-to-end run that writes a sane report,
results.json and PNG plots, and really trains with the ortho loss."""

from __future__ import annotations

import json
import math
import re
import struct

import pytest
import torch

import sae_lens_ortho
from sae_lens_ortho.evals.synthetic import run as demo
from sae_lens_ortho.evals.synthetic.run import (
    METRICS,
    PLOT_FILES,
    DemoSettings,
    absorption_scores,
    build_ground_truth,
    run_demo,
)
from sae_lens_ortho.evals.synthetic.settings import _cli_args

# A few seconds on one CPU thread: 16 features in 8 dims (2 correlated pairs, 2 parents with 2 children each),
# 24 steps of 256.
TINY = dict(
    seeds=(0,),
    n_features=16,
    d_in=8,
    d_sae=16,
    k=3,
    n_groups=3,
    group_size=2,
    n_parents=2,
    children_per_parent=2,
    training_samples=24 * 256,
    batch_size=256,
    lr_decay_steps=0,
    sweep_ks=(),
    eval_samples=2_000,
    diag_samples=4_000,
    ortho_pair_fraction=0.05,
    plots=False,
    progress=False,
)
TINY_ARGV = [
    "--n-features", "16", "--d-in", "8", "--d-sae", "16", "--k", "3", "--n-groups", "3", "--group-size", "2",
    "--n-parents", "2", "--children-per-parent", "2", "--samples", str(24 * 256), "--batch-size", "256",
    "--lr-decay-steps", "0", "--sweep-ks", "2", "--eval-samples", "2000", "--diag-samples", "4000",
    "--ortho-pair-fraction", "0.05", "--seeds", "0", "1", "--quiet",
]  # fmt: skip

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------------
# Absorption: known answers
# ------------------------------------------------------------------------------------------------------


def _orthonormal_truth(children_per_parent: int = 2):
    """A small ground truth (12 features in 16 dims, 2 parents) whose feature directions are exactly orthonormal,
    so a hand-built SAE with encoder = decoder = the true directions reads every feature exactly."""
    s = DemoSettings(
        n_features=12,
        d_in=16,
        n_groups=1,
        group_size=2,
        n_parents=2,
        children_per_parent=children_per_parent,
        progress=False,
    )
    gt = build_ground_truth(s)
    q, _ = torch.linalg.qr(torch.randn(16, 12, generator=torch.Generator().manual_seed(0)))
    gt.feature_dict.feature_vectors.data = q.T.contiguous()
    return gt


def _hand_sae(gt, *, parent_off_by_child: float = 0.0, child_carries_parent: float = 0.0):
    """A SAELens StandardSAE (ReLU) with one latent per true feature: W_enc = F^T, W_dec = F, biases 0, then

    * the parent latent's encoder gets ``- parent_off_by_child * f_C`` for each child (5.0: silent when a child
      fires; r < 1: loses r of its activation per firing child), and
    * each child's decoder row becomes ``f_C + child_carries_parent * f_P``.
    """
    from sae_lens.saes import StandardSAE, StandardSAEConfig

    F = gt.feature_dict.feature_vectors.detach().clone()
    n, d = F.shape
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=n, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(F.T)
        sae.W_dec.copy_(F)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        for parent, children in gt.hierarchy:
            for child in children:
                sae.W_enc[:, parent] -= parent_off_by_child * F[child]
                sae.W_dec[child] = F[child] + child_carries_parent * F[parent]
    return sae


def _score(sae, gt, n: int = 20_000, seed: int = 7):
    feats = demo._heldout_feature_acts(gt, n, seed)
    latents = sae.encode(gt.feature_dict(feats))
    return absorption_scores(latents, sae.W_dec, feats, gt.feature_dict.feature_vectors, gt.hierarchy)


def test_hierarchy_in_the_ground_truth():
    """SAELens's hierarchy_modifier is applied: a child never fires without its parent, P(child | parent) as set."""
    s = DemoSettings(**{**TINY, "child_given_parent": 0.4})
    gt = build_ground_truth(s)
    assert len(gt.hierarchy) == 2 and all(len(ch) == 2 for _, ch in gt.hierarchy)
    members = [f for p, ch in gt.hierarchy for f in (p, *ch)] + [f for g in gt.groups for f in g]
    assert len(members) == len(set(members))  # groups and hierarchy are disjoint
    on = demo._heldout_feature_acts(gt, 50_000, 3) > 0
    for parent, children in gt.hierarchy:
        for child in children:
            assert not (on[:, child] & ~on[:, parent]).any()
            cond = (on[:, child] & on[:, parent]).sum() / on[:, parent].sum()
            assert float(cond) == pytest.approx(0.4, abs=0.03)


def test_absorption_faithful_sae_scores_zero():
    gt = _orthonormal_truth()
    res = _score(_hand_sae(gt), gt)
    assert len(res.pairs) == 4 and not res.skipped
    assert res.mean_score == pytest.approx(0.0, abs=1e-6)
    assert res.frac_absorbed == 0.0
    assert res.mean_mix == pytest.approx(0.0, abs=1e-5)
    assert res.mean_drop < 0.05  # sampling noise only: the parent's magnitude does not depend on the child
    for p in res.pairs:  # the matched latents are the features' own
        assert (p["parent_latent"], p["child_latent"]) == (p["parent"], p["child"])


def test_absorption_full_absorption_scores_one():
    """Parent latent = parent direction but silent when a child fires; child latent = child + parent."""
    gt = _orthonormal_truth()
    res = _score(_hand_sae(gt, parent_off_by_child=5.0, child_carries_parent=1.0), gt)
    assert len(res.pairs) == 4
    assert res.mean_score == pytest.approx(1.0, abs=0.02)
    assert res.frac_absorbed == 1.0
    assert res.mean_mix == pytest.approx(1.0, abs=1e-4)
    for p in res.pairs:
        assert p["act_with"] < 0.02 * p["act_alone"]


def test_absorption_partial_absorption_scores_r():
    """One child per parent; the parent latent loses half its activation when the child fires and the child latent
    carries half the parent direction: drop ≈ mix ≈ score ≈ 0.5 (right at the default 'absorbed' thresholds)."""
    gt = _orthonormal_truth(children_per_parent=1)
    res = _score(_hand_sae(gt, parent_off_by_child=0.5, child_carries_parent=0.5), gt)
    assert len(res.pairs) == 2
    assert res.mean_mix == pytest.approx(0.5, abs=1e-4)
    assert res.mean_drop == pytest.approx(0.5, abs=0.05)
    assert res.mean_score == pytest.approx(0.5, abs=0.05)


def test_absorption_needs_both_halves():
    gt = _orthonormal_truth()
    # Child latent double-counts the parent but the parent latent keeps firing: not absorption.
    double = _score(_hand_sae(gt, child_carries_parent=1.0), gt)
    assert double.mean_mix == pytest.approx(1.0, abs=1e-4)
    assert double.mean_score < 0.05 and double.frac_absorbed == 0.0
    # Parent latent silenced by the child, but nothing carries the parent direction: a recall failure, not absorption.
    silenced = _score(_hand_sae(gt, parent_off_by_child=5.0), gt)
    assert silenced.mean_drop > 0.95
    assert silenced.mean_score == pytest.approx(0.0, abs=1e-4) and silenced.frac_absorbed == 0.0


def test_absorption_in_superposition_with_init_to_match_feature_dict():
    """The default ground truth (64 features in 32 dims): an SAE initialised to the true features with SAELens's
    init_sae_to_match_feature_dict scores 0 despite the interference; the hand-built absorbing SAE scores ~1."""
    from sae_lens.saes import TopKSAE, TopKSAEConfig
    from sae_lens.synthetic import init_sae_to_match_feature_dict

    s = DemoSettings()
    gt = build_ground_truth(s)
    assert len(gt.hierarchy) == s.n_parents
    feats = demo._heldout_feature_acts(gt, 16_384, 11)
    sae = TopKSAE(TopKSAEConfig(d_in=s.d_in, d_sae=s.n_features, k=int((feats > 0).sum(1).max())))
    init_sae_to_match_feature_dict(sae, gt.feature_dict)
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    res = absorption_scores(
        sae.encode(gt.feature_dict(feats)), sae.W_dec, feats, gt.feature_dict.feature_vectors, gt.hierarchy
    )
    assert len(res.pairs) == s.n_parents * s.children_per_parent
    assert res.mean_score == pytest.approx(0.0, abs=1e-4) and res.frac_absorbed == 0.0
    absorbing = _score(_hand_sae(gt, parent_off_by_child=5.0, child_carries_parent=1.0), gt, n=16_384)
    assert absorbing.mean_score > 0.9 and absorbing.frac_absorbed == 1.0


def test_absorption_skips_rare_pairs():
    gt = _orthonormal_truth()
    res = _score(_hand_sae(gt), gt, n=20)
    assert res.skipped and len(res.pairs) + len(res.skipped) == 4
    if not res.pairs:
        assert math.isnan(res.mean_score)


# ------------------------------------------------------------------------------------------------------
# End to end (tiny)
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    results = demo.main([*TINY_ARGV, "--out", str(out)])
    return out, results


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_written_with_both_architectures(cli_run):
    out, _results = cli_run
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:3] == ["topk", "topk_ortho"]
    for label in (
        "MCC",
        "uniqueness",
        "F1",
        "explained variance",
        "dead latents",
        "decoder max \\|cos\\|",
        "absorption score",
        "pairs absorbed",
        "mean corr of top-p latent pairs",
    ):
        assert label in report, label
    # Every row of the results table has as many cells as the header (no stray "|" in a label).
    table = report[report.index(header) :].split("\n\n")[0].splitlines()
    n_cells = lambda line: len(re.split(r"(?<!\\)\|", line))  # noqa: E731
    assert len(table) > 10 and {n_cells(line) for line in table} == {n_cells(header)}
    # One verdict line per headline metric.
    summary = report[report.index("## Summary") :].split("\n\n")[1].splitlines()
    assert len(summary) == len(demo.HEADLINE_METRICS) and all(line.startswith("- **") for line in summary)
    # The exact settings are in the report, and the command reproduces them.
    assert "`training_samples` | `6144`" in report
    assert "--samples 6144" in report and "--seeds 0 1" in report and "--sweep-ks 2" in report
    data = json.loads((out / "results.json").read_text())
    assert {r["architecture"] for r in data["runs"]} == {"topk", "topk_ortho"}
    assert sorted({r["seed"] for r in data["runs"]}) == [0, 1]
    assert sorted({r["k"] for r in data["runs"]}) == [2, 3]
    assert data["settings"]["k"] == 3
    assert len(data["hierarchy"]) == 2 and "absorption_score" in data["summary"]["topk"]
    assert all(r["absorption_pairs"] for r in data["runs"])


def test_plots_are_valid_pngs(cli_run):
    pytest.importorskip("matplotlib")
    out, _ = cli_run
    report = (out / "report.md").read_text()
    for name in PLOT_FILES:
        w, h = _png_size(out / name)
        assert w > 200 and h > 200, (name, w, h)
        assert f"]({name})" in report  # linked from the report


def test_metrics_finite_and_in_range(cli_run):
    _, results = cli_run
    assert len(results.runs) == 6  # 2 seeds x 2 architectures at k = 3, plus seed 0 x 2 architectures at sweep k 2
    assert len(results.main_runs) == 4 and {r.k for r in results.runs} == {2, 3}
    for run in results.runs:
        for key in METRICS:
            assert key in run.metrics, (run.architecture, key)
        for key, value in run.metrics.items():
            assert math.isfinite(value), (run.architecture, key, value)
            _, low, high, _ = METRICS.get(key, (key, None, None, None))
            if low is not None:
                assert value >= low - 1e-6, (run.architecture, key, value)
            if high is not None:
                assert value <= high + 1e-6, (run.architecture, key, value)
        assert run.metrics["sae_l0"] == pytest.approx(run.k)  # TopK: exactly k per sample
        assert 0 <= run.metrics["dead_latents"] <= 16
        assert run.pair_corr is not None and run.pair_corr.numel() > 0
        assert ((run.pair_corr > 0) & (run.pair_corr <= 1 + 1e-5)).all()
    for gt in results.ground_truth:
        assert all(math.isfinite(v) for v in gt.values())
        assert gt["absorption_score"] == pytest.approx(0.0, abs=1e-6)  # the truth does not absorb
    summary = results.summary()
    assert set(summary) == {"topk", "topk_ortho", "ground truth"}
    assert len(results.paired_deltas("mcc")) == 2


def test_ortho_loss_was_active(cli_run):
    _, results = cli_run
    steps = results.settings.training_steps
    assert steps == 24
    for run in results.runs:
        if run.architecture == "topk_ortho":
            assert run.sae_class == "TopKOrthoTrainingSAE"
            assert isinstance(run.sae, sae_lens_ortho.TopKOrthoTrainingSAE)
            assert run.sae.cfg.ortho_coefficient == pytest.approx(DemoSettings().ortho_coefficient)
            assert run.sae.cfg.k == run.k
            assert run.ortho_step == steps == int(run.sae.ortho_step)
        else:
            assert run.sae_class == "TopKTrainingSAE"
            assert run.ortho_step is None


def test_trainer_passes_the_ortho_coefficient(monkeypatch):
    """train_toy_sae goes through SAETrainer: the ortho coefficient arrives in step_input.coefficients."""
    seen: list[dict[str, float]] = []
    orig = sae_lens_ortho.TopKOrthoTrainingSAE.calculate_aux_loss

    def spy(self, step_input, *args, **kwargs):
        seen.append(dict(step_input.coefficients))
        return orig(self, step_input, *args, **kwargs)

    monkeypatch.setattr(sae_lens_ortho.TopKOrthoTrainingSAE, "calculate_aux_loss", spy)
    settings = DemoSettings(
        **{**TINY, "training_samples": 4 * 256},
        architectures=("topk_ortho",),
        ortho_coefficient=0.7,
        ortho_warm_up_steps=2,
    )
    run_demo(settings)
    assert len(seen) == 4
    # SAELens's scheduler: value * min(n, W) / W, so 0 at step 0.
    assert [c["ortho"] for c in seen] == pytest.approx([0.0, 0.35, 0.7, 0.7])
    assert all(c["decoder_ortho"] == 0.0 for c in seen)


def test_same_seed_same_start_only_the_ortho_loss_differs():
    """Both architectures start from the same weights and see the same batches: with the ortho coefficient at 0
    the trained weights are identical, with it on they differ."""
    off = run_demo(DemoSettings(**{**TINY, "training_samples": 6 * 256}, ortho_coefficient=0.0))
    on = run_demo(DemoSettings(**{**TINY, "training_samples": 6 * 256}, ortho_coefficient=1.0))
    by_arch = lambda res: {r.architecture: r.sae for r in res.runs}  # noqa: E731
    a, b = by_arch(off)["topk"], by_arch(off)["topk_ortho"]
    torch.testing.assert_close(a.W_dec, b.W_dec, rtol=0, atol=0)
    torch.testing.assert_close(a.W_enc, b.W_enc, rtol=0, atol=0)
    torch.testing.assert_close(by_arch(on)["topk"].W_dec, a.W_dec, rtol=0, atol=0)  # topk is unaffected
    assert not torch.equal(by_arch(on)["topk_ortho"].W_dec, a.W_dec)
    again = run_demo(DemoSettings(**{**TINY, "training_samples": 6 * 256}, ortho_coefficient=1.0))
    torch.testing.assert_close(by_arch(again)["topk_ortho"].W_dec, by_arch(on)["topk_ortho"].W_dec, rtol=0, atol=0)
    # Identical SAEs: every paired Δ is exactly 0 and the verdicts say so.
    assert all(d == 0.0 for d in off.paired_deltas("mcc"))
    assert all(line.endswith("No difference.") for line in demo.summary_lines(off) if "train time" not in line)


def test_settings_validation():
    with pytest.raises(ValueError):
        DemoSettings(n_groups=40, group_size=2, n_features=64)
    with pytest.raises(ValueError):  # groups + hierarchy do not fit
        DemoSettings(n_groups=8, group_size=3, n_parents=14, children_per_parent=2, n_features=64)
    with pytest.raises(ValueError):
        DemoSettings(seeds=())
    with pytest.raises(ValueError):
        DemoSettings(training_samples=10, batch_size=1024)
    with pytest.raises(ValueError):
        DemoSettings(sweep_ks=(0,))
    with pytest.raises(ValueError):
        DemoSettings(child_given_parent=0.0)
    assert DemoSettings(k=6, sweep_ks=(4, 6, 8, 4)).extra_ks == (4, 8)


def test_cli_round_trip():
    """The report's command line parses back to the same settings."""
    s = DemoSettings(seeds=(3, 4), sweep_ks=(), n_parents=1, plots=False, diag_pair_fraction=0.01)
    args = _cli_args(s)
    assert "--no-plots" in args
    parsed = demo._parser().parse_args(args)
    kwargs = {f: getattr(parsed, f) for f in s.to_dict() if f != "progress"}
    assert DemoSettings(**kwargs, progress=s.progress) == s
