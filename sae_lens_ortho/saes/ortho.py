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

from dataclasses import dataclass, fields, replace
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

from sae_lens_ortho.core.diagnostics import mean_pair_cosine, pair_set_jaccard, selection_summary
from sae_lens_ortho.core.grouping import assign_and_update, group_sizes, grouped_decoder_penalty, init_centroids
from sae_lens_ortho.core.memory import memory_mib
from sae_lens_ortho.core.numerics import unit_rows
from sae_lens_ortho.core.pairs import n_pairs, top_decoder_pairs
from sae_lens_ortho.core.penalties import (
    SelectedPairs,
    chunk_max_cos_penalty,
    decoder_gram_penalty,
    n_ranked_pairs,
    pair_penalty,
    select_pairs_for_penalty,
    selected_decoder_cosines,
)
from sae_lens_ortho.core.schedules import (
    activation_rate,
    adaptive_l1,
    anneal,
    mean_plus_std_threshold,
    momentum_adaptive,
    recon_adaptive,
)
from sae_lens_ortho.saes.accumulate import accumulated_forward
from sae_lens_ortho.saes.config import OrthoConfig
from sae_lens_ortho.saes.guard import NonFiniteGuard
from sae_lens_ortho.saes.loading import CheckpointOnlySAE, register_checkpoint_redirect
from sae_lens_ortho.saes.management import MANAGEMENT_BUFFERS, DictionaryManagement
from sae_lens_ortho.saes.randomness import RNG_BUFFERS, OrthoRandomness
from sae_lens_ortho.saes.resources import check_step_resources

__all__ = [
    "ORTHO_BUFFERS",
    "OrthoConfig",
    "OrthoTrainingSAE",
    "add_ortho",
    "register_inference_architecture",
    "register_training_architecture",
]

# Buffers that hold training state: saved in checkpoints, dropped from the inference weights.
ORTHO_BUFFERS = (
    "ortho_step",
    "ortho_prev_pair_keys",
    "ortho_strength",
    "ortho_l1",
    "ortho_centroids",
    "ortho_decoder_pair_keys",
    *MANAGEMENT_BUFFERS,
    *RNG_BUFFERS,
)
# The pair-set stability diagnostic compares at most this many top pairs between steps (8 MiB of keys).
MAX_TRACKED_PAIRS = 1 << 20
# Seed 004's range for the adaptive L1 coefficient.
L1_RANGE = (0.01, 0.2)


