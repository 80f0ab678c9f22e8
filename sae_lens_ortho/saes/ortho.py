"""The SAELens adapter: give any registered training architecture the ortho losses.

Two mixins do the work, written once:

* ``OrthoConfig`` adds the ortho fields (validated at construction) to a ``TrainingSAEConfig`` and makes the
  final SAE save as the base architecture's inference class, so it loads without this plugin.
* ``OrthoTrainingSAE`` adds the selective activation penalty and the decoder Gram penalty to the base SAE's
  ``calculate_aux_loss``, logs diagnostics on logging steps, and keeps its per-step state in buffers that
  checkpoints save and resume restores (and the inference weights drop).

``add_ortho("jumprelu")`` builds and registers ``jumprelu_ortho`` from these mixins; ``topk_ortho`` is the same
call with named classes. The math lives in ``pairs`` / ``penalties`` / ``diagnostics``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from sae_lens.saes.sae import (
    TrainCoefficientConfig,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepInput,
    TrainStepOutput,
)
from torch import Tensor

from sae_lens_ortho.core.memory import memory_mib
from sae_lens_ortho.saes.config import OrthoConfig
from sae_lens_ortho.saes.guard import NonFiniteGuard
from sae_lens_ortho.saes.loading import CheckpointOnlySAE, register_checkpoint_redirect
from sae_lens_ortho.saes.management import DictionaryManagement
from sae_lens_ortho.saes.mechanisms import Mechanism, StepContext, field_mixins, mechanism_buffers, mechanisms_for
from sae_lens_ortho.saes.randomness import RNG_BUFFERS, OrthoRandomness
from sae_lens_ortho.saes.resources import SelectionPlan, check_step_resources

__all__ = [
    "ORTHO_BUFFERS",
    "OrthoConfig",
    "OrthoTrainingSAE",
    "add_ortho",
    "register_inference_architecture",
    "register_training_architecture",
]

# Buffers that hold training state: saved in checkpoints, dropped from the inference weights.
ORTHO_BUFFERS = ("ortho_step", *mechanism_buffers(), *RNG_BUFFERS)


class OrthoTrainingSAE(NonFiniteGuard, OrthoRandomness, DictionaryManagement):
    """Adds the ortho mechanisms (``saes/mechanisms/``) to a ``TrainingSAE``. Mixed in *before* the base SAE.

    Per step (``training_forward_pass``) it runs the hooks of the active mechanisms in registry order around the
    base SAE's forward pass, whose ``calculate_aux_loss`` it extends by each mechanism's loss (``ortho_loss``,
    ``decoder_ortho_loss``); the flow is listed in ``mechanisms/base.py``. All state is in buffers, randomness
    included (``randomness``); a non-finite step is kept out of the weights and the state (``guard``).

    The interface the step's helpers use (``accumulate``, ``resources``): :attr:`ortho_mechanisms`,
    :meth:`ortho_mechanism`, :meth:`ortho_losses`, :meth:`ortho_losses_deferred`, :attr:`ortho_plan` /
    :meth:`ortho_apply_plan`.
    """

    cfg: Any
    # Buffers registered in __init__ (declared for type checkers: the mixin sits on an nn.Module).
    ortho_step: Tensor
    ortho_mechanisms: tuple[Mechanism, ...] = ()
    """The active mechanisms of this SAE, in registry order."""
    ortho_plan: SelectionPlan = SelectionPlan(None, None)
    """The memory plan of the selection, set once at the first step (``resources.check_step_resources``)."""
    ortho_plan_checked = False
    _ortho_deferred = False  # inside ortho_losses_deferred: the ortho losses are taken on the whole batch
    _ortho_ctx: StepContext | None = None  # the current step's shared state

    def __init__(self, cfg: Any, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)  # type: ignore[call-arg]
        device = self.W_dec.device  # type: ignore[attr-defined]
        self.register_buffer("ortho_step", torch.zeros((), dtype=torch.int64, device=device))  # type: ignore[attr-defined]
        self._rng_init(device)
        self.register_load_state_dict_post_hook(_after_state_load)  # type: ignore[attr-defined]
        self.ortho_mechanisms = tuple(m(self, device) for m in mechanisms_for(cfg) if m.active(cfg))

    def ortho_mechanism(self, name: str) -> Any:
        """The active mechanism called ``name``, or None."""
        return next((m for m in self.ortho_mechanisms if m.name == name), None)

    def ortho_apply_plan(self, plan: SelectionPlan) -> None:
        """Use ``plan`` (the selection's method, its cap on co-firing products, diagnostics to skip) from now on."""
        self.ortho_plan = plan
        self.ortho_plan_checked = True

    # --- hooks a base architecture may override -------------------------------------------------------
    def ortho_sparse_activations(self) -> tuple[Tensor, Tensor] | None:
        """(values, indices) [b, w] of this step's non-zero activations if the encoder already has them."""
        return None

    def ortho_row_width(self) -> int | None:
        """Static bound on non-zeros per row (TopK: k); None means read it from the batch (one host sync)."""
        return None

    def ortho_before_step(self) -> None:
        """Called once per training step before any forward pass (e.g. to freeze per-step encoder state)."""

    def ortho_after_step(self, feature_acts: Tensor, is_logging_step: bool) -> dict[str, Tensor]:
        """Called once per training step with the whole batch's (detached) activations [b, d_sae], after the
        forward pass(es); returns metrics to log (only read on logging steps)."""
        return {}

    def ortho_on_reinit(self, mask: Tensor) -> None:
        """Called under no_grad when dictionary management re-initialises the ``mask`` [d_sae] features, after
        W_enc / b_enc / W_dec and their Adam moments were reset: reset any other per-feature state here (use
        :meth:`ortho_reset_optimizer_state` for extra parameters). Runs each mechanism's ``on_reinit``."""
        for mechanism in self.ortho_mechanisms:
            mechanism.on_reinit(self, mask)

    # --- SAELens hooks ----------------------------------------------------------------------------------
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        coefficients = dict(super().get_coefficients())  # type: ignore[misc]
        for mechanism in self.ortho_mechanisms:
            coefficients.update(mechanism.coefficients(self.cfg))
        return coefficients

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        logging = step_input.is_logging_step
        if logging:  # SAELens reads values back on logging steps anyway
            self.ortho_raise_if_nonfinite()
        # Our own step count: SAELens's n_training_steps is one lower after a resume.
        ctx = self._ortho_ctx = StepContext(step=self.ortho_host_step(), logging=logging)
        mechanisms = self.ortho_mechanisms
        check_step_resources(self, step_input.sae_in)  # once per run: memory estimate, micro-batch size
        for mechanism in mechanisms:
            mechanism.prepare(self, ctx)
        snapshot = self._guard_begin(step_input.sae_in, ctx.step)
        self.ortho_before_step()
        for mechanism in mechanisms:
            step_input = mechanism.before_step(self, step_input, ctx)
        base_forward = super().training_forward_pass  # type: ignore[misc]
        splitter = next((m for m in mechanisms if m.splits_batch(self, step_input)), None)
        output = splitter.forward(self, step_input, base_forward) if splitter else base_forward(step_input)
        with torch.no_grad():
            acts = output.feature_acts.to_dense() if output.feature_acts.is_sparse else output.feature_acts
            acts = acts.detach()
            ctx.metrics.update(self.ortho_after_step(acts, logging))
            for mechanism in mechanisms:
                mechanism.after_step(self, acts, output, ctx)
            self._guard_end(output.loss, snapshot)
            self.ortho_step += 1
            self._ortho_advance_host_step()
        if logging:
            for mechanism in mechanisms:
                mechanism.log(self, ctx)
            peak, current = memory_mib(step_input.sae_in.device)  # seed 000 tracks peak memory
            ctx.metrics["ortho_peak_memory_mib"] = torch.tensor(peak)
            ctx.metrics["ortho_memory_mib"] = torch.tensor(current)
        output.metrics.update(ctx.metrics)
        self._ortho_ctx = None
        return output

    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: Tensor,
        hidden_pre: Tensor,
        sae_out: Tensor,
    ) -> dict[str, Tensor]:
        losses = super().calculate_aux_loss(step_input, feature_acts, hidden_pre, sae_out)  # type: ignore[misc]
        losses = dict(losses) if isinstance(losses, dict) else {"auxiliary_loss": losses}
        zero = sae_out.new_zeros((), dtype=torch.float32)
        if self._ortho_deferred:  # micro-batches: the ortho losses are taken once, on the whole batch
            losses.update({m.loss_name: zero for m in self._loss_mechanisms()})  # type: ignore[misc]
            return losses
        losses.update(self.ortho_losses(feature_acts, step_input, zero))
        return losses

    def ortho_losses(
        self,
        feature_acts: Tensor,
        step_input: TrainStepInput,
        zero: Tensor,
        *,
        reads_activations: bool | None = None,
        captured: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """{loss name: value} of the active mechanisms on this batch, in registry order; with
        ``reads_activations`` only those that do (True) or do not (False) read the activations. ``captured``:
        the batch's (values, indices) of non-zero activations, where the caller has them (micro-batches)."""
        ctx = self._ortho_ctx
        if ctx is None:  # called outside a training step (a test, an evaluation): a throw-away context
            ctx = StepContext(step=self.ortho_host_step(), logging=step_input.is_logging_step)
        if captured is not None:
            ctx.captured = captured
        out = {}
        for mechanism in self._loss_mechanisms():
            if reads_activations is None or mechanism.reads_activations == reads_activations:
                out[mechanism.loss_name] = mechanism.loss(self, feature_acts, step_input, zero, ctx)
        return out  # type: ignore[return-value]

    @contextlib.contextmanager
    def ortho_losses_deferred(self) -> Iterator[None]:
        """Inside, ``calculate_aux_loss`` reports the ortho losses as zero: the caller takes them on the whole
        batch (``accumulate.accumulated_forward``)."""
        self._ortho_deferred = True
        try:
            yield
        finally:
            self._ortho_deferred = False

    def _loss_mechanisms(self) -> list[Mechanism]:
        return [m for m in self.ortho_mechanisms if m.loss_name is not None]

    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        # Checkpoints and the final SAE alike: nothing is written after a non-finite step (one host read).
        self.ortho_raise_if_nonfinite()
        super().process_state_dict_for_saving(state_dict)  # type: ignore[misc]

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_loading(state_dict)  # type: ignore[misc]
        # Checkpoints written before the seed buffer existed: keep this SAE's seed (their draws used the global RNG).
        state_dict.setdefault("ortho_rng_seed", self.ortho_rng_seed.detach().clone())

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        if int(self.ortho_step) == 0:
            raise ValueError(
                f"refusing to save an untrained SAE: this {self.cfg.architecture()} SAE took no training step "
                "(SAELens trains ceil(training_tokens / train_batch_size_tokens) steps; training_tokens must be > 0)"
            )
        for mechanism in self.ortho_mechanisms:
            mechanism.before_inference_save(self)
        super().process_state_dict_for_saving_inference(state_dict)  # type: ignore[misc]
        for name in ORTHO_BUFFERS:
            state_dict.pop(name, None)


def _after_state_load(module: Any, _incompatible_keys: Any) -> None:
    # The step and seed buffers may have changed: re-read their host mirror; mechanisms re-read their state.
    module.ortho_invalidate_host_state()
    for mechanism in module.ortho_mechanisms:
        mechanism.after_load(module)


def _register(registry: dict[str, Any], kind: str, name: str, sae_cls: type, cfg_cls: type) -> None:
    # SAELens's register_* functions raise on a second call (e.g. after a module reload): replace instead when
    # the class is the same, or of the same module and name; refuse a different class under a taken name.
    existing = registry.get(name)
    if existing is not None:
        old_sae, _ = existing
        same = old_sae is sae_cls or (
            old_sae.__module__ == sae_cls.__module__ and old_sae.__qualname__ == sae_cls.__qualname__
        )
        if not same:
            raise ValueError(f"{kind} architecture {name!r} is already registered to {old_sae.__qualname__}")
    registry[name] = (sae_cls, cfg_cls)


def register_training_architecture(name: str, sae_cls: type, cfg_cls: type) -> None:
    """Register in SAELens's training registry, idempotently (a module reload replaces the entry; a different
    class under a taken name is an error). ``SAE.load_from_disk`` on a checkpoint of ``name`` then explains itself
    instead of raising ``KeyError`` (``loading.register_checkpoint_redirect``)."""
    _register(SAE_TRAINING_CLASS_REGISTRY, "training", name, sae_cls, cfg_cls)
    register_checkpoint_redirect(name)


def register_inference_architecture(name: str, sae_cls: type, cfg_cls: type) -> None:
    """Register in SAELens's inference registry, idempotently, like :func:`register_training_architecture`
    (replacing the checkpoint placeholder a training architecture of the same name may have left)."""
    if SAE_CLASS_REGISTRY.get(name, (None,))[0] is CheckpointOnlySAE:
        del SAE_CLASS_REGISTRY[name]
    _register(SAE_CLASS_REGISTRY, "inference", name, sae_cls, cfg_cls)


def _check_base_registrations(base: str) -> None:
    """A base needs both SAELens registrations: its training classes, and an inference config to save as (SAELens
    looks that up under the training name unless the training config overrides get_inference_config_class)."""
    if base not in SAE_TRAINING_CLASS_REGISTRY:
        raise ValueError(
            f"add_ortho({base!r}): {base!r} is not a registered training architecture (registered: "
            f"{', '.join(SAE_TRAINING_CLASS_REGISTRY)}); register it first with "
            f"sae_lens.register_sae_training_class({base!r}, YourTrainingSAE, YourTrainingSAEConfig)"
        )
    base_cfg = SAE_TRAINING_CLASS_REGISTRY[base][1]
    if base not in SAE_CLASS_REGISTRY and (
        base_cfg.get_inference_config_class is TrainingSAEConfig.get_inference_config_class
    ):
        raise ValueError(
            f"add_ortho({base!r}): {base!r} is registered for training but not for inference, so its config "
            "could not be built (SAELens looks the inference config up under the training name). Register the "
            f"SAE it saves as too: sae_lens.register_sae_class({base!r}, YourSAE, YourSAEConfig), or override "
            f"get_inference_config_class() on {base_cfg.__name__}"
        )


def _default_overrides(defaults: dict[str, Any]) -> dict[str, Any]:
    """Class-body entries that give ortho fields new defaults in a dataclass subclass of OrthoConfig."""
    known = {f.name: f for f in fields(OrthoConfig)}
    unknown = sorted(set(defaults) - set(known))
    if unknown:
        raise ValueError(f"defaults names unknown ortho field(s): {', '.join(unknown)}")
    return {"__annotations__": {k: known[k].type for k in defaults}, **defaults}


def add_ortho(
    base_architecture: str,
    name: str | None = None,
    *,
    sae_mixin: type | None = None,
    class_prefix: str | None = None,
    module: str | None = None,
    register: bool = True,
    defaults: dict[str, Any] | None = None,
) -> tuple[type[TrainingSAE[Any]], type[TrainingSAEConfig]]:
    """Build (and register) ``<base>_ortho``: the registered training architecture ``base_architecture`` with
    the ortho losses. Works for SAELens built-ins (``jumprelu``, ``batchtopk``, ``standard``, ...) and for a
    user's own registered architecture. Returns (training SAE class, config class), named
    ``<class_prefix>TrainingSAE`` / ``<class_prefix>TrainingSAEConfig`` in ``module`` (default: this module).

    ``sae_mixin`` may add architecture-specific hooks (e.g. captured activations) before the base SAE.
    ``defaults`` changes the default of ortho fields for this architecture (e.g. ``{"ortho_coefficient": 0.0}``).
    Raises ``ValueError`` naming what is missing when the base lacks its training or its inference registration.
    Asking again for a twin that is already registered from the same base (every SAELens architecture has one
    from ``import sae_lens_ortho``) returns the registered classes.
    """
    name = name or f"{base_architecture}_ortho"
    existing = SAE_TRAINING_CLASS_REGISTRY.get(name)
    if register and existing is not None and sae_mixin is None and class_prefix is None and not defaults:
        if getattr(existing[1], "ortho_base_architecture", None) == base_architecture:
            return existing
    _check_base_registrations(base_architecture)
    base_sae, base_cfg = get_sae_training_class(base_architecture)
    prefix = class_prefix or "".join(part.capitalize() for part in name.split("_"))
    module = module or __name__
    cfg_cls = dataclass(kw_only=True)(
        type(
            f"{prefix}TrainingSAEConfig",
            (*field_mixins(base_architecture, exclude=OrthoConfig), OrthoConfig, base_cfg),
            {
                "__doc__": f"{base_cfg.__name__} with the ortho fields of OrthoConfig (architecture {name!r}).",
                "__module__": module,
                "ortho_base_architecture": base_architecture,
                "architecture": classmethod(lambda cls: name),
                **_default_overrides(defaults or {}),
            },
        )
    )
    bases = (OrthoTrainingSAE,) + ((sae_mixin,) if sae_mixin is not None else ()) + (base_sae,)
    sae_cls = type(
        f"{prefix}TrainingSAE",
        bases,
        {
            "__doc__": f"{base_sae.__name__} trained with the ortho losses (architecture {name!r}).",
            "__module__": module,
        },
    )
    if register:
        register_training_architecture(name, sae_cls, cfg_cls)
    return sae_cls, cfg_cls
