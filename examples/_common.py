"""Shared driver of the preset examples: the real run (GPU + Hub) or, with --offline, the same recipe on a tiny
randomly initialised HookedTransformer and in-memory tokens (no download; what the tests run)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sae_lens_ortho.presets import Preset

OFFLINE_D_MODEL = 64


def tiny_model_and_tokens(seed: int = 0, n_seqs: int = 160) -> tuple[Any, Any]:
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=OFFLINE_D_MODEL,
        n_ctx=128,
        d_head=16,
        n_heads=4,
        d_mlp=256,
        d_vocab=1000,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, 1000, (n_seqs, 128), generator=g)
    return model, Dataset.from_dict({"tokens": tokens.tolist()})


def offline_overrides(preset: Preset, out: Path) -> tuple[Preset, dict[str, Any]]:
    """The recipe at toy size: same ortho settings, d_in of the tiny model, a few dozen steps."""
    toy: dict[str, Any] = dict(d_in=OFFLINE_D_MODEL, d_sae=512, normalize_activations="none")
    if preset.sae.ortho_micro_batch_size:  # two micro-batches per 1024-token batch
        toy["ortho_micro_batch_size"] = 512
    if preset.sae.ortho_manage_every:  # a few management checks within the 24 steps
        toy.update(ortho_manage_every=4, ortho_realloc_steps=8, ortho_prune_steps=8)
    sae = dataclasses.replace(preset.sae, **toy)
    runner = dict(
        model_name="tiny-offline",
        hook_name="blocks.0.hook_resid_post",
        dataset_path="tiny-offline",
        is_dataset_tokenized=True,
        streaming=False,
        training_tokens=24 * 1024,
        train_batch_size_tokens=1024,
        n_batches_in_buffer=16,
        store_batch_size_prompts=8,
        lr_warm_up_steps=4,
        lr_decay_steps=8 if preset.runner.get("lr_decay_steps") else 0,
        model_from_pretrained_kwargs={},
        n_eval_batches=1,
    )
    return dataclasses.replace(preset, sae=sae), runner


def main(make_preset: Callable[[], Preset], argv: list[str] | None = None) -> Any:
    from sae_lens import LanguageModelSAETrainingRunner

    preset = make_preset()
    parser = argparse.ArgumentParser(description=f"Train {preset.name} (seed {preset.seed}).")
    parser.add_argument("--out", type=Path, default=Path("runs") / preset.name, help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--training-tokens", type=int, default=None, help="override the paper's token count")
    parser.add_argument("--offline", action="store_true", help="tiny local model and data, no download")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = dict(
        device=args.device, output_path=str(args.out / "final"), checkpoint_path=str(args.out / "checkpoints")
    )
    model = dataset = None
    if args.offline:
        preset, tiny = offline_overrides(preset, args.out)
        overrides.update(tiny)
        model, dataset = tiny_model_and_tokens()
    if args.training_tokens is not None:
        overrides["training_tokens"] = args.training_tokens
    for missing in preset.not_applied:
        print(f"note: {preset.name} does not apply: {missing}")
    cfg = preset.runner_config(**overrides)
    sae = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()
    print(f"{preset.name}: final SAE in {cfg.output_path}")
    return sae
