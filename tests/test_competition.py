"""Local competition (seed 004 section 4.2) against brute-force dense references and hand-built known answers."""

import torch

from sae_lens_ortho.core.competition import (
    CoactivationTable,
    empty_coactivation_table,
    forget_features,
    local_competition,
    local_competition_dense,
    neighborhood_radius,
    neighborhoods,
    row_width,
    suppression_mask,
    suppression_mask_dense,
    update_coactivation_history,
    update_coactivation_history_dense,
)

BETA = 0.99


def topk_batch(b: int, n: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """TopK-style (values, indices); some values are 0 (ReLU) and must not count as firing."""
    vals, idx = torch.randn(b, n, generator=g).topk(k, dim=1)
    return vals.relu(), idx


def dense_cofiring_rate(vals: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of rows where both i and j fire, as an n x n matrix with a zero diagonal (float32)."""
    fires = torch.zeros(vals.shape[0], n).scatter(1, idx, (vals > 0).float())
    counts = fires.T @ fires
    counts.fill_diagonal_(0)
    return counts / vals.shape[0]


def reference_step(H: torch.Tensor, vals, idx, r: int) -> torch.Tensor:
    """Dense EMA step, then keep each row's r largest entries (ties: smaller j), zeroing the rest."""
    n = H.shape[0]
    H = BETA * H + (1 - BETA) * dense_cofiring_rate(vals, idx, n)
    for i in range(n):
        ranked = sorted((j for j in range(n) if H[i, j] > 0), key=lambda j: (-float(H[i, j]), j))
        for j in ranked[r:]:
            H[i, j] = 0
    return H


def table_from_dense(H: torch.Tensor, r: int) -> CoactivationTable:
    n = H.shape[0]
    table = empty_coactivation_table(n, r)
    for i in range(n):
        ranked = sorted((j for j in range(n) if H[i, j] > 0), key=lambda j: (-float(H[i, j]), j))
        for s, j in enumerate(ranked):
            table.neighbors[i, s] = j
            table.history[i, s] = H[i, j]
    return table


def assert_tables_equal(got: CoactivationTable, want: CoactivationTable) -> None:
    assert torch.equal(got.neighbors, want.neighbors)
    assert torch.equal(got.history, want.history)  # bit-identical: same float ops in the same order


def run_history(n: int, r: int, steps: int, b: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    table = empty_coactivation_table(n, r)
    H = torch.zeros(n, n)
    for _ in range(steps):
        vals, idx = topk_batch(b, n, k, g)
        table = update_coactivation_history(table, vals, idx, BETA)
        H = reference_step(H, vals, idx, r)
        assert_tables_equal(table, table_from_dense(H, r))


def test_history_is_the_exact_dense_ema_when_the_table_holds_every_neighbour():
    n = 7
    run_history(n, r=n - 1, steps=6, b=9, k=3, seed=0)
    # and the dense EMA itself, computed without any truncation
    g = torch.Generator().manual_seed(1)
    table, H = empty_coactivation_table(n, n + 2), torch.zeros(n, n)
    for _ in range(5):
        vals, idx = topk_batch(10, n, 4, g)
        table = update_coactivation_history(table, vals, idx, BETA)
        H = BETA * H + (1 - BETA) * dense_cofiring_rate(vals, idx, n)
    dense_from_table = torch.zeros(n, n)
    rows = torch.arange(n)[:, None].expand_as(table.neighbors)
    live = table.neighbors >= 0
    dense_from_table[rows[live], table.neighbors[live]] = table.history[live]
    assert torch.equal(dense_from_table, H)
    assert (table.neighbors[:, n - 1 :] == -1).all()  # spare columns stay empty


def test_history_matches_the_truncated_dense_reference():
    run_history(n=9, r=2, steps=8, b=6, k=4, seed=2)
    run_history(n=12, r=3, steps=6, b=5, k=5, seed=3)


def test_history_known_answer_and_first_update_values():
    vals = torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.5, 0.0]])  # entry 3 is not firing (value 0)
    idx = torch.tensor([[0, 1, 3], [2, 1, 3]])
    table = update_coactivation_history(empty_coactivation_table(4, 2), vals, idx, BETA)
    one = (1 - BETA) * (torch.tensor(1.0) / 2)  # each pair co-fires in 1 row of 2
    assert table.neighbors.tolist() == [[1, -1], [0, 2], [1, -1], [-1, -1]]  # tie for feature 1: smaller id first
    assert table.history[1].tolist() == [one.item(), one.item()]
    assert table.history[3].tolist() == [0.0, 0.0]


