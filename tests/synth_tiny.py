"""The tests' tiny scale of the SynthSAEBench recipe (a few seconds per SAE) and its fixture (``tiny``, in
conftest)."""

from __future__ import annotations

import dataclasses

from sae_lens_ortho.evals.synthetic import scales

TINY = dataclasses.replace(
    scales.SCALES["mini"],
    name="tiny",
    num_features=256,
    hidden_dim=24,
    root_nodes=2,
    d_sae=64,
    l0=4,
    l0_sweep=(3, 4),
    training_samples=40_960,
    eval_samples=8_192,
    matryoshka_widths=(8, 32),
    orthogonalization_steps=5,
    dead_feature_window=20,
    stream_chunk_rows=2048,  # not the default: the CLI test checks that the recorded stream uses the scale's
)
