"""``OrthoConfig``: the ortho fields shared by every ``*_ortho`` architecture, validated at construction.

Each mechanism declares its fields and their checks in its own file (``saes/mechanisms/``); ``OrthoConfig``
gathers them, flat. Each seed method is a setting of these fields (see ``sae_lens_ortho.presets``). Field
docstrings say what each does; bad values raise ``ValueError`` naming the field and its allowed range when the
config is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from sae_lens.constants import DTYPE_MAP
from sae_lens.registry import get_sae_class, get_sae_training_class
from sae_lens.saes.sae import SAEConfig, TrainingSAEConfig

from sae_lens_ortho.saes.checks import check_int, plain_numbers, short_repr
from sae_lens_ortho.saes.mechanisms import field_architectures, mechanisms_for
from sae_lens_ortho.saes.mechanisms import field_mixins as _field_mixins

__all__ = ["OrthoConfig", "is_ortho_training_cfg", "ortho_field_names"]


@dataclass(kw_only=True)
class OrthoConfig(*_field_mixins()):
    """Ortho fields shared by every ``*_ortho`` architecture. Mixed in *before* the base training config.

    Off by default (``ortho_coefficient=0``): with default fields an ``*_ortho`` twin trains exactly like its
    base, because no penalty setting we measured did no harm at every scale (docs/synthbench.md). Setting
    ``ortho_coefficient`` turns on the form the other defaults describe: the decoder overlap of the most co-active
    latent pairs (the top 0.1% pairs by activation cosine, mean cos^2 of their unit decoder rows, in units of
    E||x||^2; ``ortho_coefficient=0.1`` is the recipe ``coactive_decoder_topk``). The seed papers' penalty on the
    activations themselves is ``ortho_target="activations"`` (their presets set it).

    Args:
        ortho_coefficient (float): weight of the selective penalty (>= 0), warmed up over ortho_warm_up_steps.
        ortho_warm_up_steps (int): steps over which ortho_coefficient rises linearly from 0 (>= 0).
        ortho_pair_fraction (float): fraction p in (0, 1] of the n(n-1)/2 feature pairs penalised per batch,
            the ceil(p n(n-1)/2) pairs with the largest activation cosine.
        ortho_weighting (str): per-pair penalty: abs |C|, squared C^2, hinge ReLU(|C| - ortho_tau), scaled |C|^2/ortho_tau.
        ortho_tau (float): threshold of hinge (in [0, 1]) or r_thresh of scaled (in (0, 1]).
        ortho_decoder_coefficient (float): weight of the all-pairs decoder orthogonality penalty (>= 0; 0 = off).
        ortho_decoder_reduction (str): mean (over the n(n-1) ordered pairs) or sum of (d_i.d_j)^2.
        ortho_method (str): pair selection: sparse (co-firing pairs), dense (chunked scan), or auto.
        ortho_chunk_size (int): feature columns per chunk of the dense scan (>= 1).

    The attribute docstrings in each mechanism's file say the same at more length.
    """

    ortho_base_architecture: ClassVar[str]

    def __post_init__(self) -> None:
        plain_numbers(self)
        self._check_base_fields()
        for mechanism in mechanisms_for(self):
            mechanism.validate(self)
        self._check_sizes()  # after the fields (a bad ortho_* field is named first, as before the mechanisms)
        super().__post_init__()  # type: ignore[misc]

    def _check_base_fields(self) -> None:
        """SAELens's own fields, which its configs take unchecked (a bad one failed inside training)."""
        check_int("d_in", getattr(self, "d_in", None), low=1)
        check_int("d_sae", getattr(self, "d_sae", None), low=1)
        dtype = getattr(self, "dtype", "float32")
        if not isinstance(dtype, torch.dtype) and dtype not in DTYPE_MAP:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_MAP)}; got {short_repr(dtype)}")
        device = getattr(self, "device", "cpu")
        try:
            ok = isinstance(device, (str, torch.device)) and torch.device(device) is not None
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"device must be a torch device string such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}")

    def _check_sizes(self) -> None:
        """Sizes that would otherwise fail at the first step: k beyond d_sae, empty Matryoshka widths."""
        d_sae = self.d_sae  # type: ignore[attr-defined]  # an int >= 1 (_check_base_fields)
        if hasattr(self, "k"):
            # BatchTopK's k is a mean per row (k x batch are kept), so it may be fractional; TopK's goes to topk().
            fractional = "batchtopk" in self.ortho_base_architecture
            kind = (int, float) if fractional else int
            k = self.k  # type: ignore[attr-defined]
            ok = isinstance(k, kind) and not isinstance(k, bool) and (isinstance(k, int) or math.isfinite(k))
            if not (ok and 0 < k <= d_sae):
                what = "a number" if fractional else "an integer"
                raise ValueError(
                    f"k must be {what} in (0, d_sae={d_sae}] (active latents per row), got {short_repr(k)}"
                )
        # SAELens refuses empty matryoshka widths only when the SAE is built, after the model has loaded.
        if getattr(self, "matryoshka_widths", None) == []:
            raise ValueError(
                f"matryoshka_widths is empty: give the nested dictionaries' widths, increasing up to d_sae={d_sae} "
                f"(e.g. matryoshka_widths=[{max(1, d_sae // 16)}, {max(1, d_sae // 4)}, {d_sae}]; CLI: --matryoshka_widths "
                f"{max(1, d_sae // 16)} {max(1, d_sae // 4)} {d_sae})"
            )

    def get_inference_config_class(self) -> type[SAEConfig]:
        # Save as the base architecture's inference SAE (topk_ortho -> topk), so the result loads anywhere.
        base = get_sae_training_class(self.ortho_base_architecture)[1]
        if base.get_inference_config_class is TrainingSAEConfig.get_inference_config_class:
            return get_sae_class(self.ortho_base_architecture)[1]
        return base.get_inference_config_class(self)  # type: ignore[arg-type]


def is_ortho_training_cfg(cfg_dict: dict[str, Any]) -> bool:
    """Whether a saved cfg.json dict is an ortho *training* config (a checkpoint): only those carry ortho_* fields
    at the top level (a final SAE keeps them under metadata.training_architecture_details)."""
    return any(key.startswith("ortho_") for key in cfg_dict)


def ortho_field_names() -> list[str]:
    """Names of the ortho fields: ``OrthoConfig``'s, then those of one architecture only (``standard_ortho``'s
    encoder options; ``mechanisms.field_architectures`` says whose), in declaration order."""
    common = [f.name for f in fields(OrthoConfig)]
    return common + [name for name, bases in field_architectures().items() if bases is not None and name not in common]
