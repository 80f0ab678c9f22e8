"""The seed mechanisms as wired into the adapter: each config option changes the step the way it should."""

import dataclasses
import json

import pytest
import torch
from reference import correlation_matrix
from sae_lens import SAE
from sae_lens.saes.sae import TrainStepInput
from seed_defaults import SEED_DEFAULTS

from sae_lens_ortho import (
    BatchTopKOrthoTrainingSAE,
    BatchTopKOrthoTrainingSAEConfig,
    StandardOrthoTrainingSAE,
    StandardOrthoTrainingSAEConfig,
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
)
from sae_lens_ortho.core.grouping import grouped_decoder_penalty


def coefficients(sae) -> dict[str, float]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}


def step(sae, x: torch.Tensor, n: int = 0, logging: bool = True):
    out = sae.training_forward_pass(TrainStepInput(x, coefficients(sae), None, n, logging))
    out.loss.backward()
    return out


X = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))


def topk(**kw) -> TopKOrthoTrainingSAE:
    torch.manual_seed(0)
    return TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=16, d_sae=64, k=4, **{**SEED_DEFAULTS, **kw}))


@pytest.mark.parametrize("target,direction", [(1e6, "up"), (1e-6, "down")])
def test_recon_adaptive_strength_follows_the_reconstruction_loss(target, direction):
    sae = topk(ortho_adaptive="recon", ortho_target_recon_loss=target, ortho_strength_init=0.05)
    out = step(sae, X)
    # Seed 001: tau <- clip(tau * L_target / L_recon, 0.01, 0.2): recon far below target -> max, far above -> min.
    assert sae.ortho_strength.item() == pytest.approx(0.2 if direction == "up" else 0.01)
    assert out.losses["ortho_loss"].item() == pytest.approx(0.05 * out.metrics["ortho_penalty"].item(), rel=1e-5)


@pytest.mark.parametrize("target,expected", [(0.01, "up"), (1.0, "down")])
def test_momentum_strength_rises_with_correlation_above_target(target, expected):
    sae = topk(
        ortho_adaptive="momentum",
        ortho_target_corr=target,
        ortho_strength_init=0.1,
        ortho_strength_max=0.5,
        ortho_pair_fraction=0.01,
    )
    out = step(sae, X)
    cbar = out.metrics["ortho_selected_corr_mean"].item()
    assert 0 < cbar < 1
    want = min(max(0.9 * 0.1 + 0.1 * 0.1 * cbar / target, 0.01), 0.5)
    assert sae.ortho_strength.item() == pytest.approx(want, rel=1e-5)
    assert (sae.ortho_strength.item() > 0.1) == (expected == "up")


def test_threshold_adaptive_hinge_uses_mean_plus_std_of_all_pairs():
    sae = topk(ortho_adaptive="threshold", ortho_weighting="hinge", ortho_pair_fraction=0.02)
    out = step(sae, X)
    with torch.no_grad():
        acts = sae.encode(X)
    c = correlation_matrix(acts)
    iu = torch.triu_indices(64, 64, 1)
    upper = c[iu[0], iu[1]]
    tau = upper.mean() + upper.std(unbiased=False)
    assert out.metrics["ortho_tau"].item() == pytest.approx(tau.item(), rel=1e-5)
    top = upper.sort(descending=True).values[: out.metrics["ortho_selected_pairs"].item()]
    assert out.metrics["ortho_penalty"].item() == pytest.approx((top - tau).clamp_min(0).mean().item(), rel=1e-4)


def test_zscore_filter_keeps_only_pairs_above_mean_plus_z_std():
    sae = topk(ortho_pair_filter="zscore", ortho_z=2.0, ortho_min_pairs=300, ortho_pair_fraction=0.001)
    out = step(sae, X)
    with torch.no_grad():
        acts = sae.encode(X)
    upper = correlation_matrix(acts)[tuple(torch.triu_indices(64, 64, 1))]
    threshold = upper.mean() + 2 * upper.std(unbiased=False)
    expected = int((upper.sort(descending=True).values[:300] > threshold).sum())
    assert 0 < expected < 300
    assert int(out.metrics["ortho_selected_pairs"]) == expected


def test_decoder_coefficient_anneals_from_start_to_target():
    sae = topk(ortho_decoder_coefficient=0.5, ortho_decoder_start=1.0, ortho_decoder_warm_up_steps=4)
    seen = []
    for n in range(6):
        out = step(sae, X, n)
        seen.append(round(out.metrics["ortho_decoder_coefficient"].item(), 6))
        assert out.losses["decoder_ortho_loss"].item() == pytest.approx(
            seen[-1] * out.metrics["ortho_decoder_penalty"].item(), rel=1e-5
        )
    assert seen == [1.0, 0.875, 0.75, 0.625, 0.5, 0.5]


