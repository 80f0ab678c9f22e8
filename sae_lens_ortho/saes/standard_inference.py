"""Inference architecture ``standard_ortho``: SAELens's standard ReLU SAE with seed 000's LayerNorm encoder and/or
seed 004's local competition, the encoder options of the ``standard_ortho`` training architecture.

    hidden_pre = LayerNorm(W_enc^T (x - b_dec) + b_enc)        (only with encoder_layer_norm; else the linear map)
    a          = ReLU(hidden_pre)
    a_i       <- (1 - gamma) a_i   if an active neighbour j (j in hood(i) or i in hood(j)) has a_j |d_j| > a_i |d_i|

Readings chosen:

* LayerNorm is over the d_sae pre-activations, learnable affine ``ln_weight`` / ``ln_bias`` [d_sae] (init 1 / 0),
  eps 1e-5, exactly ``torch.nn.functional.layer_norm``. ``hook_sae_acts_pre`` sees the LayerNorm output (the
  input of the ReLU, as for SAELens's other architectures).
* Competition compares strengths s_i = a_i |d_i| (the size of feature i's contribution to the reconstruction,
  ``sae_lens_ortho.core.competition``'s ``scale``), so folding decoder norms keeps the decisions. The neighbourhoods
  are frozen at save time in the ``competition_hoods`` buffer [d_sae, competition_radius] (sorted ids padded
  with d_sae). Each row's competition is exact whatever its number of non-zeros: one host sync reads the
  widest row w; if w^2 <= 2 n r the top-w path is used (O(b w^2)), else the neighbourhood path (O(b n r)).
* ``fold_W_dec_norm``: with LayerNorm, scaling W_enc / b_enc does not commute with the normalisation, so the
  norms go into the affine instead: ReLU(s (g n + beta)) = s ReLU(g n + beta) for s > 0. Without LayerNorm the
  standard fold applies (ReLU is positively homogeneous).

The training SAE (``sae_lens_ortho.saes.standard``) uses the same :class:`OrthoEncoderMixin`, so it computes
the same function as the saved SAE. Saved SAEs load with ``SAE.load_from_disk`` once ``sae_lens_ortho`` is
imported (the architecture is registered here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from torch import Tensor, nn
from typing_extensions import override

from sae_lens_ortho.core.competition import row_width, suppression_mask_dense
from sae_lens_ortho.saes.ortho import register_inference_architecture

__all__ = [
    "LN_EPS",
    "OrthoEncoderMixin",
    "StandardOrthoSAE",
    "StandardOrthoSAEConfig",
    "competition_mask",
]

LN_EPS = 1e-5  # torch.nn.functional.layer_norm's default, seed 000's LayerNorm


def competition_mask(acts: Tensor, hoods: Tensor, scale: Tensor) -> Tensor:
    """[b, n] bool: entries of ``acts`` [b, n] suppressed by local competition, exact for any row width.

    One host sync reads the widest row w; the top-w path costs O(b w^2 log r), the neighbourhood path O(b n r):
    take the first while w^2 <= 2 n r (both give the same mask)."""
    n, r = hoods.shape
    w = row_width(acts)
    if w < 2 or r == 0:
        return torch.zeros_like(acts, dtype=torch.bool)
    return suppression_mask_dense(acts, hoods, scale, width=w if w * w <= 2 * n * r else None)


class OrthoEncoderMixin:
    """The encoder shared by the training and inference ``standard_ortho`` SAEs (mixed in before the base SAE).

    Subclasses say whether each option is on and where the neighbourhoods come from."""

    cfg: Any
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    ln_weight: nn.Parameter
    ln_bias: nn.Parameter

    def _encoder_layer_norm(self) -> bool:
        raise NotImplementedError

    def _competition_gamma(self) -> float:
        raise NotImplementedError

    def _competition_hoods(self) -> Tensor:
        """[d_sae, r] int64 neighbourhoods to compete in (sorted ids padded with d_sae)."""
        raise NotImplementedError

    def _record_competition(self, suppressed: Tensor, active: Tensor) -> None:
        """Called with the [b, n] masks of each competition (the training SAE counts them for its metrics)."""

    def initialize_weights(self) -> None:
        super().initialize_weights()  # type: ignore[misc]
        if self._encoder_layer_norm():
            d_sae, dtype, device = self.cfg.d_sae, self.dtype, self.device  # type: ignore[attr-defined]
            self.ln_weight = nn.Parameter(torch.ones(d_sae, dtype=dtype, device=device))
            self.ln_bias = nn.Parameter(torch.zeros(d_sae, dtype=dtype, device=device))

    def _ortho_hidden_pre(self, sae_in: Tensor) -> Tensor:
        """The input of the ReLU: the linear encoder, then the LayerNorm when it is on."""
        pre = sae_in @ self.W_enc + self.b_enc
        if self._encoder_layer_norm():
            pre = F.layer_norm(pre, (pre.shape[-1],), self.ln_weight, self.ln_bias, eps=LN_EPS)
        return pre

    def _ortho_activate(self, hidden_pre: Tensor) -> Tensor:
        """ReLU, then local competition when it is on (inputs of any leading shape)."""
        acts = self.activation_fn(hidden_pre)  # type: ignore[attr-defined]
        gamma = self._competition_gamma()
        if gamma <= 0:
            return acts
        flat = acts.reshape(-1, acts.shape[-1])
        with torch.no_grad():  # the decisions are discrete: the gradient is the (1 - gamma) factor only
            mask = competition_mask(flat.detach(), self._competition_hoods(), self.W_dec.norm(dim=-1))
            self._record_competition(mask, flat.detach() > 0)
        factor = torch.where(mask, 1.0 - gamma, 1.0).to(acts.dtype)
        return (flat * factor).reshape(acts.shape)

    @torch.no_grad()
    def fold_and_get_W_dec_norm(self) -> Tensor:
        if not self._encoder_layer_norm():
            return super().fold_and_get_W_dec_norm()  # type: ignore[misc]
        # W_enc / b_enc scaling does not commute with the LayerNorm: fold into its affine (ReLU(s y) = s ReLU(y)).
        norms = self.get_W_dec_norm()  # type: ignore[attr-defined]
        self.W_dec.data.div_(norms.unsqueeze(1))
        self.ln_weight.data.mul_(norms)
        self.ln_bias.data.mul_(norms)
        return norms


@dataclass
class StandardOrthoSAEConfig(StandardSAEConfig):
    """Inference config of ``standard_ortho``: a standard SAE plus the encoder options it was trained with."""

    encoder_layer_norm: bool = False
    """ReLU(LayerNorm(W_enc x + b_enc)) with the ``ln_weight`` / ``ln_bias`` affine (training:
    ``ortho_encoder_layer_norm``)."""

    competition_gamma: float = 0.0
    """Local competition: an active feature with a strictly stronger active neighbour (strength a_i |d_i|) is
    scaled by (1 - gamma); 0 = off (training: ``ortho_competition_gamma``)."""

    competition_radius: int = 32
    """Width r of the ``competition_hoods`` buffer [d_sae, r] (training: ``ortho_competition_radius``)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "standard_ortho"


