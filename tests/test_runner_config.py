"""``sae_lens_ortho.LanguageModelSAERunnerConfig``: the flat form (``architecture=`` plus the SAE's fields), built into
SAELens's real runner config; and presets' ``runner_config(**overrides)`` with SAE and logger fields."""

from __future__ import annotations

import dataclasses

import pytest
import sae_lens
from sae_lens import LanguageModelSAETrainingRunner, LoggingConfig
from sae_lens.saes.standard_sae import StandardTrainingSAEConfig
from tiny import HOOK, tiny_dataset, tiny_model

from sae_lens_ortho import LanguageModelSAERunnerConfig, StandardOrthoTrainingSAEConfig, TopKOrthoTrainingSAEConfig
from sae_lens_ortho.presets import PRESETS, WANDB_PROJECT


def test_the_design_cards_line_builds_saelens_own_config() -> None:
    cfg = LanguageModelSAERunnerConfig(
        architecture="topk_ortho",
        d_in=64,
        d_sae=256,
        k=8,
        ortho_coefficient=0.5,
        ortho_pair_fraction=0.01,
        model_name="tiny",
        hook_name=HOOK,
        training_tokens=4096,
        device="cpu",
        dtype="float32",
        log_to_wandb=False,
        wandb_project="p",
    )
    assert type(cfg) is sae_lens.LanguageModelSAERunnerConfig  # SAELens's class, not a subclass or a patch
    assert isinstance(cfg, LanguageModelSAERunnerConfig)
    assert type(cfg.sae) is TopKOrthoTrainingSAEConfig
    assert (cfg.sae.d_in, cfg.sae.d_sae, cfg.sae.k, cfg.sae.ortho_coefficient, cfg.sae.ortho_pair_fraction) == (
        64,
        256,
        8,
        0.5,
        0.01,
    )
    assert (cfg.model_name, cfg.hook_name, cfg.training_tokens) == ("tiny", HOOK, 4096)
    assert (cfg.logger.log_to_wandb, cfg.logger.wandb_project) == (False, "p")
    assert (cfg.device, cfg.sae.device, cfg.dtype, cfg.sae.dtype) == ("cpu", "cpu", "float32", "float32")
    # the class attributes are SAELens's: round trip through the dict form the runner writes
    again = LanguageModelSAERunnerConfig.from_dict(cfg.to_dict())
    assert type(again.sae) is TopKOrthoTrainingSAEConfig and again.sae.ortho_coefficient == 0.5
    # SAELens's own class still refuses the flat form: it was not patched
    with pytest.raises(TypeError, match="architecture"):
        sae_lens.LanguageModelSAERunnerConfig(architecture="topk_ortho")  # type: ignore[call-arg]


def test_defaults_and_other_architectures() -> None:
    assert type(LanguageModelSAERunnerConfig(d_in=8, d_sae=16, k=4).sae) is TopKOrthoTrainingSAEConfig
    cfg = LanguageModelSAERunnerConfig("standard", d_in=8, d_sae=16, l1_coefficient=2.0)
    assert type(cfg.sae) is StandardTrainingSAEConfig and cfg.sae.l1_coefficient == 2.0
    given = StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16, ortho_coefficient=0.1)
    cfg = LanguageModelSAERunnerConfig(sae=given, ortho_coefficient=0.7, lr=1e-3)
    assert cfg.sae.ortho_coefficient == 0.7 and given.ortho_coefficient == 0.1 and cfg.lr == 1e-3
    logger = LoggingConfig(log_to_wandb=False, wandb_project="a")
    cfg = LanguageModelSAERunnerConfig(d_in=8, d_sae=16, k=4, logger=logger, wandb_project="b")
    assert (cfg.logger.log_to_wandb, cfg.logger.wandb_project) == (False, "b")


def test_a_field_of_neither_is_a_clear_error() -> None:
    with pytest.raises(TypeError) as info:
        LanguageModelSAERunnerConfig(architecture="topk_ortho", d_in=8, d_sae=16, ortho_coeficient=1.0)
    message = str(info.value)
    assert "'ortho_coeficient' is not a field of the runner" in message
    assert (
        "topk_ortho SAE config (TopKOrthoTrainingSAEConfig)" in message
        and "did you mean 'ortho_coefficient'" in message
    )
    with pytest.raises(TypeError, match="'l1_coefficient' is not a field"):  # an SAE field of another architecture
        LanguageModelSAERunnerConfig(architecture="topk_ortho", d_in=8, d_sae=16, l1_coefficient=1.0)
    with pytest.raises(ValueError, match=r"architecture must be a registered training architecture.*topk_ortho"):
        LanguageModelSAERunnerConfig(architecture="nope", d_in=8, d_sae=16)
    with pytest.raises(ValueError, match=r"ortho_pair_fraction must be a finite number in \(0, 1\]"):
        LanguageModelSAERunnerConfig(d_in=8, d_sae=16, ortho_pair_fraction=2.0)
    with pytest.raises(ValueError, match="contradicts sae="):
        LanguageModelSAERunnerConfig("topk", sae=StandardOrthoTrainingSAEConfig(d_in=8, d_sae=16))


def test_the_flat_config_trains(tmp_path) -> None:
    cfg = LanguageModelSAERunnerConfig(
        architecture="topk_ortho",
        d_in=64,
        d_sae=128,
        k=4,
        ortho_coefficient=0.5,
        model_name="tiny",
        hook_name=HOOK,
        dataset_path="tiny",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=128,
        training_tokens=4 * 512,
        train_batch_size_tokens=512,
        n_batches_in_buffer=8,
        store_batch_size_prompts=4,
        n_batches_for_norm_estimate=2,
        checkpoint_path=str(tmp_path / "ckpt"),
        output_path=str(tmp_path / "final"),
        log_to_wandb=False,
        verbose=False,
        model_from_pretrained_kwargs={},
    )
    sae = LanguageModelSAETrainingRunner(cfg, override_model=tiny_model(), override_dataset=tiny_dataset(16)).run()
    assert int(sae.ortho_step) == 4


def test_preset_runner_config_takes_sae_and_logger_fields_and_logs_to_wandb() -> None:
    preset = PRESETS["adaptive_ortho"]()
    cfg = preset.runner_config(ortho_coefficient=0.3, d_sae=4096, training_tokens=1000, device="cpu")
    assert (cfg.sae.ortho_coefficient, cfg.sae.d_sae, cfg.training_tokens) == (0.3, 4096, 1000)
    assert preset.sae.ortho_coefficient == 1.0 and preset.sae.d_sae == 16384  # the recipe itself is unchanged
    assert cfg.sae.ortho_adaptive == "recon" and cfg.sae.metadata.ortho_preset == "adaptive_ortho"
    assert (cfg.logger.log_to_wandb, cfg.logger.wandb_project, cfg.logger.run_name) == (
        True,
        WANDB_PROJECT,
        "adaptive_ortho",
    )
    quiet = preset.runner_config(log_to_wandb=False)
    assert quiet.logger.log_to_wandb is False and quiet.logger.run_name == "adaptive_ortho"
    with pytest.raises(TypeError, match="'ortho_cofficient' is not a field"):
        preset.runner_config(ortho_cofficient=0.3)
    assert dataclasses.replace(preset.sae) == preset.sae