def test_radius_known_answer():
    history = torch.tensor([[0.5, 0.2, 0.1, 0.0], [0.11, 0.05, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert neighborhood_radius(history, 0.1).tolist() == [2, 1, 0]  # strictly above theta
    assert neighborhood_radius(history, 0.1, r_max=1).tolist() == [1, 1, 0]


def hand_table() -> CoactivationTable:
    """5 features; 0 and 1 are neighbours (H = 0.5 both ways); 2 has 3 in its hood but not vice versa;
    0 and 4 co-fired only weakly (H = 0.05 < theta), so they do not compete."""
    table = empty_coactivation_table(5, 3)
    for i, j, h in [(0, 1, 0.5), (1, 0, 0.5), (2, 3, 0.4), (0, 4, 0.05), (4, 0, 0.05)]:
        s = int((table.neighbors[i] >= 0).sum())
        table.neighbors[i, s], table.history[i, s] = j, h
    return table


def test_suppression_known_answer():
    hoods = neighborhoods(hand_table(), 0.1)
    assert hoods.tolist()[0] == [1, 5, 5]
    vals = torch.tensor(
        [
            [2.0, 1.0, 3.0],  # features 0, 1 (neighbours): the weaker (1) is scaled; 4 is untouched
            [1.0, 4.0, 0.0],  # features 0, 1 again, now 0 is weaker
            [5.0, 1.0, 2.0],  # 3 is in 2's hood only (one-sided): still compete, 3 weaker; 4 not a neighbour
            [1.0, 5.0, 2.0],  # same features, now 2 (whose hood holds 3) is the weaker one
            [0.0, 2.0, 7.0],  # 0 inactive: 1 has no active competitor
        ]
    )
    idx = torch.tensor([[0, 1, 4], [0, 1, 2], [2, 3, 4], [2, 3, 4], [0, 1, 4]])
    mask = suppression_mask(vals, idx, hoods)
    assert mask.tolist() == [
        [False, True, False],
        [True, False, False],
        [False, True, False],
        [True, False, False],
        [False, False, False],
    ]
    out = local_competition(vals, idx, hoods, gamma=0.3)
    expected = vals.clone()
    expected[mask] *= 0.7
    assert torch.equal(out, expected)
    assert torch.allclose(out[0], torch.tensor([2.0, 0.7, 3.0]))  # stronger and non-neighbour unchanged


def test_suppression_does_not_compound_and_ties_suppress_neither():
    table = empty_coactivation_table(3, 2)
    table.neighbors[:] = torch.tensor([[1, 2], [0, 2], [0, 1]])
    table.history[:] = 0.9
    hoods = neighborhoods(table)
    vals = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 0.5]])
    idx = torch.tensor([[0, 1, 2], [0, 1, 2]])
    out = local_competition(vals, idx, hoods, 0.3)
    assert torch.allclose(out, torch.tensor([[0.7, 1.4, 3.0], [2.0, 2.0, 0.35]]))  # 0 beaten twice: scaled once


def test_gradients_are_finite_and_carry_the_mask_factor():
    g = torch.Generator().manual_seed(4)
    n, table = 10, empty_coactivation_table(10, 4)
    for _ in range(3):
        table = update_coactivation_history(table, *topk_batch(8, n, 5, g), beta=0.5)  # fast EMA: big H
    hoods = neighborhoods(table, 0.05)
    vals, idx = topk_batch(8, n, 5, g)
    vals.requires_grad_(True)
    out = local_competition(vals, idx, hoods)
    out.sum().backward()
    mask = suppression_mask(vals, idx, hoods)
    assert mask.any() and (~mask).any()
    assert torch.isfinite(vals.grad).all()
    assert torch.allclose(vals.grad, torch.where(mask, 0.7, 1.0))


