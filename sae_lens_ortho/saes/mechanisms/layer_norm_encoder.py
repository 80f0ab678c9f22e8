"""Seed 000's LayerNorm encoder (``standard_ortho`` only): f = ReLU(LayerNorm(W_e x + b_e)). The encoder and its
``ln_weight`` / ``ln_bias`` are in ``saes/standard_inference.py`` (shared with inference); here are its field,
its check, and the reset of a re-initialised feature's affine parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from sae_lens_ortho.saes.mechanisms.base import Mechanism

__all__ = ["LayerNormEncoder", "LayerNormEncoderFields"]


@dataclass(kw_only=True)
class LayerNormEncoderFields:
    # --- encoder options that change inference (seeds 000, 004; standard_ortho only) -----------------------
    ortho_encoder_layer_norm: bool = False
    """Seed 000's encoder f = ReLU(LayerNorm(W_e x + b_e)): a LayerNorm (learnable affine, eps 1e-5) over the
    d_sae pre-activations. standard_ortho only. It changes inference, so the SAE saves as architecture
    ``standard_ortho`` and loads only where ``sae_lens_ortho`` is imported."""


class LayerNormEncoder(Mechanism):
    name = "layer_norm_encoder"
    Fields = LayerNormEncoderFields
    architectures = ("standard",)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if not isinstance(cfg.ortho_encoder_layer_norm, bool):
            raise ValueError(f"ortho_encoder_layer_norm must be True or False, got {cfg.ortho_encoder_layer_norm!r}")

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return bool(cfg.ortho_encoder_layer_norm)

    def on_reinit(self, sae: Any, mask: Tensor) -> None:
        sae.ln_weight.data[mask] = 1.0
        sae.ln_bias.data[mask] = 0.0
        sae.ortho_reset_optimizer_state(sae.ln_weight, mask, 0)
        sae.ortho_reset_optimizer_state(sae.ln_bias, mask, 0)
