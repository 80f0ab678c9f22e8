"""Non-finite steps never reach the weights or the ortho state, and training stops with the step named.

A NaN or inf in a batch (or an fp16 overflow in the forward pass) makes every gradient NaN; SAELens's gradient
clipping and Adam then write NaN into every parameter, silently. Here, per training step and without any host
synchronisation:

* ``ok`` = (the batch is finite) and (the step's total loss is finite), a device-side boolean (finiteness is read
  from a sum: one pass, no temporary);
* after backward, each parameter's accumulated gradient is zeroed unless ``ok`` and the gradient itself is
  finite (a post-accumulate-grad hook, so micro-batch accumulation is covered too): clipping and Adam see
  zeros, the weights stay finite;
* every buffer the step changed (ortho state, BatchTopK's threshold, ...; told by its version counter, or a new
  tensor under its name) is put back to its value before the step unless ``ok``; only ``ortho_step`` advances,
  to stay in line with SAELens's coefficient schedulers;
* the first such step is recorded in a device scalar.

The recorded step is read (one host sync) on logging steps, where SAELens reads values back anyway, and before
anything is saved (``process_state_dict_for_saving``): then :class:`NonFiniteTrainingError` names the step, so
no checkpoint written after the bad step exists and the last good one is left intact. The crash-safe runner
(:mod:`sae_lens_ortho.training`) also checks every ``finite_check_every`` steps.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from sae_lens_ortho.saes.randomness import host_side

__all__ = ["NonFiniteGuard", "NonFiniteTrainingError"]


class NonFiniteTrainingError(RuntimeError):
    """A training step saw a non-finite batch, loss or gradient. ``step`` is its 0-based ``ortho_step``."""

    def __init__(self, step: int, detail: str = ""):
        self.step = step
        super().__init__(
            f"non-finite batch, loss or gradient at training step {step} (0-based ortho_step): the batch held NaN/inf "
            "or the forward pass overflowed (e.g. fp16). That step's gradients were zeroed and the ortho state was "
            "left as it was, so the weights are finite, but training stopped and nothing was saved after it; "
            "resume from the last checkpoint written before that step, after fixing the data or the dtype."
            + (f" {detail}" if detail else "")
        )


def _all_finite(x: Tensor) -> Tensor:
    """Device-side bool: every entry of ``x`` is finite. One summing pass, no temporary (``isfinite().all()`` makes
    three on CPU): a NaN or inf entry makes the sum NaN or inf. A float32 sum of finite entries overflows only
    above 3.4e38, where gradient clipping would overflow too."""
    return torch.isfinite(x.sum(dtype=torch.float32))


def _zero_bad_grad(ref: weakref.ref[Any]) -> Any:
    def hook(param: Tensor) -> None:
        sae = ref()
        if sae is None or param.grad is None:
            return
        ok = _all_finite(param.grad)
        if sae._ortho_step_ok is not None:
            ok = ok & sae._ortho_step_ok
        param.grad.masked_fill_(~ok, 0.0)
        sae._ortho_record_bad(~ok)

    return hook


class NonFiniteGuard:
    """Mixin of ``OrthoTrainingSAE``; see the module docstring."""

    _ortho_step_ok: Tensor | None = None  # this step's device-side verdict
    _ortho_first_bad: Tensor | None = None  # int64 scalar on the SAE's device: first bad ortho_step, -1 if none
    _ortho_bad_step_index: int = 0  # host step the hooks record
    _ortho_hooked: dict[int, weakref.ref[Tensor]] | None = None  # parameters with our hook, by id
    _ortho_versions: dict[str, tuple[int, int]] | None = None  # buffers' (id, version counter) at the step's start

    @host_side
    def _guard_begin(self, sae_in: Tensor, step: int) -> dict[str, Tensor]:
        """Start a step: hook new parameters, judge the batch, snapshot the buffers."""
        if self._ortho_hooked is None:
            self._ortho_hooked = {}
        ref = weakref.ref(self)
        for param in self.parameters():  # type: ignore[attr-defined]
            known = self._ortho_hooked.get(id(param))
            if param.requires_grad and (known is None or known() is not param):  # new (or replaced by a load)
                param.register_post_accumulate_grad_hook(_zero_bad_grad(ref))
                self._ortho_hooked[id(param)] = weakref.ref(param)
        self._ortho_bad_step_index = step
        self._ortho_step_ok = _all_finite(sae_in)
        self._ortho_versions = {}
        snapshot = {}
        for name, buf in self.named_buffers():  # type: ignore[attr-defined]
            if name != "ortho_step":
                snapshot[name] = buf.clone()
                self._ortho_versions[name] = (id(buf), buf._version)
        return snapshot

    @host_side
    def _guard_end(self, loss: Tensor, snapshot: dict[str, Tensor]) -> None:
        """End a step's forward pass: fold in the loss, restore the buffers if the step was bad, record it."""
        assert self._ortho_step_ok is not None
        ok = self._ortho_step_ok & torch.isfinite(loss.detach()).all()
        self._ortho_step_ok = ok
        for name, old in snapshot.items():
            buf = self.get_buffer(name)  # type: ignore[attr-defined]
            if (id(buf), buf._version) != (self._ortho_versions or {}).get(name):  # written or replaced this step
                buf.copy_(torch.where(ok, buf, old))
        self._ortho_record_bad(~ok)

    def _ortho_record_bad(self, bad: Tensor) -> None:
        if self._ortho_first_bad is None or self._ortho_first_bad.device != bad.device:
            self._ortho_first_bad = torch.full((), -1, dtype=torch.int64, device=bad.device)
        first = self._ortho_first_bad
        first.copy_(torch.where(bad & (first < 0), self._ortho_bad_step_index, first))

    def ortho_first_nonfinite_step(self) -> int | None:
        """The first training step with a non-finite batch, loss or gradient, or None (one host read)."""
        if self._ortho_first_bad is None:
            return None
        step = int(self._ortho_first_bad)
        return None if step < 0 else step

    def ortho_raise_if_nonfinite(self) -> None:
        """Raise :class:`NonFiniteTrainingError` if any step so far was non-finite (one host read)."""
        step = self.ortho_first_nonfinite_step()
        if step is not None:
            raise NonFiniteTrainingError(step)
