"""``topk_ortho``: SAELens's TopK SAE trained with the ortho losses; saved and loaded as plain ``topk``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from sae_lens.saes.topk_sae import TopK, TopKTrainingSAE, TopKTrainingSAEConfig
from torch import Tensor
from typing_extensions import override

from sae_lens_ortho.saes.ortho import OrthoConfig, OrthoTrainingSAE, register_training_architecture

__all__ = ["TopKOrthoTrainingSAE", "TopKOrthoTrainingSAEConfig"]


class _RecordingTopK(TopK):
    """SAELens's TopK activation that also keeps this call's (values, indices) for the pair selection,
    so the ortho penalty needs no second top-k scan of the [batch, d_sae] activations."""

    last: tuple[Tensor, Tensor] | None = None

    @override
    def forward(self, x: Tensor) -> Tensor:
        if self.use_sparse_activations or x.ndim != 2:
            self.last = None
            return super().forward(x)
        # Same computation as TopK.forward's dense branch, keeping (values, indices).
        topk_values, topk_indices = torch.topk(x, k=self.k, dim=-1, sorted=False)
        values = topk_values.relu()
        self.last = (values, topk_indices)
        return torch.zeros_like(x).scatter_(-1, topk_indices, values)


@dataclass(kw_only=True)
class TopKOrthoTrainingSAEConfig(OrthoConfig, TopKTrainingSAEConfig):
    """TopK training config plus the ortho fields of :class:`~sae_lens_ortho.saes.ortho.OrthoConfig`.

    The trained SAE is saved as SAELens ``topk`` (inference is unchanged); ``metadata.training_architecture``
    is ``topk_ortho`` and the ortho fields are in ``metadata.training_architecture_details``.
    """

    ortho_base_architecture: ClassVar[str] = "topk"

    @override
    @classmethod
    def architecture(cls) -> str:
        return "topk_ortho"


class TopKOrthoTrainingSAE(OrthoTrainingSAE, TopKTrainingSAE):
    """TopK training SAE with the selective activation-orthogonality and decoder-orthogonality losses."""

    @override
    def get_activation_fn(self) -> Callable[[Tensor], Tensor]:
        return _RecordingTopK(self.cfg.k, use_sparse_activations=self.cfg.use_sparse_activations)

    def ortho_row_width(self) -> int | None:
        return self.cfg.k

    def ortho_sparse_activations(self) -> tuple[Tensor, Tensor] | None:
        act = self.activation_fn
        last = act.last if isinstance(act, _RecordingTopK) else None
        if isinstance(act, _RecordingTopK):
            act.last = None  # used once; do not keep this step's tensors alive
        return last


register_training_architecture("topk_ortho", TopKOrthoTrainingSAE, TopKOrthoTrainingSAEConfig)
