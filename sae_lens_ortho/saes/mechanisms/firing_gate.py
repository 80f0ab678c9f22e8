"""Firing-rate gate for the selected-pair penalty: only established latents, those whose EMA firing rate is at
least ``ortho_gate_firing_rate``, can be selected. The failure it targets (docs/synthbench.md): a young or rare
latent pushed away from a co-firing neighbour leaves the data and dies, so the penalty should act only between
latents that already hold a place in the data.

The rates (the ``ortho_firing_rate`` buffer, checkpointed) start at 0 and follow an EMA with decay
``ortho_gate_decay``, so a latent is gated out until it has fired at the threshold rate for about
1 / (1 - decay) steps. ``before_step`` puts the mask in ``StepContext.penalised_latents``; the pair penalty
(``pairs.py``, and so dictionary management, which reads its selection) zeroes the other latents' activations before its selection (so the top-p pairs are chosen among
established latents only) and, for pairs chosen by decoder cosine, drops the pairs with a gated latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.schedules import firing_rate_ema
from sae_lens_ortho.saes.checks import check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["FiringGate", "FiringGateFields"]


@dataclass(kw_only=True)
class FiringGateFields:
    ortho_gate_firing_rate: float = 0.0
    """If > 0 (in (0, 1]), the pair penalty selects only pairs of latents whose EMA firing rate (fraction of
    rows in which they are non-zero) is at least this (0 = off, the default). E.g. 0.002 on a 512-latent TopK
    SAE with k 8 (mean rate 8/512 = 0.016) leaves out latents firing 8x less than average."""

    ortho_gate_decay: float = 0.99
    """EMA decay of the firing rates the gate reads (in [0, 1)); a latent needs about 1 / (1 - decay) steps at
    the threshold rate to pass (the rates start at 0)."""


class FiringGate(Mechanism):
    name = "firing_gate"
    Fields = FiringGateFields
    buffers = ("ortho_firing_rate",)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_number("ortho_gate_firing_rate", cfg.ortho_gate_firing_rate, low=0, high=1)
        check_number("ortho_gate_decay", cfg.ortho_gate_decay, low=0, high=1)
        if cfg.ortho_gate_decay == 1:
            raise ValueError("ortho_gate_decay must be in [0, 1), got 1 (the firing rates would never leave 0)")

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return cfg.ortho_gate_firing_rate > 0

    def __init__(self, sae: Any, device: torch.device) -> None:
        sae.register_buffer("ortho_firing_rate", torch.zeros(sae.cfg.d_sae, device=device))

    def before_step(self, sae: Any, step_input: TrainStepInput, ctx: StepContext) -> TrainStepInput:
        established = sae.ortho_firing_rate >= sae.cfg.ortho_gate_firing_rate
        chosen = ctx.penalised_latents
        ctx.penalised_latents = established if chosen is None else chosen & established
        return step_input

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        sae.ortho_firing_rate.copy_(firing_rate_ema(sae.ortho_firing_rate, acts, sae.cfg.ortho_gate_decay))

    def log(self, sae: Any, ctx: StepContext) -> None:
        established = (sae.ortho_firing_rate >= sae.cfg.ortho_gate_firing_rate).float().mean()
        ctx.metrics["ortho_gate_established_fraction"] = established
