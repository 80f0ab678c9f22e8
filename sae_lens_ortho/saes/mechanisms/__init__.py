"""The ortho mechanisms, one class per file (see ``base.py`` for what a mechanism is and the step's flow).

``MECHANISMS`` is the registry: a mechanism is one file plus one line here. Its order is the order in which
the step runs the hooks and the order of the fields in ``OrthoConfig`` (``cfg.json``, ``--help``). A mechanism
from outside the package (a plugin, a test) registers with :func:`register_mechanism`; configs built after that
by ``add_ortho`` carry its fields (``OrthoConfig`` itself is built at import, from the list above).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sae_lens_ortho.saes.mechanisms.adaptive_l1 import AdaptiveL1
from sae_lens_ortho.saes.mechanisms.adaptive_strength import AdaptiveStrength
from sae_lens_ortho.saes.mechanisms.base import Mechanism, StepContext
from sae_lens_ortho.saes.mechanisms.bias_adaptation import BiasAdaptation
from sae_lens_ortho.saes.mechanisms.decoder_penalty import DecoderPenalty
from sae_lens_ortho.saes.mechanisms.dictionary_management import DictionaryManagement
from sae_lens_ortho.saes.mechanisms.firing_gate import FiringGate
from sae_lens_ortho.saes.mechanisms.inner_levels import InnerLevels
from sae_lens_ortho.saes.mechanisms.layer_norm_encoder import LayerNormEncoder
from sae_lens_ortho.saes.mechanisms.local_competition import LocalCompetition
from sae_lens_ortho.saes.mechanisms.micro_batches import MicroBatches
from sae_lens_ortho.saes.mechanisms.pairs import PairPenalty
from sae_lens_ortho.saes.mechanisms.unit_norm_decoder import UnitNormDecoder

__all__ = [
    "MECHANISMS",
    "Mechanism",
    "StepContext",
    "field_architectures",
    "field_mixins",
    "mechanism_buffers",
    "mechanisms_for",
    "register_mechanism",
]

MECHANISMS: list[type[Mechanism]] = [
    PairPenalty,
    FiringGate,
    InnerLevels,
    DecoderPenalty,
    AdaptiveStrength,
    DictionaryManagement,
    BiasAdaptation,
    UnitNormDecoder,
    AdaptiveL1,
    LocalCompetition,
    LayerNormEncoder,
    MicroBatches,
]


def register_mechanism(mechanism: type[Mechanism]) -> type[Mechanism]:
    """Add ``mechanism`` to the registry (again: replace the one of the same name, e.g. after a module reload)."""
    names = [m.name for m in MECHANISMS]
    if mechanism.name in names:
        MECHANISMS[names.index(mechanism.name)] = mechanism
    else:
        MECHANISMS.append(mechanism)
    return mechanism


def _field_names(mechanism: type[Mechanism]) -> list[str]:
    return [f.name for f in fields(mechanism.Fields)]


def mechanisms_for(cfg: Any) -> list[type[Mechanism]]:
    """The registered mechanisms whose fields ``cfg`` carries, in registry order."""
    return [m for m in MECHANISMS if all(hasattr(cfg, name) for name in _field_names(m))]


def mechanism_buffers() -> tuple[str, ...]:
    """Every buffer name a registered mechanism may register (training state, dropped at inference)."""
    return tuple(name for m in MECHANISMS for name in m.buffers)


def field_mixins(base_architecture: str | None = None, *, exclude: Any = None) -> tuple[Any, ...]:
    """The field dataclasses of the mechanisms a ``<base>_ortho`` config carries (None: those every base
    carries, i.e. ``OrthoConfig``'s), as config bases in the order that puts the first registered first in
    ``fields``; those whose fields ``exclude`` (a config class) already has left out."""
    known = {f.name for f in fields(exclude)} if exclude is not None else set()
    chosen = [
        m.Fields
        for m in MECHANISMS
        if (m.architectures is None or base_architecture in m.architectures) and not known.issuperset(_field_names(m))
    ]
    return tuple(reversed(chosen))


def field_architectures() -> dict[str, tuple[str, ...] | None]:
    """{field name: the base architectures whose ``*_ortho`` configs carry it (None: every one)}, for every
    registered mechanism's fields."""
    return {name: m.architectures for m in MECHANISMS for name in _field_names(m)}
