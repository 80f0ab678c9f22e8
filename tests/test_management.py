"""Dictionary management in training (seed 004): which features are re-initialised, what is reset, and that
the state survives checkpoints. The decision rules themselves are tested in test_dictionary.py."""

import json

import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import load_file

from sae_lens_ortho import (
    StandardOrthoTrainingSAE,
    StandardOrthoTrainingSAEConfig,
    TopKOrthoTrainingSAE,
    TopKOrthoTrainingSAEConfig,
)
from sae_lens_ortho.saes.management import optimizers_holding
from sae_lens_ortho.saes.mechanisms.dictionary_management import MANAGEMENT_BUFFERS

B, D_IN, D_SAE = 96, 16, 64
DEAD = [0, 1, 2, 3, 4]


def batch(seed: int) -> torch.Tensor:
    return torch.randn(B, D_IN, generator=torch.Generator().manual_seed(seed))


def coefficients(sae) -> dict[str, float]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in sae.get_coefficients().items()}


def topk(**kw) -> TopKOrthoTrainingSAE:
    torch.manual_seed(0)
    kw = {"k": 4, "ortho_coefficient": 1.0, "ortho_pair_fraction": 0.02, "ortho_manage_every": 1, **kw}
    return TopKOrthoTrainingSAE(TopKOrthoTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, **kw))


def trainer(sae) -> SAETrainer:
    cfg = SAETrainerConfig(total_training_samples=10**6, train_batch_size_samples=B, lr=1e-2, lr_end=1e-2)
    return SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))


def kill(sae, features) -> None:
    with torch.no_grad():  # pre-activation -10: never among the top k, never fires
        sae.W_enc[:, features] = 0
        sae.b_enc[features] = -10


def test_low_importance_features_are_chosen_exactly_as_the_ema_says():
    """Importance EMA and consecutive-below counters computed by brute force from the real trainer's outputs."""
    theta, decay, every, t_realloc = 0.002, 0.5, 3, 2
    sae = topk(
        ortho_manage_every=every,
        ortho_importance_decay=decay,
        ortho_realloc_threshold=theta,
        ortho_realloc_steps=t_realloc,
    )
    kill(sae, DEAD)
    tr = trainer(sae)
    importance, below = torch.zeros(D_SAE), torch.zeros(D_SAE, dtype=torch.int64)
    for n in range(every):
        out = tr.step(batch(n))
        tr.n_training_steps += 1  # what fit() does after each step
        rms = out.feature_acts.detach().pow(2).mean(0).sqrt()
        importance = decay * importance + (1 - decay) * rms
        below = torch.where(importance < theta, below + 1, 0)
    expected = below >= t_realloc
    assert set(DEAD) <= set(expected.nonzero().flatten().tolist()) and not expected.all()
    assert torch.equal(sae.ortho_pending_reinit, expected)
    assert sae.ortho_reinit_total.item() == expected.sum().item()
    # Chosen features restart their grace period; the others keep their state.
    assert torch.all(sae.ortho_steps_below[expected] == 0) and torch.all(sae.ortho_importance[expected] == 0)
    torch.testing.assert_close(sae.ortho_importance[~expected], importance[~expected])
    # The next step re-initialises them (the dead ones fire again) and clears the mask.
    out = tr.step(batch(every))
    assert not sae.ortho_pending_reinit.any()
    assert (out.feature_acts[:, DEAD] > 0).any()


def test_reinit_touches_exactly_the_chosen_features_and_zeroes_their_adam_moments():
    sae = topk()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for n in range(2):
        sae.training_forward_pass(TrainStepInput(batch(n), coefficients(sae), None, n, False)).loss.backward()
        opt.step()
        opt.zero_grad()
    assert optimizers_holding(sae.W_dec) == [opt]  # found without being told
    chosen = torch.zeros(D_SAE, dtype=torch.bool)
    chosen[[3, 7, 40]] = True
    sae.ortho_pending_reinit.copy_(chosen)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    moments = {name: {k: v.clone() for k, v in opt.state[p].items()} for name, p in sae.named_parameters()}
    live_norm = before["W_dec"][~chosen].norm(dim=1).mean()
    sae.training_forward_pass(TrainStepInput(batch(2), coefficients(sae), None, 2, False))  # applies it first
    dims = {"W_enc": 1, "b_enc": 0, "W_dec": 0}
    for name, p in sae.named_parameters():
        idx = [slice(None)] * p.ndim
        if name in dims:
            idx[dims[name]] = ~chosen
        assert torch.equal(p.detach()[tuple(idx)], before[name][tuple(idx)]), name  # untouched, bit for bit
        for m in ("exp_avg", "exp_avg_sq"):
            moment = opt.state[p][m]
            assert torch.equal(moment[tuple(idx)], moments[name][m][tuple(idx)]), (name, m)
            if name in dims:
                idx[dims[name]] = chosen
                assert torch.all(moment[tuple(idx)] == 0), (name, m)
                idx[dims[name]] = ~chosen
    torch.testing.assert_close(sae.W_dec[chosen].norm(dim=1), live_norm.expand(3))
    assert torch.all(sae.b_enc[chosen] == 0)
    assert not torch.equal(sae.W_dec[chosen], before["W_dec"][chosen])
    assert not sae.ortho_pending_reinit.any()


