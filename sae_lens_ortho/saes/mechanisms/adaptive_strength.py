"""Adaptive strength of the pair penalty (seeds 001, 002, 004): a strength s in the ``ortho_strength`` buffer
multiplies the selected-pair penalty and follows the reconstruction loss (``recon``) or the selected pairs'
mean correlation (``momentum``); or the hinge threshold follows the batch's correlations (``threshold``). The
schedules are in ``core.schedules``; :mod:`.pairs` reads the strength and the threshold through the functions
below."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from sae_lens.saes.sae import TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.diagnostics import selection_summary
from sae_lens_ortho.core.penalties import SelectedPairs
from sae_lens_ortho.core.schedules import mean_plus_std_threshold, momentum_adaptive, recon_adaptive
from sae_lens_ortho.saes.checks import check_choice, check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["AdaptiveStrength", "AdaptiveStrengthFields", "observe_selection", "pair_threshold", "strength"]


@dataclass(kw_only=True)
class AdaptiveStrengthFields:
    # --- adaptive strength (seeds 001, 002, 004) -----------------------------------------------------------
    ortho_adaptive: Literal["none", "recon", "threshold", "momentum"] = "none"
    """``none``: fixed. ``recon`` (seed 001): a strength s multiplies the penalty and follows
    s <- clip(s * ortho_target_recon_loss / L_recon, ortho_strength_min, ortho_strength_max) after each step.
    ``threshold`` (seed 002): the hinge threshold is tau_t = mu_t + sigma_t of all pair correlations of the
    batch (needs ortho_weighting="hinge"). ``momentum`` (seed 004): s <- clip(a s + (1 - a) s cbar /
    ortho_target_corr, min, max) with a = ortho_momentum and cbar the mean |C| of the valid selected pairs.
    s lives in the ``ortho_strength`` buffer (saved in checkpoints) and is logged as metrics/ortho_strength."""

    ortho_strength_init: float = 0.05
    """Initial strength s for ``recon`` / ``momentum`` (in [ortho_strength_min, ortho_strength_max]; seed 001: 0.05)."""

    ortho_strength_min: float = 0.01
    """Lower clip of s (> 0; seeds 001 and 004: 0.01)."""

    ortho_strength_max: float = 0.2
    """Upper clip of s (>= ortho_strength_min; seed 001: 0.2, seed 004: 0.5)."""

    ortho_target_recon_loss: float = 0.0
    """L_target of ``recon``, in the units of SAELens's mse_loss (squared error summed over d_in, averaged over
    tokens); must be > 0 when ortho_adaptive="recon"."""

    ortho_momentum: float = 0.9
    """a of ``momentum`` (in [0, 1); seed 004: 0.9)."""

    ortho_target_corr: float = 0.1
    """c_target of ``momentum`` (in (0, 1]; seed 004: 0.1)."""


def strength(sae: Any) -> Tensor:
    """A copy of the strength s (1 unless adaptive): the buffer is updated in place before backward runs."""
    return sae.ortho_strength.clone()


def pair_threshold(cfg: Any, sel: SelectedPairs) -> Tensor | float:
    """The hinge threshold of this batch: ``ortho_tau``, or with ``threshold`` tau_t = mu_t + sigma_t (seed 002)."""
    if cfg.ortho_adaptive == "threshold":
        return mean_plus_std_threshold(sel.stats).float()
    return cfg.ortho_tau


def observe_selection(sae: Any, sel: SelectedPairs) -> None:
    """With ``momentum`` (seed 004), move s towards the target correlation (no_grad, after the selection)."""
    cfg = sae.cfg
    if cfg.ortho_adaptive == "momentum":
        mean_corr = selection_summary(sel.corr, sel.valid)["selected_corr_mean"]
        sae.ortho_strength.copy_(
            momentum_adaptive(
                sae.ortho_strength,
                mean_corr,
                cfg.ortho_target_corr,
                cfg.ortho_momentum,
                cfg.ortho_strength_min,
                cfg.ortho_strength_max,
            )
        )


class AdaptiveStrength(Mechanism):
    name = "adaptive_strength"
    Fields = AdaptiveStrengthFields
    buffers = ("ortho_strength",)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_choice("ortho_adaptive", cfg.ortho_adaptive, ("none", "recon", "threshold", "momentum"))
        check_number("ortho_strength_min", cfg.ortho_strength_min, low=0, low_open=True)
        check_number("ortho_strength_max", cfg.ortho_strength_max, low=0, low_open=True)
        if cfg.ortho_strength_min > cfg.ortho_strength_max:  # name the pair: either may be the one to change
            raise ValueError(
                f"ortho_strength_min ({cfg.ortho_strength_min}) must be <= ortho_strength_max "
                f"({cfg.ortho_strength_max})"
            )
        check_number(
            "ortho_strength_init", cfg.ortho_strength_init, low=cfg.ortho_strength_min, high=cfg.ortho_strength_max
        )
        if cfg.ortho_adaptive == "recon":
            check_number("ortho_target_recon_loss", cfg.ortho_target_recon_loss, low=0, low_open=True)
        else:
            check_number("ortho_target_recon_loss", cfg.ortho_target_recon_loss, low=0)
        if cfg.ortho_adaptive == "threshold" and cfg.ortho_weighting != "hinge":
            raise ValueError(
                f"ortho_adaptive='threshold' sets the hinge threshold: it needs ortho_weighting='hinge', "
                f"got {cfg.ortho_weighting!r}"
            )
        check_number("ortho_momentum", cfg.ortho_momentum, low=0, high=1)
        if cfg.ortho_momentum == 1:
            raise ValueError("ortho_momentum must be a finite number in [0, 1), got 1")
        check_number("ortho_target_corr", cfg.ortho_target_corr, low=0, high=1, low_open=True)

    def __init__(self, sae: Any, device: torch.device) -> None:
        # Always there (1.0 when not adaptive): the pair penalty multiplies by it.
        cfg = sae.cfg
        adaptive = cfg.ortho_adaptive in ("recon", "momentum")
        sae.register_buffer("ortho_strength", torch.tensor(cfg.ortho_strength_init if adaptive else 1.0, device=device))

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        cfg = sae.cfg
        if cfg.ortho_adaptive == "recon":
            sae.ortho_strength.copy_(
                recon_adaptive(
                    sae.ortho_strength,
                    output.losses["mse_loss"].detach(),
                    cfg.ortho_target_recon_loss,
                    cfg.ortho_strength_min,
                    cfg.ortho_strength_max,
                )
            )

    def log(self, sae: Any, ctx: StepContext) -> None:
        if sae.cfg.ortho_adaptive in ("recon", "momentum"):
            ctx.metrics["ortho_strength"] = sae.ortho_strength.clone()
