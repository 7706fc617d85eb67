"""Processes and cores: how many this machine offers and the worker pools autoseg starts."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

#: Worker processes for reading and preprocessing cases are capped at this many.
MAX_CASE_WORKERS = 8


def available_cores() -> int:
    """CPU cores this process may run on (affinity and container limits where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: How long :func:`busy_cores` watches the machine (s).
BUSY_SAMPLE_SECONDS = 0.2


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU time of the whole machine so far (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            values = [float(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def busy_cores(sample_seconds: float = BUSY_SAMPLE_SECONDS) -> float:
    """How many cores other processes keep busy right now (0 where the system does not tell).

    Measured from the machine's CPU time over ``sample_seconds`` while this process waits;
    a second busy process on 2 cores slows a 2-thread torch 2-4x (BENCHMARKS.md, "Busy machines"), so the
    compute threads are fitted to the free cores.
    """
    first = _cpu_times()
    if first is None:
        return 0.0
    time.sleep(sample_seconds)
    second = _cpu_times()
    busy, total = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return 0.0
    return busy / total * (os.cpu_count() or 1)


def default_case_workers() -> int:
    """Worker processes for per-case work (fingerprint, preprocessing): the cores, at most 8."""
    return max(1, min(available_cores(), MAX_CASE_WORKERS))


def process_pool(num_workers: int):
    """A ``multiprocessing`` pool (fork where available: workers start fast and inherit imports)."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method).Pool(num_workers)
