"""Penalties on the decoder rows of selected pairs (``ortho_target="decoder"``, ``ortho_select_by="decoder"``), on
their encoder columns (``ortho_target="encoder"``, encoder-side decorrelation) and the loss units
(``ortho_scale="input_energy"``), against brute-force references."""

from __future__ import annotations

import pytest
import torch
from reference import correlation_matrix
from sae_lens.saes.sae import TrainStepInput

from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig
from sae_lens_ortho.core.pairs import top_correlated_pairs, top_decoder_pairs
from sae_lens_ortho.core.penalties import selected_decoder_cosines
from sae_lens_ortho.describe import describe_ortho

X = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))


def _unit(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True)


def _sae(**kw) -> TopKOrthoTrainingSAE:
    torch.manual_seed(0)
    # Raw units, so the reference values below are the penalties themselves.
    cfg = dict(d_in=16, d_sae=48, k=4, ortho_pair_fraction=0.02, ortho_weighting="squared", ortho_scale="none")
    return TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(**{**cfg, **kw}))


def _step(sae, x=X, n=0, logging=True, coef=1.0):
    out = sae.training_forward_pass(TrainStepInput(x, {"ortho": coef, "decoder_ortho": 0.0}, None, n, logging))
    return out


def test_selected_decoder_cosines_and_gradient_match_brute_force():
    W = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        W[7] = 0  # a zero row has cosine 0 with everything and gets no gradient
    keys = torch.tensor([0 * 40 + 1, 3 * 40 + 7, 10 * 40 + 39, 2 * 40 + 5])
    got = selected_decoder_cosines(W, keys)
    i, j = keys // 40, keys % 40
    norms = W.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, W / norms.clamp_min(1e-300), torch.zeros_like(W))
    ref = (unit[i] * unit[j]).sum(1)
    assert torch.allclose(got, ref)
    assert got[1] == 0
    g_got = torch.autograd.grad((got**2 * torch.arange(1.0, 5.0, dtype=torch.float64)).sum(), W)[0]
    g_ref = torch.autograd.grad((ref**2 * torch.arange(1.0, 5.0, dtype=torch.float64)).sum(), W)[0]
    assert torch.allclose(g_got, g_ref)
    assert torch.all(g_got[7] == 0)


