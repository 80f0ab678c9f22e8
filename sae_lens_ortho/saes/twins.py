"""Ortho twins of the other SAELens training architectures, registered at import: ``jumprelu_ortho``,
``gated_ortho``, ``abstopk_ortho``, ``matryoshka_batchtopk_ortho``, ``matching_pursuit_ortho``, ...

Each is :func:`~sae_lens_ortho.saes.ortho.add_ortho` of its base: the base SAE plus the ortho losses, saved as the
base's inference architecture. ``topk``, ``batchtopk`` and ``standard`` have twins with their own files (they add
hooks); every other training architecture registered when this module is imported gets a generic twin here, so
any of them can be compared with and without orthogonality (``sae-lens-ortho synthbench --arm ...``).
"""

from __future__ import annotations

from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

# The hand-written twins register first, so that the loop below skips their bases.
import sae_lens_ortho.saes.batchtopk
import sae_lens_ortho.saes.standard
import sae_lens_ortho.saes.topk  # noqa: F401
from sae_lens_ortho.saes.ortho import add_ortho

__all__ = ["TWINS", "TWIN_DEFAULTS", "register_twins"]

TWIN_DEFAULTS: dict[str, dict[str, float]] = {}
"""Per-base defaults of ortho fields that differ from OrthoConfig's; none do now: every twin's penalty is off by
default, like OrthoConfig's. What each twin did with the penalty on (SynthSAEBench mini, 3 seeds, paired,
docs/synthbench.md): Matryoshka lost 0.010 MCC at 0.1 and was neutral at 0.03; jumprelu and gated lost
0.008-0.028 MCC at 0.1 (their L0 is 40-90 against a true 11); matching_pursuit is not measured."""

TWINS: dict[str, tuple[type, type]] = {}
"""{twin architecture name: (training SAE class, config class)} of the twins made here."""


def register_twins() -> dict[str, tuple[type, type]]:
    """Make and register ``<base>_ortho`` for every registered training architecture that has no twin yet."""
    for base in sorted(SAE_TRAINING_CLASS_REGISTRY):
        name = f"{base}_ortho"
        if base.endswith("_ortho") or (name in SAE_TRAINING_CLASS_REGISTRY and name not in TWINS):
            continue
        prefix = "".join(part.capitalize() for part in base.split("_")) + "Ortho"
        TWINS[name] = add_ortho(base, class_prefix=prefix, module=__name__, defaults=TWIN_DEFAULTS.get(base))
    return TWINS


register_twins()
