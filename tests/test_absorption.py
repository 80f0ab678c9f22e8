"""The absorption metric (``evals/synthetic/absorption.py``, used by SynthSAEBench) on known answers: hand-built
SAEs on a small parent -> child ground truth made with SAELens's synthetic generator score 0 (faithful), 1 (full
absorption), r (partial), and only when both halves of absorption are present."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from sae_lens_ortho.evals.synthetic.absorption import absorption_scores


@dataclass
class Truth:
    feature_dict: Any
    generator: Any
    hierarchy: list[tuple[int, list[int]]]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` held-out feature activations (dense), reproducible from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            acts = self.generator.sample(n)
        return acts.to_dense() if acts.is_sparse else acts


def _truth(n_features: int, d_in: int, *, n_parents: int, children_per_parent: int, seed: int = 1234) -> Truth:
    """Random feature directions; ``n_parents`` parents with their children (P(child | parent) = 0.4, a child never
    fires without its parent: SAELens's hierarchy_modifier); the other features fire independently."""
    from sae_lens.synthetic import (
        ActivationGenerator,
        FeatureDictionary,
        HierarchyNode,
        hierarchy_modifier,
        linear_firing_probabilities,
    )

    perm = torch.randperm(n_features, generator=torch.Generator().manual_seed(seed)).tolist()
    step = 1 + children_per_parent
    hierarchy = [(perm[h * step], sorted(perm[h * step + 1 : (h + 1) * step])) for h in range(n_parents)]
    probs = torch.as_tensor(linear_firing_probabilities(n_features, max_prob=0.15, min_prob=0.03)).float().clone()
    for _, children in hierarchy:
        probs[children] = 0.4
    roots = [HierarchyNode(p, children=[HierarchyNode(c) for c in ch]) for p, ch in hierarchy]
    with torch.random.fork_rng(devices=[]):  # the orthogonalising initializer draws from the global RNG
        torch.manual_seed(seed)
        feature_dict = FeatureDictionary(n_features, d_in, seed=seed)
    generator = ActivationGenerator(
        n_features,
        firing_probabilities=probs,
        std_firing_magnitudes=0.2,
        mean_firing_magnitudes=1.0,
        modify_activations=hierarchy_modifier(roots),
    )
    return Truth(feature_dict, generator, hierarchy)


def _orthonormal_truth(children_per_parent: int = 2) -> Truth:
    """12 features in 16 dims, 2 parents, feature directions exactly orthonormal: a hand-built SAE with encoder =
    decoder = the true directions reads every feature exactly."""
    gt = _truth(12, 16, n_parents=2, children_per_parent=children_per_parent)
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
    feats = gt.sample(n, seed)
    latents = sae.encode(gt.feature_dict(feats))
    return absorption_scores(latents, sae.W_dec, feats, gt.feature_dict.feature_vectors, gt.hierarchy)


def test_hierarchy_in_the_ground_truth():
    """SAELens's hierarchy_modifier is applied: a child never fires without its parent, P(child | parent) as set."""
    gt = _truth(16, 8, n_parents=2, children_per_parent=2)
    assert len(gt.hierarchy) == 2 and all(len(ch) == 2 for _, ch in gt.hierarchy)
    members = [f for p, ch in gt.hierarchy for f in (p, *ch)]
    assert len(members) == len(set(members))
    on = gt.sample(50_000, 3) > 0
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
    """64 features in 32 dims: an SAE initialised to the true features with SAELens's
    init_sae_to_match_feature_dict scores 0 despite the interference; the hand-built absorbing SAE scores ~1."""
    from sae_lens.saes import TopKSAE, TopKSAEConfig
    from sae_lens.synthetic import init_sae_to_match_feature_dict

    gt = _truth(64, 32, n_parents=4, children_per_parent=2)
    feats = gt.sample(16_384, 11)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=int((feats > 0).sum(1).max())))
    init_sae_to_match_feature_dict(sae, gt.feature_dict)
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    res = absorption_scores(
        sae.encode(gt.feature_dict(feats)), sae.W_dec, feats, gt.feature_dict.feature_vectors, gt.hierarchy
    )
    assert len(res.pairs) == 4 * 2
    assert res.mean_score == pytest.approx(0.0, abs=1e-4) and res.frac_absorbed == 0.0
    absorbing = _score(_hand_sae(gt, parent_off_by_child=5.0, child_carries_parent=1.0), gt, n=16_384)
    assert absorbing.mean_score > 0.9 and absorbing.frac_absorbed == 1.0


def test_absorption_skips_rare_pairs():
    gt = _orthonormal_truth()
    res = _score(_hand_sae(gt), gt, n=20)
    assert res.skipped and len(res.pairs) + len(res.skipped) == 4
    if not res.pairs:
        assert math.isnan(res.mean_score)
