"""Firing-rate control by bias adaptation (``ortho_bias_adapt_rate``, saes/mechanisms/bias_adaptation.py): the
core functions against loops, the exact bias move on a real ``topk_ortho`` SAE, and that it revives a dead latent
which the same training without it leaves dead."""

from __future__ import annotations

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

from sae_lens_ortho import (
    StandardOrthoTrainingSAEConfig,
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
)
from sae_lens_ortho.core.schedules import active_magnitude_ema, firing_rate_ema, rate_band_direction
from sae_lens_ortho.describe import describe_ortho

X = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))
N = 48


def _sae(**kw) -> TopKOrthoTrainingSAE:
    torch.manual_seed(0)
    return TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(**{**dict(d_in=16, d_sae=N, k=4), **kw}))


def _buf(sae, name: str) -> torch.Tensor:
    buffer = getattr(sae, name)
    assert isinstance(buffer, torch.Tensor)
    return buffer


def _step(sae, x=X, n=0):
    return sae.training_forward_pass(TrainStepInput(x, {"ortho": 0.0, "decoder_ortho": 0.0}, None, n, False))


def test_rate_band_direction_matches_a_loop():
    rates = torch.tensor([0.0, 0.01, 0.02, 0.05, 0.08, 0.25, 0.33, 1.0])  # none on an edge
    target, band = 0.05, 4.0
    want = [1.0 if r < target / band else -1.0 if r > target * band else 0.0 for r in rates.tolist()]
    assert rate_band_direction(rates, target, band).tolist() == want
    assert rate_band_direction(rates, target, 1.0).tolist() == [1, 1, 1, 0, -1, -1, -1, -1]


def test_active_magnitude_ema_takes_the_first_batch_then_averages_and_ignores_empty_or_bad_batches():
    acts = torch.tensor([[0.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    first = active_magnitude_ema(torch.tensor(0.0), acts, 0.9)
    assert first.item() == pytest.approx(3.0)  # mean |a| over the 2 non-zero entries
    second = active_magnitude_ema(first, torch.tensor([[0.0, 0.0, 1.0]]), 0.9)
    assert second.item() == pytest.approx(0.9 * 3.0 + 0.1 * 1.0)
    assert active_magnitude_ema(second, torch.zeros(4, 3), 0.9) == second  # nothing fired: nothing measured
    assert active_magnitude_ema(second, torch.tensor([[float("nan"), 1.0, 0.0]]), 0.9) == second


def test_the_biases_move_by_the_rate_times_the_typical_activation_toward_the_band():
    sae = _sae(ortho_bias_adapt_rate=0.1, ortho_bias_band=2.0, ortho_bias_decay=0.9)
    target = 4 / N
    rates, scale = _buf(sae, "ortho_bias_firing_rate"), _buf(sae, "ortho_bias_act_scale")
    assert torch.all(rates == target) and scale.item() == 0  # starts at the target: no move at step 0
    with torch.no_grad():
        rates[0], rates[1], rates[2] = 0.0, 3 * target, 1.5 * target  # below, above, inside the band
        scale.fill_(2.0)
        sae.b_enc.copy_(torch.linspace(-0.1, 0.1, N))
    b0 = sae.b_enc.detach().clone()
    out = _step(sae)
    moved = sae.b_enc.detach() - b0
    want = torch.zeros(N)
    want[0], want[1] = 0.2, -0.2  # 0.1 x 2.0: up for the rare latent, down for the frequent; the rest stay
    assert torch.allclose(moved, want, atol=1e-7)
    acts = out.feature_acts.detach()
    expect_rates = firing_rate_ema(torch.tensor([0.0, 3 * target, 1.5 * target, *[target] * (N - 3)]), acts, 0.9)
    assert torch.allclose(rates, expect_rates)
    assert scale.item() == pytest.approx(active_magnitude_ema(torch.tensor(2.0), acts, 0.9).item())


def _train(sae, steps: int) -> torch.Tensor:
    """Adam on fresh batches; returns the last 20 steps' firing counts per latent."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    fired = torch.zeros(N)
    for n in range(steps):
        out = _step(sae, torch.randn(96, 16, generator=g), n)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if n >= steps - 20:
            fired += (out.feature_acts.detach() != 0).sum(0)
    return fired


def test_it_revives_a_dead_latent_that_plain_training_leaves_dead():
    def killed(**kw) -> TopKOrthoTrainingSAE:
        sae = _sae(**kw)
        with torch.no_grad():
            sae.b_enc[5] = -10.0  # never in the top k: no gradient reaches it
        return sae

    assert _train(killed(), 200)[5] == 0
    adapted = killed(ortho_bias_adapt_rate=0.2, ortho_bias_decay=0.5)
    assert _train(adapted, 200)[5] > 0


def test_bad_values_name_the_field_and_it_needs_the_topk_family():
    for field, value in [("ortho_bias_adapt_rate", -0.1), ("ortho_bias_band", 0.5), ("ortho_bias_decay", 1.0),
                         ("ortho_bias_target_rate", 2.0)]:  # fmt: skip
        with pytest.raises(ValueError, match=field):
            _sae(**{field: value})
    with pytest.raises(ValueError, match="TopK-family"):
        StandardOrthoTrainingSAEConfig(d_in=16, d_sae=N, ortho_bias_adapt_rate=0.1)
    lines = describe_ortho({"ortho_bias_adapt_rate": 0.01, "ortho_bias_band": 4.0})
    assert any("bias adaptation" in line and "k / d_sae" in line for line in lines)
