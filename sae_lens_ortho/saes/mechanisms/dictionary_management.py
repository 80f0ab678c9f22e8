"""Dictionary management in training (seed 004): the adapter around the pure functions of ``core.dictionary``.

Every step updates, in buffers, each feature's importance EMA and its two consecutive-step counters (below
``ortho_realloc_threshold``; in a selected pair above ``ortho_prune_threshold``). Every ``ortho_manage_every``
steps the decisions are taken from this state and the step's selected pairs; the chosen features are stored
in ``ortho_pending_reinit`` and re-initialised at the start of the next step, before its forward pass (weights
cannot change between a forward pass and its backward). Re-initialising also zeroes the features' Adam
moments (``saes/management.py`` finds the optimizers), so the new direction does not inherit the old feature's
momentum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sae_lens.saes.sae import TrainStepOutput
from torch import Tensor

from sae_lens_ortho.core.dictionary import (
    DictionaryState,
    feature_rms,
    feature_rms_dense,
    management_decisions,
    max_pair_correlation,
    reinit_features,
    reset_feature_state,
    update_dictionary_state,
)
from sae_lens_ortho.saes.checks import check_int, check_number
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext

__all__ = ["MANAGEMENT_BUFFERS", "DictionaryManagement", "DictionaryManagementFields"]

MANAGEMENT_BUFFERS = (
    "ortho_importance",
    "ortho_steps_below",
    "ortho_steps_correlated",
    "ortho_pending_reinit",
    "ortho_reinit_total",
    "ortho_pruned_total",
)


@dataclass(kw_only=True)
class DictionaryManagementFields:
    # --- dictionary management (seed 004) ------------------------------------------------------------------
    ortho_manage_every: int = 0
    """Check for features to re-initialise or prune every this many steps (integer >= 0; 0 = off; seed 004:
    100). Chosen features get a random direction and their Adam moments zeroed before the next step."""

    ortho_importance_decay: float = 0.99
    """beta of the importance EMA I_i of each feature's batch RMS activation (in [0, 1); seed 004: 0.99)."""

    ortho_realloc_threshold: float = 0.01
    """theta_act: a feature with I_i below it for ``ortho_realloc_steps`` consecutive steps is re-initialised
    (>= 0; seed 004: 0.01)."""

    ortho_realloc_steps: int = 1000
    """T_realloc in steps (integer >= 1; seed 004 does not give it: its 1000-step window)."""

    ortho_prune_threshold: float = 0.8
    """theta_corr: a feature whose largest selected-pair |C_ij| exceeds it for ``ortho_prune_steps``
    consecutive steps is pruned (its slot re-initialised) unless protected (in (0, 1]; seed 004: 0.8)."""

    ortho_prune_steps: int = 1000
    """T_prune in steps (integer >= 1; seed 004 does not give it: its 1000-step window)."""

    ortho_prune_protect_quantile: float = 0.9
    """Features with importance above this quantile are never pruned (in [0, 1]; seed 004: 0.9)."""


