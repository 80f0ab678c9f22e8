"""Which latents the pair penalty may select. The firing-rate gate (``ortho_gate_firing_rate``,
saes/mechanisms/firing_gate.py): its EMA against a loop, and on a real ``topk_ortho`` SAE, that a gated latent is
never in a selected pair (activation and decoder selection) while the same SAE without the gate does select it.
The inner-levels filter (``ortho_inner_levels_only``, inner_levels.py) the same way on ``matryoshka_batchtopk_ortho``,
alone and with the gate."""

from __future__ import annotations

import pytest
import torch
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import TrainStepInput

from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig
from sae_lens_ortho.core.pairs import top_decoder_pairs
from sae_lens_ortho.core.penalties import selected_decoder_cosines
from sae_lens_ortho.core.schedules import firing_rate_ema

X = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))
N = 48


def _sae(**kw) -> TopKOrthoTrainingSAE:
    torch.manual_seed(0)
    cfg = dict(d_in=16, d_sae=N, k=4, ortho_coefficient=1.0, ortho_pair_fraction=0.02, ortho_scale="none")
    return TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(**{**cfg, **kw}))


def _step(sae, x=X):
    return sae.training_forward_pass(TrainStepInput(x, {"ortho": 1.0, "decoder_ortho": 0.0}, None, 0, True))


def _buf(sae, name: str) -> torch.Tensor:
    """A mechanism buffer (typed: the SAE module's attributes read as Tensor | Module)."""
    buffer = getattr(sae, name)
    assert isinstance(buffer, torch.Tensor)
    return buffer


