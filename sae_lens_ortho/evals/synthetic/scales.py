"""SynthSAEBench scales: the published 16k benchmark and two CPU-sized configurations of the same recipe.

SynthSAEBench-16k (Chanin & Garriga-Alonso 2026, arXiv 2602.14687; SAELens docs "SynthSAEBench") is a
``sae_lens.synthetic.SyntheticModel`` built from one ``SyntheticModelConfig``: 16,384 features in 768 dimensions,
Zipfian firing (exponent 0.5, p in [5e-4, 0.4]), a hierarchy (128 roots, branching 4, depth 3, mutually exclusive
children scaled by their parent, compensated probabilities), low-rank correlation (rank 25, scale 0.1), 100 steps
of orthogonalisation (lr 3e-4), mean magnitudes linear 5.0 -> 4.0, std folded normal (0.5, 0.5), bias 0.5, seed
42. SAEs have 4,096 latents and train on 200M samples, batch 1024, lr 3e-4; the headline L0 is 25.

The ``small``, ``mini`` (and ``micro``, below) scales keep every ratio of that recipe that shapes the problem and
shrink the rest:

* kept: the firing, magnitude, correlation and bias settings; the hierarchy's shape (branching 4, depth 3, all
  children exclusive and scaled) with the same share of features inside it (roots = features / 128, 66%); the
  superposition ratio features / hidden dim (21.3); the ratio features / SAE latents (4); the SAE's L0 as the same
  fraction (0.72) of the true L0, which the Zipfian range fixes at 34.5 (16k), 16.1 (small) and 10.8 (mini); Matryoshka
  inner widths at the same fractions of the width (1/32, 1/8, 1/2);
* changed: the sizes, and the training budget (1M to 4M samples instead of 200M).

So their numbers are not the 16k numbers: fewer features share fewer dimensions, a small SAE trained for ~1k steps
is far from converged, and differences between architectures shrink or change sign with training length. They are
for paired comparisons of architectures on one machine, not for comparison with the published table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["PUBLISHED_16K", "SCALES", "SynthBenchScale", "get_scale"]


@dataclass(frozen=True)
class SynthBenchScale:
    """One size of the SynthSAEBench recipe: the synthetic model and the SAE training budget."""

    name: str
    """Name used on the command line (``--config``)."""
    num_features: int
    """Ground-truth features of the synthetic model."""
    hidden_dim: int
    """Dimension of the activations (the SAE's d_in)."""
    root_nodes: int
    """Hierarchy roots (branching 4, depth 3: 85 features per tree)."""
    d_sae: int
    """SAE width."""
    l0: int
    """Headline SAE L0 (k of the TopK family)."""
    l0_sweep: tuple[int, ...]
    """L0 values of the L0 sweep (``--l0-sweep``)."""
    training_samples: int
    """Training samples per SAE."""
    eval_samples: int
    """Held-out samples of the final evaluation."""
    matryoshka_widths: tuple[int, ...]
    """Inner widths of Matryoshka SAEs (the outer width is d_sae)."""
    batch_size: int = 1024
    lr: float = 3e-4
    dead_feature_window: int = 1000
    """Steps without firing after which a latent counts as dead (SAELens's TopK aux loss revives those)."""
    correlation_rank: int = 25
    correlation_scale: float = 0.1
    orthogonalization_steps: int = 100
    model_seed: int = 42
    stream_chunk_rows: int = 16384
    """Rows per call of SAELens's generator when the training stream is recorded. Its cost is dense
    [rows, features] tensor work: at 4,096 features, 1,024-row chunks drew ~8k rows/s on 2 cores and 16,384-row
    chunks ~3.9k (cache traffic), while at 2,048 features large chunks are cheaper than per-batch calls. The
    chunking fixes the stream, so a scale keeps its value once results are recorded with it."""

    epoch_rows: int | None = None
    """Rows of the recorded training stream that training replays as epochs (None: every training row is new).
    The final evaluation then reads rows past them, which no training batch saw."""
    lr_warm_up_fraction: float = 0.0
    """Share of the training steps over which the learning rate rises linearly from lr / warm-up steps to lr."""
    lr_decay_fraction: float = 0.0
    """Share of the training steps, at the end, over which the learning rate falls linearly to 0."""
    matryoshka_aux_loss: bool = False
    """``use_matryoshka_aux_loss`` of Matryoshka arms (the published runs set it; SAELens's default is off)."""

    def model_config(self, seed: int | None = None) -> Any:
        """The ``sae_lens.synthetic.SyntheticModelConfig`` of this scale (``seed`` overrides the model seed)."""
        from sae_lens.synthetic.firing_magnitudes import FoldedNormalMagnitudeConfig, LinearMagnitudeConfig
        from sae_lens.synthetic.synthetic_model import (
            HierarchyConfig,
            LowRankCorrelationConfig,
            OrthogonalizationConfig,
            SyntheticModelConfig,
            ZipfianFiringProbabilityConfig,
        )

        return SyntheticModelConfig(
            num_features=self.num_features,
            hidden_dim=self.hidden_dim,
            firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.4, min_prob=5e-4, exponent=0.5),
            hierarchy=HierarchyConfig(
                total_root_nodes=self.root_nodes,
                branching_factor=4,
                mutually_exclusive_portion=1.0,
                mutually_exclusive_min_depth=0,
                compensate_probabilities=True,
                scale_children_by_parent=True,
                max_depth=3,
            ),
            mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
            std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
            correlation=LowRankCorrelationConfig(correlation_scale=self.correlation_scale, rank=self.correlation_rank),
            orthogonalization=OrthogonalizationConfig(num_steps=self.orthogonalization_steps, lr=3e-4),
            bias=0.5,
            seed=self.model_seed if seed is None else seed,
        )