class StandardOrthoSAE(OrthoEncoderMixin, StandardSAE):
    """Inference SAE of ``standard_ortho`` (see the module docstring). Weights: W_enc, b_enc, W_dec, b_dec, plus
    ``ln_weight`` / ``ln_bias`` with the LayerNorm and the ``competition_hoods`` buffer with competition."""

    cfg: StandardOrthoSAEConfig  # type: ignore[assignment]
    competition_hoods: Tensor  # buffer, registered in __init__ when competition is on

    def __init__(self, cfg: StandardOrthoSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        if cfg.competition_gamma > 0:
            # Empty neighbourhoods until the saved ones are loaded (no competition).
            hoods = torch.full((cfg.d_sae, cfg.competition_radius), cfg.d_sae, dtype=torch.int64, device=self.device)
            self.register_buffer("competition_hoods", hoods)

    def _encoder_layer_norm(self) -> bool:
        return self.cfg.encoder_layer_norm

    def _competition_gamma(self) -> float:
        return self.cfg.competition_gamma

    def _competition_hoods(self) -> Tensor:
        return self.competition_hoods

    @override
    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_loading(state_dict)
        # Training checkpoints carry the same architecture name, with unfolded weights and the ortho_* training
        # buffers: say so instead of failing on unexpected keys (or silently dropping the encoder options).
        if any(key.startswith("ortho_") for key in state_dict):
            raise ValueError(
                "this folder is a standard_ortho *training* checkpoint (its weights hold ortho_* training state), "
                "not a saved inference SAE: load it with TrainingSAE.load_from_disk, or with "
                "sae_lens_ortho.evals.saebench.run.load_sae, which converts it as the runner saves the final SAE"
            )

    @override
    def encode(self, x: Tensor) -> Tensor:
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(self._ortho_hidden_pre(sae_in))
        return self.hook_sae_acts_post(self._ortho_activate(hidden_pre))


register_inference_architecture("standard_ortho", StandardOrthoSAE, StandardOrthoSAEConfig)
