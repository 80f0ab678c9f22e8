"""Adaptive strengths and schedules (sae_lens_ortho.core.schedules): known answers, clipping, NaN safety."""

import math

import pytest
import torch
from reference import correlation_matrix

from sae_lens_ortho.core.pairs import PairStats
from sae_lens_ortho.core.penalties import select_pairs_for_penalty
from sae_lens_ortho.core.schedules import (
    activation_rate,
    adaptive_l1,
    anneal,
    mean_plus_std_threshold,
    momentum_adaptive,
    recon_adaptive,
)

BAD = [float("nan"), float("inf"), float("-inf")]


def val(x) -> float:
    return float(x)


def inside(x, lo: float, hi: float) -> bool:
    """Finite and within [lo, hi] up to float32 rounding of the bounds."""
    return bool(torch.isfinite(torch.as_tensor(x))) and lo - 1e-7 <= val(x) <= hi + 1e-7


# ---- seed 001: reconstruction-adaptive tau ------------------------------------------------------------------


def test_recon_adaptive_known_answers():
    assert val(recon_adaptive(0.05, torch.tensor(0.5), 1.0)) == pytest.approx(0.1)  # better than target: up
    assert val(recon_adaptive(0.05, torch.tensor(2.0), 1.0)) == pytest.approx(0.025)  # worse: down
    assert val(recon_adaptive(0.05, torch.tensor(1.0), 1.0)) == pytest.approx(0.05)  # on target: unchanged


def test_recon_adaptive_direction_over_many_steps():
    tau = torch.tensor(0.05)
    for _ in range(3):
        tau = recon_adaptive(tau, 0.9, 1.0)
    assert 0.05 < val(tau) < 0.2
    for _ in range(3):
        tau = recon_adaptive(tau, 1.1, 1.0)
    assert val(tau) == pytest.approx(0.05 / 0.9**3 / 1.1**3, rel=1e-5)


def test_recon_adaptive_clips_at_both_ends():
    assert val(recon_adaptive(0.05, 1e-6, 1.0)) == pytest.approx(0.2)
    assert val(recon_adaptive(0.05, 1e6, 1.0)) == pytest.approx(0.01)
    assert val(recon_adaptive(0.05, 1e-6, 1.0, lo=0.0, hi=0.3)) == pytest.approx(0.3)


@pytest.mark.parametrize("loss", [*BAD, 0.0, -1.0])
def test_recon_adaptive_keeps_tau_on_unusable_loss(loss):
    out = recon_adaptive(torch.tensor(0.07), torch.tensor(loss), 1.0)
    assert val(out) == pytest.approx(0.07)


@pytest.mark.parametrize("tau", BAD)
def test_recon_adaptive_never_returns_nan_even_from_bad_state(tau):
    for loss in [0.5, float("nan"), 0.0]:
        out = recon_adaptive(torch.tensor(tau), loss, 1.0)
        assert inside(out, 0.01, 0.2)


