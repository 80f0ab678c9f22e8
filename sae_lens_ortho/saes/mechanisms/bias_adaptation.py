"""Firing-rate control by bias adaptation (after arXiv 2506.14002, "Taming Polysemanticity in LLMs"): each
latent's encoder bias is nudged so its firing rate stays inside a band around a target rate. The paper's finding
is that a latent learns a true feature when its firing rate matches the feature's; a latent far off (dead or
rare, or firing on everything) is pushed back toward the band instead of being penalised for overlap.

Our form, for the TopK family (where the firing rate is set by ranking, so a bias shift moves a latent in the
ranks): the rates are an EMA (decay ``ortho_bias_decay``) in the checkpointed ``ortho_bias_firing_rate`` buffer,
started at the target; the step is ``ortho_bias_adapt_rate`` times the typical activation of a firing latent
(an EMA of the mean non-zero activation, ``ortho_bias_act_scale``), so the rate means the same at any input
scale. ``after_step`` measures; ``prepare`` of the next step moves the biases (before the forward pass, like
dictionary management's re-initialisation), so a resumed run moves them exactly as an unbroken one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.schedules import active_magnitude_ema, firing_rate_ema, rate_band_direction
from sae_lens_ortho.saes.checks import check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["BiasAdaptation", "BiasAdaptationFields", "target_rate"]


@dataclass(kw_only=True)
class BiasAdaptationFields:
    ortho_bias_adapt_rate: float = 0.0
    """If > 0, firing-rate control by bias adaptation (TopK family): every step, each latent whose EMA firing rate
    is outside [target / band, target * band] has its encoder bias moved by this fraction of a firing latent's
    typical activation, up when it fires too rarely and down when too often (0 = off, the default; e.g. 0.001)."""

    ortho_bias_target_rate: float = 0.0
    """The target firing rate, in (0, 1]; 0 = the SAE's mean rate k / d_sae."""

    ortho_bias_band: float = 4.0
    """Half-width of the band as a factor (>= 1): no change while target / band <= rate <= target * band."""

    ortho_bias_decay: float = 0.99
    """EMA decay of the firing rates and of the typical activation (in [0, 1))."""


def target_rate(cfg: Any) -> float:
    """The firing rate the biases steer toward: ``ortho_bias_target_rate``, or k / d_sae when it is 0."""
    return float(cfg.ortho_bias_target_rate) or float(cfg.k) / cfg.d_sae


class BiasAdaptation(Mechanism):
    name = "bias_adaptation"
    Fields = BiasAdaptationFields
    buffers = ("ortho_bias_firing_rate", "ortho_bias_act_scale")

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_number("ortho_bias_adapt_rate", cfg.ortho_bias_adapt_rate, low=0, high=1)
        check_number("ortho_bias_target_rate", cfg.ortho_bias_target_rate, low=0, high=1)
        check_number("ortho_bias_band", cfg.ortho_bias_band, low=1)
        check_number("ortho_bias_decay", cfg.ortho_bias_decay, low=0, high=1)
        if cfg.ortho_bias_decay == 1:
            raise ValueError("ortho_bias_decay must be in [0, 1), got 1 (the firing rates would never move)")
        if cfg.ortho_bias_adapt_rate > 0 and not hasattr(cfg, "k"):
            raise ValueError(
                "ortho_bias_adapt_rate needs a TopK-family architecture (topk_ortho, batchtopk_ortho, "
                f"matryoshka_batchtopk_ortho), whose firing is set by ranking; {cfg.ortho_base_architecture!r} has no k"
            )

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return cfg.ortho_bias_adapt_rate > 0

    def __init__(self, sae: Any, device: torch.device) -> None:
        rates = torch.full((sae.cfg.d_sae,), target_rate(sae.cfg), device=device)  # no kick at the first steps
        sae.register_buffer("ortho_bias_firing_rate", rates)
        sae.register_buffer("ortho_bias_act_scale", torch.zeros((), device=device))

    @torch.no_grad()
    def prepare(self, sae: Any, ctx: StepContext) -> None:
        cfg = sae.cfg
        direction = rate_band_direction(sae.ortho_bias_firing_rate, target_rate(cfg), cfg.ortho_bias_band)
        step = cfg.ortho_bias_adapt_rate * sae.ortho_bias_act_scale
        sae.b_enc.add_((step * direction).to(sae.b_enc.dtype))

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        decay = sae.cfg.ortho_bias_decay
        sae.ortho_bias_firing_rate.copy_(firing_rate_ema(sae.ortho_bias_firing_rate, acts, decay))
        sae.ortho_bias_act_scale.copy_(active_magnitude_ema(sae.ortho_bias_act_scale, acts, decay))

    def on_reinit(self, sae: Any, mask: Tensor) -> None:
        # A re-initialised latent starts over, as at the first step: at the target rate.
        sae.ortho_bias_firing_rate[mask] = target_rate(sae.cfg)

    def log(self, sae: Any, ctx: StepContext) -> None:
        cfg = sae.cfg
        direction = rate_band_direction(sae.ortho_bias_firing_rate, target_rate(cfg), cfg.ortho_bias_band)
        ctx.metrics["ortho_bias_raised_fraction"] = (direction > 0).float().mean()
        ctx.metrics["ortho_bias_lowered_fraction"] = (direction < 0).float().mean()
