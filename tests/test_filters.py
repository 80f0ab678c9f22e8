"""Additions to sae_lens_ortho.core.penalties: seed 004's z-score pair filter and the chunked max-cosine penalty.

Both against brute force: the filter against mu, sigma and the filtered set from the full n x n matrix
(tests/reference.py), the penalty against a dense n x n cosine matrix (value and autograd gradient).
"""

import math

import pytest
import torch
from probes import LargestTensor
from reference import correlation_matrix, ranked_pairs

from sae_lens_ortho.core.diagnostics import decoder_max_cosine
from sae_lens_ortho.core.pairs import n_pairs
from sae_lens_ortho.core.penalties import (
    apply_zscore_filter,
    chunk_max_cos_penalty,
    chunk_max_cos_penalty_for_perm,
    n_ranked_pairs,
    pair_penalty,
    select_pairs_for_penalty,
)


def topk_acts(b: int, n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(b, n, generator=g)
    vals, idx = pre.topk(k, dim=1)
    return torch.zeros(b, n).scatter(1, idx, vals.relu())


def dense_acts(b: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(b, n, generator=g).relu()
    acts[:, 1] += acts[:, 0]  # a few strongly correlated pairs stand out of the bulk
    acts[:, 3] += 2 * acts[:, 2]
    return acts


def brute_filtered(acts: torch.Tensor, k: int, z: float) -> tuple[set[tuple[int, int]], float, float, float]:
    """Top-k ranked pairs with C > mu + z sigma, mu/sigma over all i != j of the float64 n x n matrix."""
    c = correlation_matrix(acts)
    n = c.shape[0]
    off = c[~torch.eye(n, dtype=torch.bool)]
    mu, sigma = off.mean().item(), off.std(unbiased=False).item()
    thr = mu + z * sigma
    ranked = ranked_pairs(acts)[:k]
    return {(i, j) for cv, i, j in ranked if cv > thr}, mu, sigma, thr


# ---- seed 004: z-score filter --------------------------------------------------------------------------------


def test_n_ranked_pairs():
    assert n_ranked_pairs(2304, 0.001) == math.ceil(0.001 * n_pairs(2304))
    assert n_ranked_pairs(100, 0.0001, min_pairs=10) == 10  # ceil(0.495) = 1 < 10
    assert n_ranked_pairs(100, 0.01, min_pairs=10) == 50
    assert n_ranked_pairs(4, 0.5, min_pairs=10) == 6  # capped at N
    assert n_ranked_pairs(100, 0.01) == n_ranked_pairs(100, 0.01, min_pairs=0)


CASES = [
    ("sparse", lambda: topk_acts(64, 40, 5, seed=1), 0.3, 0, 2.0),
    ("sparse", lambda: topk_acts(64, 40, 5, seed=2), 0.0001, 10, 4.0),  # k from min_pairs
    ("sparse", lambda: topk_acts(30, 40, 3, seed=3), 0.2, 10, 1.0),
    ("dense", lambda: dense_acts(50, 30, seed=4), 0.05, 0, 2.0),
    ("dense", lambda: dense_acts(50, 30, seed=5), 0.0001, 10, 2.0),
    ("dense", lambda: dense_acts(50, 30, seed=6), 0.3, 0, 1.0),
]


@pytest.mark.parametrize("method,make,p,min_pairs,z", CASES)
def test_zscore_filtered_selection_equals_brute_force(method, make, p, min_pairs, z):
    acts = make()
    n = acts.shape[1]
    k = n_ranked_pairs(n, p, min_pairs)
    expected, mu, sigma, thr = brute_filtered(acts, k, z)
    width = int(acts.ne(0).sum(1).max())
    sel = select_pairs_for_penalty(acts, p, width=width, method=method, z=z, min_pairs=min_pairs)

    assert sel.stats.mean.item() == pytest.approx(mu, rel=1e-6)
    assert sel.stats.std.item() == pytest.approx(sigma, rel=1e-5)
    # Fixed size: every ranked pair has a slot (k, or fewer co-firing slots on the sparse path); filtered ones
    # are padding, and filtering never touches the keys or correlations.
    unfiltered = select_pairs_for_penalty(acts, p, width=width, method=method, min_pairs=min_pairs)
    assert sel.keys.shape == unfiltered.keys.shape and torch.equal(sel.keys, unfiltered.keys)
    assert sel.keys.numel() == k or method == "sparse"
    got = {(int(key) // n, int(key) % n) for key in sel.keys[sel.valid]}
    assert got == expected
    # The case is not trivial: the threshold removes some ranked positive pairs and keeps others.
    n_positive = int(unfiltered.valid.sum())
    assert 0 < len(expected) < n_positive, (len(expected), n_positive, thr)


def test_zscore_filter_is_a_prefix_and_matches_apply_function():
    acts = topk_acts(64, 40, 5, seed=7)
    base = select_pairs_for_penalty(acts, 0.05, width=5, method="sparse")
    for z in [0.0, 1.0, 2.0, 3.0]:
        sel = apply_zscore_filter(base, z)
        direct = select_pairs_for_penalty(acts, 0.05, width=5, method="sparse", z=z)
        assert torch.equal(sel.valid, direct.valid)
        v = sel.valid.tolist()
        assert v == sorted(v, reverse=True)  # ranked descending, so the kept pairs are a prefix
    counts = [int(apply_zscore_filter(base, z).valid.sum()) for z in [0.0, 1.0, 2.0, 3.0]]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_defaults_leave_selection_unchanged():
    acts = topk_acts(32, 30, 4, seed=8)
    for method in ["sparse", "dense"]:
        a = select_pairs_for_penalty(acts, 0.05, width=4, method=method)
        b = select_pairs_for_penalty(acts, 0.05, width=4, method=method, z=None, min_pairs=0)
        assert torch.equal(a.keys, b.keys) and torch.equal(a.valid, b.valid) and torch.equal(a.corr, b.corr)


def test_zscore_filtered_penalty_gradient_only_through_kept_pairs():
    acts = topk_acts(64, 40, 5, seed=1).requires_grad_(True)
    sel = select_pairs_for_penalty(acts, 0.05, width=5, method="sparse", z=2.0)
    loss = pair_penalty(sel.corr, sel.valid)
    loss.backward()
    n = 40
    kept = sel.keys[sel.valid]
    touched = set((kept // n).tolist()) | set((kept % n).tolist())
    grad_cols = set(torch.nonzero(acts.grad.abs().sum(0)).flatten().tolist())
    assert grad_cols == touched and torch.isfinite(acts.grad).all()


def test_huge_z_keeps_nothing_and_penalty_is_zero():
    acts = topk_acts(32, 30, 4, seed=9).requires_grad_(True)
    sel = select_pairs_for_penalty(acts, 0.05, width=4, method="dense", z=1e6)
    assert not sel.valid.any()
    loss = pair_penalty(sel.corr, sel.valid)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(acts.grad).all()


# ---- chunked max-cosine penalty (OrtSAE-style) ----------------------------------------------------------------


def brute_chunk_max_cos(W: torch.Tensor, perm: torch.Tensor, K: int) -> torch.Tensor:
    """mean_i max_{j != i, chunk(j) == chunk(i)} cos^2 from the dense n x n matrix; chunk(perm[p]) = p % K."""
    n = W.shape[0]
    norms = W.norm(dim=1, keepdim=True)
    normed = torch.where(norms > 0, W / norms.clamp_min(1e-300), torch.zeros_like(W))
    cos2 = (normed @ normed.T) ** 2
    chunk = torch.empty(n, dtype=torch.int64)
    chunk[perm] = torch.arange(n) % min(K, n)
    same = (chunk[:, None] == chunk[None, :]) & ~torch.eye(n, dtype=torch.bool)
    best = torch.where(same, cos2, torch.full_like(cos2, -1.0)).max(1).values.clamp_min(0)
    return best.mean()


@pytest.mark.parametrize("n,d,K", [(37, 6, 4), (40, 5, 8), (10, 3, 1), (9, 4, 9), (12, 4, 50)])
def test_chunk_max_cos_value_and_gradient_equal_brute_force(n, d, K):
    g = torch.Generator().manual_seed(n + K)
    W0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    W0[2] = 0  # zero row: cosine 0 with everything, finite gradient
    perm = torch.randperm(n, generator=g)

    W = W0.clone().requires_grad_(True)
    ours = chunk_max_cos_penalty_for_perm(W, perm, K)
    ours.backward()
    Wr = W0.clone().requires_grad_(True)
    ref = brute_chunk_max_cos(Wr, perm, K)
    ref.backward()

    assert ours.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-14)
    assert torch.allclose(W.grad, Wr.grad, rtol=1e-8, atol=1e-12) and torch.isfinite(W.grad).all()
    if K < n:
        assert ref.item() > 0 and Wr.grad.abs().sum() > 0


def test_chunk_max_cos_single_chunk_equals_decoder_max_cosine():
    W = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    expected = decoder_max_cosine(W).pow(2).mean()
    assert chunk_max_cos_penalty(W, 1).item() == pytest.approx(expected.item(), rel=1e-5)


def test_chunk_max_cos_known_answer():
    # chunks (p % 2): {0, 2} = {e1, e1+e2} -> cos^2 = 1/2 each; {1, 3} = {e2, -e2} -> 1 each. Mean 0.75.
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, -1.0]])
    assert chunk_max_cos_penalty_for_perm(W, torch.arange(4), 2).item() == pytest.approx(0.75)
    # Pair e1 with e2 and e1+e2 with -e2 instead: cos^2 0 and 1/2.
    assert chunk_max_cos_penalty_for_perm(W, torch.tensor([0, 2, 1, 3]), 2).item() == pytest.approx(0.25)


def test_chunk_max_cos_redraws_with_the_generator():
    W = torch.randn(64, 4, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(0)
    values = [chunk_max_cos_penalty(W, 8, g).item() for _ in range(3)]
    assert len(set(values)) == 3  # a new partition each call
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert values[0] == pytest.approx(chunk_max_cos_penalty_for_perm(W, perm, 8).item())
    # An upper bound: the max over the whole dictionary dominates any chunk's max.
    assert max(values) <= chunk_max_cos_penalty(W, 1).item() + 1e-6


def test_chunk_max_cos_memory_is_n_squared_over_k():
    n, d, K = 2000, 8, 16
    W = torch.randn(n, d, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    with LargestTensor() as probe:
        chunk_max_cos_penalty(W, K, torch.Generator().manual_seed(1)).backward()
    size = -(-n // K)
    assert probe.max_numel <= max(K * size * size, (n + 1) * d)  # vs n*n = 4e6