def test_dense_variant_matches_sparse():
    g = torch.Generator().manual_seed(5)
    n = 10
    table = update_coactivation_history(empty_coactivation_table(n, 4), *topk_batch(8, n, 5, g), beta=0.5)
    hoods = neighborhoods(table, 0.05)
    vals, idx = topk_batch(6, n, 5, g)
    acts = torch.zeros(6, n).scatter(1, idx, vals).requires_grad_(True)
    dense = local_competition_dense(acts, hoods, width=5)
    sparse = torch.zeros(6, n).scatter(1, idx, local_competition(vals, idx, hoods))
    assert torch.equal(dense.detach(), sparse)
    dense.sum().backward()
    assert torch.isfinite(acts.grad).all()


def test_forget_features_clears_rows_and_entries_naming_them():
    table = hand_table()
    table.neighbors[0, 2], table.history[0, 2] = 2, 0.01
    out = forget_features(table, torch.tensor([False, False, False, False, True]))
    assert out.neighbors[0].tolist() == [1, 2, -1]  # entry naming 4 removed, the rest kept in order
    assert out.history[0].tolist() == [0.5, torch.tensor(0.01).item(), 0.0]
    assert (out.neighbors[4] == -1).all() and (out.history[4] == 0).all()
    assert torch.equal(out.neighbors[1:4], table.neighbors[1:4])


def test_suppression_matches_brute_force_on_random_tables():
    g = torch.Generator().manual_seed(6)
    n, k = 12, 5
    table = empty_coactivation_table(n, 3)
    for _ in range(4):
        table = update_coactivation_history(table, *topk_batch(6, n, k, g), beta=0.6)
    theta = 0.1
    hood = {i: {int(j) for j, h in zip(table.neighbors[i], table.history[i]) if h > theta} for i in range(n)}
    assert 0 < sum(map(len, hood.values())) < n * (n - 1)  # neither empty nor complete: a real test
    vals, idx = topk_batch(20, n, k, g)
    mask = suppression_mask(vals, idx, neighborhoods(table, theta))
    for row in range(20):
        v, f = vals[row].tolist(), idx[row].tolist()
        for a in range(k):
            beaten = any(v[c] > v[a] and (f[c] in hood[f[a]] or f[a] in hood[f[c]]) for c in range(k))
            assert bool(mask[row, a]) == (beaten and v[a] > 0)


# --- strength scale and the exact dense paths (used by standard_ortho's ReLU encoder) ------------------


def random_hoods(n: int, r: int, seed: int, theta: float = 0.1) -> tuple[torch.Tensor, dict[int, set[int]]]:
    """Hoods from a few fast-EMA updates, and the same neighbourhoods as python sets (neither empty nor full)."""
    g = torch.Generator().manual_seed(seed)
    table = empty_coactivation_table(n, r)
    for _ in range(4):
        table = update_coactivation_history(table, *topk_batch(6, n, 5, g), beta=0.6)
    hood = {i: {int(j) for j, h in zip(table.neighbors[i], table.history[i]) if h > theta} for i in range(n)}
    assert 0 < sum(map(len, hood.values())) < n * (n - 1)
    return neighborhoods(table, theta), hood


def brute_force_mask(acts: torch.Tensor, hood: dict[int, set[int]], scale: torch.Tensor | None) -> torch.Tensor:
    """The rule of the module docstring as a loop over every pair of a row's features."""
    s = acts if scale is None else acts * scale
    mask = torch.zeros_like(acts, dtype=torch.bool)
    for row in range(acts.shape[0]):
        for i in range(acts.shape[1]):
            if acts[row, i] <= 0:
                continue
            mask[row, i] = any(
                acts[row, j] > 0 and s[row, j] > s[row, i] and (j in hood[i] or i in hood[j])
                for j in range(acts.shape[1])
            )
    return mask


