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
    ("ortho_coefficient", -0.1, r"ortho_coefficient must be a finite number in \[0, inf\)"),
    ("ortho_coefficient", math.nan, "ortho_coefficient"),
    ("ortho_coefficient", math.inf, "ortho_coefficient"),
    ("ortho_decoder_coefficient", -1.0, r"ortho_decoder_coefficient must be a finite number in \[0, inf\)"),
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
