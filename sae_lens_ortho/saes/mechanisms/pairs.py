"""The selected-pair penalty: each batch, the top-p feature pairs (by activation cosine, or by decoder cosine
with ``ortho_select_by="decoder"``) are penalised by phi(C_ij) of their activations, or phi(cos) of their unit
decoder rows or unit encoder columns (``ortho_target``), phi set by ``ortho_weighting``; seeds 000-004. The math
is in ``core.pairs`` / ``core.penalties``; the strength it is multiplied by is :mod:`.adaptive_strength`'s.

:func:`selection_needed` / :func:`selection_runs` are the one rule for whether the selection runs on a step:
the step (:meth:`PairPenalty.loss`) and the memory plan (``saes/resources.py``) both ask them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput
from torch import Tensor

from sae_lens_ortho.core.diagnostics import mean_pair_cosine, pair_set_jaccard, selection_summary
from sae_lens_ortho.core.pairs import MAX_DENSE_FEATURES, n_pairs, top_decoder_pairs
from sae_lens_ortho.core.penalties import (
    SelectedPairs,
    n_ranked_pairs,
    pair_penalty,
    select_pairs_for_penalty,
    selected_decoder_cosines,
)
from sae_lens_ortho.saes.checks import MAX_COEFFICIENT, check_choice, check_int, check_number
from sae_lens_ortho.saes.mechanisms.adaptive_strength import observe_selection, pair_threshold, strength
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext, loss_scale

__all__ = [
    "MAX_TRACKED_PAIRS",
    "PairPenalty",
    "PairPenaltyFields",
    "selection_needed",
    "selection_runs",
    "target_rows",
]

# The pair-set stability diagnostic compares at most this many top pairs between steps (8 MiB of keys).
MAX_TRACKED_PAIRS = 1 << 20


@dataclass(kw_only=True)
class PairPenaltyFields:
    ortho_coefficient: float = 0.0
    """Weight of the selective penalty on the chosen pairs (>= 0; 0 = off, the default: see the class docstring).
    With the default ``ortho_scale="input_energy"`` it is in units of E||x||^2, so 0.1 means a mean cos^2 of 1
    costs as much as 10% of the input's variance. The trainer ramps it in over ``ortho_warm_up_steps`` through SAELens's
    coefficient warm-up; logged as ``details/ortho_coefficient``."""

    ortho_warm_up_steps: int = 0
    """Steps over which ``ortho_coefficient`` rises linearly from 0 (integer >= 0)."""

    ortho_pair_fraction: float = 0.001
    """Fraction p of the n(n-1)/2 feature pairs penalised each batch, in (0, 1]: the ceil(p*n(n-1)/2) pairs
    with the largest activation cosine C_ij (fewer if fewer pairs co-fire). 0.001 is seed 000/002's 0.1%."""

    ortho_weighting: Literal["abs", "squared", "hinge", "scaled"] = "squared"
    """How a selected pair is penalised: ``abs`` mean |C_ij| (seeds 001, 004); ``squared`` mean C_ij^2;
    ``hinge`` mean ReLU(|C_ij| - ortho_tau) (seed 002); ``scaled`` mean |C_ij|^2 / ortho_tau, seed 000's
    tau_ij = tau_base |r_ij| / r_thresh with ortho_tau = r_thresh and tau_base = ortho_coefficient."""

    ortho_tau: float = 0.5
    """Threshold for ``hinge`` (in [0, 1]) or r_thresh for ``scaled`` (in (0, 1]); unused by abs/squared."""

    ortho_select_by: Literal["activations", "decoder"] = "activations"
    """How the penalised pairs are chosen. ``activations`` (the seeds): the top-p pairs by activation cosine C_ij
    of the batch (co-firing pairs; exact). ``decoder``: the top-p pairs by cosine of their unit decoder rows,
    the most overlapping directions whether or not they fire together (exact chunked scan, O(n^2 d), refreshed
    every ``ortho_select_every`` steps); needs ortho_target="decoder"."""

    ortho_select_every: int = 1
    """With ortho_select_by="decoder": re-select the pairs every this many steps (integer >= 1); between
    selections the same pairs are penalised at their current cosines."""

    ortho_scale: Literal["none", "input_energy"] = "input_energy"
    """Units of the ortho losses. ``none``: coefficient x penalty (the seeds' form; how much that weighs against
    the reconstruction loss depends on the activations' scale). ``input_energy``: coefficient x penalty x the
    batch's mean squared input norm E||x||^2 (no gradient), the unit in which SAELens's mse_loss is FVU x
    E||x||^2; a coefficient then means the same on any model, layer and normalisation."""

    ortho_target: Literal["activations", "decoder", "encoder"] = "decoder"
    """What the penalty on the selected pairs acts on. ``activations`` (the seeds): phi(C_ij) of the activation
    cosine, with gradients through the activations; a latent that stops firing has C_ij = 0, so silencing
    latents lowers it. ``decoder``: the pairs are still chosen by C_ij, but the penalty is phi(cos(d_i, d_j)) of
    their unit decoder rows, with gradients into the decoder only: co-firing latents are pushed to different
    directions and nothing rewards a latent for firing less. ``encoder`` (encoder-side decorrelation): the same
    pairs, phi(cos(e_i, e_j)) of their unit encoder columns (``W_enc[:, i]``), with gradients into the encoder
    only: co-firing latents are made to read different input directions while their decoder rows, what they
    write, stay where the reconstruction puts them."""

    ortho_method: Literal["auto", "sparse", "dense"] = "auto"
    """Pair-selection algorithm: ``sparse`` (co-firing pairs only, O(b k^2), for TopK-like activations),
    ``dense`` (chunked Gram scan, memory bounded by ``ortho_chunk_size`` x d_sae), ``auto`` picks by cost."""

    ortho_chunk_size: int = 512
    """Feature columns per chunk of the dense scan (integer >= 1; seed 000 uses 512)."""

    # --- which selected pairs count (seed 004) ------------------------------------------------------------
    ortho_pair_filter: Literal["top_fraction", "zscore"] = "top_fraction"
    """``top_fraction``: the top-p pairs. ``zscore`` (seed 004): rank the top k = max(ortho_min_pairs,
    ceil(p N)) pairs and keep only those with C_ij > mu + ortho_z * sigma, mu and sigma the exact mean and
    standard deviation of C over all N = n(n-1)/2 pairs (computed without an n x n matrix)."""

    ortho_z: float = 2.0
    """z of the ``zscore`` filter (>= 0; seed 004: 2)."""

    ortho_min_pairs: int = 0
    """Minimum number of ranked pairs, k = max(ortho_min_pairs, ceil(p N)) (integer >= 0; seed 004: 10)."""


