"""The absorption metric of SynthSAEBench runs: :func:`absorption_scores` on a known parent -> child hierarchy.

Described, with its known answers (``tests/test_absorption.py``), in ``docs/synthbench.md``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


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
