"""Every named setting in one list: the recipes, the seed presets and the seed papers the model card names.

:data:`CATALOGUE` holds one :class:`Named` per name. ``sae_lens_ortho.saes.recipes.RECIPES`` (an architecture plus
field settings), ``sae_lens_ortho.presets.PRESETS`` (a seed paper's SAE config plus its runner settings; the field
values stay in ``presets.py``, next to the paper's numbers) and ``sae_lens_ortho.hub.SEED_PAPERS`` (the card's
"it follows ... of <paper>") are views of it, so a new name is one entry here. Plain data: importing it loads
nothing of SAELens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CATALOGUE", "SEED_TITLES", "Named", "named"]

SEED_TITLES: dict[str, str] = {
    "000": "Memory-efficient feature disentanglement: selective orthogonality constraints for sparse autoencoders",
    "001": "Adaptive orthogonal sparse autoencoders: efficient feature disentanglement for language model interpretation",
    "002": "Selective feature decorrelation: a scalable approach to training interpretable sparse autoencoders",
    "003": "Controlled feature sharing: balancing independence and reconstruction in sparse autoencoders",
    "004": (
        "Selective neural competition: efficient feature disentanglement through local inhibition and adaptive "
        "constraints"
    ),
}
"""Titles of the seed papers (``/work/shared/seeds/NNN_*.txt``), by seed number."""

Kind = Literal["architecture", "recipe", "preset"]


@dataclass(frozen=True)
class Named:
    """One named setting."""

    name: str
    kind: Kind
    """``architecture``: a registered architecture the card names a paper for; ``recipe``: an architecture plus
    field settings (``RECIPES``); ``preset``: a seed paper's config and runner settings (``PRESETS``)."""
    seed: str = ""
    """The seed paper it follows (a key of :data:`SEED_TITLES`), or "" for none."""
    follows: str = ""
    """What it takes from that paper, completing the card's "it follows ... of <title>"."""
    summary: str = ""
    """One line: what it is for (a preset's ``use_for``) or what it does and what we measured (a recipe's)."""
    architecture: str = ""
    """A recipe's registered training architecture."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """The config fields a recipe sets (everything else keeps its default)."""
    not_applied: tuple[str, ...] = ()
    """Parts of its paper a preset does not (yet) apply, said plainly."""


# The penalty each recipe uses, written out in full: a recipe keeps its meaning if a default changes.
_COACTIVE_DECODER = {
    "ortho_target": "decoder",
    "ortho_select_by": "activations",
    "ortho_pair_fraction": 0.001,
    "ortho_weighting": "squared",
    "ortho_scale": "input_energy",
    "ortho_coefficient": 0.1,
}

CATALOGUE: tuple[Named, ...] = (
    # Any other *_ortho architecture falls back to this entry on the card (the same selective penalty).
    Named("topk_ortho", "architecture", "000", "the selective top-p pair selection"),
    Named(
        "coactive_decoder_topk",
        "recipe",
        architecture="topk_ortho",
        overrides=_COACTIVE_DECODER,
        summary="TopK; the 0.1% most co-active latent pairs of each batch get their decoder rows pushed apart "
        "(mean cos^2, 0.1 x E||x||^2). SynthSAEBench vs topk from the same init: the proxy (3 seeds) F1 +0.047 "
        "+- 0.003, MCC +0.037 +- 0.001, yet F1 -0.200 behind matryoshka_batchtopk; mini F1 +0.023 +- 0.006; small "
        "F1 -0.007 +- 0.005, 73 more rare latents; micro: 15 more dead latents of 128 (docs/synthbench.md). Not a "
        "winner; not a default.",
    ),
    Named(
        "memory_efficient_selective_ortho",
        "preset",
        "000",
        "the chunked top-0.1% selection with correlation-scaled weights",
        "reproducing the Memory-efficient selective orthogonality paper (chunked top-0.1% pairs, LayerNorm encoder, "
        "ReLU + L1) on Pythia-70M",
    ),
    Named(
        "adaptive_ortho",
        "preset",
        "001",
        "the top-0.5% penalty with a strength adapted to the reconstruction loss",
        "reproducing the Adaptive orthogonal SAEs paper (top-0.5% pairs, strength adapted to the reconstruction "
        "loss, ReLU + L1) on Gemma-2-2B",
    ),
    Named(
        "selective_decorrelation",
        "preset",
        "002",
        "the hinge penalty above the adaptive threshold mu + sigma",
        "reproducing the Selective feature decorrelation paper (hinge above mean + std of all pairs, ReLU + L1) on "
        "Gemma-2-2B",
    ),
    Named(
        "controlled_feature_sharing",
        "preset",
        "003",
        "the annealed decoder orthogonality with batch-wise grouping",
        "reproducing the Controlled feature sharing paper (annealed decoder orthogonality within 8 groups, ReLU + "
        "L1) on Gemma-2-2B",
    ),
    Named(
        "selective_neural_competition",
        "preset",
        "004",
        "the mu + 2 sigma pair filter with momentum-adapted strength",
        "reproducing the Selective neural competition paper (mean + 2 std pair filter, local competition, "
        "dictionary management, ReLU + L1) on Gemma-2-2B",
        not_applied=("the SAE batch of 125 vectors (the preset uses 2048-token batches like the others)",),
    ),
)
"""Every named setting, in the order lists show them."""


def named(kind: Kind) -> dict[str, Named]:
    """The entries of one kind, by name, in catalogue order."""
    return {entry.name: entry for entry in CATALOGUE if entry.kind == kind}
