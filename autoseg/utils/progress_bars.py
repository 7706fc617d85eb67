"""Progress reporting: a tqdm bar on a terminal, plain lines in a log.

Every loop that reports progress goes through :func:`progress_bar`, which holds the one rule:

* ``TQDM_DISABLE`` set (to anything but ``""``, ``0``, ``false``, ``no`` or ``off``), or ``disable=True``:
  nothing is written.
* The stream (standard error by default) is a terminal: a tqdm bar, as before.
* Otherwise (CI, ``nohup``, a cluster job's log file): no carriage-return frames, but a plain line now and
  then (see :func:`plain_line_due`) and a final one, e.g.
  ``preprocess 3d_fullres: 120/260 cases (46%), 12.3 s``. An inner loop whose caller already logs a line
  per round (the trainer's iterations of an epoch, the windows of one case) passes ``plain_lines=False``
  and writes nothing there.

torch-free and importing tqdm only when a bar is drawn.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

#: Values of ``TQDM_DISABLE`` that do not disable (tqdm itself disables for any non-empty value).
_NOT_DISABLING = {"", "0", "false", "no", "off"}
#: A plain line each time another this many percent of the total are done ...
PLAIN_PERCENT_STEP = 10
#: ... but at most one every this many seconds (a fast loop writes only its final line) ...
PLAIN_MIN_GAP_SECONDS = 2.0
#: ... and at least one every this many seconds while items complete (a slow loop, or one without a total).
PLAIN_MAX_GAP_SECONDS = 60.0


def progress_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``TQDM_DISABLE`` in ``environ`` (default ``os.environ``) turns all progress output off."""
    environ = os.environ if environ is None else environ
    return environ.get("TQDM_DISABLE", "").strip().lower() not in _NOT_DISABLING


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, StringIO and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def plain_line_due(count: int, total: int | None, seconds_since_line: float, count_at_line: int,
                   percent_step: float = PLAIN_PERCENT_STEP, min_gap_s: float = PLAIN_MIN_GAP_SECONDS,
                   max_gap_s: float = PLAIN_MAX_GAP_SECONDS) -> bool:
    """Whether to write a plain progress line now.

    ``count`` items (of ``total``; None or 0 when unknown) are done; the last line was written
    ``seconds_since_line`` seconds ago at ``count_at_line`` items (at the start: seconds since the start and 0).
    Due when more items are done than at the last line and either ``max_gap_s`` seconds have passed, or
    ``min_gap_s`` seconds have passed and the done fraction entered a new ``percent_step`` percent step
    (10 -> lines near 10 %, 20 %, ...). The final line is not decided here: :meth:`PlainProgress.close`
    always writes it.
    """
    if count <= count_at_line:
        return False
    if seconds_since_line >= max_gap_s:
        return True
    if not total or total <= 0 or seconds_since_line < min_gap_s:
        return False
    step = max(float(percent_step), 1e-9)
    return math.floor(100.0 * count / total / step) > math.floor(100.0 * count_at_line / total / step)


def seconds_text(seconds: float) -> str:
    """A duration for a log line: ``12.3 s`` under 100 s, ``12.5 min`` under 100 min, else ``2.3 h``."""
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plain_line(desc: str, count: int, total: int | None, unit: str, elapsed_s: float, postfix: str = "",
               done: bool = False) -> str:
    """One progress line: ``preprocess 3d_fullres: 120/260 cases (46%), 12.3 s`` (``elapsed_s`` in seconds
    since the loop began); ``, done`` ends the final line of a loop that completed."""
    singular = (total if total else count) == 1 or unit.endswith("s") or unit == "it"
    noun = unit if singular else unit + "s"
    amount = f"{count}/{total} {noun} ({100 * count // total}%)" if total else f"{count} {noun}"
    parts = [f"{desc}: {amount}" if desc else amount, seconds_text(elapsed_s)]
    if postfix:
        parts.append(postfix)
    if done:
        parts.append("done")
    return ", ".join(parts)


class _Progress:
    """What every progress object offers: iteration, ``update``, ``set_postfix``, ``close``, ``with``."""

    def __init__(self, iterable: Iterable | None):
        self.iterable = iterable

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, ordered_dict: Mapping | None = None, refresh: bool = True, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class SilentProgress(_Progress):
    """Writes nothing; iterating it iterates the wrapped iterable."""

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())


class PlainProgress(_Progress):
    """Plain lines on a stream that is not a terminal: one when :func:`plain_line_due`, and a final one at
    :meth:`close` (called by ``with`` and when iteration ends)."""

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, unit: str, stream: IO[str],
                 clock=time.monotonic):
        super().__init__(iterable)
        self.desc, self.total, self.unit, self.stream, self.clock = desc, total, unit, stream, clock
        self.n = 0
        self.started = self.last_line_at = clock()
        self.count_at_line = 0
        self.postfix = ""
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        finished = bool(self.total) and self.n >= self.total  # the final line (close) says it
        if not finished and plain_line_due(self.n, self.total, now - self.last_line_at, self.count_at_line):
            self._write(now, done=False)

    def set_postfix(self, ordered_dict: Mapping | None = None, refresh: bool = True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._write(self.clock(), done=not self.total or self.n >= self.total)

    def _write(self, now: float, done: bool) -> None:
        line = plain_line(self.desc, self.n, self.total, self.unit, now - self.started, self.postfix, done)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed log must not stop the work
            pass
        self.last_line_at, self.count_at_line = now, self.n


def progress_bar(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
             disable: bool = False, leave: bool = True, plain_lines: bool = True,
             stream: IO[str] | None = None) -> Any:
    """Progress over ``iterable`` (or ``total`` items counted with ``update``), by the rule of this module.

    ``total`` defaults to ``len(iterable)`` where it has one. ``leave`` is tqdm's (keep the finished bar);
    ``plain_lines=False``: write nothing when ``stream`` (default: standard error) is not a terminal.
    Returns a tqdm bar, a :class:`PlainProgress` or a :class:`SilentProgress`: all iterate, ``update(n)``,
    ``set_postfix(**values)``, ``close()`` and work in ``with``.
    """
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if disable or progress_disabled():
        return SilentProgress(iterable)
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream, disable=False)
    if not plain_lines:
        return SilentProgress(iterable)
    return PlainProgress(iterable, desc, total, unit, stream)


def write_line(message: str) -> None:
    """Print ``message`` on standard output without tearing a progress bar drawn on the terminal."""
    if is_terminal(sys.stderr) and not progress_disabled():
        from tqdm import tqdm

        tqdm.write(message)
    else:
        print(message, flush=True)