def _selected_latents(sae) -> set[int]:
    keys = _buf(sae, "ortho_prev_pair_keys")
    keys = keys[keys >= 0]
    return set((keys // N).tolist()) | set((keys % N).tolist())


def test_firing_rate_ema_matches_a_loop_and_ignores_a_non_finite_batch():
    g = torch.Generator().manual_seed(1)
    rates = torch.rand(5, generator=g)
    acts = torch.relu(torch.randn(7, 5, generator=g))
    want = rates.clone()
    for i in range(5):
        fired = sum(1 for r in range(7) if acts[r, i] != 0) / 7
        want[i] = 0.9 * rates[i] + 0.1 * fired
    assert torch.allclose(firing_rate_ema(rates, acts, 0.9), want)
    bad = acts.clone()
    bad[2, 3] = float("nan")
    assert torch.equal(firing_rate_ema(rates, bad, 0.9), rates)
    assert torch.equal(firing_rate_ema(rates, acts[:0], 0.9), rates)  # an empty batch measures nothing


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_gated_latents_are_never_selected(method: str):
    ungated = _sae(ortho_method=method)
    _step(ungated)
    chosen = sorted(_selected_latents(ungated))
    assert len(chosen) >= 4
    gated_out = chosen[: len(chosen) // 2]  # latents the ungated selection did pick

    sae = _sae(ortho_method=method, ortho_gate_firing_rate=0.5)
    with torch.no_grad():
        _buf(sae, "ortho_firing_rate").fill_(1.0)
        _buf(sae, "ortho_firing_rate")[gated_out] = 0.49
    _step(sae)
    picked = _selected_latents(sae)
    assert picked, "the established latents still have pairs to select"
    assert not picked & set(gated_out)


def test_sparse_and_dense_selections_agree_under_the_gate():
    picks = []
    for method in ("sparse", "dense"):
        sae = _sae(ortho_method=method, ortho_gate_firing_rate=0.5)
        with torch.no_grad():
            _buf(sae, "ortho_firing_rate").fill_(1.0)
            _buf(sae, "ortho_firing_rate")[::3] = 0.0
        _step(sae)
        keys = _buf(sae, "ortho_prev_pair_keys")
        picks.append(set(keys[keys >= 0].tolist()))
    assert picks[0] == picks[1]


def test_decoder_selection_drops_pairs_with_a_gated_latent():
    kw = dict(ortho_select_by="decoder", ortho_target="decoder", ortho_weighting="squared")
    sae = _sae(**kw, ortho_gate_firing_rate=0.5)
    gated = torch.ones(N, dtype=torch.bool)
    gated[::2] = False
    with torch.no_grad():
        _buf(sae, "ortho_firing_rate").copy_(gated.float())
    out = _step(sae)
    keys = top_decoder_pairs(sae.W_dec.detach(), _buf(sae, "ortho_decoder_pair_keys").numel(), 512)
    keys = keys[keys >= 0]
    keep = keys[gated[keys // N] & gated[keys % N]]
    assert 0 < keep.numel() < keys.numel()
    want = selected_decoder_cosines(sae.W_dec.detach(), keep).pow(2).mean()
    assert torch.allclose(out.losses["ortho_loss"].detach(), want, rtol=1e-5)


def test_the_rates_follow_the_batches_and_start_at_zero():
    sae = _sae(ortho_gate_firing_rate=0.01, ortho_gate_decay=0.9)
    assert torch.equal(_buf(sae, "ortho_firing_rate"), torch.zeros(N))
    out = _step(sae)
    fired = (out.feature_acts.detach() != 0).float().mean(0)
    assert torch.allclose(_buf(sae, "ortho_firing_rate"), 0.1 * fired)
    assert out.metrics["ortho_gate_established_fraction"] == (0.1 * fired >= 0.01).float().mean()


@pytest.mark.parametrize(
    ("field", "value"), [("ortho_gate_firing_rate", -0.1), ("ortho_gate_firing_rate", 1.5), ("ortho_gate_decay", 1.0)]
)
def test_bad_values_name_the_field(field: str, value: float):
    with pytest.raises(ValueError, match=field):
        _sae(**{field: value})


def _matryoshka(**kw):
    sae_cls, cfg_cls = SAE_TRAINING_CLASS_REGISTRY["matryoshka_batchtopk_ortho"]
    torch.manual_seed(0)
    cfg = dict(d_in=16, d_sae=N, k=4, matryoshka_widths=[8, 24, N], ortho_coefficient=1.0, ortho_pair_fraction=0.02)
    return sae_cls(cfg_cls(**{**cfg, **kw}))


def test_inner_levels_only_selects_latents_below_the_last_inner_width():
    plain = _matryoshka()
    _step(plain)
    assert max(_selected_latents(plain)) >= 24, "without the filter the outer level's latents are selected"
    inner = _matryoshka(ortho_inner_levels_only=True)
    _step(inner)
    assert _selected_latents(inner) and max(_selected_latents(inner)) < 24


def test_inner_levels_and_the_gate_both_apply():
    sae = _matryoshka(ortho_inner_levels_only=True, ortho_gate_firing_rate=0.5)
    with torch.no_grad():
        _buf(sae, "ortho_firing_rate").fill_(1.0)
        _buf(sae, "ortho_firing_rate")[::2] = 0.0
    _step(sae)
    picked = _selected_latents(sae)
    assert picked and max(picked) < 24 and all(i % 2 for i in picked)


def test_inner_levels_only_needs_an_inner_level():
    with pytest.raises(ValueError, match="ortho_inner_levels_only"):
        _matryoshka(matryoshka_widths=[N], ortho_inner_levels_only=True)


def test_inner_levels_only_refuses_an_architecture_without_levels():
    with pytest.raises(ValueError, match="ortho_inner_levels_only needs a Matryoshka"):
        _sae(ortho_inner_levels_only=True)


def test_the_model_card_names_both_filters():
    from sae_lens_ortho.describe import describe_ortho

    lines = describe_ortho({"ortho_coefficient": 0.1, "ortho_gate_firing_rate": 0.002, "ortho_inner_levels_only": True})
    assert any("EMA firing rate ≥ 0.002 (decay 0.99)" in line for line in lines)
    assert any("inner Matryoshka levels" in line for line in lines)
    assert not any("firing rate" in line or "inner" in line for line in describe_ortho({"ortho_coefficient": 0.1}))
