"""Named SAE recipes: a registered training architecture plus ortho field settings.

A recipe is what a user passes as ``architecture`` + fields; presets (``sae_lens_ortho.presets``) add the runner
settings of a paper on top, and ``sae-lens-ortho synthbench --arm <recipe>`` benchmarks one by name. Recipes are
entries of the one catalogue of named settings (``sae_lens_ortho.saes.catalogue``); add one there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sae_lens_ortho.saes.catalogue import named

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


RECIPES: dict[str, Recipe] = {
    name: Recipe(name, entry.architecture, entry.overrides, entry.summary) for name, entry in named("recipe").items()
}
"""Every recipe of the catalogue (``sae_lens_ortho.saes.catalogue``), by name."""