def test_recon_adaptive_returns_detached_float32_tensor_on_input_device():
    loss = torch.tensor(0.5, requires_grad=True) * 1.0
    out = recon_adaptive(0.05, loss, 1.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and not out.requires_grad
    assert out.device == loss.device


# ---- seed 002: mu + sigma hinge threshold -------------------------------------------------------------------


def test_mean_plus_std_threshold_known_answer():
    # Three pairs with C = 0, 0.3, 0.6: mean 0.3, population std sqrt(0.06).
    f64 = torch.float64
    stats = PairStats(3, torch.tensor(0.9, dtype=f64), torch.tensor(0.45, dtype=f64), torch.tensor(2))
    assert val(mean_plus_std_threshold(stats)) == pytest.approx(0.3 + math.sqrt(0.06))
    assert val(mean_plus_std_threshold(stats, z=2.0)) == pytest.approx(0.3 + 2 * math.sqrt(0.06))


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_mean_plus_std_threshold_equals_brute_force_over_off_diagonal(method):
    g = torch.Generator().manual_seed(4)
    pre = torch.randn(50, 24, generator=g)
    vals, idx = pre.topk(4, dim=1)
    acts = torch.zeros(50, 24).scatter(1, idx, vals.relu())
    c = correlation_matrix(acts)
    off = c[~torch.eye(24, dtype=torch.bool)]  # all i != j, as the paper states it
    stats = select_pairs_for_penalty(acts, 0.01, width=4, method=method).stats
    expected = off.mean() + off.std(unbiased=False)
    assert val(mean_plus_std_threshold(stats)) == pytest.approx(val(expected), rel=1e-5)


# ---- seed 004: momentum-adaptive tau ------------------------------------------------------------------------


def test_momentum_fixed_point_at_target():
    for tau in [0.01, 0.123, 0.5]:
        assert val(momentum_adaptive(torch.tensor(tau), torch.tensor(0.1))) == pytest.approx(tau, rel=1e-7)


def test_momentum_known_answer_and_direction():
    # 0.9 * 0.2 + 0.1 * 0.2 * (0.3 / 0.1) = 0.18 + 0.06 = 0.24
    assert val(momentum_adaptive(0.2, 0.3)) == pytest.approx(0.24)
    assert val(momentum_adaptive(0.2, 0.05)) == pytest.approx(0.9 * 0.2 + 0.1 * 0.2 * 0.5)
    assert val(momentum_adaptive(0.2, 0.05)) < 0.2 < val(momentum_adaptive(0.2, 0.15))


def test_momentum_clips_at_both_ends():
    assert val(momentum_adaptive(0.45, 10.0)) == pytest.approx(0.5)
    assert val(momentum_adaptive(0.011, 0.0)) == pytest.approx(0.01)
    assert val(momentum_adaptive(0.2, -50.0)) == pytest.approx(0.01)  # negative mean correlation: floor


@pytest.mark.parametrize("bad", BAD)
def test_momentum_never_nan(bad):
    assert val(momentum_adaptive(0.2, torch.tensor(bad))) == pytest.approx(0.2)  # bad measurement: keep
    out = momentum_adaptive(torch.tensor(bad), 0.2)  # bad state: back into [lo, hi]
    assert inside(out, 0.01, 0.5)


def test_momentum_converges_geometrically_with_constant_ratio():
    tau = torch.tensor(0.02)
    for _ in range(10):
        tau = momentum_adaptive(tau, 0.2)  # ratio 2: factor 1.1 per step
    assert val(tau) == pytest.approx(0.02 * 1.1**10, rel=1e-5)


# ---- seed 003: annealing -------------------------------------------------------------------------------------


def test_anneal_endpoints_and_midpoint_int():
    assert anneal(1.0, 0.5, 0, 1000) == 1.0
    assert anneal(1.0, 0.5, 500, 1000) == pytest.approx(0.75)
    assert anneal(1.0, 0.5, 1000, 1000) == 0.5
    assert anneal(1.0, 0.5, 10**6, 1000) == 0.5
    assert anneal(1.0, 0.5, -5, 1000) == 1.0
    assert anneal(1.0, 0.3, 7, 0) == 0.3  # no warm-up
    assert anneal(0.1, 0.7, 1000, 1000) == 0.7  # exact endpoint for values with inexact differences


def test_anneal_tensor_step_matches_int_step():
    steps = torch.tensor([-3, 0, 1, 250, 999, 1000, 5000])
    out = anneal(1.0, 0.0625, steps, 1000)
    assert isinstance(out, torch.Tensor) and out.shape == steps.shape
    expected = torch.tensor([anneal(1.0, 0.0625, int(s), 1000) for s in steps], dtype=torch.float32)
    assert torch.allclose(out, expected)
    assert out[1].item() == 1.0 and out[-1].item() == 0.0625
    assert torch.equal(anneal(1.0, 0.5, torch.tensor(3), 0), torch.tensor(0.5))


# ---- seed 004: adaptive L1 -----------------------------------------------------------------------------------


def test_adaptive_l1_known_answers_and_fixed_point():
    assert val(adaptive_l1(0.04, 0.1, 0.1, 0.5)) == pytest.approx(0.04)
    assert val(adaptive_l1(0.04, 0.4, 0.1, 0.5)) == pytest.approx(0.08)  # 4x too dense: x sqrt(4)
    assert val(adaptive_l1(0.04, 0.025, 0.1, 0.5)) == pytest.approx(0.02)  # 4x too sparse: / 2


def test_adaptive_l1_clips_and_handles_silence():
    assert val(adaptive_l1(0.15, 1.0, 0.01, 1.0)) == pytest.approx(0.2)
    assert val(adaptive_l1(0.02, 0.0, 0.1, 0.1)) == pytest.approx(0.01)


@pytest.mark.parametrize("bad", [*BAD, -0.5])
def test_adaptive_l1_never_nan(bad):
    assert val(adaptive_l1(0.04, torch.tensor(bad), 0.1, 0.5)) == pytest.approx(0.04)
    out = adaptive_l1(torch.tensor(bad), 0.2, 0.1, 0.5)
    assert inside(out, 0.01, 0.2)


def test_adaptive_l1_drives_a_toy_rate_to_target():
    """Closed loop on a toy model rate = 0.004 / lam: lambda converges to 0.04 (rate 0.1)."""
    lam = torch.tensor(0.15)
    for _ in range(60):
        lam = adaptive_l1(lam, 0.004 / lam, 0.1, 0.3)
    assert val(lam) == pytest.approx(0.04, rel=1e-3)


def test_activation_rate():
    acts = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    assert val(activation_rate(acts)) == pytest.approx(3 / 8)
    assert val(activation_rate(torch.zeros(0, 4))) == 0.0
