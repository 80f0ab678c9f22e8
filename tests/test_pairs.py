"""Pair selection against the brute-force n x n reference (tests/reference.py)."""

import pytest
import torch
from reference import correlation_matrix, ranked_pairs

from sae_lens_ortho.core.pairs import n_selected_pairs, top_correlated_pairs
from sae_lens_ortho.core.penalties import select_pairs_for_penalty

METHODS = ["sparse", "dense", "auto"]


def topk_acts(b: int, n: int, k: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(b, n, generator=g)
    vals, idx = pre.topk(k, dim=1)
    return torch.zeros(b, n).scatter(1, idx, vals.relu()).to(dtype)


def dense_acts(b: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, generator=g).relu()


def assert_matches_reference(sel, acts: torch.Tensor, p: float, tol: float = 2e-6) -> None:
    """Same count, same correlations, and the same pairs up to float ties within ``tol``."""
    ref = ranked_pairs(acts.float())
    n = acts.shape[1]
    m = min(n_selected_pairs(n, p), len(ref))
    assert len(sel.corr) == m
    got = list(zip(sel.corr.tolist(), sel.i.tolist(), sel.j.tolist()))
    for (c, i, j), (rc, _ri, _rj) in zip(got, ref[:m]):
        assert abs(c - rc) < 1e-5
        assert i < j
    if m == 0:
        return
    cutoff = ref[m - 1][0]
    ours = {(i, j) for _, i, j in got}
    must = {(i, j) for c, i, j in ref[:m] if c > cutoff + tol}
    may = {(i, j) for c, i, j in ref if c >= cutoff - tol}
    assert must <= ours <= may
    # Sorted descending, as promised.
    assert all(a >= b for a, b in zip(sel.corr.tolist(), sel.corr.tolist()[1:]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("b,n,k,p", [(64, 40, 4, 0.02), (200, 97, 6, 0.005), (7, 30, 3, 0.3), (33, 50, 5, 1.0)])
def test_sparse_batches_match_reference(method, b, n, k, p):
    acts = topk_acts(b, n, k, seed=b + n)
    sel = top_correlated_pairs(acts, p, method=method)
    assert_matches_reference(sel, acts, p)


def test_sparse_fallback_without_packed_keys(monkeypatch):
    """Huge dictionaries cannot pack (key, position) into 63 bits; the argsort fallback must agree."""
    import sae_lens_ortho.core.pairs as pairs

    acts = topk_acts(80, 45, 5, seed=8)
    packed = top_correlated_pairs(acts, 0.05, method="sparse")
    monkeypatch.setattr(pairs, "_PACK_BITS", 0)
    fallback = top_correlated_pairs(acts, 0.05, method="sparse")
    assert torch.equal(packed.i, fallback.i) and torch.equal(packed.j, fallback.j)
    assert torch.allclose(packed.corr, fallback.corr, atol=1e-7)
    assert_matches_reference(fallback, acts, 0.05)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("b,n,p", [(50, 30, 0.05), (5, 41, 0.01), (128, 64, 0.002)])
def test_dense_batches_match_reference(method, b, n, p):
    acts = dense_acts(b, n, seed=b * n)
    sel = top_correlated_pairs(acts, p, method=method, chunk_size=7)
    assert_matches_reference(sel, acts, p)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 1000])
def test_dense_scan_independent_of_chunk_size(chunk_size):
    acts = dense_acts(40, 33, seed=3)
    ref = top_correlated_pairs(acts, 0.05, method="dense", chunk_size=33)
    sel = top_correlated_pairs(acts, 0.05, method="dense", chunk_size=chunk_size)
    assert torch.equal(sel.i, ref.i) and torch.equal(sel.j, ref.j)


def dyadic_tie_batch() -> torch.Tensor:
    """0/1 activations whose columns fire 1 or 4 times, so every C_ij is an exact dyadic number and many
    pairs tie exactly (C = 1, 0.5, 0.25, ...): the tie order must be (i ascending, j ascending)."""
    g = torch.Generator().manual_seed(0)
    b, n = 16, 24
    acts = torch.zeros(b, n)
    for f in range(n):
        count = 1 if f % 3 else 4
        rows = torch.randperm(b, generator=g)[:count]
        acts[rows, f] = 1.0
    return acts


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("p", [0.01, 0.03, 0.1, 1.0])
def test_exact_ties_break_by_index(method, p):
    acts = dyadic_tie_batch()
    ref = ranked_pairs(acts)
    m = min(n_selected_pairs(acts.shape[1], p), len(ref))
    assert len({c for c, _, _ in ref}) < len(ref)  # the batch really has ties
    sel = top_correlated_pairs(acts, p, method=method)
    assert list(zip(sel.i.tolist(), sel.j.tolist())) == [(i, j) for _, i, j in ref[:m]]
    assert sel.corr.tolist() == [c for c, _, _ in ref[:m]]


@pytest.mark.parametrize("method", METHODS)
def test_dead_features_never_selected_and_never_nan(method):
    acts = topk_acts(30, 40, 5, seed=1)
    dead = [0, 7, 39]
    acts[:, dead] = 0
    sel = top_correlated_pairs(acts, 1.0, method=method)
    assert torch.isfinite(sel.corr).all()
    assert not set(dead) & (set(sel.i.tolist()) | set(sel.j.tolist()))
    assert_matches_reference(sel, acts, 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_all_dead_batch_selects_nothing(method):
    sel = top_correlated_pairs(torch.zeros(8, 20), 0.5, method=method)
    assert sel.i.numel() == 0 and sel.corr.numel() == 0


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_batch_of_one(method):
    # Powers of two keep v_i v_j / (|v_i||v_j|) exactly 1, so all co-firing pairs tie at C = 1.
    acts = torch.zeros(1, 12)
    acts[0, [1, 4, 5, 9]] = torch.tensor([2.0, 0.5, 4.0, 1.0])
    sel = top_correlated_pairs(acts, 0.05, method=method)  # ceil(0.05 * 66) = 4 of the 6 co-firing pairs
    assert sel.corr.tolist() == [1.0] * 4
    assert list(zip(sel.i.tolist(), sel.j.tolist())) == [(1, 4), (1, 5), (1, 9), (4, 5)]
    # And with random magnitudes all 6 pairs are found when p asks for them all.
    acts[0, [1, 4, 5, 9]] = torch.rand(4) + 0.1
    sel = top_correlated_pairs(acts, 1.0, method=method)
    assert sorted(zip(sel.i.tolist(), sel.j.tolist())) == [(1, 4), (1, 5), (1, 9), (4, 5), (4, 9), (5, 9)]
    assert torch.allclose(sel.corr, torch.ones(6), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_bf16_input_matches_float32_of_same_values(method):
    acts = topk_acts(48, 36, 4, seed=5, dtype=torch.bfloat16)
    sel = top_correlated_pairs(acts, 0.05, method=method)
    ref = top_correlated_pairs(acts.float(), 0.05, method=method)
    assert sel.corr.dtype == torch.float32
    assert torch.equal(sel.i, ref.i) and torch.equal(sel.j, ref.j) and torch.equal(sel.corr, ref.corr)
    assert_matches_reference(sel, acts.float(), 0.05)


def test_selected_count_is_ceil_of_fraction():
    assert n_selected_pairs(100, 0.001) == 5  # 0.001 * 4950 = 4.95 -> 5
    assert n_selected_pairs(16384, 0.001) == 134210  # 134209.536 -> 134210
    p = 29 / 45
    assert p * 45 > 29  # float rounding puts p * N a hair above 29 ...
    assert n_selected_pairs(10, p) == 29  # ... but ceil must not turn an exact 29 into 30
    assert n_selected_pairs(5, 1.0) == 10
    with pytest.raises(ValueError, match="p must be in"):
        n_selected_pairs(5, 0.0)


def test_training_selection_agrees_with_public_api():
    """The fixed-size, sync-free selection used in training picks the same pairs as top_correlated_pairs."""
    acts = topk_acts(64, 50, 5, seed=9)
    public = top_correlated_pairs(acts, 0.02)
    for method in ["sparse", "dense"]:
        sel = select_pairs_for_penalty(acts, 0.02, width=5, method=method)
        keys = sel.keys[sel.valid]
        assert torch.equal(keys // 50, public.i) and torch.equal(keys % 50, public.j)
        assert torch.allclose(sel.corr[sel.valid].detach(), public.corr, atol=1e-6)


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_pair_stats_equal_brute_force(method):
    acts = topk_acts(40, 30, 4, seed=2)
    acts[:, 3] = 0  # a dead feature
    c = correlation_matrix(acts)
    iu = torch.triu_indices(30, 30, 1)
    upper = c[iu[0], iu[1]]
    stats = select_pairs_for_penalty(acts, 0.01, method=method, width=4).stats
    assert stats.n_pairs == 435
    assert stats.sum_corr.item() == pytest.approx(upper.sum().item(), rel=1e-6)
    assert stats.sum_corr_sq.item() == pytest.approx(upper.pow(2).sum().item(), rel=1e-6)
    assert stats.mean.item() == pytest.approx(upper.mean().item(), rel=1e-6)
    assert stats.std.item() == pytest.approx(upper.std(unbiased=False).item(), rel=1e-5)
    assert int(stats.n_cofiring) == int((upper > 0).sum())


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_signed_inputs_are_ranked_by_c_not_its_magnitude(method: str) -> None:
    """As documented: an anti-correlated pair (C = -1) is not selected from signed inputs; from |acts| it is."""
    x = torch.randn(200, 1, generator=torch.Generator().manual_seed(0))
    acts = torch.cat([x, -x, torch.randn(200, 1, generator=torch.Generator().manual_seed(1))], 1)
    signed = top_correlated_pairs(acts, p=0.34, method=method)
    assert (0, 1) not in list(zip(signed.i.tolist(), signed.j.tolist())) and bool((signed.corr > 0).all())
    magnitude = top_correlated_pairs(acts.abs(), p=0.34, method=method)
    assert (magnitude.i[0].item(), magnitude.j[0].item()) == (0, 1)
    assert magnitude.corr[0].item() == pytest.approx(1.0)
