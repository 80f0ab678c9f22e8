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

__all__ = ["TWINS", "register_twins"]

TWINS: dict[str, tuple[type, type]] = {}
"""{twin architecture name: (training SAE class, config class)} of the twins made here."""


def register_twins() -> dict[str, tuple[type, type]]:
    """Make and register ``<base>_ortho`` for every registered training architecture that has no twin yet."""
    for base in sorted(SAE_TRAINING_CLASS_REGISTRY):
        name = f"{base}_ortho"
        if base.endswith("_ortho") or (name in SAE_TRAINING_CLASS_REGISTRY and name not in TWINS):
            continue
        prefix = "".join(part.capitalize() for part in base.split("_")) + "Ortho"
        TWINS[name] = add_ortho(base, class_prefix=prefix, module=__name__)
    return TWINS


register_twins()