def selection_needed(cfg: Any, coefficient: float) -> bool:
    """Whether the selection must run on every step (the penalty is on, or dictionary management reads it), as
    opposed to logging steps only, for its metrics."""
    return coefficient > 0 or cfg.ortho_manage_every > 0


def selection_runs(cfg: Any, coefficient: float, logging: bool, skipped: tuple[str, ...] = ()) -> bool:
    """Whether the selection runs on a step with this (scheduled) coefficient: when needed, or on logging steps
    for its metrics unless the memory plan skips them (``"pairs" in skipped``); never below two features."""
    needed = selection_needed(cfg, coefficient) or (logging and "pairs" not in skipped)
    return bool(needed) and cfg.d_sae >= 2


class PairPenalty(Mechanism):
    name = "pair_penalty"
    Fields = PairPenaltyFields
    buffers = ("ortho_prev_pair_keys", "ortho_decoder_pair_keys")
    loss_name = "ortho_loss"
    reads_activations = True

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_number("ortho_coefficient", cfg.ortho_coefficient, low=0, high=MAX_COEFFICIENT)
        check_int("ortho_warm_up_steps", cfg.ortho_warm_up_steps, low=0)
        check_number("ortho_pair_fraction", cfg.ortho_pair_fraction, low=0, high=1, low_open=True)
        check_choice("ortho_weighting", cfg.ortho_weighting, ("abs", "squared", "hinge", "scaled"))
        if cfg.ortho_weighting == "scaled":
            check_number("ortho_tau", cfg.ortho_tau, low=0, high=1, low_open=True)
        else:
            check_number("ortho_tau", cfg.ortho_tau, low=0, high=1)
        check_choice("ortho_target", cfg.ortho_target, ("activations", "decoder", "encoder"))
        check_choice("ortho_scale", cfg.ortho_scale, ("none", "input_energy"))
        check_choice("ortho_select_by", cfg.ortho_select_by, ("activations", "decoder"))
        check_int("ortho_select_every", cfg.ortho_select_every, low=1)
        if cfg.ortho_select_by == "decoder":
            if cfg.ortho_target != "decoder":
                raise ValueError(
                    f"ortho_select_by='decoder' chooses pairs by their decoder rows and needs ortho_target='decoder', "
                    f"got ortho_target={cfg.ortho_target!r}"
                )
            uses_activation_pairs = {
                "ortho_pair_filter": cfg.ortho_pair_filter != "top_fraction",
                "ortho_adaptive": cfg.ortho_adaptive in ("threshold", "momentum"),
                "ortho_manage_every": cfg.ortho_manage_every > 0,
            }
            bad = [name for name, used in uses_activation_pairs.items() if used]
            if bad:
                raise ValueError(
                    f"{', '.join(bad)} read the activation correlations of the selected pairs; with "
                    "ortho_select_by='decoder' use ortho_pair_filter='top_fraction', ortho_adaptive in (none, recon) "
                    "and ortho_manage_every=0"
                )
        check_choice("ortho_method", cfg.ortho_method, ("auto", "sparse", "dense"))
        check_int("ortho_chunk_size", cfg.ortho_chunk_size, low=1)
        d_sae = cfg.d_sae
        if cfg.ortho_select_by == "decoder" and d_sae > MAX_DENSE_FEATURES:
            raise ValueError(
                f"ortho_select_by='decoder' scans the decoder's pairs with 32-bit keys and supports d_sae <= "
                f"{MAX_DENSE_FEATURES}, got d_sae={d_sae}; use ortho_select_by='activations' (co-firing pairs, any d_sae)"
            )
        if cfg.ortho_method == "dense" and d_sae > MAX_DENSE_FEATURES:
            raise ValueError(
                f"ortho_method='dense' supports d_sae <= {MAX_DENSE_FEATURES} (its pair keys are 32-bit), got "
                f"d_sae={d_sae}; use ortho_method='sparse' or 'auto' (which picks the co-firing path there)"
            )
        check_choice("ortho_pair_filter", cfg.ortho_pair_filter, ("top_fraction", "zscore"))
        check_number("ortho_z", cfg.ortho_z, low=0)
        check_int("ortho_min_pairs", cfg.ortho_min_pairs, low=0)

    @classmethod
    def coefficients(cls, cfg: Any) -> dict[str, float | TrainCoefficientConfig]:
        return {
            "ortho": TrainCoefficientConfig(value=float(cfg.ortho_coefficient), warm_up_steps=cfg.ortho_warm_up_steps)
        }

    def __init__(self, sae: Any, device: torch.device) -> None:
        cfg = sae.cfg
        m = min(n_ranked_pairs(cfg.d_sae, cfg.ortho_pair_fraction, cfg.ortho_min_pairs), MAX_TRACKED_PAIRS)
        # Last step's selected pairs (padded with -1), for the pair-set stability diagnostic across resumes.
        sae.register_buffer("ortho_prev_pair_keys", torch.full((m,), -1, dtype=torch.int64, device=device))
        if cfg.ortho_select_by == "decoder":  # the pairs chosen at the last selection step (-1: none)
            sae.register_buffer("ortho_decoder_pair_keys", torch.full((m,), -1, dtype=torch.int64, device=device))

    def loss(
        self, sae: Any, feature_acts: Tensor, step_input: TrainStepInput, zero: Tensor, ctx: StepContext
    ) -> Tensor:
        """The selective penalty of this batch (the selection skipped when nothing needs it)."""
        scheduled = step_input.coefficients.get("ortho")
        coef = float(sae.cfg.ortho_coefficient if scheduled is None else scheduled)
        if not selection_runs(sae.cfg, coef, step_input.is_logging_step, sae.ortho_plan.skipped_diagnostics):
            return zero
        if sae.cfg.ortho_select_by == "decoder":
            loss = self._decoder_pair_loss(sae, coef, step_input.is_logging_step, ctx)
        else:
            loss = self._activation_loss(sae, feature_acts, coef, step_input.is_logging_step, ctx)
        return loss * loss_scale(sae.cfg, step_input, ctx)

    def _activation_loss(self, sae: Any, feature_acts: Tensor, coef: float, logging: bool, ctx: StepContext) -> Tensor:
        cfg = sae.cfg
        weights = target_rows(sae)
        # On the weights the selection only picks pairs: no graph through the activations is needed.
        with torch.set_grad_enabled(torch.is_grad_enabled() and weights is None):
            sel = self._select_pairs(sae, feature_acts, ctx)
        ctx.selection = sel
        tau = pair_threshold(cfg, sel)
        if weights is not None:
            # Padding slots carry key -1: any valid index will do, pair_penalty masks them out.
            weight_cos = selected_decoder_cosines(weights, sel.keys.clamp_min(0))
            penalty = pair_penalty(weight_cos, sel.valid, cfg.ortho_weighting, tau)
            if logging:
                ctx.metrics[f"ortho_selected_{cfg.ortho_target}_cos_mean"] = (
                    weight_cos.detach().abs() * sel.valid
                ).sum() / sel.valid.sum().clamp_min(1)
        else:
            penalty = pair_penalty(sel.corr, sel.valid, cfg.ortho_weighting, tau)
        # A copy: the buffer is updated in place below, before backward runs.
        loss = coef * strength(sae) * penalty if coef > 0 else penalty.new_zeros(())
        if logging:
            ctx.metrics.update(self._pair_diagnostics(sae, sel, feature_acts, penalty))
            if cfg.ortho_adaptive == "threshold":
                ctx.metrics["ortho_tau"] = torch.as_tensor(tau)
        with torch.no_grad():
            observe_selection(sae, sel)
            sae.ortho_prev_pair_keys.copy_(_tracked_keys(sae, sel))
        return loss

    def _decoder_pair_loss(self, sae: Any, coef: float, logging: bool, ctx: StepContext) -> Tensor:
        """phi(cos) of the top-p pairs by decoder cosine, re-selected every ``ortho_select_every`` steps."""
        cfg = sae.cfg
        W_dec = sae.W_dec
        if sae.ortho_host_step() % cfg.ortho_select_every == 0:
            with torch.no_grad():
                keys = top_decoder_pairs(W_dec, sae.ortho_decoder_pair_keys.numel(), cfg.ortho_chunk_size)
                sae.ortho_decoder_pair_keys.copy_(keys)
        keys = sae.ortho_decoder_pair_keys
        valid = keys >= 0
        if ctx.penalised_latents is not None:  # firing-rate gate / inner levels: drop pairs with a left-out latent
            n = W_dec.shape[0]
            valid = valid & ctx.penalised_latents[keys.clamp_min(0) // n] & ctx.penalised_latents[keys.clamp_min(0) % n]
        cos = selected_decoder_cosines(W_dec, keys.clamp_min(0))
        penalty = pair_penalty(cos, valid, cfg.ortho_weighting, cfg.ortho_tau)
        if logging:
            summary = selection_summary(cos.detach(), valid)
            ctx.metrics.update({f"ortho_decoder_{k}": v for k, v in summary.items()})
            ctx.metrics["ortho_penalty"] = penalty.detach()
        return coef * strength(sae) * penalty if coef > 0 else penalty.new_zeros(())

    def _select_pairs(self, sae: Any, feature_acts: Tensor, ctx: StepContext) -> SelectedPairs:
        cfg = sae.cfg
        dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
        captured = ctx.captured if ctx.captured is not None else sae.ortho_sparse_activations()
        if captured is not None and captured[0].shape[0] != dense.shape[0]:
            captured = None  # not this batch's activations (e.g. reshaped inputs): fall back to a scan
        ctx.captured = captured
        plan = sae.ortho_plan
        method: Any = plan.method or cfg.ortho_method  # resources.py may pin a path that fits
        if method == "dense":
            captured = None
        gate = ctx.penalised_latents
        if gate is not None:  # firing-rate gate / inner levels: left-out latents count as silent, so never co-fire
            # dense too when captured is given: "auto" may still fall back to the dense scan of a batch over its cap
            dense = dense * gate.to(dense.dtype)
            if captured is not None:
                values, indices = captured
                captured = (values * gate.to(values.dtype)[indices], indices)
        return select_pairs_for_penalty(
            dense,
            cfg.ortho_pair_fraction,
            width=sae.ortho_row_width(),
            method=method,
            chunk_size=cfg.ortho_chunk_size,
            sparse=captured,
            z=cfg.ortho_z if cfg.ortho_pair_filter == "zscore" else None,
            min_pairs=cfg.ortho_min_pairs,
            max_cofiring_products=plan.max_cofiring_products,
        )

    @torch.no_grad()
    def _pair_diagnostics(
        self, sae: Any, sel: SelectedPairs, feature_acts: Tensor, penalty: Tensor
    ) -> dict[str, Tensor]:
        dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
        out = {f"ortho_{k}": v for k, v in selection_summary(sel.corr, sel.valid).items()}
        out["ortho_penalty"] = penalty.detach()
        out["ortho_mean_pair_cosine"] = mean_pair_cosine(dense)
        out["ortho_cofire_fraction"] = sel.stats.n_cofiring.double() / max(n_pairs(sae.cfg.d_sae), 1)
        out["ortho_pair_jaccard"] = pair_set_jaccard(_tracked_keys(sae, sel), sae.ortho_prev_pair_keys)
        return out


def target_rows(sae: Any) -> Tensor | None:
    """The [d_sae, ·] weight rows whose pair cosines the penalty reads: the decoder rows, the encoder columns
    (a transposed view, so the gradient reaches ``W_enc``), or None for ``ortho_target="activations"``."""
    target = sae.cfg.ortho_target
    if target == "decoder":
        return sae.W_dec
    return sae.W_enc.T if target == "encoder" else None


def _tracked_keys(sae: Any, sel: SelectedPairs) -> Tensor:
    """This step's valid pair keys, best first, padded with -1 to the size of the tracking buffer."""
    out = torch.full_like(sae.ortho_prev_pair_keys, -1)
    keys = torch.where(sel.valid, sel.keys, torch.full_like(sel.keys, -1))[: out.numel()]
    out[: keys.numel()] = keys
    return out
