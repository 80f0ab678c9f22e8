"""Numerical safety of the norms (issue 11, item 1): exact values and bounded, exact-where-it-can-be gradients
for column / row norms anywhere in 1e-40 ... 1e6, checked against float64 references; end to end, a feature with
a tiny activation norm no longer turns every weight into NaN."""

from __future__ import annotations

import math

import pytest
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from seed_defaults import SEED_DEFAULTS

from sae_lens_ortho import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig
from sae_lens_ortho.core.grouping import grouped_decoder_penalty
from sae_lens_ortho.core.numerics import INV_NORM_CAP, unit_columns, unit_rows, unit_sparse_columns
from sae_lens_ortho.core.pairs import column_inv_norms, top_correlated_pairs
from sae_lens_ortho.core.penalties import (
    chunk_max_cos_penalty_for_perm,
    decoder_gram_penalty,
    pair_penalty,
    select_pairs_for_penalty,
)

# One scale per decade over the range the issue asks for; 1e-40 is a float32 subnormal.
SCALES = [10.0**e for e in range(-40, 7)]


def _reference_unit_columns(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 unit columns of the float32 values and the gradient of sum(weights * y) w.r.t. x."""
    xd = x.detach().double().requires_grad_(True)
    y = xd / xd.norm(dim=0, keepdim=True)
    (y * weights.double()).sum().backward()
    assert xd.grad is not None
    return y.detach(), xd.grad


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"{s:.0e}")
def test_unit_columns_are_exact_and_their_gradient_bounded_at_every_scale(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(16, 3, generator=g) + 0.1
    x = (base * scale).requires_grad_(True)  # float32, subnormal at the bottom of the range
    weights = torch.randn(16, 3, generator=g)
    y = unit_columns(x)
    (y * weights).sum().backward()
    assert x.grad is not None
    ref_y, ref_grad = _reference_unit_columns(x, weights)
    assert (y.double() - ref_y).abs().max() < 1e-6  # exact to float32 rounding, whatever the scale
    assert torch.isfinite(x.grad).all()
    inv_norm = 1 / x.detach().double().norm(dim=0)
    exact = inv_norm <= INV_NORM_CAP
    # Exact where 1/|x| is within the cap; below it, the gradient of a vector of norm 1/cap (same direction).
    expected = torch.where(exact, ref_grad, ref_grad / inv_norm * INV_NORM_CAP)
    assert torch.allclose(x.grad.double(), expected, rtol=1e-4, atol=0), (x.grad, expected)
    assert x.grad.abs().max() <= 2 * INV_NORM_CAP * weights.abs().sum()


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"{s:.0e}")
def test_sparse_unit_columns_match_the_dense_ones(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    dense = torch.rand(8, 6, generator=g) * (torch.rand(8, 6, generator=g) < 0.5)
    dense[:, 2] *= scale
    vals, idx = dense.topk(6, dim=1)  # every entry of each row (zeros add nothing)
    v1 = vals.clone().requires_grad_(True)
    ys = unit_sparse_columns(v1, idx, 6)
    d2 = dense.clone().requires_grad_(True)
    yd = unit_columns(d2)
    w = torch.randn(8, 6, generator=g)
    (ys * w).sum().backward()
    (yd.gather(1, idx) * w).sum().backward()
    assert v1.grad is not None and d2.grad is not None
    assert torch.allclose(ys, yd.gather(1, idx), rtol=1e-6, atol=0)
    assert torch.allclose(v1.grad, d2.grad.gather(1, idx), rtol=1e-5, atol=0)


def test_zero_columns_stay_zero_with_zero_gradient() -> None:
    x = torch.zeros(4, 3)
    x[:, 1] = torch.tensor([1.0, 2.0, 0.0, 1.0])
    x.requires_grad_(True)
    unit_columns(x).sum().backward()
    assert x.grad is not None
    assert torch.equal(unit_columns(x.detach())[:, 0], torch.zeros(4))
    assert torch.equal(x.grad[:, 0], torch.zeros(4)) and torch.isfinite(x.grad).all()
    assert torch.equal(unit_rows(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_the_issue_repro_has_a_finite_exact_gradient() -> None:
    """select_pairs_for_penalty on [[1e-14,1,0],[0,1,.5],[0,.3,.5]]: loss 0.664 (was already right), grad[0,0]
    was -inf."""
    a = torch.tensor([[1e-14, 1, 0], [0, 1, 0.5], [0, 0.3, 0.5]], requires_grad=True)
    sel = select_pairs_for_penalty(a, 1.0, width=2)
    loss = pair_penalty(sel.corr, sel.valid)
    loss.backward()
    assert a.grad is not None
    ad = a.detach().double().requires_grad_(True)
    normed = ad / ad.norm(dim=0, keepdim=True)
    corr = normed.T @ normed
    pairs = torch.stack([corr[0, 1], corr[0, 2], corr[1, 2]])
    ref = pairs[pairs > 0].mean()  # same selection: every co-firing pair (p = 1)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.isfinite(a.grad).all()
    # a.grad[0, 0] is exactly 0 (the column's only entry: scale invariance); float64 leaves ~4e-3 of rounding there.
    assert torch.allclose(a.grad.double(), ad.grad, rtol=1e-4, atol=1e-9 * ad.grad.abs().max().item())


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("scale", [1e-40, 1e-30, 1e-20, 1e-19, 1e-14, 1.0, 1e6], ids=lambda s: f"{s:.0e}")
def test_selected_correlations_are_exact_for_a_tiny_feature(method: str, scale: float) -> None:
    """The correlations of a feature with a tiny norm were understated at 1e-19..1e-20 (0.35 instead of 0.66)
    and dropped below: now they are the float64 values, with a finite gradient."""
    g = torch.Generator().manual_seed(2)
    acts = torch.rand(32, 12, generator=g) * (torch.rand(32, 12, generator=g) < 0.4)
    acts[:, 0] = acts[:, 1] * 0.7 + 0.3 * acts[:, 2]
    acts[:, 0] *= scale
    x = acts.clone().requires_grad_(True)
    sel = select_pairs_for_penalty(x, 1.0, method=method, width=12)
    loss = pair_penalty(sel.corr, sel.valid, "squared")
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    xd = acts.double()
    normed = xd / xd.norm(dim=0, keepdim=True)
    ref = normed.T @ normed
    i, j = sel.keys[sel.valid] // 12, sel.keys[sel.valid] % 12
    assert torch.allclose(sel.corr[sel.valid].double(), ref[i, j], atol=2e-6)
    assert ((i == 0) & (j == 1)).any()  # the tiny feature's pair is selected, with its true correlation
    top = top_correlated_pairs(acts, 1.0, method=method, width=12)
    assert torch.allclose(top.corr.double(), ref[top.i, top.j], atol=2e-6)


@pytest.mark.parametrize("scale", [1e-40, 1e-30, 1e-20, 1e-14, 1e6], ids=lambda s: f"{s:.0e}")
def test_decoder_penalties_with_a_tiny_decoder_row(scale: float) -> None:
    g = torch.Generator().manual_seed(3)
    W = torch.randn(10, 4, generator=g)
    W[3] *= scale
    Wd = W.double()
    normed = Wd / Wd.norm(dim=1, keepdim=True)
    cos2 = (normed @ normed.T).pow(2)
    ref_gram = (cos2.sum() - cos2.diagonal().sum()).item()
    assignment = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 1])
    same = assignment[:, None] == assignment[None, :]
    ref_grouped = (cos2 * same).sum().item() - cos2.diagonal().sum().item()
    for fn, ref in (
        (lambda w: decoder_gram_penalty(w, "sum"), ref_gram),
        (lambda w: grouped_decoder_penalty(w, assignment, 2, "sum"), ref_grouped),
        (lambda w: chunk_max_cos_penalty_for_perm(w, torch.arange(10), 2), None),
    ):
        w = W.clone().requires_grad_(True)
        value = fn(w)
        value.backward()
        assert w.grad is not None and torch.isfinite(w.grad).all()
        if ref is not None:
            assert value.item() == pytest.approx(ref, rel=1e-5)


def test_column_inv_norms_is_exact_and_finite() -> None:
    x = torch.tensor([[1e-20, 3e-40, 0.0, 1e6], [2e-20, 4e-40, 0.0, 1e6]])
    inv = column_inv_norms(x)
    assert torch.isfinite(inv).all() and inv[2] == 0
    assert inv[0].item() == pytest.approx(1 / math.hypot(1e-20, 2e-20), rel=1e-6)
    assert inv[1] == torch.finfo(torch.float32).max  # 1/5e-40 = 2e39 does not fit float32: capped, not inf
    assert inv[3].item() == pytest.approx(1 / (math.sqrt(2) * 1e6), rel=1e-6)


def _one_real_step(sae: torch.nn.Module, x: torch.Tensor) -> tuple[SAETrainer, float]:
    """One SAELens SAETrainer step (forward, backward, gradient clipping, Adam); returns the pre-clip norm."""
    cfg = SAETrainerConfig(total_training_samples=10**6, train_batch_size_samples=x.shape[0], lr=1e-3, lr_end=1e-3)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))  # type: ignore[arg-type]
    clip = torch.nn.utils.clip_grad_norm_
    norms: list[float] = []

    def recording_clip(params, max_norm, *args, **kwargs):  # observe the real clipping, unchanged
        params = list(params)
        norm = clip(params, max_norm, *args, **kwargs)
        norms.append(float(norm))
        return norm

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        trainer.step(x)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    return trainer, norms[0]


@pytest.mark.parametrize("bias", [1e-14, 1e-20, 1e-30, 1e-40], ids=lambda s: f"{s:.0e}")
def test_standard_ortho_with_a_tiny_feature_stays_finite_and_trains(bias: float) -> None:
    """The issue's end-to-end repro: W_enc[:, 0] = 0, b_enc[0] = 1e-14 put NaN in every weight after one step
    (plain standard stayed finite). Now every weight is finite and the clipped step is not lost."""
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
    for cls, cfg_cls, extra in (
        (StandardTrainingSAE, StandardTrainingSAEConfig, {}),
        (StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig, {"ortho_pair_fraction": 0.5}),
    ):
        torch.manual_seed(0)
        sae = cls(cfg_cls(d_in=16, d_sae=32, **extra))  # type: ignore[operator]
        with torch.no_grad():
            sae.W_enc[:, 0] = 0.0
            sae.b_enc[0] = bias
        before = sae.W_enc.detach().clone()
        _, grad_norm = _one_real_step(sae, x)
        for name, p in sae.named_parameters():
            assert torch.isfinite(p).all(), f"{cls.__name__}.{name} is not finite after one step"
        assert math.isfinite(grad_norm), grad_norm  # clipping saw a finite norm: the step was not scaled to 0
        assert not torch.equal(sae.W_enc.detach()[:, 1:], before[:, 1:])  # the other features trained


def test_the_penalty_gradient_of_a_tiny_feature_is_exact_where_representable_in_the_sae() -> None:
    # The activation penalty (the seeds' form): its gradient reaches the encoder through the activations.
    cfg = StandardOrthoTrainingSAEConfig(d_in=8, d_sae=12, ortho_pair_fraction=1.0, **SEED_DEFAULTS)
    sae = StandardOrthoTrainingSAE(cfg)
    with torch.no_grad():
        sae.W_enc[:, 0] = 0.0
        sae.b_enc[0] = 1e-14
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(5))
    out = sae.training_forward_pass(TrainStepInput(x, {"ortho": 1.0, "decoder_ortho": 0.0, "l1": 0.0}, None, 0, False))
    out.losses["ortho_loss"].backward()
    assert sae.W_enc.grad is not None and torch.isfinite(sae.W_enc.grad).all()
    # Feature 0's column is the constant 1e-14: the gradient w.r.t. it is ~1/|f_0| = 1e14/sqrt(32) per entry,
    # kept (not capped), and reaches W_enc[:, 0] through the inputs.
    assert sae.W_enc.grad[:, 0].abs().max() > 1e10


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-20])
def test_decoder_max_cosine_is_exact_for_float64_rows_at_any_scale(scale: float) -> None:
    """Issue 23, item 8: the rows were cast to float32 before normalising (1e300 -> inf -> NaN, 1e-300 -> 0)."""
    from sae_lens_ortho.core.diagnostics import decoder_max_cosine

    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 4, generator=g, dtype=torch.float64)
    expected = decoder_max_cosine(W)
    W[2] *= scale
    got = decoder_max_cosine(W)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, expected, atol=1e-6)


def test_unit_norm_decoder_makes_tiny_rows_unit() -> None:
    """Issue 23, item 8: ``ortho_unit_norm_decoder`` divided by ``norm.clamp_min(1e-8)``, leaving a row of norm
    1e-12 at 1e-4; all-zero rows stay zero."""
    from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig

    sae = TopKOrthoTrainingSAE(
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_coefficient=0.0, ortho_unit_norm_decoder=True)
    )
    with torch.no_grad():
        sae.W_dec[3] *= 1e-12 / sae.W_dec[3].norm()
        sae.W_dec[5] = 0.0
    sae.training_forward_pass(TrainStepInput(torch.randn(4, 8), {"ortho": 0.0, "decoder_ortho": 0.0}, None, 0, False))
    norms = sae.W_dec.detach().norm(dim=-1)
    assert norms[5] == 0
    assert torch.allclose(norms[torch.arange(16) != 5], torch.ones(15), atol=1e-6)
