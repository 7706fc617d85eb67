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


#: Environment variable that fixes the number of compute threads (e.g. on a shared machine).
THREADS_VARIABLE = "AUTOSEG_NUM_THREADS"


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def use_all_cores() -> int:
    """Set torch's CPU compute threads to every available core, or to ``$AUTOSEG_NUM_THREADS``.

    Returns the thread count. On a machine shared with other busy processes fewer
    threads can be much faster: OpenMP threads wait for each other at every operation.
    """
    requested = os.environ.get(THREADS_VARIABLE)
    if requested:
        try:
            threads = max(1, int(requested))
        except ValueError:
            raise AutosegInputError(f"${THREADS_VARIABLE} must be a whole number, got {requested!r}") from None
    else:
        threads = available_cores()
    torch.set_num_threads(threads)
    return threads
