"""Config validation at construction, registration, and the generic add_ortho mechanism."""

import math

import pytest
import torch
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE
from sae_lens.saes.sae import TrainStepInput
from seed_defaults import SEED_DEFAULTS

import sae_lens_ortho
from sae_lens_ortho import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig, add_ortho

BAD_VALUES = [
    ("ortho_coefficient", -0.1, r"ortho_coefficient must be a finite number in \[0, 1000000.0\]"),
    ("ortho_coefficient", math.nan, "ortho_coefficient"),
    ("ortho_coefficient", math.inf, "ortho_coefficient"),
    ("ortho_decoder_coefficient", -1.0, r"ortho_decoder_coefficient must be a finite number in \[0, 1000000.0\]"),
    ("ortho_pair_fraction", 0.0, r"ortho_pair_fraction must be a finite number in \(0, 1\]"),
    ("ortho_pair_fraction", 1.5, r"ortho_pair_fraction must be a finite number in \(0, 1\]"),
    ("ortho_pair_fraction", -0.01, "ortho_pair_fraction"),
    ("ortho_warm_up_steps", -1, "ortho_warm_up_steps must be an integer >= 0"),
    ("ortho_warm_up_steps", 2.5, "ortho_warm_up_steps must be an integer >= 0"),
    ("ortho_warm_up_steps", True, "ortho_warm_up_steps must be an integer >= 0"),
    ("ortho_chunk_size", 0, "ortho_chunk_size must be an integer >= 1"),
    ("ortho_weighting", "cubic", "ortho_weighting must be one of abs, squared, hinge, scaled"),
    ("ortho_tau", 1.5, r"ortho_tau must be a finite number in \[0, 1\]"),
    ("ortho_decoder_reduction", "max", "ortho_decoder_reduction must be one of mean, sum"),
    ("ortho_method", "magic", "ortho_method must be one of auto, sparse, dense"),
]


@pytest.mark.parametrize("field,value,message", BAD_VALUES)
def test_bad_values_raise_at_construction(field, value, message):
    with pytest.raises(ValueError, match=message):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **{field: value})


def test_scaled_weighting_needs_positive_tau():
    with pytest.raises(ValueError, match=r"ortho_tau must be a finite number in \(0, 1\]"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_weighting="scaled", ortho_tau=0.0)


def test_good_config_round_trips_through_dict():
    cfg = TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_coefficient=0.3, ortho_pair_fraction=0.01)
    again = TopKOrthoTrainingSAEConfig.from_dict(cfg.to_dict())
    assert again == cfg and type(again) is TopKOrthoTrainingSAEConfig
    assert cfg.to_dict()["architecture"] == "topk_ortho"
    inference = cfg.get_inference_sae_cfg_dict()
    assert inference["architecture"] == "topk"
    assert "ortho_coefficient" not in inference
    assert inference["metadata"]["training_architecture_details"]["ortho_coefficient"] == 0.3


def test_registered_at_import_and_idempotent():
    assert get_sae_training_class("topk_ortho") == (TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig)
    sae_lens_ortho.register_training_architecture("topk_ortho", TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig)
    with pytest.raises(ValueError, match="already registered"):
        sae_lens_ortho.register_training_architecture("topk_ortho", JumpReLUTrainingSAE, TopKOrthoTrainingSAEConfig)
    assert SAE_TRAINING_CLASS_REGISTRY["topk_ortho"][0] is TopKOrthoTrainingSAE


def test_add_ortho_turns_jumprelu_into_a_registered_ortho_architecture():
    sae_cls, cfg_cls = add_ortho("jumprelu")
    assert add_ortho("jumprelu")[0] is sae_cls  # the twin registered at import; asking again does not raise
    assert get_sae_training_class("jumprelu_ortho")[1] is cfg_cls
    named, named_cfg = add_ortho("jumprelu", "jumprelu_test_ortho", defaults={"ortho_coefficient": 0.25})
    assert named_cfg(d_in=8, d_sae=16).ortho_coefficient == 0.25  # per-architecture defaults
    assert get_sae_training_class("jumprelu_test_ortho")[0] is named
    with pytest.raises(ValueError, match="unknown ortho field"):
        add_ortho("jumprelu", "jumprelu_bad_ortho", defaults={"ortho_nonsense": 1})
    with pytest.raises(ValueError, match="ortho_pair_fraction"):
        cfg_cls(d_in=8, d_sae=16, ortho_pair_fraction=2.0)
    cfg = cfg_cls(d_in=8, d_sae=16, ortho_coefficient=1.0, ortho_decoder_coefficient=1.0, ortho_method="dense")
    assert cfg.get_inference_sae_cfg_dict()["architecture"] == "jumprelu"
    sae = sae_cls(cfg)
    assert isinstance(sae, JumpReLUTrainingSAE)
    x = torch.randn(64, 8)
    out = sae.training_forward_pass(
        TrainStepInput(
            sae_in=x,
            coefficients=sae_coefficients(sae),
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=True,
        )
    )
    assert {"mse_loss", "ortho_loss", "decoder_ortho_loss"} <= set(out.losses)
    assert out.losses["decoder_ortho_loss"].item() > 0
    assert "ortho_mean_pair_cosine" in out.metrics
    out.loss.backward()
    assert torch.isfinite(sae.W_enc.grad).all()


