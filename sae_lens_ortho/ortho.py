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

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_class, get_sae_training_class
from sae_lens.saes.sae import (
    SAEConfig,
    TrainCoefficientConfig,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepInput,
    TrainStepOutput,
)
from torch import Tensor

from .diagnostics import mean_pair_cosine, pair_set_jaccard, selection_summary
from .pairs import n_pairs, n_selected_pairs
from .penalties import decoder_gram_penalty, pair_penalty, select_pairs_for_penalty

__all__ = ["OrthoConfig", "OrthoTrainingSAE", "add_ortho", "register_training_architecture", "ORTHO_BUFFERS"]

# Buffers that hold training state: saved in checkpoints, dropped from the inference weights.
ORTHO_BUFFERS = ("ortho_step", "ortho_prev_pair_keys")
# The pair-set stability diagnostic compares at most this many top pairs between steps (8 MiB of keys).
MAX_TRACKED_PAIRS = 1 << 20


def _check_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """Raise ValueError naming the field and its allowed range unless low <= value <= high (finite, not bool)."""
    lo = "(" if low_open else "["
    hi = "]" if math.isfinite(high) else ")"
    allowed = f"{lo}{low}, {high if math.isfinite(high) else 'inf'}{hi}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value!r}")


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(kw_only=True)
class OrthoConfig:
    """Ortho fields shared by every ``*_ortho`` architecture. Mixed in *before* the base training config.

    Args:
        ortho_coefficient (float): weight of the selective activation-orthogonality penalty (>= 0), warmed up
            over ortho_warm_up_steps.
        ortho_warm_up_steps (int): steps over which ortho_coefficient rises linearly from 0 (>= 0).
        ortho_pair_fraction (float): fraction p in (0, 1] of the n(n-1)/2 feature pairs penalised per batch,
            the ceil(p n(n-1)/2) pairs with the largest activation cosine.
        ortho_weighting (str): per-pair penalty: abs |C|, squared C^2, hinge ReLU(|C| - ortho_tau), scaled |C|^2/ortho_tau.
        ortho_tau (float): threshold of hinge (in [0, 1]) or r_thresh of scaled (in (0, 1]).
        ortho_decoder_coefficient (float): weight of the all-pairs decoder orthogonality penalty (>= 0; 0 = off).
        ortho_decoder_reduction (str): mean (over the n(n-1) ordered pairs) or sum of (d_i.d_j)^2.
        ortho_method (str): pair selection: sparse (co-firing pairs), dense (chunked scan), or auto.
        ortho_chunk_size (int): feature columns per chunk of the dense scan (>= 1).

    The attribute docstrings below say the same at more length.
    """

    ortho_coefficient: float = 1.0
    """Weight of the selective activation-orthogonality penalty (>= 0). The trainer ramps it in over
    ``ortho_warm_up_steps`` through SAELens's coefficient warm-up; logged as ``details/ortho_coefficient``."""

    ortho_warm_up_steps: int = 0
    """Steps over which ``ortho_coefficient`` rises linearly from 0 (integer >= 0)."""

    ortho_pair_fraction: float = 0.001
    """Fraction p of the n(n-1)/2 feature pairs penalised each batch, in (0, 1]: the ceil(p*n(n-1)/2) pairs
    with the largest activation cosine C_ij (fewer if fewer pairs co-fire). 0.001 is seed 000/002's 0.1%."""

    ortho_weighting: Literal["abs", "squared", "hinge", "scaled"] = "abs"
    """How a selected pair is penalised: ``abs`` mean |C_ij| (seeds 001, 004); ``squared`` mean C_ij^2;
    ``hinge`` mean ReLU(|C_ij| - ortho_tau) (seed 002); ``scaled`` mean |C_ij|^2 / ortho_tau, seed 000's
    tau_ij = tau_base |r_ij| / r_thresh with ortho_tau = r_thresh and tau_base = ortho_coefficient."""

    ortho_tau: float = 0.5
    """Threshold for ``hinge`` (in [0, 1]) or r_thresh for ``scaled`` (in (0, 1]); unused by abs/squared."""

    ortho_decoder_coefficient: float = 0.0
    """Weight of the decoder-orthogonality penalty over *all* pairs of unit decoder rows (>= 0; 0 = off),
    computed exactly through the Gram identity in O(n d^2) (seed 003)."""

    ortho_decoder_reduction: Literal["mean", "sum"] = "mean"
    """``mean``: the penalty is the mean of (d^_i.d^_j)^2 over the n(n-1) ordered pairs, so a coefficient
    transfers across dictionary sizes. ``sum``: the raw sum_{i != j} of seed 003 (grows like n^2/d)."""

    ortho_method: Literal["auto", "sparse", "dense"] = "auto"
    """Pair-selection algorithm: ``sparse`` (co-firing pairs only, O(b k^2), for TopK-like activations),
    ``dense`` (chunked Gram scan, memory bounded by ``ortho_chunk_size`` x d_sae), ``auto`` picks by cost."""

    ortho_chunk_size: int = 512
    """Feature columns per chunk of the dense scan (integer >= 1; seed 000 uses 512)."""

    ortho_base_architecture: ClassVar[str]

    def __post_init__(self) -> None:
        _check_number("ortho_coefficient", self.ortho_coefficient, low=0)
        _check_int("ortho_warm_up_steps", self.ortho_warm_up_steps, low=0)
        _check_number("ortho_pair_fraction", self.ortho_pair_fraction, low=0, high=1, low_open=True)
        _check_choice("ortho_weighting", self.ortho_weighting, ("abs", "squared", "hinge", "scaled"))
        if self.ortho_weighting == "scaled":
            _check_number("ortho_tau", self.ortho_tau, low=0, high=1, low_open=True)
        else:
            _check_number("ortho_tau", self.ortho_tau, low=0, high=1)
        _check_number("ortho_decoder_coefficient", self.ortho_decoder_coefficient, low=0)
        _check_choice("ortho_decoder_reduction", self.ortho_decoder_reduction, ("mean", "sum"))
        _check_choice("ortho_method", self.ortho_method, ("auto", "sparse", "dense"))
        _check_int("ortho_chunk_size", self.ortho_chunk_size, low=1)
        super().__post_init__()  # type: ignore[misc]

    def get_inference_config_class(self) -> type[SAEConfig]:
        # Save as the base architecture's inference SAE (topk_ortho -> topk), so the result loads anywhere.
        base = get_sae_training_class(self.ortho_base_architecture)[1]
        if base.get_inference_config_class is TrainingSAEConfig.get_inference_config_class:
            return get_sae_class(self.ortho_base_architecture)[1]
        return base.get_inference_config_class(self)  # type: ignore[arg-type]


