"""SAELens's real ``SAETrainer`` around an SAE, fed a fixed list of batches: the trainer-level harness of the
resume and non-finite tests (test use only).

``fit_batches`` runs ``SAETrainer.fit()`` itself (its loop, checkpointing, clipping, Adam, schedulers) on the
batches; ``resume_batches`` builds a fresh SAE and trainer, loads a checkpoint the way SAELens's runner does
(``load_trainer_state`` + ``load_weights_from_checkpoint``) and fits the remaining batches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import TrainingSAE
from sae_lens.training.sae_trainer import SAETrainer


def batches(n: int, batch: int, d_in: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` batches [batch, d_in] of low-rank structured data, so features co-fire and correlate."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(12, d_in, generator=g)
    out = []
    for _ in range(n):
        codes = torch.rand(batch, 12, generator=g) * (torch.rand(batch, 12, generator=g) < 0.3)
        out.append(codes @ mix + 0.05 * torch.randn(batch, d_in, generator=g))
    return out


def trainer_config(batch: int, steps: int, checkpoint_path: Path | None, **kw: Any) -> SAETrainerConfig:
    kwargs: dict[str, Any] = dict(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=3e-3,
        lr_end=3e-4,
        lr_scheduler_name="cosineannealing",
        checkpoint_path=str(checkpoint_path) if checkpoint_path is not None else None,
        n_checkpoints=0,
        feature_sampling_window=4,
        dead_feature_window=3,
    )
    kwargs.update(kw)
    return SAETrainerConfig(**kwargs)


def fit_batches(sae: TrainingSAE[Any], data: list[torch.Tensor], cfg: SAETrainerConfig) -> SAETrainer[Any, Any]:
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(data))
    trainer.fit()
    return trainer


def resume_batches(
    make_sae: Callable[[], TrainingSAE[Any]], checkpoint: Path, data: list[torch.Tensor], cfg: SAETrainerConfig
) -> SAETrainer[Any, Any]:
    """A fresh SAE and trainer, restored from ``checkpoint`` like SAELens's runner restores them, then fitted on
    the batches after the checkpoint's sample count."""
    sae = make_sae()
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))
    trainer.load_trainer_state(checkpoint)
    sae.load_weights_from_checkpoint(checkpoint)
    done = trainer.n_training_samples // cfg.train_batch_size_samples
    trainer.data_provider = iter(data[done:])
    trainer.fit()
    return trainer


def state_of(trainer: SAETrainer[Any, Any]) -> dict[str, torch.Tensor]:
    """Every tensor a bit-exact resume must reproduce: parameters, buffers, Adam moments."""
    out = {f"sae.{k}": v.detach().clone() for k, v in trainer.sae.state_dict().items()}
    for i, (param, state) in enumerate(
        (p, trainer.optimizer.state[p]) for g in trainer.optimizer.param_groups for p in g["params"]
    ):
        del param
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"adam.{i}.{name}"] = value.detach().clone()
    return out


def first_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """None when both states are bit-identical, else a description of what differs."""
    if set(a) != set(b):
        return f"keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        x, y = a[key], b[key]
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            if x.shape == y.shape and x.is_floating_point():
                return f"{key}: max |diff| {float((x.double() - y.double()).abs().max()):.3g}"
            return f"{key} differs"
    return None


# --- the non-finite tests' cases (shared with reliability_probe.py) ----------------------------------------------

D_IN, D_SAE, BATCH = 16, 64, 64


def _stateful() -> list[tuple[Any, Any, dict[str, Any]]]:
    from sae_lens_ortho import (
        BatchTopKOrthoTrainingSAE,
        BatchTopKOrthoTrainingSAEConfig,
        StandardOrthoTrainingSAE,
        StandardOrthoTrainingSAEConfig,
        TopKOrthoTrainingSAE,
        TopKOrthoTrainingSAEConfig,
    )

    topk = (TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig)
    return [
        (*topk, dict(k=6, ortho_adaptive="momentum")),
        (*topk, dict(k=6, ortho_adaptive="recon", ortho_target_recon_loss=0.1)),
        (*topk, dict(k=6, ortho_decoder_coefficient=0.5, ortho_decoder_penalty="grouped", ortho_groups=4)),
        (BatchTopKOrthoTrainingSAE, BatchTopKOrthoTrainingSAEConfig, dict(k=6, ortho_manage_every=2)),
        (
            StandardOrthoTrainingSAE,
            StandardOrthoTrainingSAEConfig,
            dict(
                ortho_l1_target_rate=0.1, ortho_competition_gamma=0.3, ortho_manage_every=2, ortho_micro_batch_size=16
            ),
        ),
    ]


STATEFUL = _stateful()
"""Every mechanism with state (SAE class, config class, fields): each buffer must come through a bad step
unchanged and finite."""


def stateful_id(case: tuple[Any, Any, dict[str, Any]]) -> str:
    return case[0].__name__.replace("TrainingSAE", "") + "-" + ",".join(case[2])


def poisoned(data: list[torch.Tensor], step: int, value: float = float("nan")) -> list[torch.Tensor]:
    """A copy of ``data`` with one entry of batch ``step`` set to ``value`` (NaN, inf)."""
    data = [x.clone() for x in data]
    data[step][3, 5] = value
    return data
