"""Gradient accumulation over micro-batches (seed 000): the same gradient, loss and state as one big batch."""

import pytest
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer
from seed_defaults import SEED_DEFAULTS

from sae_lens_ortho import (
    BatchTopKOrthoTrainingSAEConfig,
    StandardOrthoTrainingSAE,
    StandardOrthoTrainingSAEConfig,
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
)

B, D_IN, D_SAE = 96, 16, 64


def batch(seed: int = 0) -> torch.Tensor:
    # Few latent directions, so features co-fire and the selected pairs carry real correlation.
    g = torch.Generator().manual_seed(seed)
    codes = torch.rand(B, 6, generator=g) * (torch.rand(B, 6, generator=g) < 0.4)
    return codes @ torch.randn(6, D_IN, generator=g) + 0.05 * torch.randn(B, D_IN, generator=g)


def seed(**kw):
    """A case of the seed papers' activation penalty (the fields' defaults before issue 14), with ``kw`` on top."""
    return {**SEED_DEFAULTS, **kw}


CASES = {
    "topk_sparse_decoder": (
        TopKOrthoTrainingSAE,
        TopKOrthoTrainingSAEConfig,
        seed(
            ortho_coefficient=2.0,
            k=4,
            ortho_pair_fraction=0.02,
            ortho_decoder_coefficient=0.5,
            ortho_adaptive="momentum",
            ortho_method="sparse",
        ),
    ),  # the co-firing path
    "topk_dense_scan": (
        TopKOrthoTrainingSAE,
        TopKOrthoTrainingSAEConfig,
        seed(ortho_coefficient=2.0, k=4, ortho_pair_fraction=0.02, ortho_method="dense"),
    ),
    # The default form switched on (coefficient 0.1, the recipe coactive_decoder_topk): the selected pairs'
    # decoder rows are penalised, so the penalty's gradient reaches W_dec directly (the selection runs on the
    # whole batch).
    "topk_decoder_target_defaults": (
        TopKOrthoTrainingSAE,
        TopKOrthoTrainingSAEConfig,
        dict(k=4, ortho_pair_fraction=0.02, ortho_coefficient=0.1),
    ),
    # Encoder-side decorrelation: the same pairs, the penalty on their encoder columns (gradient into W_enc).
    "topk_encoder_target": (
        TopKOrthoTrainingSAE,
        TopKOrthoTrainingSAEConfig,
        dict(k=4, ortho_pair_fraction=0.02, ortho_coefficient=0.1, ortho_target="encoder"),
    ),
    "standard_dense_zscore": (
        StandardOrthoTrainingSAE,
        StandardOrthoTrainingSAEConfig,
        seed(
            ortho_coefficient=2.0,
            l1_coefficient=0.05,
            ortho_pair_fraction=0.02,
            ortho_method="dense",
            ortho_chunk_size=16,
            ortho_pair_filter="zscore",
            ortho_min_pairs=10,
            ortho_weighting="squared",
            ortho_adaptive="recon",
            ortho_target_recon_loss=0.5,
            ortho_decoder_penalty="grouped",
            ortho_decoder_coefficient=0.3,
            ortho_groups=4,
        ),
    ),
}


def make(case: str, micro: int | None):
    sae_cls, cfg_cls, kw = CASES[case]
    torch.manual_seed(0)
    return sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, ortho_micro_batch_size=micro, **kw))


def coefficients(sae) -> dict[str, float]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}


def step(sae, x, logging=True):
    out = sae.training_forward_pass(TrainStepInput(x, coefficients(sae), None, 0, logging))
    out.loss.backward()
    return out


@pytest.mark.parametrize("micro", [16, 40])  # 40: an uneven last micro-batch
@pytest.mark.parametrize("case", sorted(CASES))
def test_micro_batches_give_the_big_batch_gradient(case, micro):
    x = batch()
    big, small = make(case, None), make(case, micro)
    out_big, out_small = step(big, x), step(small, x)
    assert out_big.losses["ortho_loss"].item() > 0
    for (name, p_big), (_, p_small) in zip(big.named_parameters(), small.named_parameters()):
        assert p_big.grad is not None and p_big.grad.abs().sum() > 0, name
        torch.testing.assert_close(p_small.grad, p_big.grad, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(out_small.loss, out_big.loss, rtol=1e-5, atol=1e-6)
    for name in ("mse_loss", "ortho_loss", "decoder_ortho_loss"):
        torch.testing.assert_close(out_small.losses[name], out_big.losses[name].float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_small.feature_acts, out_big.feature_acts.detach(), rtol=1e-5, atol=1e-6)
    assert out_small.feature_acts.shape == (B, D_SAE) and out_small.sae_out.shape == (B, D_IN)
    # Adaptive state and the diagnostics are taken on the whole batch too.
    assert torch.equal(small.ortho_prev_pair_keys, big.ortho_prev_pair_keys)
    torch.testing.assert_close(small.ortho_strength, big.ortho_strength)
    assert out_small.metrics["ortho_selected_pairs"] == out_big.metrics["ortho_selected_pairs"]


def test_a_per_micro_batch_penalty_would_give_a_different_gradient():
    """Why the two-pass scheme is needed: penalising each micro-batch's own correlations (the naive way)
    changes the gradient, so the test above can tell the two apart."""
    x = batch()
    big = make("topk_sparse_decoder", None)
    step(big, x)
    naive = make("topk_sparse_decoder", None)
    for chunk in x.split(16):
        out = naive.training_forward_pass(TrainStepInput(chunk, coefficients(naive), None, 0, False))
        (out.loss * chunk.shape[0] / B).backward()
    assert not torch.allclose(naive.W_enc.grad, big.W_enc.grad, rtol=1e-3, atol=1e-5)


def test_real_trainer_steps_match_with_and_without_micro_batches():
    """SAETrainer.step (clip, Adam) on the same batches: parameters stay equal step after step."""
    trainers = []
    for micro in (None, 24):
        sae = make("topk_sparse_decoder", micro)
        cfg = SAETrainerConfig(total_training_samples=10**6, train_batch_size_samples=B, lr=1e-3, lr_end=1e-3)
        trainers.append(SAETrainer(cfg=cfg, sae=sae, data_provider=iter(())))
    for seed in range(4):
        outs = [tr.step(batch(seed)) for tr in trainers]
        torch.testing.assert_close(outs[1].loss, outs[0].loss.detach(), rtol=1e-4, atol=1e-6)
    for (name, a), (_, b) in zip(trainers[0].sae.named_parameters(), trainers[1].sae.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-5, msg=name)
    assert not torch.equal(trainers[0].sae.W_enc, make("topk_sparse_decoder", None).W_enc)  # it did train


def test_micro_batches_are_rejected_for_batchtopk_and_bad_sizes():
    with pytest.raises(ValueError, match="ortho_micro_batch_size must be None on a BatchTopK SAE"):
        BatchTopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_micro_batch_size=4)
    with pytest.raises(ValueError, match="ortho_micro_batch_size must be an integer >= 1"):
        TopKOrthoTrainingSAEConfig(d_in=8, d_sae=16, k=2, ortho_micro_batch_size=0)