class OrthoTrainingSAE(NonFiniteGuard, OrthoRandomness, DictionaryManagement):
    """Adds the ortho losses, diagnostics and state to a ``TrainingSAE``. Mixed in *before* the base SAE.

    Per step (``training_forward_pass``): optional unit-norm decoder rows and adaptive L1 coefficient, then the
    base SAE's forward with ``calculate_aux_loss`` extended by ``ortho_loss`` = coefficient * strength *
    penalty(selected pairs) and ``decoder_ortho_loss``, then the adaptive updates. All state is in buffers,
    randomness included (``randomness``); a non-finite step is kept out of the weights and the state (``guard``).
    """

    cfg: Any
    # Buffers registered in __init__ (declared for type checkers: the mixin sits on an nn.Module).
    ortho_step: Tensor
    ortho_prev_pair_keys: Tensor
    ortho_strength: Tensor
    ortho_l1: Tensor
    ortho_centroids: Tensor
    ortho_decoder_pair_keys: Tensor
    _ortho_in_micro_batch = False  # set by accumulated_forward: the ortho terms are taken on the whole batch
    _ortho_captured_override: tuple[Tensor, Tensor] | None = None  # the whole batch's captured activations
    _ortho_captured: tuple[Tensor, Tensor] | None = None  # this step's captured activations, once read
    _ortho_last_sel: SelectedPairs | None = None
    _ortho_method_override: str | None = None  # set by resources.check_step_resources at the first step
    _ortho_max_products: int | None = None  # cap on a batch's co-firing products (memory), from the same check
    _ortho_skipped_diagnostics: tuple[str, ...] = ()  # metrics-only work that would not fit (same check)

    def __init__(self, cfg: Any, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)  # type: ignore[call-arg]
        m = min(n_ranked_pairs(cfg.d_sae, cfg.ortho_pair_fraction, cfg.ortho_min_pairs), MAX_TRACKED_PAIRS)
        device = self.W_dec.device  # type: ignore[attr-defined]
        self.register_buffer("ortho_step", torch.zeros((), dtype=torch.int64, device=device))
        self._rng_init(device)
        self.register_load_state_dict_post_hook(_after_state_load)  # type: ignore[attr-defined]
        # Last step's selected pairs (padded with -1), for the pair-set stability diagnostic across resumes.
        self.register_buffer("ortho_prev_pair_keys", torch.full((m,), -1, dtype=torch.int64, device=device))
        adaptive = cfg.ortho_adaptive in ("recon", "momentum")
        self.register_buffer(
            "ortho_strength", torch.tensor(cfg.ortho_strength_init if adaptive else 1.0, device=device)
        )
        if cfg.ortho_l1_target_rate is not None:
            l1 = min(max(float(cfg.l1_coefficient), L1_RANGE[0]), L1_RANGE[1])
            self.register_buffer("ortho_l1", torch.tensor(l1, device=device))
        if cfg.ortho_decoder_penalty == "grouped":
            centroids = torch.zeros(cfg.ortho_groups, cfg.d_in, device=device)
            if device.type != "meta":
                centroids = init_centroids(self.W_dec, cfg.ortho_groups)  # type: ignore[attr-defined]
            self.register_buffer("ortho_centroids", centroids)
        if cfg.ortho_select_by == "decoder":  # the pairs chosen at the last selection step (-1: none)
            self.register_buffer("ortho_decoder_pair_keys", torch.full((m,), -1, dtype=torch.int64, device=device))
        if cfg.ortho_manage_every:
            self._manage_init(device)

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
        :meth:`ortho_reset_optimizer_state` for extra parameters)."""

    # --- SAELens hooks ----------------------------------------------------------------------------------
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        coefficients = dict(super().get_coefficients())  # type: ignore[misc]
        coefficients["ortho"] = TrainCoefficientConfig(
            value=float(self.cfg.ortho_coefficient), warm_up_steps=self.cfg.ortho_warm_up_steps
        )
        coefficients["decoder_ortho"] = float(self.cfg.ortho_decoder_coefficient)
        return coefficients

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        cfg = self.cfg
        if step_input.is_logging_step:  # SAELens reads values back on logging steps anyway
            self.ortho_raise_if_nonfinite()
        self._ortho_diagnostics = {}
        self._ortho_last_sel = None
        step = self.ortho_host_step()  # our own count: SAELens's n_training_steps is one lower after a resume
        check_step_resources(self, step_input.sae_in)  # once per run: memory estimate, micro-batch size
        self._manage_before_step(step)  # re-initialise features chosen last check
        if cfg.ortho_unit_norm_decoder:
            with torch.no_grad():  # the previous optimizer update moved the norms: project back (seeds 001, 002)
                W_dec = self.W_dec  # type: ignore[attr-defined]
                W_dec.copy_(unit_rows(W_dec))  # exact at any norm (a clamp left rows below 1e-8 short); 0 stays 0
        snapshot = self._guard_begin(step_input.sae_in, step)
        self.ortho_before_step()
        if cfg.ortho_l1_target_rate is not None:
            step_input = replace(step_input, coefficients={**step_input.coefficients, "l1": self.ortho_l1.clone()})
        base_forward = super().training_forward_pass  # type: ignore[misc]
        micro = cfg.ortho_micro_batch_size
        if micro is not None and step_input.sae_in.shape[0] > micro:
            output = accumulated_forward(self, step_input, base_forward)
        else:
            output = base_forward(step_input)
        logging = step_input.is_logging_step
        with torch.no_grad():
            acts = output.feature_acts.to_dense() if output.feature_acts.is_sparse else output.feature_acts
            acts = acts.detach()
            if cfg.ortho_adaptive == "recon":
                self.ortho_strength.copy_(
                    recon_adaptive(
                        self.ortho_strength,
                        output.losses["mse_loss"].detach(),
                        cfg.ortho_target_recon_loss,
                        cfg.ortho_strength_min,
                        cfg.ortho_strength_max,
                    )
                )
            if cfg.ortho_l1_target_rate is not None:
                self.ortho_l1.copy_(
                    adaptive_l1(
                        self.ortho_l1,
                        activation_rate(acts),
                        cfg.ortho_l1_target_rate,
                        cfg.ortho_l1_step_size,
                        *L1_RANGE,
                    )
                )
                if logging:
                    self._ortho_diagnostics["ortho_l1"] = self.ortho_l1.clone()
            self._ortho_diagnostics.update(self.ortho_after_step(acts, logging))
            if cfg.ortho_manage_every and self._ortho_last_sel is not None:
                self._ortho_diagnostics.update(self._manage_after_step(acts, self._ortho_last_sel, step, logging))
            self._guard_end(output.loss, snapshot)
            self.ortho_step += 1
            self._ortho_advance_host_step()
        if logging:
            if cfg.ortho_adaptive in ("recon", "momentum"):
                self._ortho_diagnostics["ortho_strength"] = self.ortho_strength.clone()
            peak, current = memory_mib(step_input.sae_in.device)  # seed 000 tracks peak memory
            self._ortho_diagnostics["ortho_peak_memory_mib"] = torch.tensor(peak)
            self._ortho_diagnostics["ortho_memory_mib"] = torch.tensor(current)
        output.metrics.update(self._ortho_diagnostics)
        self._ortho_diagnostics = {}
        self._ortho_captured = None
        self._ortho_last_sel = None
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
        if self._ortho_in_micro_batch:  # accumulated_forward takes both on the whole batch
            losses["ortho_loss"] = losses["decoder_ortho_loss"] = zero
            return losses
        losses["ortho_loss"] = self._ortho_activation_term(feature_acts, step_input, zero)
        losses["decoder_ortho_loss"] = self._decoder_loss(step_input, zero)
        return losses

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
        if self.cfg.ortho_unit_norm_decoder and not getattr(self.cfg, "rescale_acts_by_decoder_norm", False):
            # The last optimizer update left the norms off 1; folding them keeps the saved SAE's function.
            # (TopK with rescale_acts_by_decoder_norm folds them itself.) Shared storage: this updates state_dict.
            self.fold_W_dec_norm()  # type: ignore[attr-defined]
        super().process_state_dict_for_saving_inference(state_dict)  # type: ignore[misc]
        for name in ORTHO_BUFFERS:
            state_dict.pop(name, None)

    # --- internals -------------------------------------------------------------------------------------
    def _ortho_activation_term(self, feature_acts: Tensor, step_input: TrainStepInput, zero: Tensor) -> Tensor:
        """The selective activation penalty of this batch (selection skipped when nothing needs it)."""
        scheduled = step_input.coefficients.get("ortho")
        coef = float(self.cfg.ortho_coefficient if scheduled is None else scheduled)
        diagnostics = step_input.is_logging_step and "pairs" not in self._ortho_skipped_diagnostics
        needed = coef > 0 or diagnostics or self.cfg.ortho_manage_every
        if not needed or self.cfg.d_sae < 2:
            return zero
        if self.cfg.ortho_select_by == "decoder":
            loss = self._decoder_pair_loss(coef, step_input.is_logging_step)
        else:
            loss = self._activation_loss(feature_acts, coef, step_input.is_logging_step)
        return loss * self._loss_scale(step_input)

    def _loss_scale(self, step_input: TrainStepInput) -> Tensor | float:
        """1, or with ``ortho_scale="input_energy"`` the batch's mean squared input norm (no gradient), which puts
        the ortho losses in the units of SAELens's mse_loss (a coefficient is then a fraction of the variance)."""
        if self.cfg.ortho_scale == "none":
            return 1.0
        energy = step_input.sae_in.detach().float().pow(2).sum(-1).mean()
        if step_input.is_logging_step:
            self._ortho_diagnostics["ortho_loss_scale"] = energy
        return energy

    def _activation_loss(self, feature_acts: Tensor, coef: float, logging: bool) -> Tensor:
        cfg = self.cfg
        on_decoder = cfg.ortho_target == "decoder"
        # On the decoder the selection only picks pairs: no graph through the activations is needed.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not on_decoder):
            sel = self._select_pairs(feature_acts)
        self._ortho_last_sel = sel
        tau: Tensor | float = cfg.ortho_tau
        if cfg.ortho_adaptive == "threshold":
            tau = mean_plus_std_threshold(sel.stats).float()  # seed 002: tau_t = mu_t + sigma_t
        if on_decoder:
            # Padding slots carry key -1: any valid index will do, pair_penalty masks them out.
            decoder_cos = selected_decoder_cosines(self.W_dec, sel.keys.clamp_min(0))  # type: ignore[attr-defined]
            penalty = pair_penalty(decoder_cos, sel.valid, cfg.ortho_weighting, tau)
            if logging:
                self._ortho_diagnostics["ortho_selected_decoder_cos_mean"] = (
                    decoder_cos.detach().abs() * sel.valid
                ).sum() / sel.valid.sum().clamp_min(1)
        else:
            penalty = pair_penalty(sel.corr, sel.valid, cfg.ortho_weighting, tau)
        # A copy: the buffer is updated in place below, before backward runs.
        loss = coef * self.ortho_strength.clone() * penalty if coef > 0 else penalty.new_zeros(())
        if logging:
            self._ortho_diagnostics.update(self._pair_diagnostics(sel, feature_acts, penalty))
            if cfg.ortho_adaptive == "threshold":
                self._ortho_diagnostics["ortho_tau"] = torch.as_tensor(tau)
        with torch.no_grad():
            if cfg.ortho_adaptive == "momentum":
                mean_corr = selection_summary(sel.corr, sel.valid)["selected_corr_mean"]
                self.ortho_strength.copy_(
                    momentum_adaptive(
                        self.ortho_strength,
                        mean_corr,
                        cfg.ortho_target_corr,
                        cfg.ortho_momentum,
                        cfg.ortho_strength_min,
                        cfg.ortho_strength_max,
                    )
                )
            self.ortho_prev_pair_keys.copy_(self._tracked_keys(sel))
        return loss

    def _decoder_pair_loss(self, coef: float, logging: bool) -> Tensor:
        """phi(cos) of the top-p pairs by decoder cosine, re-selected every ``ortho_select_every`` steps."""
        cfg = self.cfg
        W_dec = self.W_dec  # type: ignore[attr-defined]
        if self.ortho_host_step() % cfg.ortho_select_every == 0:
            with torch.no_grad():
                keys = top_decoder_pairs(W_dec, self.ortho_decoder_pair_keys.numel(), cfg.ortho_chunk_size)
                self.ortho_decoder_pair_keys.copy_(keys)
        keys = self.ortho_decoder_pair_keys
        valid = keys >= 0
        cos = selected_decoder_cosines(W_dec, keys.clamp_min(0))
        penalty = pair_penalty(cos, valid, cfg.ortho_weighting, cfg.ortho_tau)
        if logging:
            summary = selection_summary(cos.detach(), valid)
            self._ortho_diagnostics.update({f"ortho_decoder_{k}": v for k, v in summary.items()})
            self._ortho_diagnostics["ortho_penalty"] = penalty.detach()
        return coef * self.ortho_strength.clone() * penalty if coef > 0 else penalty.new_zeros(())

    def _decoder_loss(self, step_input: TrainStepInput, zero: Tensor) -> Tensor:
        cfg = self.cfg
        dec_coef: Any = step_input.coefficients.get("decoder_ortho", cfg.ortho_decoder_coefficient)
        if cfg.ortho_decoder_start is not None:  # seed 003: anneal from the start value to the coefficient
            dec_coef = anneal(
                cfg.ortho_decoder_start, float(dec_coef), self.ortho_step, cfg.ortho_decoder_warm_up_steps
            )
        active = cfg.ortho_decoder_start is not None or dec_coef > 0
        logging = step_input.is_logging_step and "decoder_penalty" not in self._ortho_skipped_diagnostics
        if not (active or logging):
            return zero
        W_dec = self.W_dec  # type: ignore[attr-defined]
        with torch.set_grad_enabled(active and torch.is_grad_enabled()):  # a diagnostic needs no graph
            if cfg.ortho_decoder_penalty == "grouped":
                assignment, centroids = assign_and_update(W_dec, self.ortho_centroids, cfg.ortho_group_decay)
                with torch.no_grad():
                    self.ortho_centroids.copy_(centroids)
                dec = grouped_decoder_penalty(W_dec, assignment, cfg.ortho_groups, cfg.ortho_decoder_reduction)
                if logging:
                    sizes = group_sizes(assignment, cfg.ortho_groups)
                    self._ortho_diagnostics.update({f"ortho_group_size_{g}": sizes[g] for g in range(cfg.ortho_groups)})
            elif cfg.ortho_decoder_penalty == "chunk_max":  # a permutation per step, from checkpointed state
                dec = chunk_max_cos_penalty(W_dec, cfg.ortho_decoder_chunks, self.ortho_generator("chunk_max"))
            else:
                dec = decoder_gram_penalty(W_dec, cfg.ortho_decoder_reduction)
        if logging:
            self._ortho_diagnostics["ortho_decoder_penalty"] = dec.detach()
            if cfg.ortho_decoder_start is not None:
                self._ortho_diagnostics["ortho_decoder_coefficient"] = torch.as_tensor(dec_coef)
        return dec_coef * dec * self._loss_scale(step_input) if active else zero

    def _select_pairs(self, feature_acts: Tensor) -> SelectedPairs:
        cfg = self.cfg
        dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
        captured = self._ortho_captured_override or self.ortho_sparse_activations()
        if captured is not None and captured[0].shape[0] != dense.shape[0]:
            captured = None  # not this batch's activations (e.g. reshaped inputs): fall back to a scan
        self._ortho_captured = captured
        method: Any = self._ortho_method_override or cfg.ortho_method  # resources.py may pin a path that fits
        if method == "dense":
            captured = None
        return select_pairs_for_penalty(
            dense,
            cfg.ortho_pair_fraction,
            width=self.ortho_row_width(),
            method=method,
            chunk_size=cfg.ortho_chunk_size,
            sparse=captured,
            z=cfg.ortho_z if cfg.ortho_pair_filter == "zscore" else None,
            min_pairs=cfg.ortho_min_pairs,
            max_cofiring_products=self._ortho_max_products,
        )

    @torch.no_grad()
    def _pair_diagnostics(self, sel: SelectedPairs, feature_acts: Tensor, penalty: Tensor) -> dict[str, Tensor]:
        dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
        out = {f"ortho_{k}": v for k, v in selection_summary(sel.corr, sel.valid).items()}
        out["ortho_penalty"] = penalty.detach()
        out["ortho_mean_pair_cosine"] = mean_pair_cosine(dense)
        out["ortho_cofire_fraction"] = sel.stats.n_cofiring.double() / max(n_pairs(self.cfg.d_sae), 1)
        out["ortho_pair_jaccard"] = pair_set_jaccard(self._tracked_keys(sel), self.ortho_prev_pair_keys)
        return out

    def _tracked_keys(self, sel: SelectedPairs) -> Tensor:
        """This step's valid pair keys, best first, padded with -1 to the size of the tracking buffer."""
        out = torch.full_like(self.ortho_prev_pair_keys, -1)
        keys = torch.where(sel.valid, sel.keys, torch.full_like(sel.keys, -1))[: out.numel()]
        out[: keys.numel()] = keys
        return out


def _after_state_load(module: Any, _incompatible_keys: Any) -> None:
    # The step and seed buffers may have changed: re-read their host mirror, and look for a pending re-init once.
    module.ortho_invalidate_host_state()
    module._ortho_may_have_pending = True


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
            (OrthoConfig, base_cfg),
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
