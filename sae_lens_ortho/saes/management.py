"""The optimizers of a training SAE, for resetting a feature's Adam moments (dictionary management, seed 004:
the mechanism itself is ``saes/mechanisms/dictionary_management.py``).

SAELens's trainer gives the SAE no handle on its optimizer, so we find the optimizers whose state holds our
parameters through the garbage collector's referrer graph (``optimizers_holding``), once per check; a caller
with its own loop can pass its optimizer with ``ortho_bind_optimizer`` instead. An optimizer that has no
state for a parameter yet has nothing to reset.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import torch
from torch import Tensor

from sae_lens_ortho.core.dictionary import reset_adam_state

__all__ = ["DictionaryManagement", "optimizers_holding"]


def optimizers_holding(param: Tensor) -> list[torch.optim.Optimizer]:
    """The live optimizers whose ``state`` has an entry for ``param`` (found through ``gc.get_referrers``)."""
    found: list[torch.optim.Optimizer] = []
    for holder in gc.get_referrers(param):
        if not isinstance(holder, dict) or param not in holder:
            continue
        for owner in gc.get_referrers(holder):
            # Python 3.11+ reports the optimizer itself; older versions its __dict__.
            candidates = (
                [owner]
                if isinstance(owner, torch.optim.Optimizer)
                else (
                    [o for o in gc.get_referrers(owner) if isinstance(o, torch.optim.Optimizer)]
                    if isinstance(owner, dict)
                    else []
                )
            )
            for opt in candidates:
                if opt.state is holder and all(opt is not f for f in found):
                    found.append(opt)
    return found


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
