"""The optimizers of a training SAE, for resetting a feature's Adam moments (dictionary management, seed 004:
the mechanism itself is ``saes/mechanisms/dictionary_management.py``).

SAELens's trainer gives the SAE no handle on its optimizer, so we find the optimizers whose state holds our
parameters through the garbage collector's referrer graph (``optimizers_holding``), once per check; a caller
with its own loop can pass its optimizer with ``ortho_bind_optimizer`` instead. An optimizer that has no
state for a parameter yet has nothing to reset.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from sae_lens_ortho.core.dictionary import reset_adam_state
from sae_lens_ortho.sae_lens_bridge import optimizers_holding  # the gc lookup: a SAELens workaround

__all__ = ["DictionaryManagement", "optimizers_holding"]


class DictionaryManagement:
    """Mixin of ``OrthoTrainingSAE``: the optimizers whose Adam moments a re-initialised feature resets."""

    cfg: Any
    _ortho_bound_optimizers: list[weakref.ref[torch.optim.Optimizer]] | None = None

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