def test_duplicated_feature_is_pruned_once_keeping_its_twin():
    """Two identical ReLU features correlate at 1.0 > 0.8: after T_prune steps exactly one goes (the larger
    index, at equal importance); protection is off (quantile 1.0) and re-allocation is off (theta_act 0)."""
    torch.manual_seed(0)
    sae = StandardOrthoTrainingSAE(
        StandardOrthoTrainingSAEConfig(
            d_in=D_IN,
            d_sae=D_SAE,
            l1_coefficient=0.01,
            ortho_coefficient=0.0,
            ortho_pair_fraction=0.01,
            ortho_manage_every=2,
            ortho_prune_steps=2,
            ortho_realloc_threshold=0.0,
            ortho_prune_protect_quantile=1.0,
        )
    )
    with torch.no_grad():
        sae.W_enc[:, 9] = sae.W_enc[:, 5]
        sae.b_enc[9] = sae.b_enc[5]
        sae.W_dec[9] = sae.W_dec[5]
    for n in range(2):
        # No optimizer: the twins stay identical, so their correlation stays 1.
        sae.training_forward_pass(TrainStepInput(batch(n), coefficients(sae), None, n, False))
    pruned = sae.ortho_pending_reinit.nonzero().flatten().tolist()
    assert pruned == [9]
    assert sae.ortho_pruned_total.item() == 1 and sae.ortho_reinit_total.item() == 0


def test_management_state_is_checkpointed_and_left_out_of_the_inference_weights(tmp_path):
    kw = dict(ortho_manage_every=2, ortho_realloc_steps=1, ortho_realloc_threshold=0.001, ortho_importance_decay=0.0)
    sae = topk(**kw)
    kill(sae, DEAD)
    tr = trainer(sae)
    for n in range(2):
        tr.step(batch(n))
        tr.n_training_steps += 1
    assert sae.ortho_pending_reinit.any() and not sae.ortho_pending_reinit.all()
    assert sae.ortho_importance.abs().sum() > 0
    sae.save_model(tmp_path / "ckpt")  # what SAELens's checkpoints call
    fresh = topk(**kw)
    fresh.load_weights_from_checkpoint(tmp_path / "ckpt")  # what SAELens's resume calls
    for name in MANAGEMENT_BUFFERS:
        assert torch.equal(getattr(fresh, name), getattr(sae, name)), name
    sae.save_inference_model(tmp_path / "final")
    weights = load_file(tmp_path / "final" / "sae_weights.safetensors")
    assert not any(k.startswith("ortho_") for k in weights)
    details = json.loads((tmp_path / "final" / "cfg.json").read_text())["metadata"]["training_architecture_details"]
    assert details["ortho_manage_every"] == 2


def test_management_counts_are_logged_on_logging_steps():
    sae = topk(ortho_manage_every=1, ortho_realloc_steps=1, ortho_realloc_threshold=0.05)
    kill(sae, DEAD)
    quiet = sae.training_forward_pass(TrainStepInput(batch(0), coefficients(sae), None, 0, False))
    loud = sae.training_forward_pass(TrainStepInput(batch(1), coefficients(sae), None, 1, True))
    assert "ortho_reinit_total" not in quiet.metrics
    assert loud.metrics["ortho_reinit_total"].item() == sae.ortho_reinit_total.item() >= len(DEAD)
    assert {"ortho_pruned_total", "ortho_low_importance_features"} <= set(loud.metrics)
