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
    # The coefficient is explicit: every twin defaults to 0 and then trains exactly as its base.
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
def test_twin_defaults_are_off(base):
    """With default fields every twin's penalties are off (no setting measured harmless at every scale), so it
    trains exactly as its base: TWIN_DEFAULTS may only set per-base defaults that keep it so."""
    _, twin_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[f"{base}_ortho"]
    cfg = twin_cfg_cls(**_kwargs(twin_cfg_cls))
    assert cfg.ortho_coefficient == 0.0 and cfg.ortho_decoder_coefficient == 0.0
    assert cfg.ortho_manage_every == 0 and getattr(cfg, "ortho_competition_gamma", 0.0) == 0.0


@pytest.mark.parametrize("base", BASES)
def test_twin_with_default_fields_trains_exactly_as_its_base(base):
    """Do-no-harm by construction: from the same init, on the same batches, a twin with default fields takes the
    same optimizer steps as its base, bit for bit (the penalties add an exact zero and touch no gradient)."""
    base_cls, base_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[base]
    twin_cls, twin_cfg_cls = SAE_TRAINING_CLASS_REGISTRY[f"{base}_ortho"]
    saes = []
    for cls, cfg_cls in ((base_cls, base_cfg_cls), (twin_cls, twin_cfg_cls)):
        torch.manual_seed(5)
        saes.append(cls(cfg_cls(**_kwargs(cfg_cls))))
    opts = [torch.optim.Adam(sae.parameters(), lr=1e-2) for sae in saes]
    data = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(64, 12, generator=data).relu()  # non-negative and sparse-ish, like activations
        for sae, opt in zip(saes, opts, strict=True):
            coefficients = {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}
            torch.manual_seed(100 + step)  # any randomness inside a step is drawn alike by both
            out = sae.training_forward_pass(TrainStepInput(x, coefficients, None, step, step % 2 == 0))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    plain, twin = (dict(sae.named_parameters()) for sae in saes)
    for name, p in plain.items():
        assert torch.equal(p, twin[name]), (base, name)
