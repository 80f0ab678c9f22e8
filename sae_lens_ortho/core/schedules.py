"""Adaptive strengths and schedules of the seed papers (pure tensor functions, no SAELens import).

Every function here is meant to run once per training step with its state kept by the caller (e.g. in a
module buffer): the state comes in as an argument and the new state is returned. Nothing reads a value back
to the host (no ``.item()``), so a CUDA step never waits on them. Inputs may be Python floats or 0-dim
tensors; outputs are detached float32 0-dim tensors on the device of the tensor inputs (``anneal`` with an
``int`` step returns a float, for schedules computed on the host).

Robustness contract: a non-finite or otherwise unusable measurement (NaN/inf loss, non-positive loss or
target) leaves the strength where it was, and every clipped strength is finite and inside ``[lo, hi]``,
even when the incoming state is NaN (reset to ``lo``) or +inf (``hi``), so one bad batch cannot poison the
buffer for the rest of training.

* seed 001 ``recon_adaptive``:       tau <- clip(tau * L_target / L_recon, 0.01, 0.2)
* seed 002 ``mean_plus_std_threshold``: hinge threshold tau_t = mu_t + sigma_t of all off-diagonal C_ij
* seed 003 ``anneal``:               alpha linearly from its start (1.0) to its target over the warm-up steps
* seed 004 ``momentum_adaptive``:    tau <- clip(a tau + (1 - a) tau cbar / c_target, 0.01, 0.5)
* seed 004 ``adaptive_l1``:          lambda_1 moved multiplicatively toward the target activation rate
* bias adaptation (arXiv 2506.14002) ``rate_band_direction``: which latents' encoder biases to raise or lower
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_lens_ortho.core.pairs import PairStats

__all__ = [
    "activation_rate",
    "active_magnitude_ema",
    "adaptive_l1",
    "anneal",
    "mean_plus_std_threshold",
    "momentum_adaptive",
    "rate_band_direction",
    "recon_adaptive",
]

Scalar = Tensor | float


def _device(*xs: object) -> torch.device | None:
    for x in xs:
        if isinstance(x, Tensor):
            return x.device
    return None


def _f32(x: Scalar, device: torch.device | None) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32, device=device).detach()


def _clip_finite(x: Tensor, lo: float, hi: float) -> Tensor:
    # clamp() keeps NaN, so map it (and the infinities) into the interval first.
    return torch.nan_to_num(x, nan=lo, posinf=hi, neginf=lo).clamp(lo, hi)


def recon_adaptive(tau: Scalar, recon_loss: Scalar, target: Scalar, lo: float = 0.01, hi: float = 0.2) -> Tensor:
    """Seed 001, eq. 3: ``clip(tau * target / recon_loss, lo, hi)``.

    Reconstruction better than the target (recon_loss < target) strengthens the orthogonality term, worse
    weakens it. A recon_loss that is <= 0 or non-finite (or a non-positive target) keeps ``tau`` (clipped).
    """
    dev = _device(tau, recon_loss, target)
    tau, loss, target = _f32(tau, dev), _f32(recon_loss, dev), _f32(target, dev)
    ok = torch.isfinite(loss) & (loss > 0) & torch.isfinite(target) & (target > 0)
    proposed = tau * target / torch.where(ok, loss, torch.ones_like(loss))
    return _clip_finite(torch.where(ok, proposed, tau), lo, hi)


def mean_plus_std_threshold(stats: PairStats, z: float = 1.0) -> Tensor:
    """Seed 002, eq. 4 (z = 1): ``mu + z * sigma`` of C_ij over all off-diagonal pairs, exactly (float64).

    ``stats`` holds exact sums over the n(n-1)/2 pairs i < j; C is symmetric, so mean and (population)
    standard deviation over i < j equal those over all i != j, the paper's "off-diagonal correlations".
    Seed 004's filter ``c_ij > mu + 2 sigma`` is z = 2 (for non-negative activations C = |C|).
    """
    return (stats.mean + z * stats.std).detach()


def momentum_adaptive(
    tau: Scalar,
    mean_corr: Scalar,
    target: float = 0.1,
    alpha: float = 0.9,
    lo: float = 0.01,
    hi: float = 0.5,
) -> Tensor:
    """Seed 004, eq. 3: ``clip(alpha tau + (1 - alpha) tau (mean_corr / target), lo, hi)``.

    Computed as ``tau + (1 - alpha) tau (mean_corr / target - 1)`` (algebraically identical) so that
    mean_corr == target is an exact fixed point. Correlations above the target strengthen the constraint,
    below relax it. A non-finite mean_corr (or a non-positive target) keeps ``tau`` (clipped).
    """
    dev = _device(tau, mean_corr)
    tau, corr = _f32(tau, dev), _f32(mean_corr, dev)
    ok = torch.isfinite(corr) & (target > 0)
    ratio = torch.where(ok, corr, torch.zeros_like(corr)) / (target if target > 0 else 1.0)
    proposed = tau + (1.0 - alpha) * tau * (ratio - 1.0)
    return _clip_finite(torch.where(ok, proposed, tau), lo, hi)


def anneal(start: float, target: float, step: int | Tensor, warm_up_steps: int) -> float | Tensor:
    """Seed 003: linear from ``start`` (step 0) to ``target`` (step >= warm_up_steps), then constant.

    Steps before 0 give ``start``; ``warm_up_steps <= 0`` gives ``target`` at once. Both endpoints are exact.
    An ``int`` step returns a float, a tensor step a float32 tensor of its shape (no host sync).
    """
    if isinstance(step, Tensor):
        if warm_up_steps <= 0:
            return torch.full_like(step, target, dtype=torch.float32)
        frac = (step.float() / warm_up_steps).clamp(0.0, 1.0)
    else:
        frac = 1.0 if warm_up_steps <= 0 else min(max(step / warm_up_steps, 0.0), 1.0)
    # start*(1-f) + target*f rather than start + (target-start)*f: exact at f = 0 and f = 1.
    return start * (1.0 - frac) + target * frac


def adaptive_l1(
    lam: Scalar,
    activation_rate: Scalar,
    target_rate: float,
    step_size: float,
    lo: float = 0.01,
    hi: float = 0.2,
) -> Tensor:
    """Seed 004's adaptive sparsity coefficient: ``clip(lam * (rate / target_rate) ** step_size, lo, hi)``.

    The paper only says lambda_1 in [0.01, 0.2] "adapts to maintain target sparsity" (10% activation). We read
    it as a multiplicative controller, i.e. a step of size ``step_size`` in log(lambda) along
    log(rate / target): too many active features raise lambda_1, too few lower it, rate == target is a
    fixed point. A rate of exactly 0 (all features silent) sends lambda_1 to ``lo``. A non-finite or negative
    rate keeps ``lam`` (clipped). ``activation_rate`` is the fraction of non-zero entries of the batch's
    feature activations (see :func:`activation_rate`); for TopK SAEs it is fixed at k / n and this is moot.
    """
    dev = _device(lam, activation_rate)
    lam, rate = _f32(lam, dev), _f32(activation_rate, dev)
    ok = torch.isfinite(rate) & (rate >= 0) & (target_rate > 0)
    ratio = torch.where(ok, rate, torch.ones_like(rate)) / (target_rate if target_rate > 0 else 1.0)
    proposed = lam * ratio.pow(step_size)
    return _clip_finite(torch.where(ok, proposed, lam), lo, hi)


def activation_rate(acts: Tensor) -> Tensor:
    """Fraction of non-zero entries of the feature activations ``acts`` [b, n] (float32 0-dim, no sync)."""
    if acts.numel() == 0:
        return torch.zeros((), device=acts.device)
    return (acts.detach() != 0).float().mean()


def firing_rate_ema(rates: Tensor, acts: Tensor, decay: float) -> Tensor:
    """One EMA step of each latent's firing rate: decay * rates + (1 - decay) * (fraction of the batch's rows of
    ``acts`` [b, n] in which it is non-zero). An empty batch, or one with a non-finite activation, measures nothing and
    leaves ``rates`` as they were."""
    if acts.shape[0] == 0:
        return rates
    new = decay * rates + (1 - decay) * (acts.detach() != 0).float().mean(0)
    return torch.where(torch.isfinite(acts.detach()).all(), new, rates)


def rate_band_direction(rates: Tensor, target: float, band: float) -> Tensor:
    """Which way to move each latent's encoder bias to bring its firing rate into [target / band, target * band]:
    +1 (raise it) below the band, -1 (lower it) above, 0 inside (band >= 1)."""
    return (rates < target / band).to(rates.dtype) - (rates > target * band).to(rates.dtype)


def active_magnitude_ema(scale: Tensor, acts: Tensor, decay: float) -> Tensor:
    """One EMA step of the typical activation of a firing latent, the mean |a| over the non-zero entries of
    ``acts`` [b, n]. A ``scale`` of 0 (nothing measured yet) takes the batch's value as it is; a batch in which
    nothing fires, or with a non-finite activation, measures nothing and leaves ``scale`` as it was."""
    acts = acts.detach()
    active = acts != 0
    measured = acts.abs().sum() / active.sum().clamp_min(1)
    new = torch.where(scale == 0, measured, decay * scale + (1 - decay) * measured)
    usable = active.any() & torch.isfinite(acts).all()
    return torch.where(usable, new, scale)
