"""``standard_ortho``: SAELens's standard (ReLU + L1) SAE with the ortho losses, and two encoder options.

* Neither option on: saved and loaded as plain SAELens ``standard``.
* ``ortho_encoder_layer_norm`` (seed 000) and/or ``ortho_competition_gamma > 0`` (seed 004): saved as the
  inference architecture ``standard_ortho`` of ``standard_ortho_inference`` (same encoder code, so the same
  function), which loads where ``sae_lens_ortho`` is imported.

Local competition in training: the co-activation table of ``sae_lens_ortho.core.competition`` lives in the buffers
``ortho_coact_neighbors`` / ``ortho_coact_history`` [d_sae, ortho_competition_radius] (in checkpoints, not in
the inference weights). ``ortho_before_step`` fixes this step's neighbourhoods (every forward pass of the step,
micro-batches included, competes in the same ones); ``ortho_after_step`` adds the step's co-firing to the table
and clears them, so any later encode (evaluation, saving) uses the current table, as the saved SAE does with
its ``competition_hoods``. Table update cost: the sparse pair sort O(b w^2 log) with w the widest row (one host
sync), or when b w^2 > n^2 (dense rows, e.g. early in training) the chunked F^T F count, O(b n^2) flops.

Its activations are dense-ish (ReLU), so ``ortho_method="auto"`` reads the batch's widest row and picks the
co-firing path when rows are sparse enough, else the chunked scan.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from sae_lens.saes.sae import SAEConfig
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from torch import Tensor
from typing_extensions import override

from sae_lens_ortho.core.competition import (
    CoactivationTable,
    empty_coactivation_table,
    forget_features,
    neighborhoods,
    row_width,
    update_coactivation_history,
    update_coactivation_history_dense,
)
from sae_lens_ortho.saes.loading import LOADING_HINT
from sae_lens_ortho.saes.ortho import OrthoConfig, OrthoTrainingSAE, register_training_architecture
from sae_lens_ortho.saes.standard_inference import OrthoEncoderMixin, StandardOrthoSAEConfig

__all__ = ["COMPETITION_BUFFERS", "StandardOrthoTrainingSAE", "StandardOrthoTrainingSAEConfig"]

# Training state of the competition: saved in checkpoints, replaced by ``competition_hoods`` at inference.
COMPETITION_BUFFERS = ("ortho_coact_neighbors", "ortho_coact_history")
# Inference field <- training field, for the options that change inference.
_INFERENCE_FIELDS = {
    "encoder_layer_norm": "ortho_encoder_layer_norm",
    "competition_gamma": "ortho_competition_gamma",
    "competition_radius": "ortho_competition_radius",
}


@dataclass(kw_only=True)
class StandardOrthoTrainingSAEConfig(OrthoConfig, StandardTrainingSAEConfig):
    """Standard training config plus the ortho fields of :class:`~sae_lens_ortho.saes.config.OrthoConfig`.

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
    # Buffers of local competition (registered in __init__ when gamma > 0).
    ortho_coact_neighbors: Tensor
    ortho_coact_history: Tensor
    _ortho_step_hoods: Tensor | None = None  # this step's neighbourhoods, between before_step and after_step
    _ortho_competition_counts: Tensor | None = None  # [suppressed, active] entries of this step's forwards

    def __init__(self, cfg: StandardOrthoTrainingSAEConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        if cfg.ortho_competition_gamma > 0:
            table = empty_coactivation_table(cfg.d_sae, cfg.ortho_competition_radius, device=self.W_dec.device)
            self.register_buffer("ortho_coact_neighbors", table.neighbors)
            self.register_buffer("ortho_coact_history", table.history)

    # --- the encoder -------------------------------------------------------------------------------------
    def _encoder_layer_norm(self) -> bool:
        return bool(self.cfg.ortho_encoder_layer_norm)

    def _competition_gamma(self) -> float:
        return float(self.cfg.ortho_competition_gamma)

    def _competition_hoods(self) -> Tensor:
        if self._ortho_step_hoods is not None:
            return self._ortho_step_hoods
        return neighborhoods(self.coactivation_table(), self.cfg.ortho_competition_threshold)

    def _record_competition(self, suppressed: Tensor, active: Tensor) -> None:
        if self._ortho_competition_counts is not None:  # only inside a training step
            self._ortho_competition_counts += torch.stack([suppressed.sum(), active.sum()])

    @override
    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(self._ortho_hidden_pre(sae_in))
        return self.hook_sae_acts_post(self._ortho_activate(hidden_pre)), hidden_pre

    def coactivation_table(self) -> CoactivationTable:
        return CoactivationTable(self.ortho_coact_neighbors, self.ortho_coact_history)

    # --- per-step hooks of OrthoTrainingSAE ----------------------------------------------------------------
    @override
    def ortho_before_step(self) -> None:
        super().ortho_before_step()
        if self.cfg.ortho_competition_gamma > 0:
            self._ortho_step_hoods = neighborhoods(self.coactivation_table(), self.cfg.ortho_competition_threshold)
            self._ortho_competition_counts = torch.zeros(2, dtype=torch.int64, device=self.W_dec.device)

    @override
    def ortho_after_step(self, feature_acts: Tensor, is_logging_step: bool) -> dict[str, Tensor]:
        metrics = dict(super().ortho_after_step(feature_acts, is_logging_step))
        cfg = self.cfg
        if cfg.ortho_competition_gamma <= 0:
            return metrics
        hoods, counts = self._ortho_step_hoods, self._ortho_competition_counts
        self._ortho_step_hoods = self._ortho_competition_counts = None
        with torch.no_grad():
            # Competition scales by (1 - gamma) > 0, so these post-competition activations fire where the
            # pre-competition ones did: the co-firing counts are the same.
            table = self._update_table(feature_acts.detach())
            self.ortho_coact_neighbors.copy_(table.neighbors)
            self.ortho_coact_history.copy_(table.history)
            if is_logging_step:
                if hoods is None:
                    hoods = neighborhoods(table, cfg.ortho_competition_threshold)
                metrics["ortho_competition_mean_radius"] = (hoods < cfg.d_sae).sum(1).float().mean()
                if counts is not None:
                    metrics["ortho_competition_suppressed_fraction"] = counts[0].double() / counts[1].clamp_min(1)
        return metrics

    def _update_table(self, acts: Tensor) -> CoactivationTable:
        """One EMA step; the pair sort for sparse rows, the chunked co-firing matmul for dense ones (same table)."""
        table, beta = self.coactivation_table(), self.cfg.ortho_competition_decay
        b, n = acts.shape
        w = max(row_width(acts), 1)  # one host sync
        if b * w * (w - 1) > n * n:
            return update_coactivation_history_dense(table, acts, beta)
        vals, idx = acts.topk(w, dim=1)
        return update_coactivation_history(table, vals, idx, beta)

    @override
    def ortho_on_reinit(self, mask: Tensor) -> None:
        super().ortho_on_reinit(mask)
        cfg = self.cfg
        if cfg.ortho_competition_gamma > 0:
            table = forget_features(self.coactivation_table(), mask)
            self.ortho_coact_neighbors.copy_(table.neighbors)
            self.ortho_coact_history.copy_(table.history)
            self._ortho_step_hoods = None  # recomputed from the cleaned table
        if cfg.ortho_encoder_layer_norm:
            self.ln_weight.data[mask] = 1.0
            self.ln_bias.data[mask] = 0.0
            reset = getattr(self, "ortho_reset_optimizer_state", None)
            if reset is not None:
                reset(self.ln_weight, mask, 0)
                reset(self.ln_bias, mask, 0)

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
