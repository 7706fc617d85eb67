"""Reading durations given on the command line (``--time-budget 1h30m``)."""

from __future__ import annotations

import re

from autoseg.errors import AutosegInputError


def parse_duration(text: str, option: str = "--time-budget") -> float:
    """Seconds in ``"45m"``, ``"2h"``, ``"1h30m"``, ``"90s"`` or a plain number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", value)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != value.replace(" ", ""):
            raise AutosegInputError(f"{option}: cannot read {text!r} (use e.g. 45m, 2h, 1h30m or seconds)")
        seconds = sum(float(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)
    if seconds <= 0:
        raise AutosegInputError(f"{option} must be positive, got {text!r}")
    return seconds
