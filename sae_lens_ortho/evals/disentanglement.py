"""Disentanglement diagnostics of a trained SAE on an eval set: exact, and without any n x n matrix.

``disentanglement_diagnostics(acts, W_dec)`` takes the SAE's latent activations on an eval set (one tensor
[N, d_sae], or an iterable of batches, each a dense [b, d_sae] tensor or the sparse ``(values, indices)`` [b, w]
of its rows, e.g. ``acts.topk(k)``) and the decoder ``W_dec`` [d_sae, d_in], and returns a
:class:`DisentanglementReport`:

* **activation cosines over all n(n-1)/2 pairs** of latent columns f_i (length N, the whole eval set):
  C_ij = f_i.f_j / (|f_i||f_j|), 0 when either latent is dead. The mean is the closed form of
  :func:`sae_lens_ortho.core.diagnostics.mean_pair_cosine`,  sum_{i<j} C_ij = (sum_r (sum_i f^_ri)^2 - sum_i |f^_i|^2) / 2
  over the unit columns f^_i, evaluated row by row. The max, the std and the top pairs come from the exact
  co-firing dot products: only pairs that are both non-zero on some token can have C_ij != 0, so the
  per-row products of non-zeros are summed per pair key i*n+j (the key scheme of
  :func:`sae_lens_ortho.core.pairs.cofiring_correlations`) across all rows of all batches. Pairs that never co-fire
  have C_ij = 0 exactly and are counted as such. Ranking is (C descending, i ascending, j ascending).
* **top correlated pairs**: the ``top_pairs`` best (i, j, C_ij) with C_ij > 0, and for the pair fraction ``p``
  (what the selective penalty targets: the ceil(p * n(n-1)/2) most correlated pairs) the number of those with
  C_ij > 0, their mean C and the smallest selected C.
* **decoder max cosine per feature**, max_{j != i} |cos(d_i, d_j)| (the values of
  :func:`sae_lens_ortho.core.diagnostics.decoder_max_cosine`, scanned in cache-sized tiles): mean, max and quantiles, and the fraction of features with a near-duplicate,
  max |cos| > 0.8 and > 0.9 (``near_dup_thresholds``).
* **co-firing**: the number and fraction of pairs that co-fire on some token, and co-firing partners per
  feature (mean over all features, mean over live features, max).
* **firing**: ``dead_frac``, the fraction of features that never fire on the eval set, and for each threshold t
  in ``rare_thresholds`` (default 1e-5 and 1e-4) ``rare_frac[t]``, the fraction of features that fire, but on
  fewer than t * N tokens (so dead + rare is the fraction firing below t). An eval set of N tokens cannot
  resolve frequencies below 1/N: a threshold t <= 1/N reports 0 (``min_resolvable_frequency`` says 1/N).
  1e-5 is the usual "dead or nearly dead" cut and 1e-4 flags latents a typical eval set barely sees; evaluate
  at least ~1e5 tokens (1e6 for the 1e-5 cut) for them to mean what they say.

Cost: O(N w) memory for the stored sparse rows (w = max non-zeros per row; TopK: k), O(N w^2) for the
co-firing products (processed ``products_per_chunk`` at a time), O(D) for the D distinct co-firing pairs, and
O(d_sae * d_in) for the decoder scan (O(d_sae^2 d_in) time); there is no d_sae x d_sae tensor anywhere. Dense inputs are
stored in the same padded sparse form, so dense (ReLU) activations cost O(N w^2) with w their widest row: fine
for small dictionaries, use TopK-like sparsity for large ones. All sums are in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sae_lens_ortho.core.diagnostics import decoder_max_cosine
from sae_lens_ortho.core.pairs import n_pairs, n_selected_pairs

__all__ = [
    "DECODER_QUANTILES",
    "NEAR_DUP_THRESHOLDS",
    "RARE_THRESHOLDS",
    "DisentanglementReport",
    "disentanglement_diagnostics",
    "sparse_rows",
]

RARE_THRESHOLDS = (1e-5, 1e-4)
"""Firing-frequency thresholds of ``rare_frac`` (fraction of tokens)."""
NEAR_DUP_THRESHOLDS = (0.8, 0.9)
"""Decoder |cos| thresholds of ``near_dup_frac``."""
DECODER_QUANTILES = (0.5, 0.9, 0.99)
"""Quantiles of the per-feature decoder max |cos| that the report lists."""

_PRODUCTS_PER_CHUNK = 1 << 22  # co-firing products materialised at once (~200 MiB of temporaries)


@dataclass
class DisentanglementReport:
    """Diagnostics of one SAE on one eval set. Scalars are plain Python numbers; ``to_dict()`` flattens them."""

    n_tokens: int
    d_sae: int
    n_pairs: int
    """d_sae (d_sae - 1) / 2."""
    # --- activation cosine C_ij over all pairs (0 for pairs that never co-fire or involve a dead latent)
    mean_pair_cosine: float
    std_pair_cosine: float
    max_pair_cosine: float
    mean_cofiring_pair_cosine: float
    """Mean C_ij over the co-firing pairs only (0 if none)."""
    top_pairs: list[tuple[int, int, float]]
    """The most correlated pairs (i, j, C_ij), i < j, C_ij > 0, best first."""
    p: float | None
    top_p_pairs: int
    """ceil(p * n_pairs): the number of pairs the fraction p asks for (0 without p)."""
    top_p_selected: int
    """How many of them have C_ij > 0 (the pairs a selective penalty would act on)."""
    top_p_corr_mean: float
    top_p_corr_min: float
    # --- co-firing
    cofiring_pairs: int
    cofiring_pair_frac: float
    mean_cofiring_partners: float
    """Mean over all features of the number of other features it co-fires with (= 2 * cofiring_pairs / d_sae)."""
    mean_cofiring_partners_alive: float
    max_cofiring_partners: int
    # --- firing
    l0: float
    """Mean number of non-zero latents per token."""
    dead_frac: float
    rare_frac: dict[float, float]
    """threshold t -> fraction of features with 0 < firing frequency < t."""
    min_resolvable_frequency: float
    """1 / n_tokens: the smallest non-zero firing frequency this eval set can show."""
    # --- decoder
    decoder_max_cos_mean: float
    decoder_max_cos_max: float
    decoder_max_cos_quantiles: dict[float, float]
    near_dup_frac: dict[float, float]
    """threshold t -> fraction of features whose decoder max |cos| with another feature is > t."""
    # --- per-feature tensors (CPU; not part of to_dict)
    fire_count: Tensor = field(repr=False)
    """[d_sae] int64 number of eval tokens on which each feature is non-zero."""
    cofiring_partners: Tensor = field(repr=False)
    """[d_sae] int64 number of distinct features each feature co-fires with."""
    decoder_max_cos: Tensor = field(repr=False)
    """[d_sae] float32 max_{j != i} |cos(d_i, d_j)|."""

    def to_dict(self) -> dict[str, Any]:
        """Plain floats / ints / lists (JSON-ready): threshold-keyed dicts become ``..._lt{t}`` / ``..._gt{t}`` /
        ``..._q{100 q}`` keys; ``top_pairs`` is a list of ``{"i", "j", "corr"}``."""
        out: dict[str, Any] = {
            "n_tokens": self.n_tokens,
            "d_sae": self.d_sae,
            "n_pairs": self.n_pairs,
            "mean_pair_cosine": self.mean_pair_cosine,
            "std_pair_cosine": self.std_pair_cosine,
            "max_pair_cosine": self.max_pair_cosine,
            "mean_cofiring_pair_cosine": self.mean_cofiring_pair_cosine,
            "p": self.p,
            "top_p_pairs": self.top_p_pairs,
            "top_p_selected": self.top_p_selected,
            "top_p_corr_mean": self.top_p_corr_mean,
            "top_p_corr_min": self.top_p_corr_min,
            "cofiring_pairs": self.cofiring_pairs,
            "cofiring_pair_frac": self.cofiring_pair_frac,
            "mean_cofiring_partners": self.mean_cofiring_partners,
            "mean_cofiring_partners_alive": self.mean_cofiring_partners_alive,
            "max_cofiring_partners": self.max_cofiring_partners,
            "l0": self.l0,
            "dead_frac": self.dead_frac,
        }
        out.update({f"rare_frac_lt{t:g}": v for t, v in self.rare_frac.items()})
        out["min_resolvable_frequency"] = self.min_resolvable_frequency
        out["decoder_max_cos_mean"] = self.decoder_max_cos_mean
        out["decoder_max_cos_max"] = self.decoder_max_cos_max
        out.update({f"decoder_max_cos_q{100 * q:g}": v for q, v in self.decoder_max_cos_quantiles.items()})
        out.update({f"decoder_near_dup_frac_gt{t:g}": v for t, v in self.near_dup_frac.items()})
        out["top_pairs"] = [{"i": i, "j": j, "corr": c} for i, j, c in self.top_pairs]
        return out

    def metrics_by_category(self) -> dict[str, dict[str, float | int | None]]:
        """The scalars of :meth:`to_dict` grouped as ``activations`` (pair cosines), ``cofiring``, ``firing`` and
        ``decoder`` (the ``decoder_`` prefix dropped): SAEBench's ``eval_result_metrics`` layout."""
        groups: dict[str, dict[str, float | int | None]] = {
            "activations": {},
            "cofiring": {},
            "firing": {},
            "decoder": {},
        }
        for key, value in self.to_dict().items():
            if key == "top_pairs":
                continue
            if key.startswith("decoder_"):
                groups["decoder"][key[len("decoder_") :]] = value
            elif "cofiring" in key and key != "mean_cofiring_pair_cosine":
                groups["cofiring"][key] = value
            elif key in ("n_tokens", "l0", "dead_frac", "min_resolvable_frequency") or key.startswith("rare_frac"):
                groups["firing"][key] = value
            else:
                groups["activations"][key] = value
        return groups


