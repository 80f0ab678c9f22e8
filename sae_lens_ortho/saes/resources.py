"""Resource guards of a training run: fail early, with the figure and the field to change, or pick a path that fits.

The pair selection's memory grows with the batch: the co-firing path needs ~110 bytes per co-firing product
(b * k(k-1)/2 of them), so d_sae 65,536, k 512, batch 2,048 asks for ~30 GB and used to die in the allocator at
step 1 with no hint. :func:`selection_plan` estimates the selection from the config and the batch size
(:mod:`sae_lens_ortho.core.footprint`) and compares it with the memory the device has free:

* the configured path fits: nothing changes;
* ``ortho_method="auto"`` and the other path fits: that one is used (a warning says so);
* nothing fits: :class:`OrthoMemoryError` names the estimate, the free memory and what to change.

The other forms are planned the same way, from the dictionary's sizes (they do not depend on the batch): the
decoder penalty (``gram``, ``grouped``'s G d x d Grams, ``chunk_max``'s [K, n/K, n/K] cosines) and the decoder
pair scan of ``ortho_select_by="decoder"``; their errors name the fields of that form. A form that is off still
runs on logging steps for its metrics (the pair selection with ``ortho_coefficient=0``, the decoder penalty with
``ortho_decoder_coefficient=0``): it is planned too, and where it does not fit, logging steps skip it with a
warning instead of failing a run whose penalty is off. Local competition (``core.competition``) and dictionary
management work in bounded chunks or per feature and are not planned.

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
    decoder_penalty_bytes,
    decoder_selection_bytes,
    dense_selection_bytes,
    format_bytes,
    sparse_selection_bytes,
)
from sae_lens_ortho.core.pairs import MAX_DENSE_FEATURES, choose_method
from sae_lens_ortho.core.penalties import n_ranked_pairs
from sae_lens_ortho.saes.mechanisms.pairs import selection_needed, selection_runs

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
    skipped_diagnostics: tuple[str, ...] = ()
    """What logging steps skip because it is computed there for its metrics alone and would not fit: ``pairs``
    (the pair selection, with ortho_coefficient=0) and/or ``decoder_penalty`` (with the decoder penalty off)."""


def _static_width(cfg: Any) -> int | None:
    """Non-zeros per row known from the config: k of a TopK SAE (BatchTopK rows vary: not static)."""
    k = getattr(cfg, "k", None)
    if k is None or "batchtopk" in cfg.ortho_base_architecture:
        return None
    return int(k)


def _short_of(footprint: SelectionFootprint, free: str) -> str:
    return f"needs about {format_bytes(footprint.bytes)} ({footprint.detail}), but only {free}."


def _advice(
    cfg: Any, batch: int, footprint: SelectionFootprint, free: str, budget: int, other: SelectionFootprint | None
) -> str:
    lines = [
        f"the {cfg.architecture()} pair selection needs about {format_bytes(footprint.bytes)} for a batch of {batch} "
        f"rows ({footprint.detail}; d_sae {cfg.d_sae}, ortho_pair_fraction {cfg.ortho_pair_fraction}), but only "
        f"{free}.",
        "It grows linearly with the batch: lower train_batch_size_tokens",
    ]
    if footprint.method == "sparse":
        lines[-1] += ", or k (the products grow with k^2)"
    else:
        lines[-1] += f", or ortho_chunk_size (now {cfg.ortho_chunk_size})"
    if other is not None:
        lines[-1] += (
            f", or set ortho_method='{other.method}' (estimated {format_bytes(other.bytes)}, "
            f"{'fits' if other.bytes <= budget else 'does not fit either'})"
        )
    lines[-1] += ". Micro-batches (ortho_micro_batch_size) do not help: the penalty sees the whole batch."
    return " ".join(lines)


def _decoder_penalty_advice(cfg: Any, footprint: SelectionFootprint, free: str, budget: int) -> str:
    """What to change for a decoder penalty form that does not fit (it depends on the dictionary, not the batch)."""
    form = cfg.ortho_decoder_penalty
    n, d = cfg.d_sae, cfg.d_in
    gram = decoder_penalty_bytes("gram", n, d)
    fits = "fits" if gram.bytes <= budget else "does not fit either"
    if form == "chunk_max":
        chunks = next((k for k in _doublings(cfg.ortho_decoder_chunks, n) if _fits_chunks(cfg, k, budget)), None)
        change = "raise ortho_decoder_chunks (the block grows with d_sae^2 / ortho_decoder_chunks" + (
            f"; {chunks} fit)" if chunks is not None else ")"
        )
    elif form == "grouped":
        groups = max(budget - decoder_penalty_bytes("grouped", n, d, groups=0).bytes, 0) // (8 * d * d + 4 * n)
        change = f"lower ortho_groups (the Grams grow with ortho_groups x d_in^2; at most {groups:,} fit)"
    else:
        return (
            f"the {cfg.architecture()} decoder penalty (ortho_decoder_penalty='gram') "
            + _short_of(footprint, free)
            + " It grows with d_sae x d_in: lower d_sae, or turn the penalty off (ortho_decoder_coefficient=0, "
            "ortho_decoder_start=None)."
        )
    return (
        f"the {cfg.architecture()} decoder penalty ortho_decoder_penalty='{form}' "
        + _short_of(footprint, free)
        + f" It does not depend on the batch: {change}, or use ortho_decoder_penalty='gram' (estimated "
        f"{format_bytes(gram.bytes)}, {fits})."
    )


def _doublings(start: int, stop: int) -> list[int]:
    """start*2, start*4, ... up to stop (inclusive, stop itself last)."""
    out = []
    k = max(start, 1) * 2
    while k < stop:
        out.append(k)
        k *= 2
    return [*out, stop]


def _fits_chunks(cfg: Any, chunks: int, budget: int) -> bool:
    return decoder_penalty_bytes("chunk_max", cfg.d_sae, cfg.d_in, chunks=chunks).bytes <= budget


def _decoder_selection_advice(cfg: Any, footprint: SelectionFootprint, free: str) -> str:
    return (
        f"the {cfg.architecture()} decoder pair selection (ortho_select_by='decoder') "
        + _short_of(footprint, free)
        + f" It does not depend on the batch: lower ortho_chunk_size (now {cfg.ortho_chunk_size}) or "
        f"ortho_pair_fraction (now {cfg.ortho_pair_fraction}), or select by ortho_select_by='activations'."
    )


def _pairs_plan(cfg: Any, batch: int, free: str, budget: int) -> tuple[str | None, int | None]:
    """(method, cap on co-firing products) of the pair selection; raises :class:`OrthoMemoryError`."""
    m = n_ranked_pairs(cfg.d_sae, cfg.ortho_pair_fraction, cfg.ortho_min_pairs)
    if cfg.ortho_select_by == "decoder":
        footprint = decoder_selection_bytes(cfg.d_sae, cfg.d_in, m, cfg.ortho_chunk_size)
        if footprint.bytes > budget:
            raise OrthoMemoryError(_decoder_selection_advice(cfg, footprint, free))
        return None, None
    max_products = max((budget - BYTES_PER_SELECTED_PAIR * m) // SPARSE_BYTES_PER_PRODUCT, 0)
    dense = None
    if cfg.d_sae <= MAX_DENSE_FEATURES:
        dense = dense_selection_bytes(batch, cfg.d_sae, m, cfg.ortho_chunk_size)
    width = _static_width(cfg)
    if width is None:  # decided per batch, under the cap
        if cfg.ortho_method == "dense" and dense is not None and dense.bytes > budget:
            raise OrthoMemoryError(_advice(cfg, batch, dense, free, budget, None))
        return None, max_products
    sparse = sparse_selection_bytes(batch, min(width, cfg.d_sae), m)
    method = cfg.ortho_method if cfg.ortho_method != "auto" else choose_method(width, cfg.d_sae)
    chosen, other = (sparse, dense) if method == "sparse" else (dense, sparse)
    assert chosen is not None  # dense is chosen only where it exists (choose_method, config validation)
    if chosen.bytes <= budget:
        return method, max_products
    if cfg.ortho_method == "auto" and other is not None and other.bytes <= budget:
        warnings.warn(
            f"ortho_method='auto' uses the {other.method} pair selection: the {chosen.method} one would need "
            f"{format_bytes(chosen.bytes)} where {free} ({chosen.detail}); the {other.method} one needs about {format_bytes(other.bytes)}",
            stacklevel=3,
        )
        return other.method, None if other.method == "dense" else max_products
    raise OrthoMemoryError(_advice(cfg, batch, chosen, free, budget, other))


def selection_plan(cfg: Any, batch: int, device: torch.device | str | None = None) -> SelectionPlan:
    """Check every penalty form of ``cfg`` (an ortho training config) for batches of ``batch`` rows against the
    free memory of ``device`` (default ``cfg.device``): the decoder penalty (``ortho_decoder_penalty``) and the
    pair selection (by activations or by decoder). Raise :class:`OrthoMemoryError` naming the fields to change
    when a form that is on cannot fit. A form that is off but runs on logging steps for its metrics (the pair
    selection with ortho_coefficient=0, the decoder penalty with ortho_decoder_coefficient=0) is planned too;
    where it does not fit, a warning says so and logging steps skip it (``skipped_diagnostics``)."""
    device = str(device if device is not None else cfg.device)
    free = available_bytes(device)
    if free is None:
        return SelectionPlan(None, None)
    budget = int(free * MEMORY_HEADROOM)
    where = f"{format_bytes(free)} are free on {device}"
    skipped: list[str] = []
    decoder = decoder_penalty_bytes(
        cfg.ortho_decoder_penalty, cfg.d_sae, cfg.d_in, groups=cfg.ortho_groups, chunks=cfg.ortho_decoder_chunks
    )
    if decoder.bytes > budget and (cfg.ortho_decoder_coefficient > 0 or cfg.ortho_decoder_start is not None):
        raise OrthoMemoryError(_decoder_penalty_advice(cfg, decoder, where, budget))
    if decoder.bytes <= budget:  # it runs in the same step as the selection (on logging steps at least)
        budget -= decoder.bytes
        where += f", {format_bytes(decoder.bytes)} of them planned for the {cfg.ortho_decoder_penalty} decoder penalty"
    else:
        skipped.append("decoder_penalty")
        warnings.warn(
            "logging steps will skip the ortho_decoder_penalty metric: ortho_decoder_coefficient is 0, so the "
            f"{cfg.ortho_decoder_penalty} decoder penalty would run there for the metric alone, and it "
            + _short_of(decoder, where),
            stacklevel=3,
        )
    if not selection_runs(cfg, cfg.ortho_coefficient, logging=True):  # below two features: no pairs to plan
        return SelectionPlan(None, None, tuple(skipped))
    try:
        method, max_products = _pairs_plan(cfg, batch, where, budget)
    except OrthoMemoryError as error:
        if selection_needed(cfg, cfg.ortho_coefficient):  # it runs on every step: it must fit
            raise
        skipped.append("pairs")
        warnings.warn(
            "logging steps will skip the pair-selection metrics (ortho_penalty, ortho_selected_*, ...): "
            f"ortho_coefficient is 0, so the selection would run there for the metrics alone, and {error}",
            stacklevel=3,
        )
        method, max_products = None, None
    return SelectionPlan(method, max_products, tuple(skipped))


def check_step_resources(sae: Any, sae_in: Tensor) -> None:
    """At the SAE's first training step (host-side, no sync): warn about a useless micro-batch size and plan
    the selection's memory (see the module docstring), handing the plan to the SAE (``sae.ortho_apply_plan``).
    Later calls return at once."""
    if sae.ortho_plan_checked:
        return
    sae.ortho_apply_plan(SelectionPlan(None, None))  # checked once, even when the plan below raises
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
    sae.ortho_apply_plan(selection_plan(cfg, batch, sae_in.device))
