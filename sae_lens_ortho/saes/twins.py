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

TWIN_DEFAULTS: dict[str, dict[str, float]] = {
    # Measured on SynthSAEBench mini, 3 seeds, against the base from the same init (docs/synthbench.md): the
    # default coefficient 0.1 lowered Matryoshka's MCC on every seed (-0.010 on average) and F1 on two of three;
    # 0.03 did no harm.
    "matryoshka_batchtopk": {"ortho_coefficient": 0.03},
    # L1 / threshold SAEs far denser than the truth (L0 40-90 against 11): 0.1 cost 0.01-0.03 MCC and F1 on every
    # seed. Off by default (the twin then trains exactly like its base); set ortho_coefficient to use it.
    "jumprelu": {"ortho_coefficient": 0.0},
    "gated": {"ortho_coefficient": 0.0},
    # Not yet measured against its base: off until a paired run shows no harm (docs/synthbench.md).
    "matching_pursuit": {"ortho_coefficient": 0.0},
}
"""Per-base defaults of ortho fields that differ from OrthoConfig's (which are measured to help the TopK family)."""

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
