"""Named SAE recipes: a registered training architecture plus ortho field settings.

A recipe is what a user passes as ``architecture`` + fields; presets (``sae_lens_ortho.presets``) add the runner
settings of a paper on top, and ``sae-lens-ortho synthbench --arm <recipe>`` benchmarks one by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECIPES", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    """A named setting of an ``*_ortho`` architecture's fields."""

    name: str
    architecture: str
    """The registered training architecture."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Config fields the recipe sets (everything else keeps its default)."""
    summary: str = ""
    """One line: what it does and what we measured."""

    def config(self, **fields: Any) -> Any:
        """The training config of this recipe with ``fields`` (sizes, k, ...) on top of its own settings."""
        from sae_lens.registry import get_sae_training_class

        return get_sae_training_class(self.architecture)[1](**{**self.overrides, **fields})


# The penalty each recipe uses, written out in full: a recipe keeps its meaning if a default changes.
_COACTIVE_DECODER = {
    "ortho_target": "decoder",
    "ortho_select_by": "activations",
    "ortho_pair_fraction": 0.001,
    "ortho_weighting": "squared",
    "ortho_scale": "input_energy",
    "ortho_coefficient": 0.1,
}

RECIPES: dict[str, Recipe] = {
    "coactive_decoder_topk": Recipe(
        name="coactive_decoder_topk",
        architecture="topk_ortho",
        overrides=_COACTIVE_DECODER,
        summary="TopK; the 0.1% most co-active latent pairs of each batch get their decoder rows pushed apart "
        "(mean cos^2, 0.1 x E||x||^2). SynthSAEBench vs topk from the same init: mini (3 seeds) F1 +0.023 +- "
        "0.006, MCC +0.027 +- 0.002; small (3 seeds) F1 -0.007 +- 0.005, MCC -0.002 +- 0.002, 73 more rare "
        "latents; micro: 15 more dead latents of 128 (docs/synthbench.md). Not a winner; not a default.",
    ),
}
