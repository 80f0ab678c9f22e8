"""The decoder penalty over all pairs of unit decoder rows (seed 003 and an OrtSAE-style anchor): ``gram`` (exact
Gram identity), ``grouped`` (within EMA-centroid groups, the ``ortho_centroids`` buffer) or ``chunk_max`` (the
largest cos^2 within random chunks, drawn from checkpointed randomness); optionally annealed from
``ortho_decoder_start``. The math is in ``core.penalties`` / ``core.grouping``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput
from torch import Tensor

from sae_lens_ortho.core.grouping import assign_and_update, group_sizes, grouped_decoder_penalty, init_centroids
from sae_lens_ortho.core.penalties import chunk_max_cos_penalty, decoder_gram_penalty
from sae_lens_ortho.core.schedules import anneal
from sae_lens_ortho.saes.checks import MAX_COEFFICIENT, check_choice, check_int, check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext, loss_scale

__all__ = ["DecoderPenalty", "DecoderPenaltyFields"]


@dataclass(kw_only=True)
class DecoderPenaltyFields:
    ortho_decoder_coefficient: float = 0.0
    """Weight of the decoder-orthogonality penalty over *all* pairs of unit decoder rows (>= 0; 0 = off),
    computed exactly through the Gram identity in O(n d^2) (seed 003)."""

    ortho_decoder_reduction: Literal["mean", "sum"] = "mean"
    """``mean``: the penalty is the mean of (d^_i.d^_j)^2 over the n(n-1) ordered pairs, so a coefficient
    transfers across dictionary sizes. ``sum``: the raw sum_{i != j} of seed 003 (grows like n^2/d)."""

    # --- decoder penalty variants (seed 003 and an OrtSAE-style anchor) ------------------------------------
    ortho_decoder_penalty: Literal["gram", "grouped", "chunk_max"] = "gram"
    """``gram``: sum over all pairs (exact Gram identity). ``grouped`` (seed 003's batch-wise feature grouping):
    features are assigned each step to the nearest of ``ortho_groups`` EMA centroids of their decoder
    directions and penalised only within their group (exact per-group Gram identity; sizes logged).
    ``chunk_max`` (OrtSAE-style): mean over features of the largest cos^2 with another feature of the same
    random chunk, ``ortho_decoder_chunks`` chunks re-drawn each step (its own mean; ignores the reduction)."""

    ortho_decoder_start: float | None = None
    """If set (>= 0), the decoder coefficient is annealed linearly from this value to
    ``ortho_decoder_coefficient`` over ``ortho_decoder_warm_up_steps`` (seed 003: from 1.0)."""

    ortho_decoder_warm_up_steps: int = 0
    """Steps of that anneal (integer >= 0; seed 003: 1000)."""

    ortho_groups: int = 8
    """Number of groups G of ``grouped`` (integer >= 1, at most d_sae; seed 003: 8)."""

    ortho_group_decay: float = 0.99
    """EMA decay of the group centroids (in [0, 1))."""

    ortho_decoder_chunks: int = 4
    """Number of random feature chunks K of ``chunk_max`` (integer >= 1)."""


class DecoderPenalty(Mechanism):
    name = "decoder_penalty"
    Fields = DecoderPenaltyFields
    buffers = ("ortho_centroids",)
    loss_name = "decoder_ortho_loss"

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_number("ortho_decoder_coefficient", cfg.ortho_decoder_coefficient, low=0, high=MAX_COEFFICIENT)
        check_choice("ortho_decoder_reduction", cfg.ortho_decoder_reduction, ("mean", "sum"))
        check_choice("ortho_decoder_penalty", cfg.ortho_decoder_penalty, ("gram", "grouped", "chunk_max"))
        if cfg.ortho_decoder_start is not None:
            check_number("ortho_decoder_start", cfg.ortho_decoder_start, low=0, high=MAX_COEFFICIENT)
        check_int("ortho_decoder_warm_up_steps", cfg.ortho_decoder_warm_up_steps, low=0)
        d_sae = getattr(cfg, "d_sae", None)
        check_int("ortho_groups", cfg.ortho_groups, low=1)
        if cfg.ortho_decoder_penalty == "grouped" and isinstance(d_sae, int) and cfg.ortho_groups > d_sae:
            raise ValueError(f"ortho_groups must be an integer in [1, d_sae={d_sae}], got {cfg.ortho_groups}")
        check_number("ortho_group_decay", cfg.ortho_group_decay, low=0, high=1)
        if cfg.ortho_group_decay == 1:
            raise ValueError("ortho_group_decay must be a finite number in [0, 1), got 1")
        check_int("ortho_decoder_chunks", cfg.ortho_decoder_chunks, low=1)

    @classmethod
    def coefficients(cls, cfg: Any) -> dict[str, float | TrainCoefficientConfig]:
        return {"decoder_ortho": float(cfg.ortho_decoder_coefficient)}

    def __init__(self, sae: Any, device: torch.device) -> None:
        cfg = sae.cfg
        if cfg.ortho_decoder_penalty == "grouped":
            centroids = torch.zeros(cfg.ortho_groups, cfg.d_in, device=device)
            if device.type != "meta":
                centroids = init_centroids(sae.W_dec, cfg.ortho_groups)
            sae.register_buffer("ortho_centroids", centroids)

    def loss(
        self, sae: Any, feature_acts: Tensor, step_input: TrainStepInput, zero: Tensor, ctx: StepContext
    ) -> Tensor:
        cfg = sae.cfg
        dec_coef: Any = step_input.coefficients.get("decoder_ortho", cfg.ortho_decoder_coefficient)
        if cfg.ortho_decoder_start is not None:  # seed 003: anneal from the start value to the coefficient
            dec_coef = anneal(cfg.ortho_decoder_start, float(dec_coef), sae.ortho_step, cfg.ortho_decoder_warm_up_steps)
        active = cfg.ortho_decoder_start is not None or dec_coef > 0
        logging = step_input.is_logging_step and "decoder_penalty" not in sae.ortho_plan.skipped_diagnostics
        if not (active or logging):
            return zero
        W_dec = sae.W_dec
        with torch.set_grad_enabled(active and torch.is_grad_enabled()):  # a diagnostic needs no graph
            if cfg.ortho_decoder_penalty == "grouped":
                assignment, centroids = assign_and_update(W_dec, sae.ortho_centroids, cfg.ortho_group_decay)
                with torch.no_grad():
                    sae.ortho_centroids.copy_(centroids)
                dec = grouped_decoder_penalty(W_dec, assignment, cfg.ortho_groups, cfg.ortho_decoder_reduction)
                if logging:
                    sizes = group_sizes(assignment, cfg.ortho_groups)
                    ctx.metrics.update({f"ortho_group_size_{g}": sizes[g] for g in range(cfg.ortho_groups)})
            elif cfg.ortho_decoder_penalty == "chunk_max":  # a permutation per step, from checkpointed state
                dec = chunk_max_cos_penalty(W_dec, cfg.ortho_decoder_chunks, sae.ortho_generator("chunk_max"))
            else:
                dec = decoder_gram_penalty(W_dec, cfg.ortho_decoder_reduction)
        if logging:
            ctx.metrics["ortho_decoder_penalty"] = dec.detach()
            if cfg.ortho_decoder_start is not None:
                ctx.metrics["ortho_decoder_coefficient"] = torch.as_tensor(dec_coef)
        return dec_coef * dec * loss_scale(cfg, step_input, ctx) if active else zero
