"""What the step table compares: data, not code. A variant is a name, the SAELens base it is measured against,
and a builder of its training SAE config for a given shape.

* ``BASES``: SAELens's own ``topk``, ``batchtopk`` and ``standard`` training SAEs.
* ``DEFAULTS``: each ``*_ortho`` architecture with every ortho field at its default (judged against the
  targets), plus ``topk_ortho+decoder`` (the decoder penalty on; shown, not judged: it is not a default).
* ``RECIPES``: named recipes, judged against the targets like the defaults. **Adding one is one line here**:
  ``recipe_variant(NAME, base=...)`` for a recipe of ``sae_lens_ortho.saes.recipes.RECIPES``,
  ``preset_variant(NAME, base=...)`` for a preset in ``sae_lens_ortho.presets.PRESETS``; ``--recipe NAME`` adds
  any preset for one run without editing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    """One row of the step table."""

    d_in: int
    d_sae: int
    k: int
    """Latents per row (TopK), mean latents per row (BatchTopK); unused by the ReLU ``standard`` SAE."""
    batch: int


Builder = Callable[[Shape, str], Any]  # (shape, device) -> a TrainingSAEConfig


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    """The SAELens base architecture it is measured against (a key of ``BASES``)."""
    config: Builder
    judged: bool = True
    """Checked against the time and memory targets (defaults and recipes) or shown for information."""


def _sizes(shape: Shape, device: str, family: str) -> dict[str, Any]:
    kw: dict[str, Any] = dict(d_in=shape.d_in, d_sae=shape.d_sae, device=device)
    if family != "standard":
        kw["k"] = shape.k
    return kw


def _config_class(architecture: str) -> Any:
    """The training config class of a SAELens or ortho architecture (imported when first needed)."""
    import sae_lens

    import sae_lens_ortho

    classes = {
        "topk": sae_lens.TopKTrainingSAEConfig,
        "batchtopk": sae_lens.BatchTopKTrainingSAEConfig,
        "standard": sae_lens.StandardTrainingSAEConfig,
        "topk_ortho": sae_lens_ortho.TopKOrthoTrainingSAEConfig,
        "batchtopk_ortho": sae_lens_ortho.BatchTopKOrthoTrainingSAEConfig,
        "standard_ortho": sae_lens_ortho.StandardOrthoTrainingSAEConfig,
    }
    return classes[architecture]


def _builder(architecture: str, **fields: Any) -> Builder:
    family = architecture.removesuffix("_ortho")

    def build(shape: Shape, device: str) -> Any:
        return _config_class(architecture)(**_sizes(shape, device, family), **fields)

    return build


def preset_variant(preset: str, base: str) -> Variant:
    """A recipe from ``sae_lens_ortho.presets.PRESETS``: its SAE config at the row's sizes (d_in, d_sae, k, device
    replaced; every other field as the preset sets it), measured against ``base``."""

    def build(shape: Shape, device: str) -> Any:
        from sae_lens_ortho.presets import PRESETS

        cfg = PRESETS[preset]().sae
        names = {f.name for f in dataclasses.fields(cfg)}
        sizes = {key: v for key, v in _sizes(shape, device, base).items() if key in names}
        return dataclasses.replace(cfg, **sizes)

    return Variant(preset, base, build)


BASES: dict[str, Builder] = {name: _builder(name) for name in ("topk", "batchtopk", "standard")}

DEFAULTS: list[Variant] = [
    Variant("topk_ortho", "topk", _builder("topk_ortho")),
    Variant("topk_ortho+decoder", "topk", _builder("topk_ortho", ortho_decoder_coefficient=1.0), judged=False),
    Variant("batchtopk_ortho", "batchtopk", _builder("batchtopk_ortho")),
    Variant("standard_ortho", "standard", _builder("standard_ortho")),
]


def recipe_variant(name: str, base: str) -> Variant:
    """A named recipe of ``sae_lens_ortho.saes.recipes.RECIPES``: its architecture and fields at the row's sizes."""
    from sae_lens_ortho.saes.recipes import RECIPES as NAMED

    recipe = NAMED[name]
    return Variant(name, base, _builder(recipe.architecture, **recipe.overrides))


RECIPES: dict[str, Variant] = {
    # The co-active decoder penalty on (the defaults have every penalty off, so their ratios are ~1 by design).
    "coactive_decoder_topk": recipe_variant("coactive_decoder_topk", base="topk"),
}


def variants_for(base: str, recipes: list[str] = [], skip: tuple[str, ...] = ()) -> list[Variant]:  # noqa: B006
    """The defaults and recipes measured against ``base``: ``RECIPES`` plus presets named in ``recipes``
    (``NAME`` or ``NAME:BASE``; BASE defaults to ``standard``, the seed presets' family)."""
    extra = dict(RECIPES)
    for spec in recipes:
        name, _, family = spec.partition(":")
        extra[name] = preset_variant(name, family or "standard")
    return [v for v in [*DEFAULTS, *extra.values()] if v.base == base and v.name not in skip]


def build_sae(config: Any) -> Any:
    """The registered training SAE for ``config`` (SAELens's registry; ``*_ortho`` after ``import
    sae_lens_ortho``)."""
    from sae_lens.registry import get_sae_training_class

    import sae_lens_ortho  # noqa: F401  (registers the *_ortho architectures)

    cls, _ = get_sae_training_class(config.architecture())
    return cls(config)
