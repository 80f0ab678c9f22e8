"""Final weights of every preset, recipe, twin and mechanism at a tiny scale: the before/after record of the
mechanism refactor (issue 21). Test use only.

``python tests/refactor_reference.py`` trains every case of :func:`cases` with SAELens's real ``SAETrainer``
(``trainer_harness``: its loop, clipping, Adam, schedulers, coefficient warm-up; logging steps every 3rd step
through a disabled wandb run) on fixed batches, on CPU in float32 with one torch thread, and writes every
parameter and buffer of each trained SAE to ``tests/data/refactor_reference.safetensors``.
``tests/test_refactor_equality.py`` retrains each case and compares with ``torch.equal``. Re-record only when a
change of behaviour is intended, and say so in the commit.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sae_lens import LoggingConfig
from sae_lens.registry import get_sae_training_class
from trainer_harness import batches, trainer_config

import sae_lens_ortho  # noqa: F401  (registers the twins)
from sae_lens_ortho.presets import PRESETS
from sae_lens_ortho.saes.recipes import RECIPES
from sae_lens_ortho.saes.twins import TWINS

REFERENCE = Path(__file__).parent / "data" / "refactor_reference.safetensors"
D_IN, D_SAE, BATCH, STEPS, K = 8, 32, 32, 8, 4
LOG_EVERY = 3
NORM_BATCHES = 2  # batches SAELens reads first to estimate the activation scale (presets that normalise)

# The representative settings of each mechanism family, on top of ortho_coefficient=1 and pair fraction 0.05.
ON = dict(ortho_coefficient=1.0, ortho_pair_fraction=0.05)
MANAGE = dict(
    ortho_manage_every=3,
    ortho_importance_decay=0.5,
    ortho_realloc_threshold=0.05,
    ortho_realloc_steps=2,
    ortho_prune_threshold=0.3,
    ortho_prune_steps=2,
)
MECHANISMS: dict[str, dict[str, Any]] = {
    "default_off": {},
    "pairs_decoder_squared": dict(ON),
    "pairs_activations_abs": dict(ON, ortho_target="activations", ortho_weighting="abs", ortho_scale="none"),
    "pairs_activations_hinge": dict(ON, ortho_target="activations", ortho_weighting="hinge", ortho_tau=0.1),
    "pairs_decoder_scaled": dict(ON, ortho_weighting="scaled", ortho_tau=0.5),
    "pairs_dense_warm_up": dict(ON, ortho_method="dense", ortho_chunk_size=5, ortho_warm_up_steps=4),
    "pairs_sparse": dict(ON, ortho_method="sparse", ortho_target="activations"),
    "pairs_zscore": dict(ON, ortho_pair_filter="zscore", ortho_z=0.5, ortho_min_pairs=3),
    "select_by_decoder": dict(ON, ortho_select_by="decoder", ortho_select_every=2),
    "adaptive_recon": dict(ON, ortho_adaptive="recon", ortho_target_recon_loss=0.05),
    "adaptive_threshold": dict(ON, ortho_adaptive="threshold", ortho_weighting="hinge", ortho_target="activations"),
    "adaptive_momentum": dict(ON, ortho_adaptive="momentum", ortho_pair_filter="zscore", ortho_min_pairs=5),
    "decoder_gram_anneal": dict(
        ortho_decoder_coefficient=0.5,
        ortho_decoder_start=1.0,
        ortho_decoder_warm_up_steps=6,
        ortho_decoder_reduction="sum",
    ),
    "decoder_grouped": dict(ortho_decoder_coefficient=0.5, ortho_decoder_penalty="grouped", ortho_groups=4),
    "decoder_chunk_max": dict(ortho_decoder_coefficient=0.5, ortho_decoder_penalty="chunk_max"),
    "management": dict(ON, ortho_target="activations", **MANAGE),
    "unit_norm_decoder": dict(ON, ortho_unit_norm_decoder=True),
    "micro_batches": dict(ON, ortho_micro_batch_size=8, ortho_decoder_coefficient=0.5),
    "micro_batches_activations": dict(ON, ortho_micro_batch_size=12, ortho_target="activations"),
}
STANDARD_ONLY: dict[str, dict[str, Any]] = {
    "adaptive_l1": dict(ON, ortho_l1_target_rate=0.1),
    "layer_norm_encoder": dict(ON, ortho_encoder_layer_norm=True),
    "competition": dict(ON, ortho_competition_gamma=0.3, ortho_competition_threshold=0.05),
    "all_of_seed_004": dict(
        ON,
        ortho_target="activations",
        ortho_competition_gamma=0.3,
        ortho_competition_threshold=0.05,
        ortho_l1_target_rate=0.1,
        ortho_adaptive="momentum",
        ortho_encoder_layer_norm=True,
        ortho_micro_batch_size=8,
        ortho_unit_norm_decoder=True,
        **MANAGE,
    ),
}
# Base fields per architecture: sizes, and what some need (k, widths, TopK's rescale for unit-norm decoders).
ARCH_FIELDS: dict[str, dict[str, Any]] = {
    "topk_ortho": dict(k=K, rescale_acts_by_decoder_norm=True),
    "batchtopk_ortho": dict(k=K),
    "standard_ortho": dict(l1_coefficient=2.0),
}


def _base_fields(arch: str) -> dict[str, Any]:
    cfg_cls = get_sae_training_class(arch)[1]
    names = cfg_cls.__dataclass_fields__
    kw: dict[str, Any] = dict(d_in=D_IN, d_sae=D_SAE)
    if "k" in names:
        kw["k"] = K
    if "matryoshka_widths" in names:
        kw["matryoshka_widths"] = [8, D_SAE]
    return {**kw, **ARCH_FIELDS.get(arch, {})}


def _config(arch: str, fields: dict[str, Any]) -> Callable[[], Any]:
    return lambda: get_sae_training_class(arch)[1](**{**_base_fields(arch), **fields})


def _preset(name: str) -> Callable[[], Any]:
    def make() -> Any:
        extra = {"target_l0": 3.2} if name == "selective_neural_competition" else {}
        cfg = PRESETS[name](d_in=D_IN, d_sae=D_SAE, **extra).sae
        if cfg.ortho_micro_batch_size is not None:  # the paper's 1024 rows, scaled to the tiny batch
            cfg = dataclasses.replace(cfg, ortho_micro_batch_size=8)
        return cfg

    return make


def cases() -> dict[str, Callable[[], Any]]:
    """{case name: a function building its training config}."""
    out: dict[str, Callable[[], Any]] = {}
    for name in PRESETS:
        out[f"preset.{name}"] = _preset(name)
    for name, recipe in RECIPES.items():
        out[f"recipe.{name}"] = (lambda r: lambda: r.config(**_base_fields(r.architecture)))(recipe)
    for arch in sorted(TWINS):
        out[f"twin.{arch}.default_off"] = _config(arch, {})
        out[f"twin.{arch}.both_penalties"] = _config(arch, dict(ON, ortho_decoder_coefficient=0.5))
    for arch in ("topk_ortho", "batchtopk_ortho", "standard_ortho"):
        for mech, fields in MECHANISMS.items():
            if arch == "batchtopk_ortho" and mech.startswith("micro_batches"):
                continue  # refused by the config: BatchTopK ranks across the batch
            out[f"{arch}.{mech}"] = _config(arch, fields)
    for mech, fields in STANDARD_ONLY.items():
        out[f"standard_ortho.{mech}"] = _config("standard_ortho", fields)
    return out


def train(make_cfg: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the SAE after STEPS steps of SAELens's trainer on fixed batches."""
    import wandb
    from sae_lens.training.sae_trainer import SAETrainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cfg = make_cfg()
        sae = get_sae_training_class(cfg.architecture())[0](cfg)
        data = batches(STEPS + NORM_BATCHES, BATCH, D_IN, seed=1)
        if cfg.normalize_activations != "expected_average_only_in":
            data = data[NORM_BATCHES:]
        logger = LoggingConfig(log_to_wandb=True, wandb_log_frequency=LOG_EVERY, eval_every_n_wandb_logs=10**9)
        trainer_cfg = trainer_config(BATCH, STEPS, None, logger=logger, n_batches_for_norm_estimate=NORM_BATCHES)
        run = wandb.init(mode="disabled")
        try:
            SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(data)).fit()
        finally:
            run.finish()
        assert int(sae.ortho_step) == STEPS
        return {k: v.detach().clone().contiguous() for k, v in sae.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def record() -> None:
    from safetensors.torch import save_file

    tensors = {}
    for case, make in cases().items():
        for key, value in train(make).items():
            tensors[f"{case}/{key}"] = value
    REFERENCE.parent.mkdir(exist_ok=True)
    save_file(tensors, REFERENCE)
    print(f"{len(cases())} cases, {len(tensors)} tensors, {REFERENCE.stat().st_size:,} bytes -> {REFERENCE}")


if __name__ == "__main__":
    sys.exit(record())
