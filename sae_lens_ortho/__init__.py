"""sae-lens-ortho: selective orthogonality constraints for sparse autoencoders, inside SAELens.

Importing this package registers the ``*_ortho`` training architectures with SAELens's registry, and the
``standard_ortho`` inference architecture (a standard SAE with a LayerNorm and/or local-competition encoder).
``LanguageModelSAERunnerConfig(architecture="topk_ortho", <SAE fields>, <runner fields>)`` builds SAELens's runner
config from the flat form SAELens 5 and SAELens's CLI take. The math core (``pairs``, ``penalties``,
``diagnostics``) is plain torch and usable on its own.
"""

from sae_lens_ortho.core.diagnostics import decoder_max_cosine, mean_pair_cosine, pair_set_jaccard
from sae_lens_ortho.core.pairs import PairSelection, PairStats, top_correlated_pairs
from sae_lens_ortho.core.penalties import (
    decoder_gram_penalty,
    pair_penalty,
    select_pairs_for_penalty,
    selective_activation_penalty,
)
from sae_lens_ortho.runner_config import LanguageModelSAERunnerConfig
from sae_lens_ortho.saes.batchtopk import BatchTopKOrthoTrainingSAE, BatchTopKOrthoTrainingSAEConfig
from sae_lens_ortho.saes.config import OrthoConfig
from sae_lens_ortho.saes.ortho import OrthoTrainingSAE, add_ortho, register_training_architecture
from sae_lens_ortho.saes.standard import StandardOrthoTrainingSAE, StandardOrthoTrainingSAEConfig
from sae_lens_ortho.saes.standard_inference import StandardOrthoSAE, StandardOrthoSAEConfig
from sae_lens_ortho.saes.topk import TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig
from sae_lens_ortho.saes.twins import TWINS

__version__ = "0.1.0"

__all__ = [
    "TWINS",
    "BatchTopKOrthoTrainingSAE",
    "BatchTopKOrthoTrainingSAEConfig",
    "LanguageModelSAERunnerConfig",
    "OrthoConfig",
    "OrthoTrainingSAE",
    "PairSelection",
    "PairStats",
    "StandardOrthoSAE",
    "StandardOrthoSAEConfig",
    "StandardOrthoTrainingSAE",
    "StandardOrthoTrainingSAEConfig",
    "TopKOrthoTrainingSAE",
    "TopKOrthoTrainingSAEConfig",
    "add_ortho",
    "decoder_gram_penalty",
    "decoder_max_cosine",
    "mean_pair_cosine",
    "pair_penalty",
    "pair_set_jaccard",
    "register_training_architecture",
    "select_pairs_for_penalty",
    "selective_activation_penalty",
    "top_correlated_pairs",
]