def test_grouped_decoder_penalty_groups_by_ema_centroids():
    sae = topk(ortho_decoder_coefficient=1.0, ortho_decoder_penalty="grouped", ortho_groups=4)
    before = sae.ortho_centroids.clone()
    out = step(sae, X)
    sizes = [int(out.metrics[f"ortho_group_size_{g}"]) for g in range(4)]
    assert sum(sizes) == 64
    assert not torch.equal(before, sae.ortho_centroids)  # EMA moved
    # The penalty is the within-group sum for the assignment by the centroids used this step.
    normed_c = before / before.norm(dim=1, keepdim=True)
    assignment = (sae.W_dec.detach() @ normed_c.T).argmax(1)  # weights unchanged: no optimizer step here
    assert torch.bincount(assignment, minlength=4).tolist() == sizes
    want = grouped_decoder_penalty(sae.W_dec.detach(), assignment, 4, "mean")
    assert out.metrics["ortho_decoder_penalty"].item() == pytest.approx(want.item(), rel=1e-5)


def test_chunk_max_decoder_penalty_is_a_mean_squared_cosine():
    sae = topk(ortho_decoder_coefficient=1.0, ortho_decoder_penalty="chunk_max", ortho_decoder_chunks=2)
    out = step(sae, X)
    value = out.metrics["ortho_decoder_penalty"].item()
    assert 0 < value <= 1
    assert sae.W_dec.grad is not None and torch.isfinite(sae.W_dec.grad).all()


def standard(**kw) -> StandardOrthoTrainingSAE:
    torch.manual_seed(0)
    return StandardOrthoTrainingSAE(
        StandardOrthoTrainingSAEConfig(d_in=16, d_sae=64, ortho_method="dense", **{**SEED_DEFAULTS, **kw})
    )


def test_unit_norm_decoder_projects_rows_and_saves_the_same_function(tmp_path):
    sae = standard(ortho_unit_norm_decoder=True)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    for n in range(3):
        step(sae, X, n)
        opt.step()
        opt.zero_grad()
    norms_after_update = sae.W_dec.norm(dim=1)
    assert not torch.allclose(norms_after_update, torch.ones(64), atol=1e-4)  # the update moved them
    step(sae, X, 3, logging=False)  # the next step starts by projecting back
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    opt.step()
    with torch.no_grad():
        expected = sae(X)
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "standard"
    with torch.no_grad():
        assert torch.allclose(loaded(X), expected, atol=1e-5)
    assert torch.allclose(loaded.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("target,direction", [(0.01, "up"), (0.9, "down")])
def test_adaptive_l1_moves_toward_the_target_rate(target, direction):
    sae = standard(l1_coefficient=0.05, ortho_l1_target_rate=target, ortho_l1_step_size=0.5)
    out = step(sae, X)
    rate = (out.feature_acts != 0).float().mean().item()
    want = min(max(0.05 * (rate / target) ** 0.5, 0.01), 0.2)
    assert sae.ortho_l1.item() == pytest.approx(want, rel=1e-5)
    assert (sae.ortho_l1.item() > 0.05) == (direction == "up")


def test_adaptive_l1_needs_an_l1_architecture():
    with pytest.raises(ValueError, match="ortho_l1_target_rate needs an architecture with an L1 coefficient"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_l1_target_rate=0.1)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("ortho_adaptive", "threshold", "needs ortho_weighting='hinge'"),
        ("ortho_target_corr", 0.0, r"ortho_target_corr must be a finite number in \(0, 1\]"),
        ("ortho_momentum", 1.0, r"ortho_momentum must be a finite number in \[0, 1\)"),
        ("ortho_groups", 0, "ortho_groups must be an integer >= 1"),
        ("ortho_competition_gamma", 1.0, r"ortho_competition_gamma must be a finite number in \[0, 1\)"),
        ("ortho_competition_radius", 0, "ortho_competition_radius must be an integer >= 1"),
        ("ortho_competition_threshold", 1.5, r"ortho_competition_threshold must be a finite number in \[0, 1\]"),
        ("ortho_manage_every", -1, "ortho_manage_every must be an integer >= 0"),
        ("ortho_importance_decay", 1.0, r"ortho_importance_decay must be a finite number in \[0, 1\)"),
        ("ortho_realloc_steps", 0, "ortho_realloc_steps must be an integer >= 1"),
        ("ortho_prune_threshold", 0.0, r"ortho_prune_threshold must be a finite number in \(0, 1\]"),
        ("ortho_prune_protect_quantile", 1.5, r"ortho_prune_protect_quantile must be a finite number in \[0, 1\]"),
        ("ortho_decoder_penalty", "svd", "ortho_decoder_penalty must be one of gram, grouped, chunk_max"),
        ("ortho_pair_filter", "all", "ortho_pair_filter must be one of top_fraction, zscore"),
        ("ortho_min_pairs", -1, "ortho_min_pairs must be an integer >= 0"),
        ("ortho_strength_init", 0.5, r"ortho_strength_init must be a finite number in \[0.01, 0.2\]"),
        ("ortho_decoder_start", -1.0, "ortho_decoder_start"),
    ],
)
def test_mechanism_fields_are_validated(field, value, message):
    if field.startswith(("ortho_competition_", "ortho_encoder_")):  # fields of standard_ortho only
        make = lambda **kw: StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16, **kw)  # noqa: E731
    else:
        make = lambda **kw: TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **kw)  # noqa: E731
    with pytest.raises(ValueError, match=message):
        make(**{field: value})


