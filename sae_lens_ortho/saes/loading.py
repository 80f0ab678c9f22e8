"""Clear errors where SAELens would raise a bare ``KeyError`` on our architecture names.

``SAE.load_from_disk`` looks the folder's architecture up in SAELens's *inference* registry. A training checkpoint
of ``topk_ortho`` (or any ``<base>_ortho`` without an inference class of its own) is not there, so SAELens failed
with ``KeyError: 'topk_ortho'``. :func:`register_checkpoint_redirect` puts a placeholder under that name whose
config refuses to be built with a message saying what the folder is and how to load it. ``standard_ortho``, which
is a real inference architecture too, refuses training checkpoints in its own loader
(``standard_inference.StandardOrthoSAE.process_state_dict_for_loading``).

Final SAEs that need the plugin carry :data:`LOADING_HINT` in their cfg.json metadata, so whoever reads the
config without the plugin learns which package registers the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sae_lens.registry import SAE_CLASS_REGISTRY
from sae_lens.saes.sae import SAE, SAEConfig

__all__ = ["INSTALL_FROM_SOURCE", "LOADING_HINT", "CheckpointOnlySAE", "register_checkpoint_redirect"]

INSTALL_FROM_SOURCE = "git clone <sae-lens-ortho repository> && pip install -e ./sae-lens-ortho"
"""How to install the plugin: it is not on the package index (PyPI)."""

LOADING_HINT = {
    "required_package": "sae-lens-ortho",
    "loading_hint": (
        "this SAE's architecture is registered by the sae-lens-ortho package (a SAELens plugin), which is not on "
        f"PyPI: install it from its source ({INSTALL_FROM_SOURCE}), then `import sae_lens_ortho` before "
        "SAE.load_from_disk / SAE.from_pretrained"
    ),
}


class CheckpointOnlySAE(SAE[Any]):
    """Never built: the config placeholder below refuses first."""


@dataclass
class _CheckpointOnlyConfig(SAEConfig):
    training_name: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        name = self.training_name
        raise ValueError(
            f"{name!r} is a sae_lens_ortho *training* architecture: this folder is a training checkpoint (unfolded "
            f"weights, ortho_* training state), not an inference SAE. Load it with "
            f"TrainingSAE.load_from_disk(path) (after `import sae_lens_ortho`), or convert it to the inference SAE "
            f"the runner would save with sae_lens_ortho.evals.saebench.specs.load_sae(path). Final SAEs trained "
            f"as {name!r} are saved under their base architecture and load with SAE.load_from_disk."
        )

    @classmethod
    def architecture(cls) -> str:
        return cls.training_name


def register_checkpoint_redirect(name: str) -> None:
    """Give ``SAE.load_from_disk`` a clear error for checkpoints of the training architecture ``name`` (a no-op when
    ``name`` is a real inference architecture)."""
    existing = SAE_CLASS_REGISTRY.get(name)
    if existing is not None and existing[0] is not CheckpointOnlySAE:
        return
    cfg_cls = type(f"CheckpointOnly_{name}", (_CheckpointOnlyConfig,), {"training_name": name, "__module__": __name__})
    SAE_CLASS_REGISTRY[name] = (CheckpointOnlySAE, dataclass(cfg_cls))