SCALES: dict[str, SynthBenchScale] = {
    "16k": SynthBenchScale(
        name="16k",
        num_features=16384,
        hidden_dim=768,
        root_nodes=128,
        d_sae=4096,
        l0=25,
        l0_sweep=(15, 20, 25, 30, 35),
        training_samples=200_000_000,
        eval_samples=1_000_000,
        matryoshka_widths=(128, 512, 2048),
    ),
    "small": SynthBenchScale(
        name="small",
        num_features=4096,
        hidden_dim=192,
        root_nodes=32,
        d_sae=1024,
        l0=12,
        l0_sweep=(8, 12, 16),
        training_samples=4_000_000,
        eval_samples=200_000,
        matryoshka_widths=(32, 128, 512),
        lr=3e-3,
        dead_feature_window=500,
        stream_chunk_rows=1024,
    ),
    "mini": SynthBenchScale(
        name="mini",
        num_features=2048,
        hidden_dim=96,
        root_nodes=16,
        d_sae=512,
        l0=8,
        l0_sweep=(6, 8, 11),
        training_samples=1_000_000,
        eval_samples=100_000,
        matryoshka_widths=(16, 64, 256),
        lr=3e-3,
        dead_feature_window=200,
    ),
    # The do-no-harm scale (tests/test_do_no_harm.py): 10-20 s per SAE on 2 cores. The same count ratios; 5
    # orthogonalisation steps instead of 100 (a faster build) and 146 training steps: an early-training check.
    "micro": SynthBenchScale(
        name="micro",
        num_features=512,
        hidden_dim=24,
        root_nodes=4,
        d_sae=128,
        l0=4,
        l0_sweep=(3, 4, 6),
        training_samples=150_000,
        eval_samples=8192,
        matryoshka_widths=(4, 16, 64),
        lr=3e-3,
        dead_feature_window=50,
        orthogonalization_steps=5,
    ),
}

# The faithful CPU proxy (docs/synthbench.md, "The proxy"): mini's model and SAE, trained 4x longer on a recorded
# stream replayed as epochs, with warm-up and a final lr decay, a shorter dead window and the published Matryoshka
# aux loss. Changing a field changes every job's spec: result files made before are then refused, not reused.
SCALES["proxy"] = dataclasses.replace(
    SCALES["mini"],
    name="proxy",
    l0_sweep=(6, 11),
    training_samples=4_096_000,
    eval_samples=102_400,
    dead_feature_window=100,
    stream_chunk_rows=1024,
    epoch_rows=1_024_000,
    lr_warm_up_fraction=0.01,
    lr_decay_fraction=0.2,
    matryoshka_aux_loss=True,
)

# Published SynthSAEBench-16k rows (mean ± std over seeds): {L0: {architecture: {metric: (mean, std)}}}; the std is
# given where the paper gives one.
PUBLISHED_16K: dict[int, dict[str, dict[str, tuple[float, float | None]]]] = {
    25: {
        "batchtopk": {"f1": (0.732, None), "mcc": (0.757, None), "uniqueness": (0.984, None), "explained_variance": (0.792, None)},
        "matryoshka_batchtopk": {"f1": (0.879, None), "mcc": (0.793, None), "uniqueness": (0.999, None), "explained_variance": (0.779, None)},
        "jumprelu": {"f1": (0.732, None), "mcc": (0.753, None), "uniqueness": (0.989, None), "explained_variance": (0.795, None)},
        "standard": {"f1": (0.556, None), "mcc": (0.604, None), "uniqueness": (0.898, None), "explained_variance": (0.765, None)},
    },
    20: {
        "batchtopk": {"f1": (0.818, None), "mcc": (0.753, None)},
        "matryoshka_batchtopk": {"f1": (0.860, None), "mcc": (0.746, None)},
        "jumprelu": {"f1": (0.824, None), "mcc": (0.743, None)},
    },
}  # fmt: skip


def get_scale(name: str) -> SynthBenchScale:
    """The scale called ``name``; a ValueError lists the known ones."""
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"config must be one of {', '.join(SCALES)}; got {name!r}") from None
