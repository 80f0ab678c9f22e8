"""Memory readings for training metrics and the benchmark (seed 000 logs peak memory).

On CUDA: ``torch.cuda.max_memory_allocated`` / ``memory_allocated`` of the device (what tensors hold, not the
allocator's cache). On CPU: the process's peak and current resident set (VmHWM / VmRSS from
/proc/self/status on Linux; ``getrusage``'s peak elsewhere), which includes everything the process holds.
"""

from __future__ import annotations

import torch

__all__ = ["vm_kib", "memory_mib"]


def vm_kib(field: str) -> int:
    """A ``Vm*`` field of /proc/self/status in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_mib(device: torch.device | str) -> tuple[float, float]:
    """(peak, current) memory in MiB: CUDA allocated on a CUDA device, process resident set otherwise."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.memory_allocated(device) / 2**20
    try:
        return vm_kib("VmHWM") / 1024, vm_kib("VmRSS") / 1024
    except (OSError, RuntimeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return peak, peak
