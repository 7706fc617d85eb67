"""Choosing the compute device."""

from __future__ import annotations

import os

import torch

from autoseg.errors import AutosegInputError


def resolve_device(name: str | None = None) -> torch.device:
    """``cuda``, ``mps`` or ``cpu``; None picks CUDA, then Apple MPS, then the CPU."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AutosegInputError(f"--device {name}: no CUDA GPU is available (use --device cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AutosegInputError("--device mps: Apple MPS is not available (use --device cpu)")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise AutosegInputError(f"--device {name}: expected cuda, cpu or mps")
    return torch.device(name)


def use_all_cores() -> int:
    """Let torch use every core of this machine (affinity-aware) for CPU compute; returns the count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores))
    return cores
