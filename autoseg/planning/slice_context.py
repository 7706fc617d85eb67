"""How many neighbouring slices a 2.5D configuration sees: a rule of the slice spacing.

A 2.5D network segments one slice from that slice and K neighbours on each side (stacked as input
channels, :mod:`autoseg.preprocessing.neighbour_slices`). Neighbours help as far as they show the
same structures from a little further along z; how far that is is a physical distance, so K is
chosen from the slice spacing (mm) to cover about :data:`CONTEXT_MM` on each side, at least one
neighbour (K = 0 would be 2d) and at most :data:`MAX_PLANNED_NEIGHBOURS` (each neighbour adds
input channels and sampling cost, while slices further away resemble the segmented one less).

Pure functions (no I/O); spacings in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The distance (mm) on each side of the segmented slice the neighbours should cover: about a
#: quarter of a centimetre, so 1 mm MRI (Task04, brain tumours) sees two neighbours each side
#: (5 slices, the most common 2.5D input in the literature) and CT of 2.5 mm or thicker slices one.
CONTEXT_MM = 2.5
#: Neighbours on each side the planner chooses at most (7 slices), e.g. for 0.5 mm slices.
MAX_PLANNED_NEIGHBOURS = 3
#: Neighbours on each side at least: one (3 slices), however thick the slices (fewer would be 2d).
MIN_PLANNED_NEIGHBOURS = 1
#: Why neighbours past the volume's ends repeat the end slice (``neighbour_slice_padding``).
NEIGHBOUR_PADDING_REASON = (
    "replicate: a neighbour past the first or last slice repeats that slice, so end slices look like "
    "slices of a region that changes little along z, inputs the network also sees inside the volume "
    "(zeros would be a pattern seen only at the ends; BENCHMARKS.md measures both)")


def choose_neighbour_slices(slice_spacings: Sequence[float]) -> tuple[int, str]:
    """``(K, reason)``: neighbours on each side for cases whose slice spacings (mm, axis 0) are
    ``slice_spacings``, covering :data:`CONTEXT_MM` at their median spacing (module docstring)."""
    spacings = np.asarray(slice_spacings, dtype=np.float64)
    if spacings.size == 0 or not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
        raise ValueError(f"slice spacings must be positive and finite, got {spacings.tolist()}")
    median = float(np.median(spacings))
    wanted = CONTEXT_MM / median
    neighbours = int(np.clip(round(wanted), MIN_PLANNED_NEIGHBOURS, MAX_PLANNED_NEIGHBOURS))
    slices = 2 * neighbours + 1
    if round(wanted) < MIN_PLANNED_NEIGHBOURS:
        why = (f"the median slice spacing is {median:.3g} mm, more than {CONTEXT_MM:g} mm, so the nearest "
               f"neighbour on each side (at least {MIN_PLANNED_NEIGHBOURS}: fewer would be 2d)")
    elif round(wanted) > MAX_PLANNED_NEIGHBOURS:
        why = (f"the median slice spacing is {median:.3g} mm: {CONTEXT_MM:g} mm would need {round(wanted)}, "
               f"capped at {MAX_PLANNED_NEIGHBOURS} (further slices resemble the segmented one less)")
    else:
        why = (f"the median slice spacing is {median:.3g} mm, so {neighbours} on each side cover about "
               f"{neighbours * median:.3g} mm (the rule: about {CONTEXT_MM:g} mm)")
    return neighbours, f"{neighbours} neighbouring slices on each side ({slices} slices per input): {why}"
