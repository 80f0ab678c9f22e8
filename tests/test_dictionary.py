"""Adaptive dictionary management (seed 004 section 4.3): known answers for counters, protection and pruning,
and exactness of the in-place re-initialisation and Adam-state reset."""

import torch

from sae_lens_ortho.core.dictionary import (
    DictionaryState,
    feature_rms,
    feature_rms_dense,
    init_dictionary_state,
    management_decisions,
    max_pair_correlation,
    protected_by_importance,
    prune_less_important_member,
    reinit_features,
    reset_adam_state,
    reset_feature_state,
    update_dictionary_state,
)


def pairs(n: int, triples: list[tuple[int, int, float]], pad: int = 2):
    """SelectedPairs-like (keys, corr, valid) with ``pad`` invalid entries keyed -1, as the sparse path leaves them."""
    keys = torch.tensor([i * n + j for i, j, _ in triples] + [-1] * pad, dtype=torch.int64)
    corr = torch.tensor([c for _, _, c in triples] + [0.0] * pad)
    valid = torch.tensor([True] * len(triples) + [False] * pad)
    return keys, corr, valid


def test_feature_rms_sparse_equals_dense_and_known_answer():
    vals = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    idx = torch.tensor([[0, 2], [1, 0]])
    rms = feature_rms(vals, idx, 4)
    acts = torch.zeros(2, 4).scatter(1, idx, vals)
    assert torch.allclose(rms, torch.tensor([(13 / 2) ** 0.5, 0.0, (16 / 2) ** 0.5, 0.0]))
    assert torch.allclose(rms, feature_rms_dense(acts))


def test_max_pair_correlation_ignores_padding_and_takes_abs_max():
    n = 5
    keys, corr, valid = pairs(n, [(0, 1, 0.9), (1, 3, -0.95), (0, 3, 0.2)])
    corr[-1] = 5.0  # garbage in an invalid slot must not count
    assert torch.allclose(max_pair_correlation(keys, corr, valid, n), torch.tensor([0.9, 0.95, 0.0, 0.95, 0.0]))


def test_counters_increment_and_reset():
    state = init_dictionary_state(3)
    rms = torch.tensor([0.0, 10.0, 0.0])
    corr = torch.tensor([0.9, 0.5, 0.85])
    state = update_dictionary_state(state, rms, corr, beta=0.5, theta_act=0.01, theta_corr=0.8)
    assert torch.allclose(state.importance, torch.tensor([0.0, 5.0, 0.0]))
    assert state.steps_below.tolist() == [1, 0, 1]
    assert state.steps_correlated.tolist() == [1, 0, 1]
    state = update_dictionary_state(state, rms, torch.tensor([0.9, 0.9, 0.1]), beta=0.5, theta_act=0.01)
    assert state.steps_below.tolist() == [2, 0, 2]
    assert state.steps_correlated.tolist() == [2, 1, 0]  # feature 2 dropped below theta_corr: reset
    state = update_dictionary_state(state, torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3), beta=0.5)
    assert torch.allclose(state.importance, torch.tensor([0.5, 3.75, 0.0]))  # feature 1: 0 -> 5 -> 7.5 -> 3.75
    assert state.steps_below.tolist() == [0, 0, 3]
    assert state.steps_correlated.tolist() == [0, 0, 0]


def test_protection_by_percentile_known_answer():
    imp = torch.arange(20.0)  # 90th percentile (linear) = 17.1: exactly the top 10% (18, 19) are protected
    assert protected_by_importance(imp).nonzero().flatten().tolist() == [18, 19]
    imp = torch.tensor([5.0, 1.0, 3.0, 9.0, 2.0, 0.0, 4.0, 8.0, 6.0, 7.0])  # 90th percentile = 8.1
    assert protected_by_importance(imp).nonzero().flatten().tolist() == [3]


def state_with(importance, steps_below, steps_correlated) -> DictionaryState:
    return DictionaryState(torch.tensor(importance), torch.tensor(steps_below), torch.tensor(steps_correlated))


def test_only_the_less_important_member_of_a_pair_is_pruned():
    n = 6
    keys, corr, valid = pairs(n, [(0, 1, 0.9), (2, 3, 0.95), (4, 5, 0.5)])
    state = state_with([3.0, 2.0, 1.0, 4.0, 0.5, 0.1], [0] * n, [5] * n)
    dec = management_decisions(state, keys, corr, valid, t_realloc=10, t_prune=5)
    # (0,1): 1 is less important; (2,3): 2; (4,5) is below theta_corr: neither, whatever their counters say.
    assert dec.prune.nonzero().flatten().tolist() == [1, 2]
    assert dec.n_pruned.item() == 2 and dec.n_reinit.item() == 0


def test_chain_prunes_only_local_minima_and_ties_prune_the_larger_index():
    n = 5
    keys, corr, valid = pairs(n, [(0, 1, 0.9), (1, 2, 0.9), (3, 4, -0.9)])
    importance = torch.tensor([1.0, 2.0, 3.0, 7.0, 7.0])
    everyone = torch.ones(n, dtype=torch.bool)
    pruned = prune_less_important_member(keys, corr, valid, importance, everyone, 0.8)
    assert pruned.tolist() == [True, False, False, False, True]  # chain 0<1<2: only 0; tie (3,4): 4
    pruned = prune_less_important_member(keys, corr, valid, importance, ~torch.tensor([1, 0, 0, 0, 0]).bool(), 0.8)
    assert pruned.tolist() == [False, False, False, False, True]  # 0 not a candidate: 1 is NOT pruned instead