def sae_coefficients(sae) -> dict[str, float]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}


def test_topk_ortho_step_adds_losses_and_logs_only_on_logging_steps():
    cfg = TopKOrthoTrainingSAEConfig(
        d_in=16, d_sae=64, k=4, ortho_decoder_coefficient=0.2, **{**SEED_DEFAULTS, "ortho_coefficient": 0.5}
    )
    sae = TopKOrthoTrainingSAE(cfg)
    x = torch.randn(32, 16)
    coefficients = {"ortho": 0.5, "decoder_ortho": 0.2}
    quiet = sae.training_forward_pass(TrainStepInput(x, coefficients, None, 0, is_logging_step=False))
    loud = sae.training_forward_pass(TrainStepInput(x, coefficients, None, 1, is_logging_step=True))
    assert quiet.metrics == {}
    assert {"ortho_selected_pairs", "ortho_pair_jaccard", "ortho_decoder_penalty"} <= set(loud.metrics)
    assert loud.metrics["ortho_pair_jaccard"].item() == 1.0  # same batch, same weights: same pairs
    assert loud.losses["ortho_loss"].item() == pytest.approx(0.5 * loud.metrics["ortho_penalty"].item())
    assert int(sae.ortho_step) == 2


def test_zero_coefficient_skips_the_penalty():
    cfg = TopKOrthoTrainingSAEConfig(d_in=16, d_sae=64, k=4, ortho_coefficient=0.0)
    sae = TopKOrthoTrainingSAE(cfg)
    out = sae.training_forward_pass(
        TrainStepInput(torch.randn(8, 16), {"ortho": 0.0, "decoder_ortho": 0.0}, None, 0, False)
    )
    assert out.losses["ortho_loss"].item() == 0.0 and not out.losses["ortho_loss"].requires_grad


def test_untrained_sae_refuses_to_save(tmp_path):
    sae = TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match="took no training step"):
        sae.save_inference_model(tmp_path / "final")
    assert not (tmp_path / "final" / "cfg.json").exists()


def test_topk_ortho_sparse_and_dense_paths_give_the_same_step():
    """The captured-TopK sparse path and the dense scan are two exact algorithms for one loss."""
    results = {}
    for method in ("sparse", "dense"):
        torch.manual_seed(0)
        cfg = TopKOrthoTrainingSAEConfig(
            d_in=16, d_sae=96, k=6, ortho_coefficient=0.7, ortho_pair_fraction=0.01, ortho_method=method
        )
        sae = TopKOrthoTrainingSAE(cfg)
        x = torch.randn(48, 16, generator=torch.Generator().manual_seed(1))
        out = sae.training_forward_pass(TrainStepInput(x, {"ortho": 0.7, "decoder_ortho": 0.0}, None, 0, True))
        out.loss.backward()
        results[method] = (out.losses["ortho_loss"].detach(), sae.W_enc.grad.clone(), out.metrics)
    (loss_s, grad_s, m_s), (loss_d, grad_d, m_d) = results["sparse"], results["dense"]
    assert loss_s.item() > 0
    assert loss_s.item() == pytest.approx(loss_d.item(), rel=1e-5)
    assert torch.allclose(grad_s, grad_d, atol=1e-6)
    assert int(m_s["ortho_selected_pairs"]) == int(m_d["ortho_selected_pairs"])
    assert float(m_s["ortho_cofire_fraction"]) == pytest.approx(float(m_d["ortho_cofire_fraction"]))


# --- edges of the config (issue 23, item 7) -----------------------------------------------------------------

FLOAT_FIELDS = [
    "ortho_coefficient",
    "ortho_pair_fraction",
    "ortho_tau",
    "ortho_decoder_coefficient",
    "ortho_z",
    "ortho_strength_init",
    "ortho_strength_max",
    "ortho_target_recon_loss",
    "ortho_decoder_start",
    "ortho_group_decay",
    "ortho_l1_step_size",
    "ortho_realloc_threshold",
]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_a_number_beyond_float_range_is_a_value_error_naming_the_field(field):
    """10**400 is an int no float can hold: math.isfinite raised OverflowError, naming nothing."""
    with pytest.raises(
        ValueError, match=rf"^{field} must be a finite number in .*got 10000000000000000000\.\.\.\(401 characters\)$"
    ):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **{field: 10**400})


