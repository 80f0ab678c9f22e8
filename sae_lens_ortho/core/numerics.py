"""Numerically safe building blocks of the penalties: exact unit normalisation and float32 inside autocast.

**Unit normalisation.** Every penalty divides activation columns (or decoder rows) by their norms. Computing
``x * rsqrt(sum x^2)`` fails at both ends of the float32 range: for norms below ~1e-19 the sum of squares
underflows (the norm comes out wrong or 0, so correlations are understated or dropped), and the gradient of
``rsqrt`` is ``-0.5 s^-1.5``, which overflows to inf for norms below ~1e-13 even though the gradient of the
normalised vector, ``(I - y y^T) / |x|``, is a perfectly representable 1e13. An inf gradient becomes NaN in
gradient clipping and Adam writes NaN into every weight.

Here each vector is first scaled by an exact power of two, 2^-e with e the exponent of its largest entry, so the
scaled vector has max entry in [0.5, 1) and its norm in [0.5, sqrt(len)]: no underflow or overflow anywhere,
and the result y = x / |x| is exact to float32 rounding for every norm float32 can hold (subnormals included;
the scaling is applied as two factors so that 2^-e itself never overflows). The backward pass is written out,
``dL/dx = (g - y (y . g)) * min(1/|x|, INV_NORM_CAP)`` with g = dL/dy:

* exact wherever 1/|x| <= INV_NORM_CAP = 2^48, i.e. for norms >= 3.6e-15 (the issue's 1e-14 repro included);
* bounded below that: the gradient of a vector of norm 2^-48 in the same direction, never inf or NaN.

Why bound at all rather than return every representable value: a gradient of 1e19 or more per entry already
overflows SAELens's gradient clipping in float32 (it squares and sums every entry), which then scales the whole
step to zero, on every step, silently; above ~1e38 it becomes NaN. A bound of 2^48 keeps the clipped step
finite and meaningful for batches up to ~2^20 rows of activations up to ~1e3. All-zero vectors give y = 0 and a
zero gradient (a dead feature has correlation 0 with everything).

**float32 inside autocast.** Under ``torch.autocast`` (SAELens's ``autocast=True`` is bf16) matmuls run in half
precision, which turns an exact Gram identity into a difference of rounded numbers (negative "sums of squares",
selections that differ from the float32 ones). :func:`full_precision` runs a function with autocast disabled;
the functions cast their inputs to float32 themselves.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = [
    "INV_NORM_CAP",
    "capped_inverse",
    "fp32_region",
    "full_precision",
    "pow2_factors",
    "reciprocal",
    "unit_columns",
    "unit_rows",
    "unit_sparse_columns",
]

INV_NORM_CAP_EXPONENT = 48
INV_NORM_CAP = float(2**INV_NORM_CAP_EXPONENT)
"""The largest 1/|x| the backward pass uses (2^48): exact gradients for norms >= 2^-48 ≈ 3.6e-15."""

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")
F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def fp32_region() -> Iterator[None]:
    """Disable autocast on every device type where it is on, for the body (a no-op outside autocast)."""
    with contextlib.ExitStack() as stack:
        for device_type in _AUTOCAST_DEVICES:
            try:
                enabled = torch.is_autocast_enabled(device_type)
            except (RuntimeError, ValueError):  # a device type this build does not know
                continue
            if enabled:
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


def full_precision(fn: F) -> F:
    """Decorator: run ``fn`` with autocast disabled (see :func:`fp32_region`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fp32_region():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def pow2_factors(exponent: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """2^-e as two factors of ``dtype`` (each <= 2^(|e|/2 + 1), so neither overflows although 2^-e may, e.g.
    e = -133 in float32)."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    return torch.exp2(-half.to(dtype)), torch.exp2((half - exponent).to(dtype))


def reciprocal(norm: Tensor) -> Tensor:
    """1/norm of a scaled vector (norm in [0.5, sqrt(len)]), 0 for a zero vector. The forward pass multiplies by
    it rather than dividing, so that ``x * column_inv_norms(x)`` gives the same bits as :func:`unit_columns`
    (scaling by 2^-e commutes with rounding)."""
    return torch.where(norm > 0, 1.0 / norm.clamp_min(0.5), 0.0)


def capped_inverse(exponent: Tensor, norm: Tensor) -> Tensor:
    """The backward pass's min(1/|x|, cap) from |x| = norm * 2^e (norm in [0.5, sqrt(len)] or 0): 0 where
    norm == 0. The cap is INV_NORM_CAP in float32 (see the module doc); float64 has the range to need none.

    Below e = -100 (float32) 1/|x| >= 2^100 / sqrt(len) exceeds the cap for any length < 2^104, so e is clamped
    there to keep 2^-e finite without changing the result (float64: -1000, past its own maximum)."""
    f32 = norm.dtype == torch.float32
    e = exponent.clamp_min(-100 if f32 else -1000).to(norm.dtype)
    inv = torch.exp2(-e) / norm.clamp_min(0.5)
    if f32:
        inv = inv.clamp_max(INV_NORM_CAP)
    return torch.where(norm > 0, inv, 0.0)


class _UnitNormalize(torch.autograd.Function):
    """y = x / |x| along ``dim``, exact for every representable norm, with the bounded backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        exponent = torch.frexp(x.abs().amax(dim, keepdim=True)).exponent  # 0 for all-zero vectors
        f1, f2 = pow2_factors(exponent, x.dtype)
        scaled = x * f1 * f2  # exact: powers of two
        norm = scaled.pow(2).sum(dim, keepdim=True).sqrt()
        y = scaled * reciprocal(norm)
        ctx.dim = dim
        ctx.save_for_backward(y, capped_inverse(exponent, norm))
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        y, inv = ctx.saved_tensors
        with fp32_region():
            grad = grad.to(y.dtype)
            radial = (grad * y).sum(ctx.dim, keepdim=True)
            return (grad - y * radial) * inv, None


def unit_columns(x: Tensor) -> Tensor:
    """Columns of ``x`` [b, n] scaled to unit norm in (at least) float32 (all-zero columns stay zero)."""
    return _UnitNormalize.apply(x.to(torch.promote_types(x.dtype, torch.float32)), 0)


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` [n, d] scaled to unit norm in (at least) float32 (all-zero rows stay zero)."""
    return _UnitNormalize.apply(x.to(torch.promote_types(x.dtype, torch.float32)), 1)


class _UnitNormalizeSparse(torch.autograd.Function):
    """Unit columns of a sparse batch given as ``vals`` / ``idx`` [b, w] (column of each entry; ids distinct
    within a row): the same exact forward and bounded backward as :class:`_UnitNormalize`, in O(b w + n)."""

    @staticmethod
    def forward(ctx: Any, vals: Tensor, idx: Tensor, n: int) -> Tensor:  # type: ignore[override]
        flat_idx = idx.reshape(-1)
        peak = vals.new_zeros(n).scatter_reduce(0, flat_idx, vals.abs().reshape(-1), reduce="amax")
        exponent = torch.frexp(peak).exponent
        f1, f2 = pow2_factors(exponent, vals.dtype)
        scaled = vals * f1[idx] * f2[idx]
        norm = vals.new_zeros(n).index_add(0, flat_idx, scaled.pow(2).reshape(-1)).sqrt()
        y = scaled * reciprocal(norm)[idx]
        ctx.n = n
        ctx.save_for_backward(y, idx, capped_inverse(exponent, norm))
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        y, idx, inv = ctx.saved_tensors
        with fp32_region():
            grad = grad.to(y.dtype)
            radial = grad.new_zeros(ctx.n).index_add(0, idx.reshape(-1), (grad * y).reshape(-1))
            return (grad - y * radial[idx]) * inv[idx], None, None


def unit_sparse_columns(vals: Tensor, idx: Tensor, n: int) -> Tensor:
    """``vals`` [b, w] divided by the norm of their column (``idx`` [b, w] int64, distinct per row) over the
    whole batch, in float32: each entry of the dense [b, n] batch's unit columns, without building it."""
    return _UnitNormalizeSparse.apply(vals.to(torch.promote_types(vals.dtype, torch.float32)), idx, n)
