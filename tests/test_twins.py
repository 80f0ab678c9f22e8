"""Every SAELens training architecture has an ``*_ortho`` twin that trains, saves as its base's inference
architecture, and starts from the base's initial weights."""

from __future__ import annotations

import pytest
import torch
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import TrainStepInput

import sae_lens_ortho  # noqa: F401  (registers the twins)

BASES = sorted(name for name in SAE_TRAINING_CLASS_REGISTRY if not name.endswith("_ortho"))


def _kwargs(cfg_cls: type) -> dict:
    names = cfg_cls.__dataclass_fields__
    kw: dict = {"d_in": 12, "d_sae": 32}
    if "k" in names:
        kw["k"] = 3
    if "matryoshka_widths" in names:
        kw["matryoshka_widths"] = [8, 32]
    return kw


def test_every_training_architecture_has_a_twin():
    assert BASES, "SAELens registers training architectures"
    for base in BASES:
        assert f"{base}_ortho" in SAE_TRAINING_CLASS_REGISTRY, base


@pytest.mark.parametrize("base", BASES)
def test_twin_trains_saves_as_the_base_and_shares_its_init(base):
    base_cls, base_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[base]
    twin_cls, twin_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[f"{base}_ortho"]
    assert twin_cfg_cls.ortho_base_architecture == base
    # The coefficient is explicit: some twins default to 0 (TWIN_DEFAULTS) and then train exactly as their base.
    cfg = twin_cfg_cls(**_kwargs(twin_cfg_cls), ortho_target="decoder", ortho_pair_fraction=0.1, ortho_coefficient=0.1)
    # Saved as the base saves itself: the inference config class is the base's.
    assert cfg.get_inference_config_class() is base_cfg_cls(**_kwargs(base_cfg_cls)).get_inference_config_class()
    torch.manual_seed(3)
    twin = twin_cls(cfg)
    torch.manual_seed(3)
    plain = base_cls(base_cfg_cls(**_kwargs(base_cfg_cls)))
    for name, p in plain.named_parameters():
        assert torch.equal(p, dict(twin.named_parameters())[name]), name  # same start from the same seed
    coefficients = {k: (v.value if hasattr(v, "value") else v) for k, v in twin.get_coefficients().items()}
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    out = twin.training_forward_pass(TrainStepInput(x, coefficients, None, 0, True))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.losses["ortho_loss"].item() > 0
    assert twin.W_dec.grad is not None and torch.isfinite(twin.W_dec.grad).all()


@pytest.mark.parametrize("base", BASES)
def test_twin_defaults_are_the_measured_ones(base):
    """A twin's default coefficient is TWIN_DEFAULTS's entry for its base where one exists (measured harm at 0.1)."""
    from sae_lens_ortho.saes.config import OrthoConfig
    from sae_lens_ortho.saes.twins import TWIN_DEFAULTS

    _, twin_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[f"{base}_ortho"]
    cfg = twin_cfg_cls(**_kwargs(twin_cfg_cls))
    # standard_ortho is our own class (saes/standard.py), off by default for the same measured reason.
    measured = {**TWIN_DEFAULTS, "standard": {"ortho_coefficient": 0.0}}
    expected = measured.get(base, {}).get("ortho_coefficient", OrthoConfig.ortho_coefficient)
    assert cfg.ortho_coefficient == expected