@pytest.mark.parametrize("field", ["ortho_competition_gamma", "ortho_encoder_layer_norm"])
def test_encoder_fields_live_on_standard_ortho_only(field):
    """They change the encoder, which only standard_ortho has: other twins' configs (and --help) lack them."""
    with pytest.raises(TypeError, match=field):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **{field: 0.3})
    assert field in {f.name for f in dataclasses.fields(StandardOrthoTrainingSAEConfig)}
    assert field not in {f.name for f in dataclasses.fields(TopKOrthoTrainingSAEConfig)}


def test_group_count_is_bounded_by_d_sae_only_when_grouping():
    with pytest.raises(ValueError, match=r"ortho_groups must be an integer in \[1, d_sae=16\]"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_groups=17, ortho_decoder_penalty="grouped")
    assert TopKOrthoTrainingSAEConfig(d_in=8, d_sae=4, k=2).ortho_groups == 8  # gram penalty: groups unused


def test_unit_norm_decoder_on_topk_needs_rescaling_by_decoder_norm(tmp_path):
    with pytest.raises(ValueError, match="ortho_unit_norm_decoder=True needs rescale_acts_by_decoder_norm=True"):
        TopKOrthoTrainingSAEConfig(
            d_in=8, d_sae=16, k=2, ortho_unit_norm_decoder=True, rescale_acts_by_decoder_norm=False
        )
    sae = topk(ortho_unit_norm_decoder=True)  # rescaling on (the default): trains and saves
    step(sae, X)
    sae.save_inference_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "topk"


def test_recon_needs_a_target():
    with pytest.raises(ValueError, match=r"ortho_target_recon_loss must be a finite number in \(0, inf\)"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_adaptive="recon")


def test_adaptive_state_survives_checkpoint_round_trip(tmp_path):
    kw = dict(
        ortho_adaptive="momentum",
        ortho_target_corr=0.01,
        ortho_decoder_penalty="grouped",
        ortho_decoder_coefficient=0.1,
        ortho_groups=4,
    )
    sae = topk(**kw)
    for n in range(3):
        step(sae, X, n)
    sae.save_model(tmp_path)  # what SAELens's checkpoints call
    fresh = topk(**kw)
    fresh.load_weights_from_checkpoint(tmp_path)  # what SAELens's resume calls
    for name in ("ortho_strength", "ortho_centroids", "ortho_step", "ortho_prev_pair_keys"):
        assert torch.equal(getattr(fresh, name), getattr(sae, name)), name
    assert fresh.ortho_step.item() == 3 and fresh.ortho_strength.item() != 0.05


def test_batchtopk_ortho_saves_as_jumprelu(tmp_path):
    torch.manual_seed(0)
    sae = BatchTopKOrthoTrainingSAE(BatchTopKOrthoTrainingSAEConfig(d_in=16, d_sae=64, k=4, ortho_coefficient=1.0))
    out = step(sae, X)
    assert out.losses["ortho_loss"].item() > 0
    sae.save_inference_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    assert cfg["metadata"]["training_architecture"] == "batchtopk_ortho"
    assert type(SAE.load_from_disk(tmp_path)).__name__ == "JumpReLUSAE"
