"""``standard_ortho``: SAELens's standard (ReLU + L1) SAE with the ortho losses, and two encoder options.

* Neither option on: saved and loaded as plain SAELens ``standard``.
* ``ortho_encoder_layer_norm`` (seed 000) and/or ``ortho_competition_gamma > 0`` (seed 004): saved as the
  inference architecture ``standard_ortho`` of ``standard_ortho_inference`` (same encoder code, so the same
  function), which loads where ``sae_lens_ortho`` is imported.

Local competition in training (its table, per-step neighbourhoods and state) is the mechanism
``saes/mechanisms/local_competition.py``; the LayerNorm option's field and re-initialisation are
``saes/mechanisms/layer_norm_encoder.py``. The encoder here asks them.

Its activations are dense-ish (ReLU), so ``ortho_method="auto"`` reads the batch's widest row and picks the
co-firing path when rows are sparse enough, else the chunked scan.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from sae_lens.saes.sae import SAEConfig
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from torch import Tensor
from typing_extensions import override

from sae_lens_ortho.core.competition import CoactivationTable, neighborhoods
from sae_lens_ortho.saes.loading import LOADING_HINT
from sae_lens_ortho.saes.mechanisms import field_mixins
from sae_lens_ortho.saes.mechanisms.local_competition import COMPETITION_BUFFERS, coactivation_table
from sae_lens_ortho.saes.ortho import OrthoConfig, OrthoTrainingSAE, register_training_architecture
from sae_lens_ortho.saes.standard_inference import OrthoEncoderMixin, StandardOrthoSAEConfig

__all__ = ["COMPETITION_BUFFERS", "StandardOrthoTrainingSAE", "StandardOrthoTrainingSAEConfig"]

# Inference field <- training field, for the options that change inference.
_INFERENCE_FIELDS = {
    "encoder_layer_norm": "ortho_encoder_layer_norm",
    "competition_gamma": "ortho_competition_gamma",
    "competition_radius": "ortho_competition_radius",
}


@dataclass(kw_only=True)
class StandardOrthoTrainingSAEConfig(
    *field_mixins("standard", exclude=OrthoConfig), OrthoConfig, StandardTrainingSAEConfig
):
    """Standard training config plus the ortho fields of :class:`~sae_lens_ortho.saes.config.OrthoConfig` and
    those of the standard-only mechanisms (the LayerNorm encoder, local competition).

    Saved as SAELens ``standard`` unless an encoder option is on, then as ``standard_ortho``
    (:class:`~sae_lens_ortho.saes.standard_inference.StandardOrthoSAEConfig`); ``metadata.training_architecture``
    is ``standard_ortho`` and the ortho fields are in ``metadata.training_architecture_details``.
    """

    ortho_base_architecture: ClassVar[str] = "standard"

    @override
    @classmethod
    def architecture(cls) -> str:
        return "standard_ortho"

    def changes_inference(self) -> bool:
        """Whether an encoder option is on, so the SAE must save as ``standard_ortho``."""
        return bool(self.ortho_encoder_layer_norm) or self.ortho_competition_gamma > 0

    @override
    def get_inference_config_class(self) -> type[SAEConfig]:
        if self.changes_inference():
            return StandardOrthoSAEConfig
        return super().get_inference_config_class()

    @override
    def get_inference_sae_cfg_dict(self) -> dict[str, Any]:
        if not self.changes_inference():
            return super().get_inference_sae_cfg_dict()
        out = {f.name: getattr(self, f.name) for f in fields(StandardOrthoSAEConfig) if f.name not in _INFERENCE_FIELDS}
        out.update({name: getattr(self, source) for name, source in _INFERENCE_FIELDS.items()})
        out["architecture"] = StandardOrthoSAEConfig.architecture()
        out["metadata"] = {**self._metadata_with_training_info(), **LOADING_HINT}  # readable without the plugin
        return out


class StandardOrthoTrainingSAE(OrthoTrainingSAE, OrthoEncoderMixin, StandardTrainingSAE):
    """Standard training SAE with the ortho losses and the LayerNorm / local-competition encoder options."""

    cfg: StandardOrthoTrainingSAEConfig  # type: ignore[assignment]
    # Buffers of local competition (registered by the mechanism when gamma > 0).
    ortho_coact_neighbors: Tensor
    ortho_coact_history: Tensor

    # --- the encoder -------------------------------------------------------------------------------------
    def _encoder_layer_norm(self) -> bool:
        return bool(self.cfg.ortho_encoder_layer_norm)

    def _competition_gamma(self) -> float:
        return float(self.cfg.ortho_competition_gamma)

    def _competition_hoods(self) -> Tensor:
        return self.ortho_mechanism("local_competition").hoods(self)

    def _record_competition(self, suppressed: Tensor, active: Tensor) -> None:
        self.ortho_mechanism("local_competition").record(suppressed, active)

    @override
    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(self._ortho_hidden_pre(sae_in))
        return self.hook_sae_acts_post(self._ortho_activate(hidden_pre)), hidden_pre

    def coactivation_table(self) -> CoactivationTable:
        return coactivation_table(self)

    # --- saving -------------------------------------------------------------------------------------------
    @override
    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_saving_inference(state_dict)
        for name in COMPETITION_BUFFERS:
            state_dict.pop(name, None)
        if self.cfg.ortho_competition_gamma > 0:
            # The saved SAE competes in the final table's neighbourhoods, as this SAE does after its last step.
            state_dict["competition_hoods"] = neighborhoods(
                self.coactivation_table(), self.cfg.ortho_competition_threshold
            ).contiguous()


register_training_architecture("standard_ortho", StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig)
