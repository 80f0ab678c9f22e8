"""Micro-batch gradient accumulation (seed 000's memory saving): the step runs in micro-batches of
``ortho_micro_batch_size`` rows with the whole batch's gradient (``saes/accumulate.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

from sae_lens_ortho.saes.accumulate import accumulated_forward
from sae_lens_ortho.saes.checks import check_int
from sae_lens_ortho.saes.mechanisms.base import Mechanism

__all__ = ["MicroBatches", "MicroBatchesFields"]


@dataclass(kw_only=True)
class MicroBatchesFields:
    # --- memory (seed 000) ---------------------------------------------------------------------------------
    ortho_micro_batch_size: int | None = None
    """If set (integer >= 1), each training batch is processed in micro-batches of this many rows with
    gradient accumulation; the gradient equals the full batch's (the ortho penalty still sees the whole
    batch). Not for BatchTopK, whose encoder ranks across the batch."""


class MicroBatches(Mechanism):
    name = "micro_batches"
    Fields = MicroBatchesFields

    @classmethod
    def validate(cls, cfg: Any) -> None:
        if cfg.ortho_micro_batch_size is not None:
            check_int("ortho_micro_batch_size", cfg.ortho_micro_batch_size, low=1)
            if "batchtopk" in cfg.ortho_base_architecture:
                raise ValueError(
                    "ortho_micro_batch_size must be None on a BatchTopK SAE: its encoder ranks activations across "
                    "the whole batch, so micro-batches would change the result"
                )

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return cfg.ortho_micro_batch_size is not None

    def splits_batch(self, sae: Any, step_input: TrainStepInput) -> bool:
        return step_input.sae_in.shape[0] > sae.cfg.ortho_micro_batch_size

    def forward(self, sae: Any, step_input: TrainStepInput, base_forward: Any) -> TrainStepOutput:
        return accumulated_forward(sae, step_input, base_forward)