def test_coefficients_that_would_overflow_the_float32_loss_are_refused():
    # 1e39 is not a float32: the loss became inf at step 0 and the guard blamed the batch.
    with pytest.raises(ValueError, match=r"ortho_coefficient must be a finite number in \[0, 1000000.0\]"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_coefficient=1e39)
    for field in ("ortho_coefficient", "ortho_decoder_coefficient", "ortho_decoder_start"):
        with pytest.raises(ValueError, match=field):
            TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **{field: 1e30})
    with pytest.raises(ValueError, match=r"ortho_target_recon_loss .* \(at most 3.4e38: it enters float32"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_target_recon_loss=1e39)
    # The largest coefficient trains with finite losses.
    cfg = TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_coefficient=1e6, ortho_decoder_coefficient=1e6)
    sae = TopKOrthoTrainingSAE(cfg)
    out = sae.training_forward_pass(
        TrainStepInput(10 * torch.randn(64, 8), {"ortho": 1e6, "decoder_ortho": 1e6}, None, 0, False)
    )
    assert torch.isfinite(out.loss) and sae.ortho_first_nonfinite_step() is None


@pytest.mark.parametrize(
    "field", ["ortho_realloc_steps", "ortho_prune_steps", "ortho_warm_up_steps", "ortho_select_every", "ortho_groups"]
)
def test_integers_beyond_the_step_counters_are_refused(field):
    with pytest.raises(ValueError, match=rf"{field} must be an integer >= \d \(at most 2,147,483,647\), got 10{{20}}"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, **{field: 10**20})


def test_realloc_steps_at_its_limit_trains():
    """ortho_realloc_steps=10**20 overflowed the int64 comparison at step 1; the largest allowed value runs."""
    from sae_lens_ortho import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig

    cfg = StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16, ortho_manage_every=1, ortho_realloc_steps=2**31 - 1)
    sae = StandardOrthoTrainingSAE(cfg)
    for step in range(2):
        sae.training_forward_pass(
            TrainStepInput(torch.randn(32, 8), {"ortho": 0.0, "decoder_ortho": 0.0, "l1": 1.0}, None, step, False)
        )


@pytest.mark.parametrize("k", [4.5, True, math.nan, "4"])
def test_k_of_topk_must_be_an_integer(k):
    with pytest.raises(ValueError, match=r"k must be an integer in \(0, d_sae=16\]"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=k)


def test_k_of_batchtopk_may_be_fractional_but_not_bool():
    from sae_lens_ortho import BatchTopKOrthoTrainingSAEConfig

    assert BatchTopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=4.5).k == 4.5  # k x batch latents are kept
    for k in (True, math.nan):
        with pytest.raises(ValueError, match=r"k must be a number in \(0, d_sae=16\]"):
            BatchTopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=k)


def test_arrays_are_refused_naming_the_field_and_0d_arrays_read_as_numbers():
    import numpy as np

    with pytest.raises(ValueError, match=r"ortho_coefficient must be a single value, got an array of shape \(2,\)"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_coefficient=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"d_sae must be a single value"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=np.array([16]), k=2)
    cfg = TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_coefficient=np.array(0.25))
    assert cfg.ortho_coefficient == 0.25 and type(cfg.ortho_coefficient) is float


def test_strength_min_above_the_default_max_names_both():
    # It used to blame ortho_strength_max, which the user never set.
    with pytest.raises(ValueError, match=r"^ortho_strength_min \(0.5\) must be <= ortho_strength_max \(0.2\)$"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_strength_min=0.5)
    TopKOrthoTrainingSAEConfig(
        d_in=8, d_sae=16, k=2, ortho_strength_min=0.5, ortho_strength_max=1.0, ortho_strength_init=0.5
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("d_in", 0, r"d_in must be an integer >= 1"),
        ("d_in", 8.0, r"d_in must be an integer >= 1"),
        ("d_sae", -4, r"d_sae must be an integer >= 1"),
        ("d_sae", "16", r"d_sae must be an integer >= 1"),
        ("dtype", "float8", r"dtype must be one of float32, float64, .*; got 'float8'"),
        ("device", "gpu", r"device must be a torch device string .*; got 'gpu'"),
        ("device", "cuda:x", r"device must be a torch device string"),
        ("device", 3, r"device must be a torch device string"),
    ],
)
def test_sae_lens_fields_are_checked_through_our_configs(field, value, message):
    kwargs = {"d_in": 8, "d_sae": 16, "k": 2, field: value}
    with pytest.raises(ValueError, match=message):
        TopKOrthoTrainingSAEConfig(**kwargs)
    twin = SAE_TRAINING_CLASS_REGISTRY["jumprelu_ortho"][1]
    kwargs.pop("k")
    with pytest.raises(ValueError, match=message):
        twin(**kwargs)
