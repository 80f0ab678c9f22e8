"""Seed 003 feature grouping (sae_lens_ortho.core.grouping) against brute-force loops and known answers."""

import time

import pytest
import torch
from probes import LargestTensor

from sae_lens_ortho.core.grouping import (
    assign_and_update,
    assign_groups,
    group_sizes,
    grouped_decoder_penalty,
    init_centroids,
    update_centroids,
)
from sae_lens_ortho.core.penalties import decoder_gram_penalty


def decoder(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def brute_grouped(W: torch.Tensor, assignment: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Literal double loop over ordered same-group pairs i != j (differentiable, float64)."""
    n = W.shape[0]
    normed = [w / w.norm() if w.norm() > 0 else w * 0 for w in W]
    a = assignment.tolist()
    total, count = W.new_zeros(()), 0
    for i in range(n):
        for j in range(n):
            if i != j and a[i] == a[j]:
                total = total + (normed[i] @ normed[j]) ** 2
                count += 1
    return total / max(count, 1) if reduction == "mean" else total


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_grouped_penalty_value_and_gradient_equal_double_loop(reduction):
    n, d, G = 30, 6, 4
    W0 = decoder(n, d, seed=1)
    W0[7] = 0  # a zero decoder row: contributes nothing, gets a finite (zero) gradient
    assignment = torch.randint(0, G, (n,), generator=torch.Generator().manual_seed(2))
    assignment[:3] = 3  # make sure at least one group is large

    W = W0.clone().requires_grad_(True)
    ours = grouped_decoder_penalty(W, assignment, G, reduction)
    ours.backward()
    Wr = W0.clone().requires_grad_(True)
    ref = brute_grouped(Wr, assignment, reduction)
    ref.backward()

    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(W.grad, Wr.grad, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(W.grad).all() and W.grad[7].abs().sum() == 0
    assert Wr.grad.abs().sum() > 0


def test_grouped_penalty_gradcheck():
    W = decoder(9, 4, seed=3).requires_grad_(True)
    assignment = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda w: grouped_decoder_penalty(w, assignment, 3), (W,))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_single_group_equals_full_gram_penalty(reduction):
    W = decoder(40, 8, seed=4, dtype=torch.float32)
    ours = grouped_decoder_penalty(W, torch.zeros(40, dtype=torch.int64), 1, reduction)
    assert ours.item() == pytest.approx(decoder_gram_penalty(W, reduction).item(), rel=1e-5)


def test_groups_of_one_give_zero_and_empty_groups_are_fine():
    W = decoder(5, 3, seed=5)
    assert grouped_decoder_penalty(W, torch.arange(5), 5).item() == pytest.approx(0.0, abs=1e-12)
    assert grouped_decoder_penalty(W, torch.arange(5), 5, "mean").item() == pytest.approx(0.0, abs=1e-12)
    # Groups 1, 3 empty: same as relabelled two-group assignment.
    a = torch.tensor([0, 2, 0, 2, 2])
    b = torch.tensor([0, 1, 0, 1, 1])
    assert grouped_decoder_penalty(W, a, 4).item() == pytest.approx(grouped_decoder_penalty(W, b, 2).item())


def test_grouped_penalty_known_answer():
    # Group 0: e1, e1+e2 (cos^2 = 1/2, two ordered pairs -> 1). Group 1: e2, -e2 (cos^2 = 1 -> 2).
    W = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, -1.0]])
    a = torch.tensor([0, 0, 1, 1])
    assert grouped_decoder_penalty(W, a, 2).item() == pytest.approx(3.0)
    assert grouped_decoder_penalty(W, a, 2, "mean").item() == pytest.approx(3.0 / 4)


def test_large_dictionary_runs_without_an_n_by_n_matrix():
    """n = 20000: an n x n float32 matrix would be 1.6 GB; the per-group d x d Grams are tiny."""
    n, d, G = 20000, 16, 8
    W = decoder(n, d, seed=6, dtype=torch.float32).requires_grad_(True)
    assignment = torch.randint(0, G, (n,), generator=torch.Generator().manual_seed(7))
    start = time.perf_counter()
    loss = grouped_decoder_penalty(W, assignment, G, "mean")
    loss.backward()
    assert time.perf_counter() - start < 5.0
    # Random directions in 16 dims: mean squared cosine is 1/d.
    assert loss.item() == pytest.approx(1 / d, rel=0.05)
    assert torch.isfinite(W.grad).all()


def test_no_op_produces_an_n_by_n_or_n_by_d_by_d_tensor():
    n, d, G = 3000, 8, 8
    W = decoder(n, d, seed=13, dtype=torch.float32).requires_grad_(True)
    centroids = init_centroids(W, G, torch.Generator().manual_seed(0))
    with LargestTensor() as probe:
        assignment, centroids = assign_and_update(W, centroids, 0.9)
        grouped_decoder_penalty(W, assignment, G, "mean").backward()
    assert probe.max_numel <= max(n * d, G * d * d, n * G)  # vs n*n = 9e6, n*d*d = 192000


def test_assignment_is_argmax_cosine_not_dot_product():
    centroids = torch.tensor([[10.0, 0.0], [0.0, 0.1], [-1.0, -1.0]])
    W = torch.tensor([[1.0, 0.2], [0.2, 1.0], [-3.0, -2.0], [0.0, 0.0]])
    assert assign_groups(W, centroids).tolist() == [0, 1, 2, 0]  # zero row: lowest index

    W = decoder(50, 5, seed=8)
    C = decoder(4, 5, seed=9)
    cos = torch.nn.functional.normalize(W, dim=1) @ torch.nn.functional.normalize(C, dim=1).T
    assert torch.equal(assign_groups(W, C), cos.argmax(1))


def test_update_centroids_known_answer():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    W = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, -4.0]])  # unit directions e1, e2, -e2
    a = torch.tensor([1, 1, 0])  # group 0: {-e2}, group 1: {e1, e2}, group 2 empty
    out = update_centroids(centroids, W, a, decay=0.75)
    expected = torch.tensor([[0.75, -0.25], [0.125, 0.75 + 0.125], [5.0, 5.0]])
    assert torch.allclose(out, expected)
    assert torch.equal(centroids, torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))  # input untouched


def test_group_sizes_sum_to_n():
    a = torch.randint(0, 8, (1000,), generator=torch.Generator().manual_seed(10))
    sizes = group_sizes(a, 8)
    assert sizes.shape == (8,) and sizes.sum().item() == 1000
    assert sizes.tolist() == [int((a == g).sum()) for g in range(8)]
    assert group_sizes(torch.tensor([0, 0]), 3).tolist() == [2, 0, 0]


def test_init_centroids_are_distinct_unit_decoder_rows_and_reproducible():
    W = decoder(100, 6, seed=11, dtype=torch.float32)
    c1 = init_centroids(W, 8, torch.Generator().manual_seed(0))
    c2 = init_centroids(W, 8, torch.Generator().manual_seed(0))
    assert torch.equal(c1, c2) and c1.shape == (8, 6)
    assert torch.allclose(c1.norm(dim=1), torch.ones(8))
    unit = torch.nn.functional.normalize(W, dim=1)
    rows = [int((unit - c).norm(dim=1).argmin()) for c in c1]
    assert len(set(rows)) == 8 and all(torch.allclose(unit[r], c, atol=1e-6) for r, c in zip(rows, c1))
    with pytest.raises(ValueError):
        init_centroids(W, 101)


def test_grouping_step_separates_two_clusters():
    """Two tight clusters of directions: one step groups them apart and centroids move toward them."""
    g = torch.Generator().manual_seed(12)
    a_dir, b_dir = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    W = torch.cat([a_dir + 0.05 * torch.randn(20, 3, generator=g), b_dir + 0.05 * torch.randn(20, 3, generator=g)])
    centroids = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0]])
    assignment, new = assign_and_update(W, centroids, decay=0.5)
    assert assignment.tolist() == [0] * 20 + [1] * 20
    assert (new[0] @ a_dir) / new[0].norm() > (centroids[0] @ a_dir) / centroids[0].norm()
    assert (new[1] @ b_dir) / new[1].norm() > (centroids[1] @ b_dir) / centroids[1].norm()
