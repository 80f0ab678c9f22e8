"""Tiny, fully offline building blocks for tests that run SAELens's real training runner.

Nothing here downloads anything: the language model is a randomly initialised 2-layer
``HookedTransformer`` built from a config (no tokenizer), and the dataset is an in-memory, pre-tokenized
``datasets.Dataset``. Everything is seeded, so two calls build identical objects.

Typical use::

    from tiny import tiny_dataset, tiny_model, tiny_runner_config, tiny_topk_ortho_cfg  # tests/ is on sys.path

    cfg = tiny_runner_config(tmp_path, tiny_topk_ortho_cfg())
    sae = LanguageModelSAETrainingRunner(cfg, override_model=tiny_model(), override_dataset=tiny_dataset()).run()
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

import sae_lens_ortho  # noqa: F401  (registers topk_ortho)
from sae_lens_ortho import TopKOrthoTrainingSAEConfig

D_MODEL = 64
CONTEXT = 128
D_VOCAB = 1000
HOOK = "blocks.0.hook_resid_post"
MODEL_SEED = 0
DATA_SEED = 1


def tiny_model(seed: int = MODEL_SEED) -> HookedTransformer:
    """A randomly initialised 2-layer HookedTransformer (d_model 64, context 128, vocab 1000), in eval mode."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D_MODEL,
        n_ctx=CONTEXT,
        d_head=16,
        n_heads=4,
        d_mlp=256,
        d_vocab=D_VOCAB,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        model = HookedTransformer(cfg)
    model.eval()
    return model


def tiny_tokens(n_seqs: int = 256, seed: int = DATA_SEED) -> torch.Tensor:
    """[n_seqs, 128] int64 token ids with some structure, so SAE features co-fire non-trivially.

    Each sequence draws from a Zipf-like unigram distribution (a few frequent tokens, a long tail), and
    about a quarter of positions are overwritten by one of 16 fixed 4-token motifs, so some tokens
    reliably occur together. Position 0 is token 0 (a stand-in BOS).
    """
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, D_VOCAB, dtype=torch.float64)
    unigram = 1.0 / ranks
    tokens = 1 + torch.multinomial(unigram / unigram.sum(), n_seqs * CONTEXT, replacement=True, generator=g)
    tokens = tokens.view(n_seqs, CONTEXT)
    motifs = torch.randint(1, D_VOCAB, (16, 4), generator=g)
    n_motifs = CONTEXT // 16  # ~8 motifs x 4 tokens = 1/4 of each sequence
    for row in range(n_seqs):
        starts = torch.randint(1, CONTEXT - 4, (n_motifs,), generator=g)
        which = torch.randint(0, motifs.shape[0], (n_motifs,), generator=g)
        for s, m in zip(starts.tolist(), which.tolist()):
            tokens[row, s : s + 4] = motifs[m]
    tokens[:, 0] = 0
    return tokens


def tiny_dataset(n_seqs: int = 256, seed: int = DATA_SEED) -> Dataset:
    """An in-memory pre-tokenized dataset with a ``tokens`` column of length-128 sequences."""
    return Dataset.from_dict({"tokens": tiny_tokens(n_seqs, seed).tolist()})


def tiny_topk_ortho_cfg(**overrides: Any) -> TopKOrthoTrainingSAEConfig:
    """A small ``topk_ortho`` config (d_in 64, d_sae 256, k 8) with both ortho losses switched on (in the default
    input-energy units: the selective penalty at its default, the all-pairs decoder penalty at 0.01)."""
    kwargs: dict[str, Any] = dict(
        d_in=D_MODEL,
        d_sae=256,
        k=8,
        ortho_coefficient=0.1,
        ortho_decoder_coefficient=0.01,
        ortho_pair_fraction=0.01,
        device="cpu",
    )
    kwargs.update(overrides)
    return TopKOrthoTrainingSAEConfig(**kwargs)


def tiny_runner_config(
    tmp_path: str | Path, sae_cfg: Any | None = None, **overrides: Any
) -> LanguageModelSAERunnerConfig[Any]:
    """A runner config that trains ``sae_cfg`` on the tiny model in a second or two, writing only under
    ``tmp_path`` (``checkpoints/`` and ``output/``).

    Defaults: hook ``blocks.0.hook_resid_post``, 20 480 training tokens in batches of 1024 (20 steps),
    a 2048-token activation buffer, wandb off. Any runner field can be overridden by keyword; pass
    ``logger=LoggingConfig(...)`` to turn wandb on.
    """
    tmp_path = Path(tmp_path)
    kwargs: dict[str, Any] = dict(
        sae=sae_cfg if sae_cfg is not None else tiny_topk_ortho_cfg(),
        model_name="tiny-offline-model",
        hook_name=HOOK,
        dataset_path="tiny-offline-dataset",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=CONTEXT,
        training_tokens=20 * 1024,
        train_batch_size_tokens=1024,
        store_batch_size_prompts=8,
        n_batches_in_buffer=16,  # 16 x 128 = 2048 tokens >= train_batch_size_tokens
        n_batches_for_norm_estimate=4,
        lr=1e-3,
        device="cpu",
        seed=42,
        checkpoint_path=str(tmp_path / "checkpoints"),
        output_path=str(tmp_path / "final"),  # the run's final SAE folder
        n_checkpoints=0,
        n_eval_batches=2,
        eval_batch_size_prompts=4,
        model_from_pretrained_kwargs={},
        logger=LoggingConfig(log_to_wandb=False),
        verbose=False,
    )
    kwargs.update(overrides)
    return LanguageModelSAERunnerConfig(**kwargs)


def model_activations(model: HookedTransformer, tokens: torch.Tensor, hook: str = HOOK) -> torch.Tensor:
    """[n_tokens, d_model] activations of ``model`` at ``hook`` for ``tokens`` (float32, no grad)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook], prepend_bos=False)
    return cache[hook].reshape(-1, cache[hook].shape[-1]).float().clone()
