"""What every ortho mechanism is: a class that owns its config fields, their validation, its checkpointed buffers,
its loss and its per-step hooks. ``OrthoTrainingSAE`` (``saes/ortho.py``) runs the active ones in registry order
(``mechanisms/__init__.py``); nothing else in the step knows a mechanism by name.

A step, as the mixin runs it (``OrthoTrainingSAE.training_forward_pass``):

1. ``prepare`` of every active mechanism (may change weights: re-initialised features, unit-norm decoder rows);
2. the non-finite guard snapshots the buffers; the architecture's ``ortho_before_step``;
3. ``before_step`` (per-step state, coefficients the base loss reads);
4. the base forward pass; its ``calculate_aux_loss`` adds each mechanism's ``loss`` under ``loss_name``
   (or ``micro_batches`` runs it in micro-batches, taking the losses on the whole batch);
5. without a graph: the architecture's ``ortho_after_step``, then ``after_step`` (adaptive state, tables);
   the guard restores the buffers of a non-finite step; the step counter advances;
6. on logging steps, ``log`` (state read after the guard).

Metrics go into ``StepContext.metrics`` (read on logging steps only); ``StepContext`` also carries what one
mechanism leaves for another in the same step (the selected pairs, the captured activations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput, TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.penalties import SelectedPairs

__all__ = ["Mechanism", "StepContext", "loss_scale"]


@dataclass
class StepContext:
    """One training step's shared, transient state (never checkpointed)."""

    step: int = 0
    """The SAE's own step count (``ortho_step``; SAELens's ``n_training_steps`` is one lower after a resume)."""
    logging: bool = False
    metrics: dict[str, Tensor] = field(default_factory=dict)
    selection: SelectedPairs | None = None
    """The pairs the pair penalty selected on the whole batch this step (None: the selection did not run)."""
    captured: tuple[Tensor, Tensor] | None = None
    """(values, indices) of the whole batch's non-zero activations, once the selection read them."""
    penalised_latents: Tensor | None = None
    """[d_sae] bool: the latents the pair penalty may select (None: every one); set by the firing-rate gate and the inner-levels filter."""


class Mechanism:
    """One ortho mechanism. Subclasses set the class attributes and override the hooks they need; every hook is
    a no-op by default. A mechanism object lives on one SAE (``sae.ortho_mechanisms``), built only when
    :meth:`active` says its fields switch it on; its buffers live on the SAE under their own names, so
    checkpoints keep them and the inference weights drop them."""

    name: ClassVar[str]
    """Short name (``sae.ortho_mechanism(name)``)."""
    Fields: ClassVar[type]
    """A ``@dataclass(kw_only=True)`` with its ``ortho_*`` fields and their docstrings (flat in ``cfg.json``, on
    the command line and in ``--help``)."""
    architectures: ClassVar[tuple[str, ...] | None] = None
    """Base architectures whose ``*_ortho`` config carries the fields (None: every one, in ``OrthoConfig``);
    ``add_ortho`` and the hand-written configs (``standard.py``) add them for these bases only."""
    buffers: ClassVar[tuple[str, ...]] = ()
    """Names of the buffers it may register: training state, saved in checkpoints, dropped at inference."""
    loss_name: ClassVar[str | None] = None
    """Key of :meth:`loss` in SAELens's losses (None: no loss)."""
    reads_activations: ClassVar[bool] = False
    """Whether :meth:`loss` reads the batch's activations (micro-batching then takes it on the whole batch)."""

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Raise ``ValueError`` naming the field and its allowed range when a field of ``cfg`` is bad."""

    @classmethod
    def active(cls, cfg: Any) -> bool:
        """Whether ``cfg`` switches it on (an inactive mechanism has no object, buffers or cost)."""
        return True

    @classmethod
    def coefficients(cls, cfg: Any) -> dict[str, float | TrainCoefficientConfig]:
        """Coefficients for SAELens's trainer to schedule (warm-up); the step reads them in ``step_input``."""
        return {}

    def __init__(self, sae: Any, device: torch.device) -> None:
        """Register its buffers on ``sae`` (``sae.register_buffer``)."""

    def prepare(self, sae: Any, ctx: StepContext) -> None:
        """Before the guard's snapshot and any forward pass: may change weights (not undone by a bad step)."""

    def before_step(self, sae: Any, step_input: TrainStepInput, ctx: StepContext) -> TrainStepInput:
        """After the snapshot, before the forward pass(es): set per-step state; may change the step's input."""
        return step_input

    def loss(
        self, sae: Any, feature_acts: Tensor, step_input: TrainStepInput, zero: Tensor, ctx: StepContext
    ) -> Tensor:
        """Its loss on this batch (``zero`` when it has nothing to add)."""
        return zero

    def splits_batch(self, sae: Any, step_input: TrainStepInput) -> bool:
        """Whether :meth:`forward` runs this step's forward pass instead of the base architecture's."""
        return False

    def forward(self, sae: Any, step_input: TrainStepInput, base_forward: Any) -> TrainStepOutput:
        raise NotImplementedError

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        """Without a graph, after the forward pass(es): ``acts`` are the whole batch's detached activations."""

    def log(self, sae: Any, ctx: StepContext) -> None:
        """On logging steps, after the guard: metrics of state (``ctx.metrics``)."""

    def on_reinit(self, sae: Any, mask: Tensor) -> None:
        """Under no_grad, when dictionary management re-initialised the ``mask`` [d_sae] features."""

    def before_inference_save(self, sae: Any) -> None:
        """Before the final SAE's weights are taken (e.g. fold what training kept apart)."""

    def after_load(self, sae: Any) -> None:
        """After a state dict (a checkpoint) was loaded into ``sae``."""


def loss_scale(cfg: Any, step_input: TrainStepInput, ctx: StepContext) -> Tensor | float:
    """1, or with ``ortho_scale="input_energy"`` the batch's mean squared input norm (no gradient), which puts
    the ortho losses in the units of SAELens's mse_loss (a coefficient is then a fraction of the variance)."""
    if cfg.ortho_scale == "none":
        return 1.0
    energy = step_input.sae_in.detach().float().pow(2).sum(-1).mean()
    if step_input.is_logging_step:
        ctx.metrics["ortho_loss_scale"] = energy
    return energy
