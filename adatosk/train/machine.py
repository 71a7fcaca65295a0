"""The machine a run trained on, as its checkpoint records it (``model.json`` ``extra.machine``).

A single seed's result depends on it: the same commit and seed give different numbers on a CPU whose kernels use
AVX-512 and on one limited to AVX2, since the order of floating-point additions differs and training amplifies
it. So evaluation copies it into metrics.json (``trained_on``) and the demo's reference names it per entry.
"""

from __future__ import annotations

import os
import platform

import torch

# Environment variables that cap the instruction set of oneDNN's and MKL's kernels below what the CPU has (torch's
# own kernels follow ATEN_CPU_CAPABILITY, which torch.backends.cpu.get_cpu_capability() reports).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine(device: torch.device, world_size: int = 1) -> str:
    """``"NVIDIA H100 80GB HBM3 x4, CUDA 13.0"`` on GPUs; on a CPU its model, the instruction set torch's kernels
    use and any cap on oneDNN's and MKL's, e.g. ``"Intel(R) Xeon(R) ..., torch AVX2, ONEDNN_MAX_CPU_ISA=AVX2"``."""
    if device.type == "cuda":
        count = f" x{world_size}" if world_size > 1 else ""
        return f"{torch.cuda.get_device_name(device)}{count}, CUDA {torch.version.cuda}"
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    return ", ".join([cpu_model(), f"torch {torch.backends.cpu.get_cpu_capability()}", *caps])