def test_protected_and_uncounted_features_survive():
    n = 10
    keys, corr, valid = pairs(n, [(0, 9, 0.9), (1, 2, 0.9), (3, 4, 0.9)])
    importance = [0.0] + [float(i) for i in range(1, 9)] + [100.0]
    # 9 is protected (top 10%) and more important: 0 goes. 1 < 2 but 1's counter is short: neither goes.
    # 3 < 4 but 3 is also below theta_act long enough: it is reallocated, and not counted as pruned.
    state = state_with(importance, [0, 0, 0, 20, 0, 0, 0, 0, 0, 0], [5, 4, 5, 5, 5, 0, 0, 0, 0, 5])
    dec = management_decisions(state, keys, corr, valid, t_realloc=20, t_prune=5)
    assert dec.prune.nonzero().flatten().tolist() == [0]
    assert dec.reinit.nonzero().flatten().tolist() == [3]
    assert (dec.n_reinit.item(), dec.n_pruned.item()) == (1, 1)
    # the more important member of a pair is never pruned, even when it alone is a candidate and unprotected
    state = state_with(importance, [0] * n, [0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
    assert not management_decisions(state, keys, corr, valid, t_realloc=20, t_prune=5).prune.any()


def test_reset_feature_state():
    state = state_with([1.0, 2.0, 3.0], [4, 5, 6], [7, 8, 9])
    out = reset_feature_state(state, torch.tensor([False, True, False]), importance_value=0.5)
    assert out.importance.tolist() == [1.0, 0.5, 3.0]
    assert out.steps_below.tolist() == [4, 0, 6]
    assert out.steps_correlated.tolist() == [7, 0, 9]


def make_sae(d: int = 6, n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.nn.Parameter(torch.randn(d, n, generator=g))
    b_enc = torch.nn.Parameter(torch.randn(n, generator=g))
    W_dec = torch.nn.Parameter(torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g))
    return W_enc, b_enc, W_dec


def test_reinit_touches_exactly_the_masked_features():
    W_enc, b_enc, W_dec = make_sae()
    before = [p.detach().clone() for p in (W_enc, b_enc, W_dec)]
    mask = torch.tensor([False, True, False, False, True, False, False, False])
    reinit_features(W_enc, b_enc, W_dec, mask, torch.Generator().manual_seed(1))
    keep = ~mask
    assert torch.equal(W_enc[:, keep], before[0][:, keep])
    assert torch.equal(b_enc[keep], before[1][keep])
    assert torch.equal(W_dec[keep], before[2][keep])
    assert (W_enc[:, mask] != before[0][:, mask]).all() and (W_dec[mask] != before[2][mask]).all()
    assert (b_enc[mask] == 0).all()
    dec_norm = before[2][keep].norm(dim=1).mean()
    enc_norm = before[0][:, keep].norm(dim=0).mean()
    assert torch.allclose(W_dec[mask].norm(dim=1), dec_norm.expand(2))
    assert torch.allclose(W_enc[:, mask].norm(dim=0), enc_norm.expand(2))
    # encoder column and decoder row share the random direction; the two new features differ
    assert torch.allclose(W_enc[:, mask].T / enc_norm, W_dec[mask] / dec_norm, atol=1e-6)
    assert not torch.allclose(W_dec[1], W_dec[4])


def test_reinit_with_empty_mask_changes_nothing():
    W_enc, b_enc, W_dec = make_sae(seed=3)
    before = [p.detach().clone() for p in (W_enc, b_enc, W_dec)]
    reinit_features(W_enc, b_enc, W_dec, torch.zeros(8, dtype=torch.bool))
    assert all(torch.equal(p, q) for p, q in zip((W_enc, b_enc, W_dec), before))


def test_reset_adam_state_zeroes_exactly_the_masked_slices():
    W_enc, b_enc, W_dec = make_sae(seed=2)
    opt = torch.optim.Adam([W_enc, b_enc, W_dec], lr=1e-3, amsgrad=True)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    ((x @ W_enc + b_enc).tanh() @ W_dec).pow(2).sum().backward()  # no ReLU: every feature gets a gradient
    opt.step()
    mask = torch.tensor([True, False, False, True, False, False, False, True])
    for param, dim in ((W_enc, 1), (b_enc, 0), (W_dec, 0)):
        state = opt.state[param]
        before = {k: v.clone() for k, v in state.items()}
        assert reset_adam_state(state, mask, dim) is state
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            moment, old = state[name].movedim(dim, 0), before[name].movedim(dim, 0)
            assert (old[mask] != 0).all()  # the test would be vacuous otherwise
            assert (moment[mask] == 0).all()
            assert torch.equal(moment[~mask], old[~mask])
        assert torch.equal(state["step"], before["step"])
    opt.step()  # the optimizer still runs on the modified state
