"""A worked example of an ortho mechanism (docs/architecture.md, "Add a mechanism"): an L2 penalty on the
decoder rows' norms, off by default. Test use only; registered from outside the package, so configs that
``add_ortho`` builds after the registration carry its field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sae_lens.saes.sae import TrainStepInput
from torch import Tensor

from sae_lens_ortho.saes.checks import MAX_COEFFICIENT, check_number
from sae_lens_ortho.saes.mechanisms import Mechanism, StepContext, register_mechanism


@dataclass(kw_only=True)
class DecoderNormFields:
    ortho_decoder_norm_coefficient: float = 0.0
    """Weight of an L2 penalty on the decoder rows' norms, mean_i ||d_i||^2 (>= 0; 0 = off)."""


class DecoderNormPenalty(Mechanism):
    name = "decoder_norm_penalty"
    Fields = DecoderNormFields
    loss_name = "decoder_norm_loss"

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_number("ortho_decoder_norm_coefficient", cfg.ortho_decoder_norm_coefficient, low=0, high=MAX_COEFFICIENT)

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return cfg.ortho_decoder_norm_coefficient > 0

    def loss(
        self, sae: Any, feature_acts: Tensor, step_input: TrainStepInput, zero: Tensor, ctx: StepContext
    ) -> Tensor:
        penalty = sae.W_dec.pow(2).sum(-1).mean()  # a real mechanism calls a pure function of core/ here
        if ctx.logging:
            ctx.metrics["ortho_decoder_norm_penalty"] = penalty.detach()
        return sae.cfg.ortho_decoder_norm_coefficient * penalty


register_mechanism(DecoderNormPenalty)
