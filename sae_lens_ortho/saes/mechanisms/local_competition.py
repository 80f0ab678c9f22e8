"""Local competition in training (seed 004; ``standard_ortho`` only): inside a feature's co-activation
neighbourhood, an active feature with a strictly stronger active competitor is scaled by (1 - gamma).

The co-activation table of ``core.competition`` lives in the buffers ``ortho_coact_neighbors`` /
``ortho_coact_history`` [d_sae, ortho_competition_radius] (in checkpoints, not in the inference weights).
``before_step`` fixes this step's neighbourhoods (every forward pass of the step, micro-batches included,
competes in the same ones); ``after_step`` adds the step's co-firing to the table and clears them, so any later
encode (evaluation, saving) uses the current table, as the saved SAE does with its ``competition_hoods``. Table
update cost: the sparse pair sort O(b w^2 log) with w the widest row (one host sync), or when b w^2 > n^2 (dense
rows, e.g. early in training) the chunked F^T F count, O(b n^2) flops. The encoder itself is in
``saes/standard_inference.py`` (shared with inference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.competition import (
    CoactivationTable,
    empty_coactivation_table,
    forget_features,
    neighborhoods,
    row_width,
    update_coactivation_history,
    update_coactivation_history_dense,
)
from sae_lens_ortho.saes.checks import check_int, check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["COMPETITION_BUFFERS", "LocalCompetition", "LocalCompetitionFields", "coactivation_table"]

# Training state of the competition: saved in checkpoints, replaced by ``competition_hoods`` at inference.
COMPETITION_BUFFERS = ("ortho_coact_neighbors", "ortho_coact_history")


@dataclass(kw_only=True)
class LocalCompetitionFields:
    ortho_competition_gamma: float = 0.0
    """Seed 004's local competition: inside a feature's co-activation neighbourhood, an active feature with a
    strictly stronger active competitor is scaled by (1 - gamma) (in [0, 1); seed 004: 0.3; 0 = off).
    standard_ortho only; changes inference like ``ortho_encoder_layer_norm``."""

    ortho_competition_radius: int = 32
    """r_max: neighbours kept per feature in the sparse co-activation history (integer >= 1; seed 004: 32)."""

    ortho_competition_threshold: float = 0.1
    """theta_coact: j is in i's neighbourhood when the EMA co-firing rate H_ij exceeds it (in [0, 1])."""

    ortho_competition_decay: float = 0.99
    """beta of the co-activation history EMA (in [0, 1); seed 004: 0.99)."""


def coactivation_table(sae: Any) -> CoactivationTable:
    return CoactivationTable(sae.ortho_coact_neighbors, sae.ortho_coact_history)


class LocalCompetition(Mechanism):
    name = "local_competition"
    Fields = LocalCompetitionFields
    architectures = ("standard",)
    buffers = COMPETITION_BUFFERS

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_number("ortho_competition_gamma", cfg.ortho_competition_gamma, low=0, high=1)
        if cfg.ortho_competition_gamma == 1:
            raise ValueError("ortho_competition_gamma must be a finite number in [0, 1), got 1")
        check_int("ortho_competition_radius", cfg.ortho_competition_radius, low=1)
        check_number("ortho_competition_threshold", cfg.ortho_competition_threshold, low=0, high=1)
        check_number("ortho_competition_decay", cfg.ortho_competition_decay, low=0, high=1)
        if cfg.ortho_competition_decay == 1:
            raise ValueError("ortho_competition_decay must be a finite number in [0, 1), got 1")

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return cfg.ortho_competition_gamma > 0

    def __init__(self, sae: Any, device: torch.device) -> None:
        table = empty_coactivation_table(sae.cfg.d_sae, sae.cfg.ortho_competition_radius, device=device)
        sae.register_buffer("ortho_coact_neighbors", table.neighbors)
        sae.register_buffer("ortho_coact_history", table.history)
        self.step_hoods: Tensor | None = None  # this step's neighbourhoods, between before_step and after_step
        self.counts: Tensor | None = None  # [suppressed, active] entries of this step's forwards

    def hoods(self, sae: Any) -> Tensor:
        """The neighbourhoods the encoder competes in: this step's, or the current table's."""
        if self.step_hoods is not None:
            return self.step_hoods
        return neighborhoods(coactivation_table(sae), sae.cfg.ortho_competition_threshold)

    def record(self, suppressed: Tensor, active: Tensor) -> None:
        if self.counts is not None:  # only inside a training step
            self.counts += torch.stack([suppressed.sum(), active.sum()])

    def before_step(self, sae: Any, step_input: TrainStepInput, ctx: StepContext) -> TrainStepInput:
        self.step_hoods = neighborhoods(coactivation_table(sae), sae.cfg.ortho_competition_threshold)
        self.counts = torch.zeros(2, dtype=torch.int64, device=sae.W_dec.device)
        return step_input

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        cfg = sae.cfg
        hoods, counts = self.step_hoods, self.counts
        self.step_hoods = self.counts = None
        # Competition scales by (1 - gamma) > 0, so these post-competition activations fire where the
        # pre-competition ones did: the co-firing counts are the same.
        table = self._update_table(sae, acts)
        sae.ortho_coact_neighbors.copy_(table.neighbors)
        sae.ortho_coact_history.copy_(table.history)
        if ctx.logging:
            if hoods is None:
                hoods = neighborhoods(table, cfg.ortho_competition_threshold)
            ctx.metrics["ortho_competition_mean_radius"] = (hoods < cfg.d_sae).sum(1).float().mean()
            if counts is not None:
                ctx.metrics["ortho_competition_suppressed_fraction"] = counts[0].double() / counts[1].clamp_min(1)

    def _update_table(self, sae: Any, acts: Tensor) -> CoactivationTable:
        """One EMA step; the pair sort for sparse rows, the chunked co-firing matmul for dense ones (same table)."""
        table, beta = coactivation_table(sae), sae.cfg.ortho_competition_decay
        b, n = acts.shape
        w = max(row_width(acts), 1)  # one host sync
        if b * w * (w - 1) > n * n:
            return update_coactivation_history_dense(table, acts, beta)
        vals, idx = acts.topk(w, dim=1)
        return update_coactivation_history(table, vals, idx, beta)

    def on_reinit(self, sae: Any, mask: Tensor) -> None:
        table = forget_features(coactivation_table(sae), mask)
        sae.ortho_coact_neighbors.copy_(table.neighbors)
        sae.ortho_coact_history.copy_(table.history)
        self.step_hoods = None  # recomputed from the cleaned table
