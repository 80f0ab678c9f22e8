"""Resource guards of a training run: fail early, with the figure and the field to change, or pick a path that fits.

The pair selection's memory grows with the batch: the co-firing path needs ~110 bytes per co-firing product
(b * k(k-1)/2 of them), so d_sae 65,536, k 512, batch 2,048 asks for ~30 GB and used to die in the allocator at
step 1 with no hint. :func:`selection_plan` estimates the selection from the config and the batch size
(:mod:`sae_lens_ortho.core.footprint`) and compares it with the memory the device has free:

* the configured path fits: nothing changes;
* ``ortho_method="auto"`` and the other path fits: that one is used (a warning says so);
* nothing fits: :class:`OrthoMemoryError` names the estimate, the free memory and what to change.

The SAE runs the check once, at its first training step (:func:`check_step_resources`, so plain SAELens runners
are covered); :mod:`sae_lens_ortho.training` runs it before loading the model. For activations whose row width is
only known per batch (ReLU, BatchTopK), the step also passes a cap on co-firing products to the selection, which
then takes the dense scan for a batch that would not fit (``auto``), or stops with the figure (``sparse``).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from sae_lens_ortho.core.footprint import (
    BYTES_PER_SELECTED_PAIR,
    SPARSE_BYTES_PER_PRODUCT,
    SelectionFootprint,
    SelectionMemoryError,
    available_bytes,
    dense_selection_bytes,
    format_bytes,
    sparse_selection_bytes,
)
from sae_lens_ortho.core.pairs import MAX_DENSE_FEATURES, choose_method
from sae_lens_ortho.core.penalties import n_ranked_pairs

__all__ = ["MEMORY_HEADROOM", "OrthoMemoryError", "SelectionPlan", "check_step_resources", "selection_plan"]

MEMORY_HEADROOM = 0.9
"""Fraction of the free memory the selection may plan to use."""


class OrthoMemoryError(SelectionMemoryError):
    """The pair selection cannot fit in the memory the device has free (found from the config and batch size)."""


class SelectionPlan(NamedTuple):
    method: str | None
    """The method to use (``None``: the config's own, decided per batch)."""
    max_cofiring_products: int | None
    """Cap on b * w(w-1)/2 for a batch on the co-firing path (``None``: unknown memory)."""


def _static_width(cfg: Any) -> int | None:
    """Non-zeros per row known from the config: k of a TopK SAE (BatchTopK rows vary: not static)."""
    k = getattr(cfg, "k", None)
    if k is None or "batchtopk" in cfg.ortho_base_architecture:
        return None
    return int(k)


def _advice(
    cfg: Any, batch: int, device: str, footprint: SelectionFootprint, free: int, other: SelectionFootprint | None
) -> str:
    lines = [
        f"the {cfg.architecture()} pair selection needs about {format_bytes(footprint.bytes)} for a batch of {batch} "
        f"rows ({footprint.detail}; d_sae {cfg.d_sae}, ortho_pair_fraction {cfg.ortho_pair_fraction}), but only "
        f"{format_bytes(free)} are free on {device}.",
        "It grows linearly with the batch: lower train_batch_size_tokens",
    ]
    if footprint.method == "sparse":
        lines[-1] += ", or k (the products grow with k^2)"
    else:
        lines[-1] += f", or ortho_chunk_size (now {cfg.ortho_chunk_size})"
    if other is not None:
        lines[-1] += (
            f", or set ortho_method='{other.method}' (estimated {format_bytes(other.bytes)}, "
            f"{'fits' if other.bytes <= free * MEMORY_HEADROOM else 'does not fit either'})"
        )
    lines[-1] += ". Micro-batches (ortho_micro_batch_size) do not help: the penalty sees the whole batch."
    return " ".join(lines)


def selection_plan(cfg: Any, batch: int, device: torch.device | str | None = None) -> SelectionPlan:
    """Check the selection of ``cfg`` (an ortho training config) for batches of ``batch`` rows against the free
    memory of ``device`` (default ``cfg.device``); raise :class:`OrthoMemoryError` when it cannot fit."""
    device = str(device if device is not None else cfg.device)
    free = available_bytes(device)
    needed = cfg.ortho_coefficient > 0 or cfg.ortho_manage_every > 0
    if free is None or cfg.d_sae < 2 or not needed:
        return SelectionPlan(None, None)
    budget = int(free * MEMORY_HEADROOM)
    m = n_ranked_pairs(cfg.d_sae, cfg.ortho_pair_fraction, cfg.ortho_min_pairs)
    max_products = max((budget - BYTES_PER_SELECTED_PAIR * m) // SPARSE_BYTES_PER_PRODUCT, 0)
    dense = None
    if cfg.d_sae <= MAX_DENSE_FEATURES:
        dense = dense_selection_bytes(batch, cfg.d_sae, m, cfg.ortho_chunk_size)
    width = _static_width(cfg)
    if width is None:  # decided per batch, under the cap
        if cfg.ortho_method == "dense" and dense is not None and dense.bytes > budget:
            raise OrthoMemoryError(_advice(cfg, batch, device, dense, free, None))
        return SelectionPlan(None, max_products)
    sparse = sparse_selection_bytes(batch, min(width, cfg.d_sae), m)
    method = cfg.ortho_method if cfg.ortho_method != "auto" else choose_method(width, cfg.d_sae)
    chosen, other = (sparse, dense) if method == "sparse" else (dense, sparse)
    assert chosen is not None  # dense is chosen only where it exists (choose_method, config validation)
    if chosen.bytes <= budget:
        return SelectionPlan(method, max_products)
    if cfg.ortho_method == "auto" and other is not None and other.bytes <= budget:
        warnings.warn(
            f"ortho_method='auto' uses the {other.method} pair selection: the {chosen.method} one would need "
            f"{format_bytes(chosen.bytes)} of the {format_bytes(free)} free on {device} "
            f"({chosen.detail}); the {other.method} one needs about {format_bytes(other.bytes)}",
            stacklevel=3,
        )
        return SelectionPlan(other.method, None if other.method == "dense" else max_products)
    raise OrthoMemoryError(_advice(cfg, batch, device, chosen, free, other))


def check_step_resources(sae: Any, sae_in: Tensor) -> None:
    """At the SAE's first training step (host-side, no sync): warn about a useless micro-batch size and plan
    the selection's memory (see the module docstring). Later calls return at once."""
    if getattr(sae, "_ortho_resources_checked", False):
        return
    sae._ortho_resources_checked = True
    cfg = sae.cfg
    batch = int(sae_in.shape[0])
    micro = cfg.ortho_micro_batch_size
    if micro is not None and micro >= batch:
        warnings.warn(
            f"ortho_micro_batch_size ({micro}) >= the training batch ({batch} rows): no gradient accumulation "
            "happens; set it below the batch size (train_batch_size_tokens) or leave it None",
            stacklevel=3,
        )
    if sae_in.device.type == "meta":
        return
    plan = selection_plan(cfg, batch, sae_in.device)
    sae._ortho_method_override = plan.method if plan.method != cfg.ortho_method else None
    sae._ortho_max_products = plan.max_cofiring_products