# --- input handling -------------------------------------------------------------------------------------------------


def _is_sparse_pair(x: Any) -> bool:
    return (
        isinstance(x, (tuple, list))
        and len(x) == 2
        and all(isinstance(t, Tensor) for t in x)
        and x[0].is_floating_point()
        and not x[1].is_floating_point()
        and not x[1].is_complex()
    )


def sparse_rows(acts: Tensor) -> tuple[Tensor, Tensor]:
    """The non-zeros of each row of ``acts`` [..., n] as (values float32, indices int64) [rows, w], w the widest
    row; narrower rows are padded with zero values at distinct unused indices. Rows are sorted by index."""
    a = acts.detach().reshape(-1, acts.shape[-1])
    if a.shape[0] == 0:
        empty = a.new_zeros((0, 0), dtype=torch.float32)
        return empty, empty.long()
    w = int((a != 0).sum(1).max().item())
    idx = a.abs().topk(w, dim=1).indices if w else a.new_zeros((a.shape[0], 0), dtype=torch.int64)
    idx = idx.sort(dim=1).values
    return a.gather(1, idx).float(), idx


def _batches(acts: Any, n: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalise the accepted inputs to a stream of (values f32, indices i64) [b, w], rows sorted by index."""
    if isinstance(acts, Tensor) or _is_sparse_pair(acts):
        acts = [acts]
    for batch in acts:
        if isinstance(batch, Tensor):
            if batch.shape[-1] != n:
                raise ValueError(f"activation batch has {batch.shape[-1]} features, W_dec has {n} rows")
            yield sparse_rows(batch)
        elif _is_sparse_pair(batch):
            vals, idx = batch
            if vals.shape != idx.shape:
                raise ValueError(
                    f"sparse batch values/indices shapes differ: {tuple(vals.shape)} vs {tuple(idx.shape)}"
                )
            w = vals.shape[-1] if vals.ndim else 0
            vals = vals.detach().reshape(-1, w).float()
            idx = idx.detach().reshape(-1, w).long().to(vals.device)
            if idx.numel() and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"sparse batch indices must lie in [0, {n})")
            idx, order = idx.sort(dim=1)
            vals = vals.gather(1, order)
            live = vals != 0
            if w > 1 and ((idx[:, 1:] == idx[:, :-1]) & live[:, 1:] & live[:, :-1]).any():
                raise ValueError("a sparse batch row lists the same feature twice")
            yield vals, idx
        else:
            raise TypeError(
                "each batch must be a [batch, d_sae] tensor or a (values, indices) pair of [batch, w] tensors, "
                f"got {type(batch).__name__}"
            )


# --- co-firing accumulation ----------------------------------------------------------------------------------------


def _reduce_by_key(keys: Tensor, vals: Tensor) -> tuple[Tensor, Tensor]:
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    return uniq, torch.zeros(uniq.numel(), dtype=vals.dtype, device=vals.device).index_add_(0, inverse, vals)


class _PairSums:
    """A sparse map pair key -> float64 sum, merged geometrically (amortised O(total log total))."""

    def __init__(self, device: torch.device):
        self.keys = torch.empty(0, dtype=torch.int64, device=device)
        self.sums = torch.empty(0, dtype=torch.float64, device=device)
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._pending_size = 0

    def add(self, keys: Tensor, sums: Tensor) -> None:
        if keys.numel() == 0:
            return
        self._pending.append((keys, sums))
        self._pending_size += keys.numel()
        if self._pending_size >= max(self.keys.numel(), _PRODUCTS_PER_CHUNK):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.keys] + [k for k, _ in self._pending])
        sums = torch.cat([self.sums] + [s for _, s in self._pending])
        self._pending, self._pending_size = [], 0
        self.keys, self.sums = _reduce_by_key(keys, sums)


def _triu_cache(w: int, device: torch.device, cache: dict[tuple[int, str], tuple[Tensor, Tensor]]):
    key = (w, str(device))
    if key not in cache:
        cache[key] = tuple(torch.triu_indices(w, w, 1, device=device))  # type: ignore[assignment]
    return cache[key]


# --- the report ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def disentanglement_diagnostics(
    acts: Tensor | tuple[Tensor, Tensor] | Iterable[Tensor | tuple[Tensor, Tensor]],
    W_dec: Tensor,
    *,
    top_pairs: int = 20,
    p: float | None = 0.001,
    chunk_size: int | None = None,
    rare_thresholds: tuple[float, ...] = RARE_THRESHOLDS,
    near_dup_thresholds: tuple[float, ...] = NEAR_DUP_THRESHOLDS,
    quantiles: tuple[float, ...] = DECODER_QUANTILES,
    products_per_chunk: int = _PRODUCTS_PER_CHUNK,
) -> DisentanglementReport:
    """Exact disentanglement diagnostics of SAE activations on an eval set (see the module docstring).

    Args:
        acts: the eval set's latent activations: a tensor [N, d_sae] (leading dims are flattened), a sparse
            ``(values, indices)`` pair [N, w], or an iterable (e.g. a generator) of such batches. Cosines are
            over the whole eval set: batching does not change any value (up to float64 rounding).
        W_dec: decoder [d_sae, d_in]; its row count defines d_sae.
        top_pairs: how many of the most correlated pairs to list.
        p: pair fraction for the ``top_p_*`` fields (the penalty's selection), or None to skip them.
        chunk_size: decoder rows per tile of the decoder scan (see :func:`sae_lens_ortho.core.diagnostics.decoder_max_cosine`).
        rare_thresholds, near_dup_thresholds, quantiles: see :data:`RARE_THRESHOLDS`, :data:`NEAR_DUP_THRESHOLDS`,
            :data:`DECODER_QUANTILES`.
        products_per_chunk: co-firing products materialised at once (memory knob, no effect on the values).
    """
    if W_dec.ndim != 2:
        raise ValueError(f"W_dec must be [d_sae, d_in], got shape {tuple(W_dec.shape)}")
    n = int(W_dec.shape[0])
    if n * n >= 1 << 63:
        raise ValueError(f"d_sae={n} is too large for int64 pair keys")
    if top_pairs < 0:
        raise ValueError(f"top_pairs must be >= 0, got {top_pairs}")

    # Pass 1: store the sparse rows, accumulate column norms and firing counts.
    stored: list[tuple[Tensor, Tensor]] = []
    device: torch.device | None = None
    sq = fire = None
    n_tokens = 0
    for vals, idx in _batches(acts, n):
        if device is None:
            device = vals.device
            sq = torch.zeros(n, dtype=torch.float64, device=device)
            fire = torch.zeros(n, dtype=torch.int64, device=device)
        vals, idx = vals.to(device), idx.to(device)
        n_tokens += vals.shape[0]
        if vals.numel() == 0:
            continue
        assert sq is not None and fire is not None  # allocated with the first batch
        flat_idx = idx.reshape(-1)
        sq.index_add_(0, flat_idx, vals.double().pow(2).reshape(-1))
        fire.index_add_(0, flat_idx, (vals != 0).long().reshape(-1))
        stored.append((vals, idx))
    if device is None:  # an empty iterable
        device = W_dec.device
        sq = torch.zeros(n, dtype=torch.float64, device=device)
        fire = torch.zeros(n, dtype=torch.int64, device=device)
    assert sq is not None and fire is not None
    inv = torch.where(sq > 0, sq.clamp_min(torch.finfo(torch.float64).tiny).rsqrt(), torch.zeros_like(sq))

    # Pass 2 (over the stored rows): closed-form sum of C, and the exact per-pair sums of normalised products.
    row_sq_total = torch.zeros((), dtype=torch.float64, device=device)
    own_total = torch.zeros((), dtype=torch.float64, device=device)
    pair_sums = _PairSums(device)
    triu: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
    while stored:
        vals, idx = stored.pop(0)  # release each batch once used
        nv = vals.double() * inv[idx]
        row_sq_total += nv.sum(1).pow(2).sum()
        own_total += nv.pow(2).sum()
        b, w = vals.shape
        if w < 2:
            continue
        if w * (w - 1) // 2 > 64 * products_per_chunk:
            raise ValueError(
                f"rows with up to {w} non-zero latents give {w * (w - 1) // 2} co-firing products per token: too dense "
                "for the exact co-firing scan (use sparse, e.g. TopK, activations for large dictionaries)"
            )
        a, c = _triu_cache(w, device, triu)
        rows_per_chunk = max(1, products_per_chunk // a.numel())
        for start in range(0, b, rows_per_chunk):
            v = vals[start : start + rows_per_chunk]
            live = (v[:, a] != 0) & (v[:, c] != 0)
            i_ = idx[start : start + rows_per_chunk]
            keys = (i_[:, a] * n + i_[:, c])[live]
            x = nv[start : start + rows_per_chunk]
            prods = (x[:, a] * x[:, c])[live]
            pair_sums.add(*_reduce_by_key(keys, prods))
        del vals, idx, nv
    pair_sums.flush()
    keys, corr = pair_sums.keys, pair_sums.sums  # distinct co-firing pairs (ascending key) and their C_ij

    total_pairs = n_pairs(n)
    denom = max(total_pairs, 1)
    sum_corr = float((row_sq_total - own_total) / 2)
    mean = sum_corr / denom
    n_cof = int(keys.numel())
    sum_sq = float(corr.pow(2).sum())
    std = math.sqrt(max(sum_sq / denom - mean * mean, 0.0))
    candidates = []
    if n_cof:
        candidates.append(float(corr.max()))
    if n_cof < total_pairs:
        candidates.append(0.0)  # a pair that never co-fires has C = 0
    max_corr = max(candidates) if candidates else 0.0

    # Ranking (C desc, key asc): a stable descending sort of the key-ordered positive correlations.
    positive = corr > 0
    pos_keys, pos_corr = keys[positive], corr[positive]
    order = torch.sort(pos_corr, descending=True, stable=True).indices
    ranked_keys, ranked_corr = pos_keys[order], pos_corr[order]
    top = [
        (int(k // n), int(k % n), float(cv))
        for k, cv in zip(ranked_keys[:top_pairs].tolist(), ranked_corr[:top_pairs].tolist())
    ]
    if p is not None and total_pairs > 0:
        m = n_selected_pairs(n, p)
        sel = ranked_corr[:m]
        top_p = (m, int(sel.numel()), float(sel.mean()) if sel.numel() else 0.0, float(sel[-1]) if sel.numel() else 0.0)
    else:
        top_p = (0, 0, 0.0, 0.0)

    partners = torch.bincount(keys // n, minlength=n) + torch.bincount(keys % n, minlength=n)
    alive = fire > 0
    n_alive = int(alive.sum())
    freq = fire.double() / max(n_tokens, 1)
    rare = {float(t): float((alive & (freq < t)).double().mean()) if n else 0.0 for t in rare_thresholds}

    dec = decoder_max_cosine(W_dec, chunk_size)
    dec_cpu = dec.float().cpu()
    q = torch.quantile(dec_cpu.double(), torch.tensor(quantiles, dtype=torch.float64)) if n else None
    return DisentanglementReport(
        n_tokens=n_tokens,
        d_sae=n,
        n_pairs=total_pairs,
        mean_pair_cosine=mean,
        std_pair_cosine=std,
        max_pair_cosine=max_corr,
        mean_cofiring_pair_cosine=float(corr.sum()) / n_cof if n_cof else 0.0,
        top_pairs=top,
        p=p,
        top_p_pairs=top_p[0],
        top_p_selected=top_p[1],
        top_p_corr_mean=top_p[2],
        top_p_corr_min=top_p[3],
        cofiring_pairs=n_cof,
        cofiring_pair_frac=n_cof / denom,
        mean_cofiring_partners=2 * n_cof / n if n else 0.0,
        mean_cofiring_partners_alive=2 * n_cof / n_alive if n_alive else 0.0,
        max_cofiring_partners=int(partners.max()) if n else 0,
        l0=float(fire.sum()) / n_tokens if n_tokens else 0.0,
        dead_frac=float((~alive).double().mean()) if n else 0.0,
        rare_frac=rare,
        min_resolvable_frequency=1.0 / n_tokens if n_tokens else math.nan,
        decoder_max_cos_mean=float(dec_cpu.double().mean()) if n else 0.0,
        decoder_max_cos_max=float(dec_cpu.max()) if n else 0.0,
        decoder_max_cos_quantiles={float(a): float(v) for a, v in zip(quantiles, q.tolist())} if q is not None else {},
        near_dup_frac={float(t): float((dec_cpu > t).double().mean()) if n else 0.0 for t in near_dup_thresholds},
        fire_count=fire.cpu(),
        cofiring_partners=partners.cpu(),
        decoder_max_cos=dec_cpu,
    )