class OrthoTrainingSAE:
    """Adds the ortho losses, diagnostics and state to a ``TrainingSAE``. Mixed in *before* the base SAE."""

    cfg: Any

    def __init__(self, cfg: Any, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)  # type: ignore[call-arg]
        m = min(n_selected_pairs(cfg.d_sae, cfg.ortho_pair_fraction), MAX_TRACKED_PAIRS) if cfg.d_sae >= 2 else 0
        device = torch.device(cfg.device) if cfg.device != "meta" else torch.device("meta")
        self.register_buffer("ortho_step", torch.zeros((), dtype=torch.int64, device=device))
        # Last step's selected pairs (padded with -1), for the pair-set stability diagnostic across resumes.
        self.register_buffer("ortho_prev_pair_keys", torch.full((m,), -1, dtype=torch.int64, device=device))

    # --- hooks a base architecture may override -------------------------------------------------------
    def ortho_sparse_activations(self) -> tuple[Tensor, Tensor] | None:
        """(values, indices) [b, w] of this step's non-zero activations if the encoder already has them."""
        return None

    def ortho_row_width(self) -> int | None:
        """Static bound on non-zeros per row (TopK: k); None means read it from the batch (one host sync)."""
        return None

    # --- SAELens hooks ----------------------------------------------------------------------------------
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        coefficients = dict(super().get_coefficients())  # type: ignore[misc]
        coefficients["ortho"] = TrainCoefficientConfig(
            value=float(self.cfg.ortho_coefficient), warm_up_steps=self.cfg.ortho_warm_up_steps
        )
        coefficients["decoder_ortho"] = float(self.cfg.ortho_decoder_coefficient)
        return coefficients

    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: Tensor,
        hidden_pre: Tensor,
        sae_out: Tensor,
    ) -> dict[str, Tensor]:
        losses = super().calculate_aux_loss(step_input, feature_acts, hidden_pre, sae_out)  # type: ignore[misc]
        if not isinstance(losses, dict):
            losses = {"auxiliary_loss": losses}
        else:
            losses = dict(losses)
        cfg = self.cfg
        coef = step_input.coefficients.get("ortho", cfg.ortho_coefficient)
        dec_coef = step_input.coefficients.get("decoder_ortho", cfg.ortho_decoder_coefficient)
        diagnostics: dict[str, Any] = {}
        zero = sae_out.new_zeros((), dtype=torch.float32)
        if (coef > 0 or step_input.is_logging_step) and cfg.d_sae >= 2:
            sel = self._select_pairs(feature_acts)
            penalty = pair_penalty(sel.corr, sel.valid, cfg.ortho_weighting, cfg.ortho_tau)
            losses["ortho_loss"] = coef * penalty if coef > 0 else zero
            if step_input.is_logging_step:
                diagnostics = self._pair_diagnostics(sel, feature_acts, penalty)
            with torch.no_grad():
                self.ortho_prev_pair_keys.copy_(self._tracked_keys(sel))
        else:
            losses["ortho_loss"] = zero
        if dec_coef > 0 or step_input.is_logging_step:
            with torch.set_grad_enabled(dec_coef > 0 and torch.is_grad_enabled()):  # a diagnostic needs no graph
                dec = decoder_gram_penalty(self.W_dec, cfg.ortho_decoder_reduction)  # type: ignore[attr-defined]
            losses["decoder_ortho_loss"] = dec_coef * dec if dec_coef > 0 else zero
            if step_input.is_logging_step:
                diagnostics["ortho_decoder_penalty"] = dec.detach()
        else:
            losses["decoder_ortho_loss"] = zero
        with torch.no_grad():
            self.ortho_step += 1
        self._ortho_diagnostics = diagnostics
        return losses

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        self._ortho_diagnostics = {}
        output = super().training_forward_pass(step_input)  # type: ignore[misc]
        output.metrics.update(self._ortho_diagnostics)
        self._ortho_diagnostics = {}
        return output

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        if int(self.ortho_step) == 0:
            raise ValueError(
                f"refusing to save an untrained SAE: this {self.cfg.architecture()} SAE took no training step "
                "(SAELens trains ceil(training_tokens / train_batch_size_tokens) steps; training_tokens must be > 0)"
            )
        super().process_state_dict_for_saving_inference(state_dict)  # type: ignore[misc]
        for name in ORTHO_BUFFERS:
            state_dict.pop(name, None)

    # --- internals -------------------------------------------------------------------------------------
    def _select_pairs(self, feature_acts: Tensor):
        cfg = self.cfg
        dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
        captured = self.ortho_sparse_activations() if cfg.ortho_method != "dense" else None
        if captured is not None and captured[0].shape[0] != dense.shape[0]:
            captured = None  # not this batch's activations (e.g. reshaped inputs): fall back to a scan
        return select_pairs_for_penalty(
            dense,
            cfg.ortho_pair_fraction,
            width=self.ortho_row_width(),
            method=cfg.ortho_method,
            chunk_size=cfg.ortho_chunk_size,
            sparse=captured,
        )

    @torch.no_grad()
    def _pair_diagnostics(self, sel: Any, feature_acts: Tensor, penalty: Tensor) -> dict[str, Tensor]:
        dense = feature_acts.to_dense() if feature_acts.is_sparse else feature_acts
        out = {f"ortho_{k}": v for k, v in selection_summary(sel.corr, sel.valid).items()}
        out["ortho_penalty"] = penalty.detach()
        out["ortho_mean_pair_cosine"] = mean_pair_cosine(dense)
        out["ortho_cofire_fraction"] = sel.stats.n_cofiring.double() / max(n_pairs(self.cfg.d_sae), 1)
        out["ortho_pair_jaccard"] = pair_set_jaccard(self._tracked_keys(sel), self.ortho_prev_pair_keys)
        return out

    def _tracked_keys(self, sel: Any) -> Tensor:
        """This step's valid pair keys, best first, padded with -1 to the size of the tracking buffer."""
        out = torch.full_like(self.ortho_prev_pair_keys, -1)
        keys = torch.where(sel.valid, sel.keys, torch.full_like(sel.keys, -1))[: out.numel()]
        out[: keys.numel()] = keys
        return out


