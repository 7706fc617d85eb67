"""Which process wrote a file, and whether it still runs: the basis of stale locks and temporaries.

A process is named by the machine it runs on, its pid and, where the system tells
(Linux ``/proc``), its start time in clock ticks since boot, so that a pid reused by
another program after a crash is not mistaken for the original process.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass


def this_host() -> str:
    """This machine's name, reduced to letters, digits, ``_`` and ``-`` (safe in file names)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3 (the state)
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessIdentity:
    """A process: its machine, pid and (where known) start time in clock ticks since boot."""

    host: str
    pid: int
    start_ticks: int | None = None

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls(this_host(), os.getpid(), process_start_ticks(os.getpid()))

    def is_local(self) -> bool:
        return self.host == this_host()

    def is_running(self) -> bool | None:
        """Whether the process still runs; None when it runs on another machine (cannot be told)."""
        if not self.is_local():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        if self.start_ticks is not None:
            started = process_start_ticks(self.pid)
            if started is not None and started != self.start_ticks:
                return False  # the pid was reused by another process
        return True