def test_strength_scale_matches_brute_force_and_changes_decisions():
    n, k = 12, 5
    hoods, hood = random_hoods(n, 3, seed=7)
    g = torch.Generator().manual_seed(8)
    vals, idx = topk_batch(30, n, k, g)
    scale = torch.rand(n, generator=g) * 3 + 0.1
    acts = torch.zeros(30, n).scatter(1, idx, vals)
    mask = suppression_mask(vals, idx, hoods, scale)
    want = brute_force_mask(acts, hood, scale)
    assert torch.equal(torch.zeros(30, n, dtype=torch.bool).scatter(1, idx, mask), want)
    assert not torch.equal(want, brute_force_mask(acts, hood, None))  # the scale matters in this case
    # A uniform scale changes nothing; the default is the unscaled rule.
    assert torch.equal(suppression_mask(vals, idx, hoods, torch.full((n,), 2.5)), suppression_mask(vals, idx, hoods))
    out = local_competition(vals, idx, hoods, 0.3, scale)
    assert torch.equal(out, vals * torch.where(mask, 0.7, 1.0))


def test_strength_is_invariant_under_folding_the_scale_into_the_activations():
    # Folding decoder norms: a -> a * |d|, |d| -> 1. The decisions must not change.
    n, k = 12, 5
    hoods, _ = random_hoods(n, 3, seed=9)
    g = torch.Generator().manual_seed(10)
    vals, idx = topk_batch(30, n, k, g)
    scale = torch.rand(n, generator=g) + 0.5
    assert torch.equal(
        suppression_mask(vals, idx, hoods, scale), suppression_mask(vals * scale[idx], idx, hoods, torch.ones(n))
    )


def test_dense_mask_is_exact_for_any_row_width():
    n = 12
    hoods, hood = random_hoods(n, 3, seed=11)
    g = torch.Generator().manual_seed(12)
    acts = torch.randn(25, n, generator=g).relu()  # ReLU-like: about half the features of a row fire
    acts[3] = 0  # an empty row
    scale = torch.rand(n, generator=g) + 0.5
    for sc in (None, scale):
        want = brute_force_mask(acts, hood, sc)
        assert want.any()
        assert torch.equal(suppression_mask_dense(acts, hoods, sc), want)
        assert torch.equal(suppression_mask_dense(acts, hoods, sc, chunk_elements=1), want)  # one row per chunk
        assert torch.equal(suppression_mask_dense(acts, hoods, sc, width=row_width(acts)), want)
        assert torch.equal(suppression_mask_dense(acts, hoods, sc, width=row_width(acts), chunk_elements=50), want)
    # Too narrow a width is not exact (it misses competitors outside the row's top-w): the dense path is.
    assert not torch.equal(suppression_mask_dense(acts, hoods, scale, width=2), brute_force_mask(acts, hood, scale))
    dense = local_competition_dense(acts, hoods, row_width(acts), 0.3, scale)
    assert torch.equal(dense, acts * torch.where(brute_force_mask(acts, hood, scale), 0.7, 1.0))


def test_row_width():
    assert row_width(torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])) == 2
    assert row_width(torch.zeros(0, 4)) == 0


def test_dense_history_update_is_bit_identical_to_the_sparse_one():
    g = torch.Generator().manual_seed(13)
    for n, r, b in [(9, 2, 6), (12, 3, 7), (7, 9, 5)]:  # truncated tables, and one wider than n - 1
        sparse = dense = empty_coactivation_table(n, r)
        for step in range(6):
            acts = torch.randn(b, n, generator=g).relu()
            if step == 2:
                acts[:, 1] = 0  # a feature that stops firing decays
            w = max(row_width(acts), 1)
            vals, idx = acts.topk(w, dim=1)
            sparse = update_coactivation_history(sparse, vals, idx, 0.9)
            dense = update_coactivation_history_dense(dense, acts, 0.9, chunk_elements=2 * n)  # 2-row chunks
            assert_tables_equal(dense, sparse)
        assert (sparse.neighbors >= 0).any()


def test_dense_history_update_counts_exactly_under_bf16_autocast():
    # Counts above 256 are not representable in bf16: the co-firing matmul must stay in float32.
    g = torch.Generator().manual_seed(14)
    acts = torch.randn(600, 8, generator=g).relu()
    table = empty_coactivation_table(8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = update_coactivation_history_dense(table, acts, 0.5)
    sparse = update_coactivation_history(table, *acts.topk(row_width(acts), dim=1), 0.5)
    assert_tables_equal(dense, sparse)