class DictionaryManagement(Mechanism):
    name = "dictionary_management"
    Fields = DictionaryManagementFields
    buffers = MANAGEMENT_BUFFERS

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_int("ortho_manage_every", cfg.ortho_manage_every, low=0)
        check_number("ortho_importance_decay", cfg.ortho_importance_decay, low=0, high=1)
        if cfg.ortho_importance_decay == 1:
            raise ValueError("ortho_importance_decay must be a finite number in [0, 1), got 1")
        check_number("ortho_realloc_threshold", cfg.ortho_realloc_threshold, low=0)
        check_int("ortho_realloc_steps", cfg.ortho_realloc_steps, low=1)
        check_number("ortho_prune_threshold", cfg.ortho_prune_threshold, low=0, high=1, low_open=True)
        check_int("ortho_prune_steps", cfg.ortho_prune_steps, low=1)
        check_number("ortho_prune_protect_quantile", cfg.ortho_prune_protect_quantile, low=0, high=1)

    @classmethod
    def active(cls, cfg: Any) -> bool:
        return bool(cfg.ortho_manage_every)

    def __init__(self, sae: Any, device: torch.device) -> None:
        n = sae.cfg.d_sae
        zeros = torch.zeros(n, dtype=torch.int64, device=device)
        sae.register_buffer("ortho_importance", torch.zeros(n, device=device))
        sae.register_buffer("ortho_steps_below", zeros)
        sae.register_buffer("ortho_steps_correlated", zeros.clone())
        sae.register_buffer("ortho_pending_reinit", torch.zeros(n, dtype=torch.bool, device=device))
        sae.register_buffer("ortho_reinit_total", torch.zeros((), dtype=torch.int64, device=device))
        sae.register_buffer("ortho_pruned_total", torch.zeros((), dtype=torch.int64, device=device))
        self.may_have_pending = True  # a resumed checkpoint may carry a pending mask: look once

    def after_load(self, sae: Any) -> None:
        self.may_have_pending = True

    @torch.no_grad()
    def prepare(self, sae: Any, ctx: StepContext) -> None:
        """Re-initialise the features chosen at the last check (a no-op on other steps)."""
        every, step = sae.cfg.ortho_manage_every, ctx.step
        if not (self.may_have_pending or (step > 0 and step % every == 0)):
            return
        self.may_have_pending = False
        mask = sae.ortho_pending_reinit
        if not bool(mask.any()):  # one host read per check: an empty mask draws nothing and touches nothing
            return
        W_enc, W_dec = sae.W_enc, sae.W_dec
        b_enc = getattr(sae, "b_enc", None)
        generator = sae.ortho_generator("reinit")
        b_enc_or_zeros = b_enc if b_enc is not None else W_enc.new_zeros(mask.shape)
        reinit_features(W_enc, b_enc_or_zeros, W_dec, mask, generator=generator)
        optimizers = sae.ortho_optimizers()
        for param, dim in ((W_enc, 1), (b_enc, 0), (W_dec, 0)):
            if param is not None:
                sae.ortho_reset_optimizer_state(param, mask, dim, optimizers)
        sae.ortho_on_reinit(mask)
        mask.zero_()

    def after_step(self, sae: Any, acts: Tensor, output: TrainStepOutput, ctx: StepContext) -> None:
        """Update importance and counters from this step; on a check step choose features for the next."""
        sel = ctx.selection
        if sel is None:
            return
        cfg = sae.cfg
        n = cfg.d_sae
        captured = ctx.captured
        if captured is not None and captured[0].shape[0] == acts.shape[0]:
            rms = feature_rms(captured[0], captured[1], n)
        else:
            rms = feature_rms_dense(acts)
        state = update_dictionary_state(
            DictionaryState(sae.ortho_importance, sae.ortho_steps_below, sae.ortho_steps_correlated),
            rms,
            max_pair_correlation(sel.keys, sel.corr, sel.valid, n),
            beta=cfg.ortho_importance_decay,
            theta_act=cfg.ortho_realloc_threshold,
            theta_corr=cfg.ortho_prune_threshold,
        )
        if (ctx.step + 1) % cfg.ortho_manage_every == 0:
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
            sae.ortho_pending_reinit.copy_(chosen)
            self.may_have_pending = True
            state = reset_feature_state(state, chosen)
            sae.ortho_reinit_total += decisions.n_reinit
            sae.ortho_pruned_total += decisions.n_pruned
        sae.ortho_importance.copy_(state.importance)
        sae.ortho_steps_below.copy_(state.steps_below)
        sae.ortho_steps_correlated.copy_(state.steps_correlated)
        if ctx.logging:
            ctx.metrics["ortho_reinit_total"] = sae.ortho_reinit_total.clone()
            ctx.metrics["ortho_pruned_total"] = sae.ortho_pruned_total.clone()
            ctx.metrics["ortho_low_importance_features"] = (state.importance < cfg.ortho_realloc_threshold).sum()
