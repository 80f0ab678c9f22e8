"""Adaptive dictionary management (seed 004, section 4.3), as pure tensor functions.

Seed 004 tracks importance  I_i <- beta I_i + (1 - beta) ||f_i||  (beta = 0.99), re-initialises features with
I_i < theta_act for T_realloc steps, and prunes features correlated above theta_corr = 0.8 for T_prune steps
unless their importance exceeds the 90th percentile.

Readings chosen where the paper is ambiguous:

* ||f_i|| is the root-mean-square of feature i's activation column over the batch, ||f_i||_2 / sqrt(b): the
  seed's L2 norm up to the constant sqrt(b), so theta_act keeps one meaning across batch sizes.
* Correlation is tracked per feature, not per pair: each step, a feature's max |C_ij| over the selected
  most-correlated pairs it belongs to (``penalties.SelectedPairs``; features in no selected pair count 0), and a
  counter of consecutive steps with that max above theta_corr.
* Pruning: a feature is a candidate when its counter reached T_prune and its importance does not exceed the 90th
  percentile (``torch.quantile``, linear). Of a highly correlated pair only the less important member may go: a
  candidate is pruned when it is less important than every partner it has above theta_corr in the current step's
  pairs (importance ties: the larger index is the less important). Pruned features therefore never share a pair
  and each keeps a more important partner; in a chain a < b < c only a goes this time, b may go at a later check.
  In a fixed-size dictionary "pruning" frees the slot; the caller re-initialises it like a reallocated feature.
  ``prune`` excludes features already in ``reinit``, so the two counts do not overlap.

Per-step updates have static shapes and no host synchronisation; the decisions and the re-initialisation are
meant for a periodic check (the seed: every 100 steps) but are sync-free as well.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DictionaryState",
    "ManagementDecisions",
    "feature_rms",
    "feature_rms_dense",
    "init_dictionary_state",
    "management_decisions",
    "max_pair_correlation",
    "protected_by_importance",
    "prune_less_important_member",
    "reinit_features",
    "reset_adam_state",
    "reset_feature_state",
    "update_dictionary_state",
]


class DictionaryState(NamedTuple):
    """Per-feature state (fixed size; keep it in buffers saved with checkpoints)."""

    importance: Tensor
    """[n] float32 EMA of the feature's batch RMS activation."""
    steps_below: Tensor
    """[n] int64 consecutive steps with importance < theta_act."""
    steps_correlated: Tensor
    """[n] int64 consecutive steps with max pair correlation > theta_corr."""


class ManagementDecisions(NamedTuple):
    reinit: Tensor
    """[n] bool: steps_below >= T_realloc."""
    prune: Tensor
    """[n] bool: see the module docstring; disjoint from ``reinit``."""
    n_reinit: Tensor
    """int64 scalar, for logging."""
    n_pruned: Tensor
    """int64 scalar, for logging."""


def init_dictionary_state(
    n: int, device: torch.device | str | None = None, initial_importance: float = 0.0
) -> DictionaryState:
    """Fresh state. With importance starting at 0 every feature is "below" for its first steps: keep T_realloc
    well above the EMA's time constant 1 / (1 - beta), or pass ``initial_importance`` >= theta_act."""
    zeros = torch.zeros(n, dtype=torch.int64, device=device)
    return DictionaryState(torch.full((n,), float(initial_importance), device=device), zeros, zeros.clone())


def feature_rms(vals: Tensor, idx: Tensor, n: int) -> Tensor:
    """[n] float32 RMS over the batch of each feature's activation, from sparse rows ``vals`` / ``idx`` [b, w]
    (distinct ids per row, absent entries are 0)."""
    v = vals.detach().float()
    sq = torch.zeros(n, device=v.device).index_add_(0, idx.reshape(-1).long(), v.pow(2).reshape(-1))
    return (sq / max(v.shape[0], 1)).sqrt()


def feature_rms_dense(acts: Tensor) -> Tensor:
    """[n] float32 RMS over the batch of each column of ``acts`` [b, n]."""
    return acts.detach().float().pow(2).mean(0).sqrt()


def _pair_members(keys: Tensor, valid: Tensor, n: int) -> tuple[Tensor, Tensor]:
    # Padding keys may be -1: send them to feature 0 (callers give them zero weight) rather than wrap around.
    keys = torch.where(valid, keys, torch.zeros_like(keys))
    return keys // n, keys % n


def max_pair_correlation(keys: Tensor, corr: Tensor, valid: Tensor, n: int) -> Tensor:
    """[n] float32: per feature, the max |C_ij| over the valid pairs (keys i*n + j) containing it; 0 if none."""
    i, j = _pair_members(keys, valid, n)
    c = torch.where(valid, corr.detach().float().abs(), torch.zeros_like(corr, dtype=torch.float32))
    out = torch.zeros(n, device=c.device)
    return out.scatter_reduce(0, torch.cat([i, j]), torch.cat([c, c]), reduce="amax")


