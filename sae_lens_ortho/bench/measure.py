"""Measuring: paired repeated timing with order-statistic intervals, and peak memory.

Timing is paired: each repetition runs every variant once, back to back (the order reversed every other
repetition, so a linear drift hits every variant alike), and the ratio to the base is taken *within* the
repetition. Load that comes and goes on a shared machine then moves both sides of a ratio together. The median of
the per-repetition ratios gets a distribution-free 95% interval from order statistics.

On CPU the repetitions run in a steady heap (:func:`steady_heap`): glibc keeps the memory a step frees for the
next step instead of handing blocks of 32 MiB and more back to the kernel, which must then fault in and zero
fresh pages on the next step. That kernel work was a third of a `topk` step on our 2-core VM and its noisiest
part (docs/notes.md); a caching allocator (CUDA's, jemalloc) does not have it either.

Memory: :func:`sae_lens_ortho.core.memory.peak_allocated_bytes` (torch's own allocation accounting; the same
figure on every run) and, as a second column on CPU, the growth of the resident set (what the process really
took from the machine, glibc and kernel included, which moves from run to run).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from math import comb
from typing import Any

import torch

from sae_lens_ortho.core.memory import vm_kib


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ intervals
def order_statistic_ranks(n: int, level: float = 0.95) -> tuple[int, int]:
    """1-based ranks (l, n + 1 - l) of the sorted sample that bracket the median with probability >= ``level``.

    P(x_(l) <= median <= x_(n+1-l)) = 1 - 2 P(B <= l - 1) for B ~ Binomial(n, 1/2), whatever the distribution;
    l is the largest rank that keeps the coverage at least ``level``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    l, cdf = 0, 0.0
    for i in range(n):
        cdf += comb(n, i) / 2**n
        if 2 * cdf > 1 - level:
            break
        l = i + 1
    if l == 0:
        raise ValueError(f"{n} repetitions are too few for a {level:.0%} interval of the median (at least 6)")
    return l, n + 1 - l


@dataclass(frozen=True)
class Interval:
    """A median with its 95% order-statistic interval."""

    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, xs: Sequence[float], level: float = 0.95) -> Interval:
        lo, hi = order_statistic_ranks(len(xs), level)
        s = sorted(xs)
        return cls(statistics.median(s), s[lo - 1], s[hi - 1])

    def verdict(self, target: float) -> str:
        """``meets`` (the whole interval is at or under ``target``), ``misses`` (all above) or ``straddles``."""
        if self.hi <= target:
            return "meets"
        if self.lo > target:
            return "misses"
        return "straddles"

    def text(self) -> str:
        return f"{self.median:.3f}x [{self.lo:.3f}, {self.hi:.3f}]"


# --------------------------------------------------------------------------------------------------- timing
@dataclass
class PairedTimes:
    """Per-repetition wall and process CPU seconds of every variant (same repetition = same index)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def ratios(self, name: str, base: str, clock: str = "wall") -> list[float]:
        times = self.wall if clock == "wall" else self.cpu
        return [t / b for t, b in zip(times[name], times[base])]


def paired_times(
    calls: dict[str, Callable[[int], Any]],
    repeats: int,
    device: str,
    warm_up: int = 1,
    more: Callable[[PairedTimes], bool] | None = None,
    max_repeats: int | None = None,
) -> PairedTimes:
    """Time every call once per repetition, back to back, the order reversed on odd repetitions. Each call gets
    the repetition's index (so that every variant of a repetition can use the same input).

    Wall time is ``perf_counter``; CPU time is ``process_time`` (all threads of this process: time the process
    was not scheduled does not count, time its threads spin waiting for each other does). After ``repeats``,
    while ``more(times)`` holds, two repetitions at a time are added (one of each order), up to
    ``max_repeats``."""
    names = list(calls)
    for rep in range(warm_up):
        for name in names:
            calls[name](rep)
        sync(device)
    times = PairedTimes({name: [] for name in names}, {name: [] for name in names})
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one variant's step would be charged to it alone: collect between
    try:
        rep = 0
        while rep < repeats or (more is not None and rep < (max_repeats or repeats) and more(times)):
            for _ in range(1 if rep < repeats else min(2, (max_repeats or repeats) - rep)):
                gc.collect()
                for name in names if rep % 2 == 0 else names[::-1]:
                    w, c = time.perf_counter(), time.process_time()
                    calls[name](rep)
                    sync(device)
                    times.wall[name].append(time.perf_counter() - w)
                    times.cpu[name].append(time.process_time() - c)
                rep += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[float, Any]:
    """Median wall time over ``repeats`` calls after one warm-up call; returns (seconds, last result)."""
    out = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# ---------------------------------------------------------------------------------------------- RSS memory
def rss_peak_bytes(fn: Callable[[], Any], device: str) -> int:
    """Growth of the peak resident set (VmHWM) over one call of ``fn`` (Linux; 0 elsewhere and on CUDA).

    VmHWM is reset to the resident set just before the call through /proc/self/clear_refs; while measuring,
    glibc serves every allocation above 64 KiB by mmap and returns freed memory at once, so the resident set
    follows the tensors. It still moves with what the allocator kept from earlier calls: a second column."""
    if device.startswith("cuda"):
        return 0
    gc.collect()
    _mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        (base,) = vm_kib("VmRSS")
        fn()
        return max(vm_kib("VmHWM")[0] - base, 0) * 1024
    except OSError:
        return 0
    finally:
        _glibc_fixed_defaults()


@contextmanager
def steady_heap() -> Iterator[bool]:
    """While inside, glibc serves every allocation from its heap (no ``mmap``) and never trims it, so memory a
    training step frees is reused by the next one without page faults. Yields whether the settings took (False
    off glibc, where it does nothing). On exit: glibc's fixed defaults back (``mmap`` above 32 MiB, trim above
    128 KiB) and the free memory returned to the kernel."""
    no_mmap = _mallopt(_M_MMAP_MAX, 0)
    no_trim = _mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # mallopt takes a C int
    try:
        yield no_mmap and no_trim
    finally:
        _glibc_fixed_defaults()  # also when only one of the two took
        _malloc_trim()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


def _glibc_fixed_defaults() -> None:
    """glibc's default mmap count, trim threshold and the ceiling of its dynamic mmap threshold, as fixed values
    (once any is set, glibc stops adjusting the threshold dynamically)."""
    _mallopt(_M_MMAP_MAX, 65536)
    _mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    _mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt``; False where it is missing or refuses (not glibc: measure as is)."""
    try:
        return bool(_libc().mallopt(param, value))
    except (OSError, AttributeError):
        return False


def _malloc_trim() -> None:
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"
