"""The SAELens workarounds in one place (``sae_lens_bridge``): what they rely on is still what was checked (sae-lens
6.54.x), a changed method is reported, and the patch helpers restore what they replace."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest
import sae_lens.training.activations_store as store
import sae_lens.training.sae_trainer as sae_trainer
import torch

from sae_lens_ortho import sae_lens_bridge as bridge


def test_installed_sae_lens_is_the_checked_line() -> None:
    installed = importlib.metadata.version("sae-lens")
    assert installed.split(".")[:2] == bridge.SAE_LENS_CHECKED.split(".")[:2], installed


def test_every_patched_callable_has_the_shape_it_was_checked_with() -> None:
    """Fails on a SAELens upgrade that changes a method we wrap or replace: re-read it, then record the new values
    (``bridge.fingerprint``) in ``RELIANCES``."""
    assert bridge.changed_since_checked() == []


def test_a_changed_method_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def maybe_reset_sparsity(self, every_n_steps=1):  # a new parameter: what an upgrade might do
        return {}

    monkeypatch.setattr(sae_trainer.SAETrainer, "maybe_reset_sparsity", maybe_reset_sparsity)
    monkeypatch.delattr(store, "load_dataset")
    changed = bridge.changed_since_checked()
    assert len(changed) == 2
    assert changed[0].startswith("sae_lens.training.sae_trainer:SAETrainer.maybe_reset_sparsity: signature (self, ")
    assert changed[1].startswith("sae_lens.training.activations_store:load_dataset: missing")


def test_a_changed_body_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def _checkpoint_if_needed(self):  # same signature, other code
        return None

    monkeypatch.setattr(sae_trainer.SAETrainer, "_checkpoint_if_needed", _checkpoint_if_needed)
    (line,) = bridge.changed_since_checked()
    assert "_checkpoint_if_needed: source changed" in line and "step count" in line


def test_replaced_loaders_restore_the_originals_also_on_error() -> None:
    original = store.load_dataset
    target = "sae_lens.training.activations_store:load_dataset"
    with pytest.raises(RuntimeError), bridge.replaced_loaders({target: lambda f: ("wrapped", f)}):
        assert store.load_dataset == ("wrapped", original)
        raise RuntimeError
    assert store.load_dataset is original


def test_wrap_methods_wraps_the_object_not_its_class() -> None:
    class Trainer:
        def step(self) -> int:
            return 1

    t = Trainer()
    bridge.wrap_methods(t, {"step": lambda f: lambda: f() + 1, "absent": lambda f: f})
    assert t.step() == 2 and Trainer().step() == 1 and not hasattr(t, "absent")


def test_optimizers_holding_finds_the_optimizer_of_a_parameter() -> None:
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert bridge.optimizers_holding(p) == [opt] and bridge.optimizers_holding(q) == []
    assert inspect.getmodule(bridge.optimizers_holding) is bridge