@pytest.mark.parametrize("scale", [1e-44, 1e-40, 1e-20, 1e-14, 1.0, 1e6, 1e30], ids=lambda s: f"{s:.0e}")
def test_selected_decoder_cosines_equal_unit_rows_then_dots_at_every_scale(scale: float) -> None:
    """The fused row-gather kernel against the plain composition it replaces: unit_rows (exact forward, gradient
    capped for norms below 2^-48) and a gather of the unit rows, values and gradients, a tiny or huge row included,
    pairs repeated, padding slots (key 0) included."""
    from sae_lens_ortho.core.numerics import unit_rows

    g = torch.Generator().manual_seed(4)
    W = torch.randn(50, 7, generator=g)
    W[3] *= scale
    W[5] = 0
    keys = torch.randint(0, 2500, (400,), generator=g)
    keys = torch.cat([keys[keys // 50 < keys % 50], torch.tensor([3 * 50 + 4, 3 * 50 + 4, 3 * 50 + 9, 0, 0])])
    weights = torch.randn(keys.numel(), generator=g)
    weights[-2:] = 0  # padding slots carry no gradient
    fused, plain = W.clone().requires_grad_(True), W.clone().requires_grad_(True)
    got = selected_decoder_cosines(fused, keys)
    unit = unit_rows(plain)
    ref = (unit[keys // 50] * unit[keys % 50]).sum(1)
    (got.pow(2) * weights).sum().backward()
    (ref.pow(2) * weights).sum().backward()
    assert fused.grad is not None and plain.grad is not None
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.isfinite(fused.grad).all()
    assert torch.allclose(fused.grad, plain.grad, rtol=1e-5, atol=1e-6 * plain.grad.abs().max().item())
    assert torch.all(fused.grad[5] == 0)


def test_top_decoder_pairs_are_the_brute_force_top_cosines_with_padding():
    W = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    C = _unit(W) @ _unit(W).T
    ranked = sorted(((float(C[a, b]), a, b) for a in range(30) for b in range(a + 1, 30) if C[a, b] > 0),
                    key=lambda t: (-t[0], t[1], t[2]))  # fmt: skip
    keys = top_decoder_pairs(W, 12)
    assert keys.tolist() == [a * 30 + b for _, a, b in ranked[:12]]
    # Orthogonal rows: no positive cosine at all, every slot is padding.
    assert top_decoder_pairs(torch.eye(6), 5).tolist() == [-1] * 5


def test_decoder_target_penalises_the_top_activation_pairs_decoder_rows_and_not_the_activations():
    sae = _sae(ortho_target="decoder")
    out = _step(sae)
    acts = out.feature_acts.detach()
    sel = top_correlated_pairs(acts, 0.02)  # the pairs chosen by activation cosine (exact)
    cos = (_unit(sae.W_dec)[sel.i] * _unit(sae.W_dec)[sel.j]).sum(1).detach()
    assert out.losses["ortho_loss"].item() == pytest.approx(float((cos**2).mean()), rel=1e-5)
    grads = torch.autograd.grad(out.losses["ortho_loss"], [sae.W_enc, sae.b_enc, sae.W_dec], allow_unused=True)
    assert grads[0] is None or torch.all(grads[0] == 0)  # nothing rewards a latent for firing less
    assert grads[1] is None or torch.all(grads[1] == 0)
    assert grads[2].abs().sum() > 0


def test_activation_target_still_pushes_the_encoder():
    sae = _sae(ortho_target="activations")
    out = _step(sae)
    g = torch.autograd.grad(out.losses["ortho_loss"], sae.W_enc)[0]
    assert g.abs().sum() > 0
    C = correlation_matrix(out.feature_acts.detach())
    assert out.metrics["ortho_selected_corr_max"].item() == pytest.approx(float(C.triu(1).max()), rel=1e-5)


def test_select_by_decoder_uses_the_top_decoder_pairs_and_reselects_every_n_steps():
    sae = _sae(ortho_target="decoder", ortho_select_by="decoder", ortho_select_every=2)
    m = sae.ortho_decoder_pair_keys.numel()
    opt = torch.optim.SGD(sae.parameters(), lr=0.5)
    chosen = []
    for n in range(4):
        before = top_decoder_pairs(sae.W_dec, m)
        out = _step(sae, n=n)
        chosen.append(sae.ortho_decoder_pair_keys.clone())
        if n % 2 == 0:
            assert torch.equal(chosen[-1], before)  # selected this step, from the current decoder
        else:
            assert torch.equal(chosen[-1], chosen[-2])  # kept between selections
        keys = chosen[-1][chosen[-1] >= 0]
        cos = (_unit(sae.W_dec)[keys // 48] * _unit(sae.W_dec)[keys % 48]).sum(1).detach()
        assert out.losses["ortho_loss"].item() == pytest.approx(float((cos**2).mean()), rel=1e-5)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(chosen[0], chosen[2])  # the decoder moved, the selection followed
    # The pair buffer is training state: in checkpoints, not in the inference weights.
    assert "ortho_decoder_pair_keys" in sae.state_dict()
    state = sae.state_dict()
    sae.process_state_dict_for_saving_inference(state)
    assert "ortho_decoder_pair_keys" not in state


def test_input_energy_scale_multiplies_the_losses_by_the_batch_mean_squared_norm():
    plain = _step(_sae(ortho_target="decoder", ortho_decoder_coefficient=0.3))
    scaled_sae = _sae(ortho_target="decoder", ortho_decoder_coefficient=0.3, ortho_scale="input_energy")
    x = X * 3.0
    scaled = scaled_sae.training_forward_pass(TrainStepInput(x, {"ortho": 1.0, "decoder_ortho": 0.3}, None, 0, True))
    plain_x = _sae(ortho_target="decoder", ortho_decoder_coefficient=0.3).training_forward_pass(
        TrainStepInput(x, {"ortho": 1.0, "decoder_ortho": 0.3}, None, 0, True)
    )
    energy = float(x.pow(2).sum(1).mean())
    for key in ("ortho_loss", "decoder_ortho_loss"):
        assert scaled.losses[key].item() == pytest.approx(energy * plain_x.losses[key].item(), rel=1e-5)
    assert plain.losses["ortho_loss"].item() > 0


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(ortho_target="gradient"), "ortho_target"),
        (dict(ortho_scale="fvu"), "ortho_scale"),
        (dict(ortho_select_by="weights"), "ortho_select_by"),
        (dict(ortho_select_by="decoder", ortho_target="activations"), "ortho_target"),
        (dict(ortho_select_by="decoder", ortho_target="decoder", ortho_select_every=0), "ortho_select_every"),
        (dict(ortho_select_by="decoder", ortho_target="decoder", ortho_pair_filter="zscore"), "ortho_pair_filter"),
        (dict(ortho_select_by="decoder", ortho_target="decoder", ortho_adaptive="momentum"), "ortho_adaptive"),
    ],
)
def test_bad_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **kw)


def _unit_columns(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=0, keepdim=True)


def _encoder_sae(**kw) -> TopKOrthoTrainingSAE:
    sae = _sae(ortho_target="encoder", **kw)
    with torch.no_grad():  # SAELens starts W_enc as W_dec^T: make them differ, so the two targets are told apart
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=torch.Generator().manual_seed(1)))
    return sae


def test_encoder_target_penalises_the_encoder_columns_of_the_top_activation_pairs():
    sae = _encoder_sae()
    out = _step(sae)
    sel = top_correlated_pairs(out.feature_acts.detach(), 0.02)  # the pairs chosen by activation cosine (exact)
    enc = _unit_columns(sae.W_enc.detach())
    cos = (enc[:, sel.i] * enc[:, sel.j]).sum(0)
    assert out.losses["ortho_loss"].item() == pytest.approx(float((cos**2).mean()), rel=1e-5)
    dec = _unit(sae.W_dec.detach())
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
    sae = _encoder_sae()
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
        _encoder_sae(ortho_select_by="decoder")
    with pytest.raises(ValueError, match="ortho_target"):
        _sae(ortho_target="encoders")
    lines = describe_ortho({"ortho_coefficient": 0.1, "ortho_target": "encoder"})
    assert any("the cosine of the pair's encoder columns" in line for line in lines)
