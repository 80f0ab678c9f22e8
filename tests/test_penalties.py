"""Penalties and diagnostics against brute-force references: values and gradients."""

import pytest
import torch
from reference import correlation_matrix, naive_decoder_penalty

from sae_lens_ortho.core.diagnostics import decoder_max_cosine, mean_pair_cosine, pair_set_jaccard, selection_summary
from sae_lens_ortho.core.pairs import top_correlated_pairs
from sae_lens_ortho.core.penalties import (
    _row_pair_dots,
    decoder_gram_penalty,
    dense_pair_correlations,
    pair_penalty,
    select_pairs_for_penalty,
)


def topk_pre(b: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(b, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def brute_penalty(acts: torch.Tensor, i, j, weighting="abs", tau=0.0) -> torch.Tensor:
    """mean phi(C_ij) over the given pairs, C from the float64 n x n matrix (differentiable)."""
    c = correlation_matrix(acts)[i, j].abs()
    phi = {"abs": c, "squared": c**2, "hinge": (c - tau).clamp_min(0), "scaled": c * c / max(tau, 1e-300)}[weighting]
    return phi.mean()


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("weighting,tau", [("abs", 0.0), ("squared", 0.0), ("hinge", 0.3), ("scaled", 0.5)])
def test_penalty_value_and_gradient_equal_brute_force(method, weighting, tau):
    b, n, k, p = 40, 30, 4, 0.03
    pre = topk_pre(b, n, seed=11)
    pre[:, 5] = -10.0  # feature 5 never fires: a dead column must not produce NaN gradients

    def acts_of(pre_leaf):
        vals, idx = pre_leaf.topk(k, dim=1)
        return torch.zeros_like(pre_leaf).scatter(1, idx, vals.relu())

    pre32 = pre.float().requires_grad_(True)
    sel = select_pairs_for_penalty(acts_of(pre32), p, width=k, method=method)
    ours = pair_penalty(sel.corr, sel.valid, weighting, tau)
    ours.backward()
    keys = sel.keys[sel.valid]

    pre64 = pre.clone().requires_grad_(True)
    ref = brute_penalty(acts_of(pre64), keys // n, keys % n, weighting, tau)
    ref.backward()

    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    assert torch.isfinite(pre32.grad).all()
    assert torch.allclose(pre32.grad.double(), pre64.grad, rtol=1e-4, atol=1e-6)
    assert pre64.grad.abs().sum() > 0  # the test exercises a real gradient


def test_captured_topk_values_give_the_same_gradient():
    """Passing the encoder's own (values, indices) must equal scanning the dense activations."""
    b, n, k = 32, 40, 5
    pre = topk_pre(b, n, seed=3).float()
    grads = []
    for captured in (False, True):
        leaf = pre.clone().requires_grad_(True)
        vals, idx = leaf.topk(k, dim=1)
        vals = vals.relu()
        acts = torch.zeros_like(leaf).scatter(1, idx, vals)
        sel = select_pairs_for_penalty(acts, 0.02, width=k, sparse=(vals, idx) if captured else None)
        pair_penalty(sel.corr, sel.valid).backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_penalty_is_zero_without_valid_pairs():
    corr = torch.tensor([0.0, 0.0], requires_grad=True)
    out = pair_penalty(corr, torch.tensor([False, False]))
    out.backward()
    assert out.item() == 0.0 and torch.equal(corr.grad, torch.zeros(2))


def test_hinge_is_zero_below_tau():
    corr = torch.tensor([0.2, 0.29, 0.5])
    valid = torch.tensor([True, True, True])
    assert pair_penalty(corr, valid, "hinge", 0.3).item() == pytest.approx(0.2 / 3)
    assert pair_penalty(corr[:2], valid[:2], "hinge", 0.3).item() == 0.0


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError, match="weighting"):
        pair_penalty(torch.ones(1), torch.ones(1, dtype=torch.bool), "cubic")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_decoder_penalty_equals_naive_double_sum(reduction):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(12, 5, generator=g, dtype=torch.float64)
    W[4] = 0.0  # a zero decoder row stays out of the sum
    W1 = W.clone().requires_grad_(True)
    ours = decoder_gram_penalty(W1, reduction)
    ours.backward()
    W2 = W.clone().requires_grad_(True)
    ref = naive_decoder_penalty(W2)
    if reduction == "mean":
        ref = ref / (12 * 11)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(W1.grad, W2.grad, atol=1e-10)
    assert torch.isfinite(W1.grad).all() and W2.grad.abs().sum() > 0


def test_decoder_penalty_known_answers():
    eye = torch.eye(4)
    assert decoder_gram_penalty(eye).item() == pytest.approx(0.0, abs=1e-6)  # orthonormal rows
    dup = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])  # rows 0 and 1 parallel: (1)^2 twice
    assert decoder_gram_penalty(dup, "sum").item() == pytest.approx(2.0)
    # the default is the mean over the 3 * 2 ordered pairs: the config's default reduction
    assert decoder_gram_penalty(dup).item() == pytest.approx(2.0 / 6)
    import dataclasses
    import inspect

    from sae_lens_ortho.saes.config import OrthoConfig

    config_default = {f.name: f.default for f in dataclasses.fields(OrthoConfig)}["ortho_decoder_reduction"]
    assert inspect.signature(decoder_gram_penalty).parameters["reduction"].default == config_default == "mean"
    with pytest.raises(ValueError, match="reduction"):
        decoder_gram_penalty(dup, "max")


