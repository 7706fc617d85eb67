"""A lock file that says who holds it and survives crashes.

``with FileLock(path, what="training 3d_fullres fold 0"):`` creates ``path`` atomically
(``O_CREAT | O_EXCL``, which also holds on NFS v3+) holding the holder's machine, pid,
start time and command line, and removes it on exit. A second process finds the file
and stops with one line naming the holder. A lock left by a process that no longer runs
(kill -9, power loss) is detected on the same machine, reported and taken over; a lock
held from another machine cannot be checked from here, so the message says how old it
is and to delete it when no job runs there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.utils.processes import ProcessIdentity


class FileLock:
    """An exclusive lock on ``path`` for ``what`` (words for messages, e.g. "training 2d fold 0").

    Attributes:
        stale_message: set when a stale lock was taken over (the caller may log it).
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self.stale_message = ""
        self._held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as held by an unknown process

    def _create(self) -> bool:
        me = ProcessIdentity.current()
        record = {"host": me.host, "pid": me.pid, "start_ticks": me.start_ticks, "what": self.what,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "started_at": time.time(),
                  "command": " ".join(sys.argv)}
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        return True

    def acquire(self) -> None:
        """Take the lock, or raise a one-line :class:`AutosegInputError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self._held = True
                return
            holder = self._holder()
            if holder is None:
                continue  # released in between
            if not holder:
                time.sleep(0.2)  # created a moment ago, its content not yet written
                continue
            try:
                identity = ProcessIdentity(str(holder["host"]), int(holder["pid"]), holder.get("start_ticks"))
            except (KeyError, TypeError, ValueError):
                raise AutosegInputError(f"{self.path}: lock file of {self.what} is damaged; delete it if no autoseg "
                                        "process is running on this folder") from None
            running = identity.is_running()
            since = f"since {holder.get('started', '?')}"
            if running is False:
                self.stale_message = (f"{self.path}: removed a stale lock of {self.what} left by pid {identity.pid} "
                                      f"on {identity.host} ({since}), which no longer runs")
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            if running is True:
                raise AutosegInputError(f"{self.path}: {self.what} is already running (pid {identity.pid}, {since}: "
                                        f"{holder.get('command', '?')}); wait for it or stop it")
            age = (time.time() - float(holder.get("started_at", time.time()))) / 3600
            raise AutosegInputError(f"{self.path}: {self.what} is held by pid {identity.pid} on {identity.host} "
                                    f"({since}, {age:.1f} h ago); if no autoseg job runs there, delete this file")
        raise AutosegInputError(f"{self.path}: the lock file of {self.what} is unreadable; delete it if no autoseg "
                                "process is running on this folder")

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
