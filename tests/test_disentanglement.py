"""Disentanglement diagnostics against brute-force n x n computations (tests/reference.py), batching invariance,
hand-built known answers, and one run at d_sae = 65,536 with a bounded peak memory."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from reference import correlation_matrix, ranked_pairs

from sae_lens_ortho.core.diagnostics import decoder_max_cosine
from sae_lens_ortho.core.pairs import n_selected_pairs
from sae_lens_ortho.evals.disentanglement import disentanglement_diagnostics, sparse_rows

# --- activations --------------------------------------------------------------------------------------------------


def topk_acts(b: int, n: int, k: int, seed: int, dead=(), rare=()) -> torch.Tensor:
    """TopK + ReLU activations; features in ``dead`` never fire, those in ``rare`` fire on one token only."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(b, n, generator=g)
    for f in (*dead, *rare):
        pre[:, f] = -10.0
    for r, f in enumerate(rare):
        pre[r, f] = 10.0
    vals, idx = pre.topk(k, dim=1)
    return torch.zeros(b, n).scatter(1, idx, vals.relu())


def relu_acts(b: int, n: int, seed: int, dead=()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    acts = (torch.randn(b, n, generator=g) - 0.3).relu()
    acts[:, list(dead)] = 0.0
    return acts


def signed_sparse_acts(b: int, n: int, seed: int) -> torch.Tensor:
    """Signed activations with ~70% zeros: the identities hold without non-negativity."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(b, n, generator=g)
    return acts * (torch.rand(b, n, generator=g) < 0.3)


def decoder(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# --- brute force ---------------------------------------------------------------------------------------------------


def brute_force(
    acts: torch.Tensor, W_dec: torch.Tensor, *, top: int, p: float, rare=(), near=(0.8, 0.9), quantiles=(0.5, 0.9, 0.99)
) -> dict:
    n = acts.shape[1]
    c = correlation_matrix(acts)  # the full n x n C, float64
    iu = torch.triu_indices(n, n, 1)
    pairs = c[iu[0], iu[1]]
    fires = (acts != 0).double()
    cof = fires.T @ fires  # tokens on which both fire
    cof_pairs = cof[iu[0], iu[1]] > 0
    partners = (cof > 0).long()
    partners.fill_diagonal_(0)
    count = (acts != 0).sum(0)
    alive = count > 0
    ranked = ranked_pairs(acts)
    m = n_selected_pairs(n, p)
    sel = [r[0] for r in ranked[:m]]
    normed = W_dec.double() / W_dec.double().norm(dim=1, keepdim=True)
    dcos = (normed @ normed.T).abs()
    dcos.fill_diagonal_(-1)
    dmax = dcos.max(1).values
    return {
        "mean_pair_cosine": pairs.mean().item(),
        "std_pair_cosine": pairs.std(unbiased=False).item(),
        "max_pair_cosine": pairs.max().item(),
        "mean_cofiring_pair_cosine": pairs[cof_pairs].mean().item() if cof_pairs.any() else 0.0,
        "top_pairs": [(i, j, cv) for cv, i, j in ranked[:top]],
        "top_p_pairs": m,
        "top_p_selected": len(sel),
        "top_p_corr_mean": sum(sel) / len(sel) if sel else 0.0,
        "top_p_corr_min": sel[-1] if sel else 0.0,
        "cofiring_pairs": int(cof_pairs.sum()),
        "cofiring_pair_frac": cof_pairs.double().mean().item(),
        "cofiring_partners": partners.sum(1),
        "mean_cofiring_partners": partners.sum(1).double().mean().item(),
        "mean_cofiring_partners_alive": partners.sum(1)[alive].double().mean().item(),
        "max_cofiring_partners": int(partners.sum(1).max()),
        "fire_count": count,
        "dead_frac": (~alive).double().mean().item(),
        "l0": (acts != 0).sum().item() / acts.shape[0],
        "rare_frac": {t: (alive & (count / acts.shape[0] < t)).double().mean().item() for t in rare},
        "decoder_max_cos": dmax,
        "decoder_max_cos_mean": dmax.mean().item(),
        "decoder_max_cos_max": dmax.max().item(),
        "decoder_max_cos_quantiles": {q: torch.quantile(dmax, q).item() for q in quantiles},
        "near_dup_frac": {t: (dmax > t).double().mean().item() for t in near},
    }


def assert_report_equals(rep, ref: dict, tol: float = 1e-10) -> None:
    for key in (
        "mean_pair_cosine",
        "std_pair_cosine",
        "max_pair_cosine",
        "mean_cofiring_pair_cosine",
        "top_p_corr_mean",
        "top_p_corr_min",
        "cofiring_pair_frac",
        "mean_cofiring_partners",
        "mean_cofiring_partners_alive",
        "dead_frac",
        "l0",
    ):
        assert getattr(rep, key) == pytest.approx(ref[key], rel=tol, abs=tol), key
    for key in ("top_p_pairs", "top_p_selected", "cofiring_pairs", "max_cofiring_partners"):
        assert getattr(rep, key) == ref[key], key
    assert [(i, j) for i, j, _ in rep.top_pairs] == [(i, j) for i, j, _ in ref["top_pairs"]]
    assert [c for *_, c in rep.top_pairs] == pytest.approx([c for *_, c in ref["top_pairs"]], rel=tol, abs=tol)
    assert torch.equal(rep.fire_count, ref["fire_count"])
    assert torch.equal(rep.cofiring_partners, ref["cofiring_partners"])
    assert rep.rare_frac == pytest.approx(ref["rare_frac"], abs=1e-15)
    # decoder cosines are computed in float32
    assert torch.allclose(rep.decoder_max_cos.double(), ref["decoder_max_cos"], atol=1e-6)
    for key in ("decoder_max_cos_mean", "decoder_max_cos_max"):
        assert getattr(rep, key) == pytest.approx(ref[key], abs=1e-6), key
    assert rep.decoder_max_cos_quantiles == pytest.approx(ref["decoder_max_cos_quantiles"], abs=1e-6)
    assert rep.near_dup_frac == ref["near_dup_frac"]


# --- against brute force -------------------------------------------------------------------------------------------

RARE = (0.02, 0.1)

CASES = {
    "topk": lambda: topk_acts(120, 40, 4, seed=1, dead=(3, 17), rare=(8, 9, 30)),
    "topk_wide": lambda: topk_acts(64, 97, 12, seed=2, dead=(0,)),
    "relu_dense": lambda: relu_acts(50, 30, seed=3, dead=(5, 6)),
    "signed": lambda: signed_sparse_acts(70, 35, seed=4),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("p", [0.01, 0.3])
def test_every_value_equals_brute_force(case, p):
    acts = CASES[case]()
    n = acts.shape[1]
    W = decoder(n, 8, seed=n)
    W[4] = -3.0 * W[11]  # an anti-parallel near-duplicate
    W[20] = W[2] + 0.3 * W[21]  # a partial one
    rep = disentanglement_diagnostics(acts, W, top_pairs=15, p=p, rare_thresholds=RARE, chunk_size=7)
    ref = brute_force(acts, W, top=15, p=p, rare=RARE)
    assert_report_equals(rep, ref)
    assert rep.n_tokens == acts.shape[0] and rep.d_sae == n and rep.n_pairs == n * (n - 1) // 2


def test_brute_force_cases_exercise_what_they_claim():
    rep = disentanglement_diagnostics(CASES["topk"](), decoder(40, 8, 0), rare_thresholds=RARE)
    assert rep.dead_frac == pytest.approx(2 / 40)
    assert rep.rare_frac[0.02] == pytest.approx(3 / 40)  # the three one-token features: 1/120 < 0.02
    signed = disentanglement_diagnostics(CASES["signed"](), decoder(35, 8, 0))
    assert signed.mean_pair_cosine < 0 < signed.max_pair_cosine  # negative correlations are counted, not clamped


@pytest.mark.parametrize("case", list(CASES))
def test_batching_and_input_forms_give_the_same_report(case):
    acts = CASES[case]()
    n = acts.shape[1]
    W = decoder(n, 6, seed=7)
    kw = dict(top_pairs=30, p=0.05, rare_thresholds=RARE)
    one = disentanglement_diagnostics(acts, W, **kw).to_dict()
    sizes = [1, 7, 30, acts.shape[0] - 38]
    cuts = torch.split(acts, 13)
    forms = {
        "sparse_pair": sparse_rows(acts),
        "list_of_dense": list(cuts),
        "generator_of_sparse": (sparse_rows(c) for c in cuts),
        "mixed": [cuts[0], sparse_rows(cuts[1]), *[sparse_rows(c) for c in cuts[2:]]],
        "uneven": list(torch.split(acts, sizes)),
        "3d": acts.reshape(2, -1, n) if acts.shape[0] % 2 == 0 else acts[None],
        "tiny_chunks": acts,
    }
    for name, form in forms.items():
        extra = {"products_per_chunk": 5} if name == "tiny_chunks" else {}
        got = disentanglement_diagnostics(form, W, **kw, **extra).to_dict()
        assert got.keys() == one.keys()
        for key, value in one.items():
            if key == "top_pairs":
                assert [(t["i"], t["j"]) for t in got[key]] == [(t["i"], t["j"]) for t in value], name
                assert [t["corr"] for t in got[key]] == pytest.approx([t["corr"] for t in value], rel=1e-12), name
            else:
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (name, key)


def test_topk_values_and_indices_are_accepted_directly():
    acts = topk_acts(50, 30, 5, seed=5)
    W = decoder(30, 4, 1)
    ref = disentanglement_diagnostics(acts, W).to_dict()
    got = disentanglement_diagnostics(acts.topk(5, dim=1), W).to_dict()  # torch.return_types.topk
    assert [(t["i"], t["j"]) for t in got["top_pairs"]] == [(t["i"], t["j"]) for t in ref["top_pairs"]]
    assert [t["corr"] for t in got["top_pairs"]] == pytest.approx([t["corr"] for t in ref["top_pairs"]], rel=1e-12)
    assert got["mean_pair_cosine"] == pytest.approx(ref["mean_pair_cosine"], rel=1e-12)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (7, 64), (64, 7), (256, 1024)])
def test_tiled_decoder_scan_equals_brute_force(rows, cols):
    W = decoder(50, 6, seed=9)
    W[13] = 0.0  # a zero row: cosine 0 with everything
    W[20] = 2.0 * W[30]
    normed = torch.where(W.norm(dim=1, keepdim=True) > 0, W / W.norm(dim=1, keepdim=True).clamp_min(1e-30), 0.0)
    cos = (normed @ normed.T).abs().fill_diagonal_(0.0)
    ours = decoder_max_cosine(W, rows, col_chunk=cols)
    assert torch.allclose(ours, cos.max(1).values, atol=1e-6)
    assert ours[13].item() == 0.0 and ours[20].item() == pytest.approx(1.0)
    assert decoder_max_cosine(W[:1]).tolist() == [0.0]


# --- known answers -------------------------------------------------------------------------------------------------


def test_identical_latent_columns_give_max_cosine_one_with_their_ids():
    acts = topk_acts(80, 20, 3, seed=6)
    acts[:, 13] = 2.5 * acts[:, 4]  # the same latent column up to scale: C_{4,13} = 1
    rep = disentanglement_diagnostics(acts, torch.eye(20), top_pairs=3)
    assert rep.max_pair_cosine == pytest.approx(1.0, abs=1e-12)
    i, j, c = rep.top_pairs[0]
    assert (i, j) == (4, 13) and c == pytest.approx(1.0, abs=1e-12)
    assert rep.top_pairs[1][2] < 1 - 1e-6


def test_orthogonal_decoder_has_no_near_duplicates_and_a_duplicated_row_is_counted():
    acts = topk_acts(40, 16, 2, seed=7)
    eye = torch.eye(16)
    rep = disentanglement_diagnostics(acts, eye)
    assert rep.near_dup_frac == {0.8: 0.0, 0.9: 0.0}
    assert rep.decoder_max_cos_max == 0.0 and rep.decoder_max_cos_mean == 0.0
    dup = eye.clone()
    dup[9] = -0.5 * dup[2]  # rows 2 and 9 anti-parallel: |cos| = 1 for both
    dup[5] = torch.nn.functional.normalize(dup[5] + 0.6 * dup[6], dim=0)  # |cos(d5, d6)| = 0.51: not near
    rep = disentanglement_diagnostics(acts, dup, near_dup_thresholds=(0.5, 0.8, 0.9))
    assert rep.near_dup_frac == {0.5: 4 / 16, 0.8: 2 / 16, 0.9: 2 / 16}
    assert rep.decoder_max_cos[2].item() == pytest.approx(1.0) and rep.decoder_max_cos[9].item() == pytest.approx(1.0)
    d = rep.to_dict()
    assert d["decoder_near_dup_frac_gt0.8"] == 2 / 16 and d["decoder_max_cos_max"] == pytest.approx(1.0)


def test_features_that_never_cofire():
    """One feature per token: no pair co-fires, every C is 0."""
    acts = torch.zeros(30, 10)
    acts[torch.arange(30), torch.arange(30) % 7] = torch.rand(30) + 0.1  # features 7..9 dead
    rep = disentanglement_diagnostics(acts, decoder(10, 4, 0), p=0.1)
    assert rep.mean_pair_cosine == 0.0 and rep.max_pair_cosine == 0.0 and rep.std_pair_cosine == 0.0
    assert rep.cofiring_pairs == 0 and rep.top_pairs == [] and rep.top_p_selected == 0
    assert rep.top_p_pairs == math.ceil(0.1 * 45)
    assert rep.dead_frac == pytest.approx(0.3)
    assert rep.rare_frac == {1e-5: 0.0, 1e-4: 0.0}  # 30 tokens cannot resolve such frequencies
    assert rep.min_resolvable_frequency == pytest.approx(1 / 30)


def test_all_pairs_cofiring_gives_one():
    acts = torch.rand(25, 6) + 0.5  # everything fires everywhere
    rep = disentanglement_diagnostics(acts, decoder(6, 3, 0))
    assert rep.cofiring_pairs == 15 and rep.cofiring_pair_frac == 1.0
    assert rep.mean_cofiring_partners == 5.0 and rep.max_cofiring_partners == 5


def test_to_dict_is_json_ready():
    import json

    rep = disentanglement_diagnostics(topk_acts(40, 20, 3, seed=8), decoder(20, 5, 0), top_pairs=4)
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) >= {
        "mean_pair_cosine",
        "max_pair_cosine",
        "decoder_near_dup_frac_gt0.8",
        "decoder_near_dup_frac_gt0.9",
        "dead_frac",
        "rare_frac_lt1e-05",
        "rare_frac_lt0.0001",
        "decoder_max_cos_q50",
        "decoder_max_cos_q99",
        "cofiring_pair_frac",
        "mean_cofiring_partners",
    }
    assert all(isinstance(v, (int, float)) or v is None for k, v in d.items() if k != "top_pairs")
    assert len(d["top_pairs"]) == 4 and set(d["top_pairs"][0]) == {"i", "j", "corr"}


def test_invalid_inputs_are_rejected():
    W = decoder(10, 3, 0)
    with pytest.raises(ValueError, match="features"):
        disentanglement_diagnostics(torch.rand(5, 11), W)
    with pytest.raises(ValueError, match="twice"):
        disentanglement_diagnostics((torch.ones(2, 2), torch.tensor([[1, 1], [2, 3]])), W)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        disentanglement_diagnostics((torch.ones(1, 2), torch.tensor([[1, 10]])), W)
    with pytest.raises(TypeError):
        disentanglement_diagnostics(["not a batch"], W)


# --- scale ---------------------------------------------------------------------------------------------------------


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def test_d_sae_65536_runs_without_an_n_by_n_matrix():
    """d_sae = 65,536 (an n x n float32 matrix alone would be 16 GiB): TopK acts on 4,096 tokens in batches."""
    n, d_in, k, n_tokens, batch = 65_536, 16, 32, 4_096, 1_024
    g = torch.Generator().manual_seed(0)
    W = torch.randn(n, d_in, generator=g)
    W[1] = W[0]  # one exact duplicate pair

    def batches():
        for _ in range(n_tokens // batch):
            # k distinct features per token among every 8th one: 7/8 of the features are dead
            idx = torch.rand(batch, n // 8, generator=g).topk(k, dim=1).indices * 8
            yield torch.rand(batch, k, generator=g) + 0.01, idx

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machines are shared 2-core boxes: one thread is the fastest there
    try:
        measured = _reset_peak()
        before = _vm_hwm_kib()
        t0 = time.perf_counter()
        rep = disentanglement_diagnostics(batches(), W, top_pairs=5)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    peak = _vm_hwm_kib()
    d = rep.to_dict()
    assert all(math.isfinite(v) for key, v in d.items() if isinstance(v, float))
    assert rep.n_tokens == n_tokens and rep.d_sae == n
    assert 0 < rep.mean_pair_cosine < rep.max_pair_cosine <= 1
    assert rep.cofiring_pairs > 0 and len(rep.top_pairs) == 5
    assert rep.dead_frac == pytest.approx(7 / 8, abs=1e-3)
    assert rep.near_dup_frac[0.9] >= 2 / n and rep.decoder_max_cos[:2].tolist() == pytest.approx([1.0, 1.0])
    print(
        f"\nd_sae=65536: {elapsed:.2f} s"
        + (f", peak RSS growth {(peak - before) / 1024:.0f} MiB" if measured and peak and before else "")
    )
    if measured and peak is not None and before is not None:
        assert (peak - before) < 1024 * 1024  # < 1 GiB (an n x n float32 matrix would be 16 GiB)
