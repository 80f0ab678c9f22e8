"""Dictionary management in training (seed 004): the adapter around the pure functions of ``dictionary``.

Every step updates, in buffers, each feature's importance EMA and its two consecutive-step counters (below
``ortho_realloc_threshold``; in a selected pair above ``ortho_prune_threshold``). Every ``ortho_manage_every``
steps the decisions are taken from this state and the step's selected pairs; the chosen features are stored
in ``ortho_pending_reinit`` and re-initialised at the start of the next step, before its forward pass (weights
cannot change between a forward pass and its backward). Re-initialising also zeroes the features' Adam
moments, so the new direction does not inherit the old feature's momentum.

SAELens's trainer gives the SAE no handle on its optimizer, so we find the optimizers whose state holds our
parameters through the garbage collector's referrer graph (``optimizers_holding``), once per check; a caller
with its own loop can pass its optimizer with ``ortho_bind_optimizer`` instead. An optimizer that has no
state for a parameter yet has nothing to reset.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sae_lens_ortho.core.dictionary import (
    DictionaryState,
    feature_rms,
    feature_rms_dense,
    management_decisions,
    max_pair_correlation,
    reinit_features,
    reset_adam_state,
    reset_feature_state,
    update_dictionary_state,
)
from sae_lens_ortho.core.penalties import SelectedPairs
from sae_lens_ortho.sae_lens_bridge import optimizers_holding  # the gc lookup: a SAELens workaround

__all__ = ["MANAGEMENT_BUFFERS", "DictionaryManagement", "optimizers_holding"]

MANAGEMENT_BUFFERS = (
    "ortho_importance",
    "ortho_steps_below",
    "ortho_steps_correlated",
    "ortho_pending_reinit",
    "ortho_reinit_total",
    "ortho_pruned_total",
)


class DictionaryManagement:
    """Mixin of ``OrthoTrainingSAE``: seed 004's re-initialisation and pruning of features during training."""

    cfg: Any
    # Buffers registered by _manage_init (declared for type checkers: the mixin sits on an nn.Module).
    ortho_importance: Tensor
    ortho_steps_below: Tensor
    ortho_steps_correlated: Tensor
    ortho_pending_reinit: Tensor
    register_buffer: Callable[..., None]
    _ortho_bound_optimizers: list[weakref.ref[torch.optim.Optimizer]] | None = None
    _ortho_may_have_pending = True  # a resumed checkpoint may carry a pending mask: look once

    def _manage_init(self, device: torch.device) -> None:
        n = self.cfg.d_sae
        zeros = torch.zeros(n, dtype=torch.int64, device=device)
        self.register_buffer("ortho_importance", torch.zeros(n, device=device))  # type: ignore[attr-defined]
        self.register_buffer("ortho_steps_below", zeros)  # type: ignore[attr-defined]
        self.register_buffer("ortho_steps_correlated", zeros.clone())  # type: ignore[attr-defined]
        self.register_buffer("ortho_pending_reinit", torch.zeros(n, dtype=torch.bool, device=device))  # type: ignore[attr-defined]
        self.register_buffer("ortho_reinit_total", torch.zeros((), dtype=torch.int64, device=device))  # type: ignore[attr-defined]
        self.register_buffer("ortho_pruned_total", torch.zeros((), dtype=torch.int64, device=device))  # type: ignore[attr-defined]

    def ortho_bind_optimizer(self, *optimizers: torch.optim.Optimizer) -> None:
        """Use these optimizers for Adam-state resets instead of finding them (for custom training loops)."""
        self._ortho_bound_optimizers = [weakref.ref(o) for o in optimizers]

    def ortho_optimizers(self) -> list[torch.optim.Optimizer]:
        if self._ortho_bound_optimizers is not None:
            return [o for o in (r() for r in self._ortho_bound_optimizers) if o is not None]
        return optimizers_holding(self.W_dec)  # type: ignore[attr-defined]

    @torch.no_grad()
    def ortho_reset_optimizer_state(
        self, param: Tensor, mask: Tensor, dim: int, optimizers: list | None = None
    ) -> None:
        """Zero the Adam moments of the ``mask`` features of ``param`` (indexed along ``dim``)."""
        for opt in self.ortho_optimizers() if optimizers is None else optimizers:
            state = opt.state.get(param)
            if state:
                reset_adam_state(state, mask, dim)

    @torch.no_grad()
    def _manage_before_step(self, step: int) -> None:
        """Re-initialise the features chosen at the last check (a no-op on other steps). ``step`` is the SAE's own
        ``ortho_step``: SAELens's ``n_training_steps`` is one lower after resuming from a mid-run checkpoint."""
        every = self.cfg.ortho_manage_every
        if not every or not (self._ortho_may_have_pending or (step > 0 and step % every == 0)):
            return
        self._ortho_may_have_pending = False
        mask = self.ortho_pending_reinit
        if not bool(mask.any()):  # one host read per check: an empty mask draws nothing and touches nothing
            return
        W_enc, W_dec = self.W_enc, self.W_dec  # type: ignore[attr-defined]
        b_enc = getattr(self, "b_enc", None)
        generator = self.ortho_generator("reinit")  # type: ignore[attr-defined]
        b_enc_or_zeros = b_enc if b_enc is not None else W_enc.new_zeros(mask.shape)
        reinit_features(W_enc, b_enc_or_zeros, W_dec, mask, generator=generator)
        optimizers = self.ortho_optimizers()
        for param, dim in ((W_enc, 1), (b_enc, 0), (W_dec, 0)):
            if param is not None:
                self.ortho_reset_optimizer_state(param, mask, dim, optimizers)
        self.ortho_on_reinit(mask)  # type: ignore[attr-defined]
        mask.zero_()

    @torch.no_grad()
    def _manage_after_step(
        self, feature_acts: Tensor, sel: SelectedPairs, step: int, logging: bool
    ) -> dict[str, Tensor]:
        """Update importance and counters from this step; on a check step choose features for the next."""
        cfg = self.cfg
        n = cfg.d_sae
        captured = getattr(self, "_ortho_captured", None)
        if captured is not None and captured[0].shape[0] == feature_acts.shape[0]:
            rms = feature_rms(captured[0], captured[1], n)
        else:
            rms = feature_rms_dense(feature_acts)
        state = update_dictionary_state(
            DictionaryState(self.ortho_importance, self.ortho_steps_below, self.ortho_steps_correlated),
            rms,
            max_pair_correlation(sel.keys, sel.corr, sel.valid, n),
            beta=cfg.ortho_importance_decay,
            theta_act=cfg.ortho_realloc_threshold,
            theta_corr=cfg.ortho_prune_threshold,
        )
        if (step + 1) % cfg.ortho_manage_every == 0:
            decisions = management_decisions(
                state,
                sel.keys,
                sel.corr,
                sel.valid,
                t_realloc=cfg.ortho_realloc_steps,
                t_prune=cfg.ortho_prune_steps,
                theta_corr=cfg.ortho_prune_threshold,
                protect_quantile=cfg.ortho_prune_protect_quantile,
            )
            chosen = decisions.reinit | decisions.prune
            self.ortho_pending_reinit.copy_(chosen)
            self._ortho_may_have_pending = True
            state = reset_feature_state(state, chosen)
            self.ortho_reinit_total += decisions.n_reinit
            self.ortho_pruned_total += decisions.n_pruned
        self.ortho_importance.copy_(state.importance)
        self.ortho_steps_below.copy_(state.steps_below)
        self.ortho_steps_correlated.copy_(state.steps_correlated)
        if not logging:
            return {}
        return {
            "ortho_reinit_total": self.ortho_reinit_total.clone(),
            "ortho_pruned_total": self.ortho_pruned_total.clone(),
            "ortho_low_importance_features": (state.importance < cfg.ortho_realloc_threshold).sum(),
        }
