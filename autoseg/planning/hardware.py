"""The memory budget plans must fit: detected GPU memory, or a modest CPU budget."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from autoseg.errors import AutosegInputError

#: Keep this fraction of GPU memory free for the CUDA context, cuDNN workspaces and fragmentation.
GPU_MARGIN_FRACTION = 0.15
#: ... but at least this many bytes.
GPU_MARGIN_MIN_BYTES = int(1.0 * 2**30)
#: On CPU, plan with at most this fraction of the machine's RAM ...
CPU_RAM_FRACTION = 0.25
#: ... and never more than this many bytes: CPU training is limited by speed, not memory.
CPU_BUDGET_CAP_BYTES = 8 * 2**30


@dataclass(frozen=True)
class MemoryBudget:
    """What the planner may spend on one training step.

    Attributes:
        device: ``"cuda"`` or ``"cpu"`` — the device the plan is made for.
        device_name: e.g. ``"NVIDIA A100-SXM4-40GB"`` or ``"cpu"``.
        total_bytes: detected (or given) memory of that device.
        budget_bytes: what the training-memory estimate must stay below.
        bytes_per_activation: 2 with mixed precision on CUDA, 4 for fp32 on CPU.
        reason: how the budget was set, for plans.json.
    """

    device: str
    device_name: str
    total_bytes: int
    budget_bytes: int
    bytes_per_activation: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_budget(total_bytes: int, device_name: str, source: str) -> MemoryBudget:
    margin = max(GPU_MARGIN_MIN_BYTES, int(GPU_MARGIN_FRACTION * total_bytes))
    budget = max(total_bytes - margin, total_bytes // 2)
    return MemoryBudget(
        device="cuda", device_name=device_name, total_bytes=total_bytes, budget_bytes=budget,
        bytes_per_activation=2,
        reason=(f"{source}: {total_bytes / 2**30:.1f} GiB GPU memory minus a margin of "
                f"{margin / 2**30:.1f} GiB (max of {GPU_MARGIN_FRACTION:.0%} and "
                f"{GPU_MARGIN_MIN_BYTES / 2**30:.0f} GiB) for the CUDA context and workspaces; "
                "mixed precision (2 bytes per activation)"))


def cpu_budget(ram_bytes: int) -> MemoryBudget:
    budget = int(min(CPU_RAM_FRACTION * ram_bytes, CPU_BUDGET_CAP_BYTES))
    return MemoryBudget(
        device="cpu", device_name="cpu", total_bytes=ram_bytes, budget_bytes=budget,
        bytes_per_activation=4,
        reason=(f"no CUDA GPU detected: CPU budget of {budget / 2**30:.1f} GiB "
                f"(min of {CPU_RAM_FRACTION:.0%} of {ram_bytes / 2**30:.1f} GiB RAM and "
                f"{CPU_BUDGET_CAP_BYTES / 2**30:.0f} GiB), fp32 (4 bytes per activation); on CPU the "
                "training time, not memory, is the real limit"))


def physical_ram_bytes() -> int:
    """Total RAM of this machine in bytes."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def detect_memory_budget(gpu_memory_gb: float | None = None) -> MemoryBudget:
    """Budget for the device training will most likely use.

    ``gpu_memory_gb`` (the ``--gpu-memory-gb`` option) plans for a GPU of that size
    whatever is detected, e.g. to plan on a CPU machine for training elsewhere.
    """
    if gpu_memory_gb is not None:
        if gpu_memory_gb <= 0:
            raise AutosegInputError("--gpu-memory-gb must be positive")
        return gpu_budget(int(gpu_memory_gb * 2**30), "cuda (given)", f"--gpu-memory-gb {gpu_memory_gb:g}")
    # Deferred for start-up time: the rest of planning is torch-free, and importing torch
    # takes about a second; it is only needed here, to ask for a GPU.
    import torch

    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        return gpu_budget(int(properties.total_memory), properties.name, f"detected {properties.name}")
    return cpu_budget(physical_ram_bytes())
