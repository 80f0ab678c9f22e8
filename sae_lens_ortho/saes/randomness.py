"""The ortho mechanisms' own randomness, held in the checkpoint, so that a resumed run is bit-exact.

Dictionary management draws new feature directions and ``chunk_max`` draws a chunk permutation every step. With
the global torch RNG neither could be resumed exactly: SAELens does not checkpoint it, and anything else in the
process (a data loader, an evaluation) may consume from it. Instead every draw gets a generator seeded from

    (ortho_rng_seed, ortho_step, purpose, n-th draw of that purpose in this step)

through a 64-bit mix (splitmix64). ``ortho_rng_seed`` is a buffer (saved in checkpoints, dropped from the
inference weights), initialised from ``torch.initial_seed()`` (so ``torch.manual_seed(s)`` before building the SAE
fixes it, without consuming from the global RNG), and ``ortho_step`` is the SAE's own step counter, also a
buffer. A resumed run therefore draws exactly what the uninterrupted run drew at the same step, whatever
happened to the process's RNG in between (same device type: CPU and CUDA generators differ).

Both counters are mirrored on the host so that seeding needs no device read: the mirror is read once from the
buffers after construction or a checkpoint load (one host sync) and advanced in Python each step.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

__all__ = ["RNG_BUFFERS", "OrthoRandomness", "host_side", "mix_seed"]

RNG_BUFFERS = ("ortho_rng_seed",)
_MASK64 = (1 << 64) - 1
F = TypeVar("F", bound=Callable[..., Any])


def host_side(fn: F) -> F:
    """Keep ``fn`` out of torch.compile graphs: Python-side bookkeeping (host counters, hooks) that a graph would
    otherwise specialise on, recompiling every step."""
    return cast(F, torch.compiler.disable(fn))


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers, by chained splitmix64 (stable across processes and platforms)."""
    x = 0
    for v in values:
        x = (x ^ (v & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
        x ^= x >> 31
    return x >> 1


class OrthoRandomness:
    """Mixin of ``OrthoTrainingSAE``: per-step generators from checkpointed state, and the host step counter."""

    cfg: Any
    ortho_step: Tensor
    ortho_rng_seed: Tensor
    register_buffer: Callable[..., None]
    _ortho_host: tuple[int, int] | None = None  # (seed, step) mirrored from the buffers; None: read them
    _ortho_draws: dict[str, int] | None = None  # draws per purpose in the current step
    _ortho_generators: dict[str, torch.Generator] | None = None  # one reusable generator per device

    def _rng_init(self, device: torch.device) -> None:
        seed = torch.tensor(mix_seed(torch.initial_seed()), dtype=torch.int64, device=device)
        self.register_buffer("ortho_rng_seed", seed)

    def ortho_invalidate_host_state(self) -> None:
        """Forget the host mirror of the step and seed buffers (after they were loaded or set by hand)."""
        self._ortho_host = None

    @host_side
    def ortho_host_step(self) -> int:
        """The current ``ortho_step`` as a Python int (read from the buffer once after a load; no sync after)."""
        if self._ortho_host is None:
            seed, step = torch.stack([self.ortho_rng_seed, self.ortho_step]).tolist()  # one host read
            self._ortho_host = (int(seed), int(step))
            self._ortho_draws = {}
        return self._ortho_host[1]

    @host_side
    def _ortho_advance_host_step(self) -> None:
        if self._ortho_host is not None:
            self._ortho_host = (self._ortho_host[0], self._ortho_host[1] + 1)
        self._ortho_draws = {}

    @host_side
    def ortho_generator(self, purpose: str, device: torch.device | None = None) -> torch.Generator:
        """A generator for one draw of ``purpose`` in this step, seeded from checkpointed state only.

        The k-th call for the same purpose within a step gets a different seed than the first, and the same one
        as the k-th call of the same step in any other run with the same ``ortho_rng_seed``."""
        step = self.ortho_host_step()
        assert self._ortho_host is not None and self._ortho_draws is not None
        nth = self._ortho_draws.get(purpose, 0)
        self._ortho_draws[purpose] = nth + 1
        device = device or self.W_dec.device  # type: ignore[attr-defined]
        if self._ortho_generators is None:
            self._ortho_generators = {}
        gen = self._ortho_generators.get(str(device))
        if gen is None:
            gen = self._ortho_generators[str(device)] = torch.Generator(device=device)
        return gen.manual_seed(mix_seed(self._ortho_host[0], step, zlib.crc32(purpose.encode()), nth))