def test_mean_pair_cosine_equals_brute_force():
    g = torch.Generator().manual_seed(4)
    acts = torch.randn(25, 18, generator=g).relu()
    acts[:, 2] = 0
    c = correlation_matrix(acts)
    iu = torch.triu_indices(18, 18, 1)
    assert mean_pair_cosine(acts).item() == pytest.approx(c[iu[0], iu[1]].mean().item(), rel=1e-6)


def test_pair_set_jaccard_known_answer():
    a = torch.tensor([1, 2, 3, -1])
    b = torch.tensor([3, 4, -1, -1])
    assert pair_set_jaccard(a, b).item() == pytest.approx(1 / 4)
    assert pair_set_jaccard(a, a).item() == 1.0
    assert pair_set_jaccard(torch.tensor([-1]), torch.tensor([-1])).item() == 1.0


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_decoder_max_cosine_equals_brute_force(chunk_size):
    g = torch.Generator().manual_seed(2)
    W = torch.randn(15, 6, generator=g)
    W[7] = -2.5 * W[3]  # an anti-parallel duplicate counts as |cos| = 1
    normed = W / W.norm(dim=1, keepdim=True)
    cos = (normed @ normed.T).abs()
    cos.fill_diagonal_(-1)
    ours = decoder_max_cosine(W, chunk_size=chunk_size)
    assert torch.allclose(ours, cos.max(1).values, atol=1e-6)
    assert ours[3].item() == pytest.approx(1.0, abs=1e-6)


def test_selection_summary_counts_only_valid_pairs():
    out = selection_summary(torch.tensor([0.9, 0.5, 0.0]), torch.tensor([True, True, False]))
    assert out["selected_pairs"].item() == 2
    assert out["selected_corr_max"].item() == pytest.approx(0.9)
    assert out["selected_corr_mean"].item() == pytest.approx(0.7)


def test_public_selection_has_no_gradient_and_training_selection_does():
    acts = torch.rand(10, 8, requires_grad=True)
    assert not top_correlated_pairs(acts, 0.2).corr.requires_grad
    assert select_pairs_for_penalty(acts, 0.2, method="dense").corr.requires_grad


def _pairs(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """m pair keys i*n+j with i < j, repeats included (a pair selected twice counts twice)."""
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(0, n, (2, m), generator=g)
    i, j = torch.minimum(i, j), torch.maximum(i, j)
    keep = i < j
    i, j = i[keep], j[keep]
    return torch.cat([i, i[:3]]), torch.cat([j, j[:3]])


@pytest.mark.parametrize("chunk", [1, 7, 50, 10_000])
def test_row_pair_dots_equal_brute_force_across_chunk_boundaries(chunk):
    rows = torch.randn(23, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    i, j = _pairs(23, 60, seed=9)
    assert torch.allclose(_row_pair_dots(rows, i, j, chunk), (rows[i] * rows[j]).sum(1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_dense_pair_correlations_value_and_gradient_equal_the_gram(chunk):
    """C_s = (F^T F)[i_s, j_s] and its gradient, against the dense Gram gathered by autograd."""
    b, n = 13, 17
    F = torch.randn(b, n, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    i, j = _pairs(n, 50, seed=11)
    weights = torch.randn(i.numel(), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    ours_leaf, ref_leaf = F.clone().requires_grad_(True), F.clone().requires_grad_(True)
    ours = dense_pair_correlations(ours_leaf, i * n + j, chunk=chunk)
    ref = (ref_leaf.T @ ref_leaf)[i, j]
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert ours_leaf.grad is not None and ref_leaf.grad is not None
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ours_leaf.grad, ref_leaf.grad, rtol=1e-12, atol=1e-12)