def register_training_architecture(name: str, sae_cls: type, cfg_cls: type) -> None:
    """Register in SAELens's training registry, idempotently.

    Re-registering the same classes, or classes of the same module and name (a module reload), replaces the
    entry; a different class under a taken name is an error.
    """
    existing = SAE_TRAINING_CLASS_REGISTRY.get(name)
    if existing is not None:
        old_sae, _ = existing
        same = old_sae is sae_cls or (
            old_sae.__module__ == sae_cls.__module__ and old_sae.__qualname__ == sae_cls.__qualname__
        )
        if not same:
            raise ValueError(f"training architecture {name!r} is already registered to {old_sae.__qualname__}")
    SAE_TRAINING_CLASS_REGISTRY[name] = (sae_cls, cfg_cls)


def add_ortho(
    base_architecture: str,
    name: str | None = None,
    *,
    sae_mixin: type | None = None,
    register: bool = True,
) -> tuple[type[TrainingSAE[Any]], type[TrainingSAEConfig]]:
    """Build (and register) ``<base>_ortho``: the registered training architecture ``base_architecture`` with
    the ortho losses. Works for SAELens built-ins (``jumprelu``, ``batchtopk``, ``standard``, ...) and for a
    user's own registered architecture. Returns (training SAE class, config class).

    ``sae_mixin`` may add architecture-specific hooks (e.g. TopK's captured activations) before the base SAE.
    """
    name = name or f"{base_architecture}_ortho"
    base_sae, base_cfg = get_sae_training_class(base_architecture)
    stem = "".join(part.capitalize() for part in name.split("_"))
    cfg_cls = dataclass(kw_only=True)(
        type(
            f"{stem}TrainingSAEConfig",
            (OrthoConfig, base_cfg),
            {
                "__doc__": f"{base_cfg.__name__} with the ortho fields of OrthoConfig (architecture {name!r}).",
                "__module__": __name__,
                "ortho_base_architecture": base_architecture,
                "architecture": classmethod(lambda cls: name),
            },
        )
    )
    bases = (OrthoTrainingSAE,) + ((sae_mixin,) if sae_mixin is not None else ()) + (base_sae,)
    sae_cls = type(
        f"{stem}TrainingSAE",
        bases,
        {"__doc__": f"{base_sae.__name__} trained with the ortho losses (architecture {name!r}).",
         "__module__": __name__},
    )
    if register:
        register_training_architecture(name, sae_cls, cfg_cls)
    return sae_cls, cfg_cls


def ortho_field_names() -> list[str]:
    """Names of the ortho config fields, in declaration order."""
    return [f.name for f in fields(OrthoConfig)]
