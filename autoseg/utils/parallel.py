"""Processes and cores: how many this machine offers and the worker pools autoseg starts."""

from __future__ import annotations

import multiprocessing
import os
import sys

#: Worker processes for reading and preprocessing cases are capped at this many.
MAX_CASE_WORKERS = 8


def available_cores() -> int:
    """CPU cores this process may run on (affinity and container limits where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_case_workers() -> int:
    """Worker processes for per-case work (fingerprint, preprocessing): the cores, at most 8."""
    return max(1, min(available_cores(), MAX_CASE_WORKERS))


def process_pool(num_workers: int):
    """A ``multiprocessing`` pool (fork where available: workers start fast and inherit imports)."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method).Pool(num_workers)
