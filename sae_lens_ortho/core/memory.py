"""Memory readings for training metrics and the benchmark (seed 000 logs peak memory).

On CUDA: ``torch.cuda.max_memory_allocated`` / ``memory_allocated`` of the device (what tensors hold, not the
allocator's cache). On CPU: the process's peak and current resident set (VmHWM / VmRSS from
/proc/self/status on Linux; ``getrusage``'s peak elsewhere), which includes everything the process holds.
"""

from __future__ import annotations

import torch

__all__ = ["memory_mib", "vm_kib"]


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
