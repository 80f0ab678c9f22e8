"""Encoder-side decorrelation (``ortho_target="encoder"``): the pairs chosen by activation cosine, the penalty on
the cosine of their unit encoder columns, against brute-force references."""

from __future__ import annotations

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig
from sae_lens_ortho.core.pairs import top_correlated_pairs
from sae_lens_ortho.describe import describe_ortho

X = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))


def _unit_columns(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=0, keepdim=True)


def _sae(**kw) -> TopKOrthoTrainingSAE:
    torch.manual_seed(0)
    cfg = dict(d_in=16, d_sae=48, k=4, ortho_pair_fraction=0.02, ortho_weighting="squared", ortho_scale="none")
    sae = TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(**{**cfg, **kw}))
    with torch.no_grad():  # SAELens starts W_enc as W_dec^T: make them differ, so the two targets are told apart
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=torch.Generator().manual_seed(1)))
    return sae


def _step(sae: TopKOrthoTrainingSAE, coef: float = 1.0):
    return sae.training_forward_pass(TrainStepInput(X, {"ortho": coef, "decoder_ortho": 0.0}, None, 0, True))


def test_encoder_target_penalises_the_encoder_columns_of_the_top_activation_pairs():
    sae = _sae(ortho_target="encoder")
    out = _step(sae)
    sel = top_correlated_pairs(out.feature_acts.detach(), 0.02)  # the pairs chosen by activation cosine (exact)
    enc = _unit_columns(sae.W_enc.detach())
    cos = (enc[:, sel.i] * enc[:, sel.j]).sum(0)
    assert out.losses["ortho_loss"].item() == pytest.approx(float((cos**2).mean()), rel=1e-5)
    dec = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    dec_cos = (dec[sel.i] * dec[sel.j]).sum(1)
    assert abs(float((dec_cos**2).mean()) - out.losses["ortho_loss"].item()) > 1e-3  # not the decoder's value
    assert out.metrics["ortho_selected_encoder_cos_mean"].item() == pytest.approx(float(cos.abs().mean()), rel=1e-5)
    grads = torch.autograd.grad(out.losses["ortho_loss"], [sae.W_enc, sae.b_enc, sae.W_dec], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert grads[1] is None or torch.all(grads[1] == 0)  # through the weights only, never the activations
    assert grads[2] is None or torch.all(grads[2] == 0)  # what the latents write is left to the reconstruction
    touched = grads[0].abs().sum(0) > 0  # only the selected latents' columns move
    assert set(touched.nonzero().flatten().tolist()) == set(sel.i.tolist()) | set(sel.j.tolist())


def test_a_step_on_the_encoder_penalty_lowers_the_selected_encoder_cosines():
    sae = _sae(ortho_target="encoder")
    out = _step(sae)
    sel = top_correlated_pairs(out.feature_acts.detach(), 0.02)
    before = _unit_columns(sae.W_enc.detach())
    out.losses["ortho_loss"].backward()
    with torch.no_grad():
        sae.W_enc -= 20.0 * sae.W_enc.grad  # columns of norm ~4: the cosines move as grad / norm^2
    after = _unit_columns(sae.W_enc.detach())
    cos_before = (before[:, sel.i] * before[:, sel.j]).sum(0).pow(2).mean()
    cos_after = (after[:, sel.i] * after[:, sel.j]).sum(0).pow(2).mean()
    assert cos_after < 0.9 * cos_before


def test_encoder_target_is_refused_with_pairs_chosen_by_the_decoder_and_described():
    with pytest.raises(ValueError, match="ortho_target='decoder'"):
        _sae(ortho_target="encoder", ortho_select_by="decoder")
    with pytest.raises(ValueError, match="ortho_target"):
        _sae(ortho_target="encoders")
    lines = describe_ortho({"ortho_coefficient": 0.1, "ortho_target": "encoder"})
    assert any("the cosine of the pair's encoder columns" in line for line in lines)
