"""The compute device and its threads: one place decides both, for training, benchmarks and prediction."""

from __future__ import annotations

import os
import platform

import torch

from autoseg.errors import AutosegInputError
from autoseg.utils.parallel import available_cores

#: Environment variable that fixes the number of compute threads (e.g. on a shared machine).
THREADS_VARIABLE = "AUTOSEG_NUM_THREADS"


def resolve_device(name: str | None = None) -> torch.device:
    """``cuda``, ``mps`` or ``cpu``; None or ``auto`` picks CUDA, then Apple MPS, then the CPU."""
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


def prepare_device(name: str | None = None) -> torch.device:
    """Resolve ``name`` (see :func:`resolve_device`); on the CPU also give torch every core.

    Every command that computes calls this once, so training, speed measurement and
    prediction run with the same device and thread choice.
    """
    device = resolve_device(name)
    if device.type == "cpu":
        use_all_cores()
    return device


def device_name(device: torch.device) -> str:
    """Human-readable name of the hardware behind ``device`` (GPU model or CPU model)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"
