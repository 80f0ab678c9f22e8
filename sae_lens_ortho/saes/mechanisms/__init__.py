"""The ortho mechanisms, one class per file (see ``base.py`` for what a mechanism is and the step's flow).

``MECHANISMS`` is the registry: a mechanism is one file plus one line here. Its order is the order in which
the step runs the hooks and the order of the fields in ``OrthoConfig`` (``cfg.json``, ``--help``).
"""

from __future__ import annotations

from typing import Any

from sae_lens_ortho.saes.mechanisms.adaptive_l1 import AdaptiveL1
from sae_lens_ortho.saes.mechanisms.adaptive_strength import AdaptiveStrength
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext
from sae_lens_ortho.saes.mechanisms.decoder_penalty import DecoderPenalty
from sae_lens_ortho.saes.mechanisms.dictionary_management import DictionaryManagement
from sae_lens_ortho.saes.mechanisms.layer_norm_encoder import LayerNormEncoder
from sae_lens_ortho.saes.mechanisms.local_competition import LocalCompetition
from sae_lens_ortho.saes.mechanisms.micro_batches import MicroBatches
from sae_lens_ortho.saes.mechanisms.pairs import PairPenalty
from sae_lens_ortho.saes.mechanisms.unit_norm_decoder import UnitNormDecoder

__all__ = ["MECHANISMS", "Mechanism", "StepContext", "mechanism_buffers", "mechanisms_for"]

MECHANISMS: tuple[type[Mechanism], ...] = (
    PairPenalty,
    DecoderPenalty,
    AdaptiveStrength,
    DictionaryManagement,
    UnitNormDecoder,
    AdaptiveL1,
    LocalCompetition,
    LayerNormEncoder,
    MicroBatches,
)


def mechanisms_for(base_architecture: str | None = None) -> tuple[type[Mechanism], ...]:
    """The registered mechanisms whose fields a ``<base>_ortho`` config carries (None: those of every base)."""
    return tuple(m for m in MECHANISMS if m.architectures is None or base_architecture in m.architectures)


def mechanism_buffers() -> tuple[str, ...]:
    """Every buffer name a registered mechanism may register (training state, dropped at inference)."""
    return tuple(name for m in MECHANISMS for name in m.buffers)


def field_mixins() -> tuple[Any, ...]:
    """The mechanisms' field dataclasses, as bases of ``OrthoConfig`` (the first registered first in ``fields``)."""
    return tuple(m.Fields for m in reversed(MECHANISMS))
