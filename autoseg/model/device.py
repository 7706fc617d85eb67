"""The compute device and its threads: one place decides both, for training, benchmarks and prediction."""

from __future__ import annotations

import functools
import os
import platform

import torch

from autoseg.errors import AutosegInputError
from autoseg.utils.parallel import available_cores, busy_cores

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


def threads_for(cores: int, busy: float) -> int:
    """Compute threads for ``cores`` available cores of which other processes keep ``busy`` busy:
    the free cores (a core counts as busy from 0.5 of its time on), at least one."""
    return max(1, cores - int(busy + 0.5))


def use_free_cores() -> int:
    """Set torch's CPU compute threads to the cores no other process keeps busy, or to
    ``$AUTOSEG_NUM_THREADS``; returns the thread count.

    On a machine shared with other busy processes fewer threads are much faster: OpenMP
    threads wait for each other at every operation (2 threads on 2 cores beside one busy
    process ran 2-4x slower). A note is printed when cores are left out.
    """
    requested = os.environ.get(THREADS_VARIABLE)
    if requested:
        try:
            threads = max(1, int(requested))
        except ValueError:
            raise AutosegInputError(f"${THREADS_VARIABLE} must be a whole number, got {requested!r}") from None
    else:
        threads = _free_core_threads()
    torch.set_num_threads(threads)
    return threads


@functools.cache
def _free_core_threads() -> int:
    """:func:`threads_for` the machine as this process first finds it (watched once per process)."""
    cores, busy = available_cores(), busy_cores()
    threads = threads_for(cores, busy)
    if threads < cores:
        print(f"note: other processes keep {busy:.1f} of the {cores} cores busy: computing with {threads} "
              f"thread(s) (${THREADS_VARIABLE} sets it); timings and the budget choice are less reliable "
              "on a busy machine")
    return threads


def prepare_device(name: str | None = None) -> torch.device:
    """Resolve ``name`` (see :func:`resolve_device`); on the CPU also give torch the free cores.

    Every command that computes calls this once, so training, speed measurement and
    prediction run with the same device and thread choice.
    """
    device = resolve_device(name)
    if device.type == "cpu":
        use_free_cores()
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
