"""Validation of config fields: a bad value raises ``ValueError`` naming the field and its allowed range."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

__all__ = [
    "FLOAT32_MAX",
    "MAX_COEFFICIENT",
    "MAX_COUNT",
    "check_choice",
    "check_int",
    "check_number",
    "plain_numbers",
    "short_repr",
]


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Largest magnitude of any number field: they all enter float32 tensors (10**400 is not even a float64)."""
MAX_COEFFICIENT = 1e6
"""Largest loss coefficient: a penalty term is coefficient x (a cosine in [0, 1]) x E||x||^2, so far beyond this the
float32 loss overflows and the step is refused as if the batch were non-finite."""
MAX_COUNT = 2**31 - 1
"""Largest integer field (steps, sizes, counts): they enter int32/int64 tensors and step counters."""


def check_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """Raise ValueError naming the field and its allowed range unless low <= value <= high, finite in float32
    (|value| <= FLOAT32_MAX), and not bool."""
    lo = "(" if low_open else "["
    hi = "]" if math.isfinite(high) else ")"
    allowed = f"{lo}{low}, {high if math.isfinite(high) else 'inf'}{hi}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        finite = ok and math.isfinite(value) and abs(value) <= FLOAT32_MAX
    except OverflowError:  # an int too large for a float (10**400)
        finite = False
    if not (finite and (value > low if low_open else value >= low) and value <= high):
        beyond = (
            " (at most 3.4e38: it enters float32 tensors)" if ok and not finite and hi == ")" and value == value else ""
        )
        raise ValueError(f"{name} must be a finite number in {allowed}{beyond}, got {short_repr(value)}")


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def plain_numbers(cfg: Any) -> None:
    """Replace NumPy scalars (np.float32(0.5), np.int64(8), np.bool_) and 0-d arrays in any field of ``cfg`` by the
    Python value they hold: they are valid values, and cfg.json must stay plain JSON. Larger arrays are refused
    here, naming the field (they used to reach a comparison: "truth value of an array is ambiguous")."""
    for f in fields(cfg):
        value = getattr(cfg, f.name, None)
        if isinstance(value, np.ndarray):
            if value.ndim != 0:
                raise ValueError(f"{f.name} must be a single value, got an array of shape {value.shape}")
            value = value[()]
        if isinstance(value, np.generic) and isinstance(value, (np.number, np.bool_)):
            setattr(cfg, f.name, value.item())


def check_int(name: str, value: Any, *, low: int, high: int = MAX_COUNT) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer >= {low} (at most {high:,}), got {short_repr(value)}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
