"""Pair penalty on Matryoshka's inner levels only: with ``ortho_inner_levels_only``, the pair penalty selects
only latents of the nested dictionaries inside the outermost one (index below ``matryoshka_widths[-2]``). The
inner levels must reconstruct on their own, so they hold the general (parent) directions; the outermost level's
latents, which specialise (children), are left free to align with their parents, as the hierarchy's true
children do.

``before_step`` narrows ``StepContext.penalised_latents`` (also set by the firing-rate gate: both apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput

from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["InnerLevels", "InnerLevelsFields"]


@dataclass(kw_only=True)
class InnerLevelsFields:
    ortho_inner_levels_only: bool = False
    """If True, the pair penalty selects only latents of the inner Matryoshka levels (index below
    ``matryoshka_widths[-2]``); needs ``matryoshka_batchtopk_ortho`` with at least two widths."""


class InnerLevels(Mechanism):
    name = "inner_levels"
    Fields = InnerLevelsFields

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if not isinstance(cfg.ortho_inner_levels_only, bool):
            raise ValueError(f"ortho_inner_levels_only must be a bool, got {cfg.ortho_inner_levels_only!r}")
        if cfg.ortho_inner_levels_only and not hasattr(cfg, "matryoshka_widths"):
            raise ValueError(
                "ortho_inner_levels_only needs a Matryoshka architecture (matryoshka_batchtopk_ortho); "
                f"{cfg.ortho_base_architecture!r} has no levels"
            )
        if cfg.ortho_inner_levels_only and len(_widths(cfg)) < 2:
            raise ValueError(
                "ortho_inner_levels_only needs at least two matryoshka_widths (an inner level inside d_sae), "
                f"got {list(cfg.matryoshka_widths)}"
            )

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return bool(cfg.ortho_inner_levels_only)

    def before_step(self, sae: Any, step_input: TrainStepInput, ctx: StepContext) -> TrainStepInput:
        # Built each step on the weights' device (the SAE may have moved since it was built); [d_sae], cheap.
        inner = torch.arange(sae.cfg.d_sae, device=sae.W_dec.device) < _widths(sae.cfg)[-2]
        chosen = ctx.penalised_latents
        ctx.penalised_latents = inner if chosen is None else chosen & inner
        return step_input


def _widths(cfg: Any) -> list[int]:
    """The nested widths ending at d_sae (SAELens appends d_sae when the list stops short of it)."""
    widths = sorted(int(w) for w in cfg.matryoshka_widths)
    return widths if widths and widths[-1] == cfg.d_sae else [*widths, cfg.d_sae]
