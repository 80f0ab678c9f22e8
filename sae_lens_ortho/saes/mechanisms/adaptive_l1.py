"""Adaptive L1 coefficient (seed 004): the L1 coefficient of an ``l1`` architecture, kept in the ``ortho_l1``
buffer, follows the fraction of active features towards ``ortho_l1_target_rate`` (``core.schedules``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.schedules import activation_rate, adaptive_l1
from sae_lens_ortho.saes.checks import check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["L1_RANGE", "AdaptiveL1", "AdaptiveL1Fields"]

# Seed 004's range for the adaptive L1 coefficient.
L1_RANGE = (0.01, 0.2)


@dataclass(kw_only=True)
class AdaptiveL1Fields:
    ortho_l1_target_rate: float | None = None
    """If set (in (0, 1]), the L1 coefficient of an ``l1`` architecture (``standard``) adapts so the fraction
    of active features approaches this rate: l1 <- clip(l1 * (rate/target)^ortho_l1_step_size, 0.01, 0.2)
    (seed 004: lambda_1 in [0.01, 0.2], 10% activation). Starts from l1_coefficient clipped to that range."""

    ortho_l1_step_size: float = 0.1
    """Step of that controller in log(lambda_1) per unit of log(rate / target) (> 0)."""


class AdaptiveL1(Mechanism):
    name = "adaptive_l1"
    Fields = AdaptiveL1Fields
    buffers = ("ortho_l1",)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if cfg.ortho_l1_target_rate is not None:
            check_number("ortho_l1_target_rate", cfg.ortho_l1_target_rate, low=0, high=1, low_open=True)
            if not hasattr(cfg, "l1_coefficient"):
                raise ValueError(
                    "ortho_l1_target_rate needs an architecture with an L1 coefficient (e.g. standard_ortho); "
                    f"{cfg.ortho_base_architecture!r} has none"
                )
        check_number("ortho_l1_step_size", cfg.ortho_l1_step_size, low=0, low_open=True)

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return cfg.ortho_l1_target_rate is not None

    def __init__(self, sae: Any, device: torch.device) -> None:
        l1 = min(max(float(sae.cfg.l1_coefficient), L1_RANGE[0]), L1_RANGE[1])
        sae.register_buffer("ortho_l1", torch.tensor(l1, device=device))

    def before_step(self, sae: Any, step_input: TrainStepInput, ctx: StepContext) -> TrainStepInput:
        return replace(step_input, coefficients={**step_input.coefficients, "l1": sae.ortho_l1.clone()})

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        cfg = sae.cfg
        sae.ortho_l1.copy_(
            adaptive_l1(
                sae.ortho_l1, activation_rate(acts), cfg.ortho_l1_target_rate, cfg.ortho_l1_step_size, *L1_RANGE
            )
        )
        if ctx.logging:
            ctx.metrics["ortho_l1"] = sae.ortho_l1.clone()