def update_dictionary_state(
    state: DictionaryState,
    batch_rms: Tensor,
    max_corr: Tensor,
    *,
    beta: float = 0.99,
    theta_act: float = 0.01,
    theta_corr: float = 0.8,
) -> DictionaryState:
    """One step: importance EMA from ``batch_rms`` [n], then both consecutive-step counters (reset to 0 when the
    condition fails)."""
    importance = beta * state.importance + (1 - beta) * batch_rms.to(state.importance.dtype)
    below = importance < theta_act
    correlated = max_corr > theta_corr
    steps_below = torch.where(below, state.steps_below + 1, torch.zeros_like(state.steps_below))
    steps_corr = torch.where(correlated, state.steps_correlated + 1, torch.zeros_like(state.steps_correlated))
    return DictionaryState(importance, steps_below, steps_corr)


def protected_by_importance(importance: Tensor, quantile: float = 0.9) -> Tensor:
    """[n] bool: importance strictly above its ``quantile`` (the seed protects features above the 90th percentile)."""
    return importance > torch.quantile(importance.float(), quantile)


def prune_less_important_member(
    keys: Tensor, corr: Tensor, valid: Tensor, importance: Tensor, candidates: Tensor, theta_corr: float = 0.8
) -> Tensor:
    """[n] bool: candidates less important than all their partners with |C_ij| > theta_corr (at least one)."""
    n = importance.shape[0]
    i, j = _pair_members(keys, valid, n)
    high = (valid & (corr.detach().abs() > theta_corr)).to(torch.int32)
    imp_i, imp_j = importance[i], importance[j]
    i_is_less = (imp_i < imp_j) | ((imp_i == imp_j) & (i > j))
    more = torch.where(i_is_less, j, i)
    # Boolean "appears as the more important member of some high pair": a scatter-add of 0/1, no host sync.
    counts = torch.zeros(2, n, dtype=torch.int32, device=importance.device)
    beats_someone = counts[0].index_put_((more,), high, accumulate=True)
    partnered = counts[1].index_put_((torch.cat([i, j]),), torch.cat([high, high]), accumulate=True)
    return candidates & (partnered > 0) & (beats_someone == 0)


def management_decisions(
    state: DictionaryState,
    keys: Tensor,
    corr: Tensor,
    valid: Tensor,
    *,
    t_realloc: int,
    t_prune: int,
    theta_corr: float = 0.8,
    protect_quantile: float = 0.9,
) -> ManagementDecisions:
    """Reallocation and pruning masks from the state and the current step's selected pairs (keys, corr, valid)."""
    reinit = state.steps_below >= t_realloc
    candidates = (state.steps_correlated >= t_prune) & ~protected_by_importance(state.importance, protect_quantile)
    prune = prune_less_important_member(keys, corr, valid, state.importance, candidates, theta_corr) & ~reinit
    return ManagementDecisions(reinit, prune, reinit.sum(), prune.sum())


def reset_feature_state(state: DictionaryState, mask: Tensor, importance_value: float = 0.0) -> DictionaryState:
    """Counters of the ``mask`` [n] features back to 0 and their importance to ``importance_value``: a
    re-initialised feature gets a fresh T_realloc / T_prune grace period."""
    zero = torch.zeros_like(state.steps_below)
    return DictionaryState(
        torch.where(mask, torch.full_like(state.importance, importance_value), state.importance),
        torch.where(mask, zero, state.steps_below),
        torch.where(mask, zero, state.steps_correlated),
    )


def _mean_norm(norms: Tensor, live: Tensor) -> Tensor:
    # Mean over live features; if every feature is masked, fall back to the mean over all.
    live_mean = (norms * live).sum() / live.sum().clamp_min(1)
    return torch.where(live.any(), live_mean, norms.mean())


@torch.no_grad()
def reinit_features(
    W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, mask: Tensor, generator: torch.Generator | None = None
) -> None:
    """Re-initialise the ``mask`` [n] features in place (SAELens shapes: W_enc [d, n], b_enc [n], W_dec [n, d]).

    Each gets a random direction u: decoder row u * (mean norm of the live decoder rows), encoder column
    u * (mean norm of the live encoder columns), bias 0. All other entries stay bit-identical.
    """
    n, d = W_dec.shape
    live = ~mask
    u = torch.randn(n, d, generator=generator, device=W_dec.device, dtype=torch.float32)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dec_norm = _mean_norm(W_dec.float().norm(dim=1), live)
    enc_norm = _mean_norm(W_enc.float().norm(dim=0), live)
    W_dec.copy_(torch.where(mask[:, None], (u * dec_norm).to(W_dec.dtype), W_dec))
    W_enc.copy_(torch.where(mask[None, :], (u.T * enc_norm).to(W_enc.dtype), W_enc))
    b_enc.copy_(torch.where(mask, torch.zeros_like(b_enc), b_enc))


@torch.no_grad()
def reset_adam_state(param_state: dict, mask: Tensor, dim: int) -> dict:
    """Zero, in place, the Adam moments (exp_avg, exp_avg_sq, max_exp_avg_sq) of the ``mask`` features, which
    index dimension ``dim`` of the parameter (W_enc: 1, b_enc: 0, W_dec: 0). ``step`` is left alone. Returns
    the same dict."""
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        moment = param_state.get(name)
        if moment is None:
            continue
        shape = [1] * moment.ndim
        shape[dim] = -1
        moment.masked_fill_(mask.view(shape), 0)
    return param_state
