"""Unit-norm decoder rows (seeds 001, 002): every step starts by projecting the rows back onto the unit sphere
(the previous optimizer update moved them), without touching SAELens's trainer; the final SAE folds the norms so
it computes the same function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sae_lens_ortho.core.numerics import unit_rows
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["UnitNormDecoder", "UnitNormDecoderFields"]


@dataclass(kw_only=True)
class UnitNormDecoderFields:
    # --- training-time normalisation and sparsity (seeds 001, 002, 004) -------------------------------------
    ortho_unit_norm_decoder: bool = False
    """Rescale decoder rows to unit norm before every step, i.e. after every optimizer update (seeds 001, 002),
    without touching SAELens's trainer; the saved SAE folds the norms so it computes the same function."""


class UnitNormDecoder(Mechanism):
    name = "unit_norm_decoder"
    Fields = UnitNormDecoderFields

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if not isinstance(cfg.ortho_unit_norm_decoder, bool):
            raise ValueError(f"ortho_unit_norm_decoder must be True or False, got {cfg.ortho_unit_norm_decoder!r}")
        if cfg.ortho_unit_norm_decoder and getattr(cfg, "rescale_acts_by_decoder_norm", None) is False:
            # TopK-family SAEs can only fold decoder norms when they rescale by them (SAELens refuses otherwise).
            raise ValueError(
                "ortho_unit_norm_decoder=True needs rescale_acts_by_decoder_norm=True on a TopK-family SAE "
                "(allowed: rescale_acts_by_decoder_norm=True, or ortho_unit_norm_decoder=False)"
            )

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return bool(cfg.ortho_unit_norm_decoder)

    def prepare(self, sae: Any, ctx: StepContext) -> None:
        with torch.no_grad():  # the previous optimizer update moved the norms: project back (seeds 001, 002)
            W_dec = sae.W_dec
            W_dec.copy_(unit_rows(W_dec))  # exact at any norm (a clamp left rows below 1e-8 short); 0 stays 0

    def before_inference_save(self, sae: Any) -> None:
        if not getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
            # The last optimizer update left the norms off 1; folding them keeps the saved SAE's function.
            # (TopK with rescale_acts_by_decoder_norm folds them itself.) Shared storage: this updates state_dict.
            sae.fold_W_dec_norm()
