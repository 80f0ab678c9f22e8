"""Memory readings for training metrics and the benchmark (seed 000 logs peak memory).

``memory_mib`` (the training metric): on CUDA ``torch.cuda.max_memory_allocated`` / ``memory_allocated`` of the
device (what tensors hold, not the allocator's cache); on CPU the process's peak and current resident set (VmHWM /
VmRSS from /proc/self/status on Linux; ``getrusage``'s peak elsewhere), which includes everything the process
holds and moves with the C allocator and the kernel.

``peak_allocated_bytes`` (the benchmark): the peak of one call from torch's own allocation accounting, the same
number on every run of the same code, however loaded the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["memory_mib", "peak_allocated_bytes", "vm_kib"]

T = TypeVar("T")


def vm_kib(*fields: str) -> tuple[int, ...]:
    """``Vm*`` fields of /proc/self/status in KiB (Linux), read at one instant, in the order asked."""
    found: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            name = line.split(":", 1)[0]
            if name in fields:
                found[name] = int(line.split()[1])
    missing = [name for name in fields if name not in found]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not in /proc/self/status")
    return tuple(found[name] for name in fields)


def memory_mib(device: torch.device | str) -> tuple[float, float]:
    """(peak, current) memory in MiB: CUDA allocated on a CUDA device, process resident set otherwise.

    On CPU the peak is VmHWM, which the kernel keeps as a high-water mark but may miss short peaks released
    through madvise; it is not guaranteed to be monotone across readings."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.memory_allocated(device) / 2**20
    try:
        peak, current = vm_kib("VmHWM", "VmRSS")
        return peak / 1024, current / 1024
    except (OSError, RuntimeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return peak, peak


_MARKER = "sae_lens_ortho.memory.measured_call"


def peak_allocated_bytes(fn: Callable[[], T], device: torch.device | str, *, warm_calls: int = 0) -> tuple[int, T]:
    """Peak bytes that ``fn()`` holds above what was held when it started, from torch's own allocation
    accounting; returns (bytes, the measured call's result).

    CUDA: ``max_memory_allocated`` over the call minus ``memory_allocated`` before it. CPU: the allocation and
    free events that torch's CPU allocator reports to the profiler (``profile_memory=True``), summed in time
    order. The figure depends only on what the call allocates, not on what else the machine runs, and counts
    every block of torch's CPU allocator (tensors, autograd buffers, kernel temporaries) but not memory that
    other libraries (NumPy, oneDNN scratch) allocate themselves.

    The running sum counts only blocks allocated while the profiler records, so freeing a block that existed
    before does not lower it. ``warm_calls`` calls of ``fn`` run first under the same recording: what they leave
    behind is known, so a training step that frees the previous step's gradients is measured in steady state.
    """
    device = torch.device(device)
    if device.type == "cuda":
        for _ in range(warm_calls):
            fn()
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, out
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(warm_calls):
            fn()
        with record_function(_MARKER):
            out = fn()
    return _peak_of_events(prof.profiler.kineto_results.experimental_event_tree()), out  # type: ignore[union-attr]


def _peak_of_events(roots: list[Any]) -> int:
    """The running sum's peak inside the marked call, above its level when the call began."""
    allocations: list[tuple[int, int, int]] = []  # (time ns, ptr, signed bytes)
    window: tuple[int, int] | None = None
    stack = list(roots)
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        fields = event.extra_fields
        if event.name == _MARKER:
            window = (event.start_time_ns, event.end_time_ns)
        elif hasattr(fields, "alloc_size") and fields.device.type == "cpu":
            allocations.append((event.start_time_ns, fields.ptr, fields.alloc_size))
    if window is None:
        raise RuntimeError("the profiler recorded no measured call")
    # Own accounting by address: the allocator's total can carry stale sizes of blocks freed while no profiler
    # was recording, so a free counts only for a block whose allocation this recording saw.
    live: dict[int, int] = {}
    held = 0
    start_level: int | None = None
    peak = 0
    for t, ptr, size in sorted(allocations, key=lambda a: a[0]):
        if start_level is None and t >= window[0]:
            start_level = peak = held
        if t > window[1]:
            break
        if size > 0:
            live[ptr] = size
            held += size
        else:
            held -= live.pop(ptr, 0)
        if start_level is not None:
            peak = max(peak, held)
    if start_level is None:  # nothing was allocated during the call
        return 0
    return peak - start_level
