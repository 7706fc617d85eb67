"""How much work predicting a case is: sliding windows and network passes (no I/O, no torch).

Used to plan (the expected time to predict a case, the time validation takes within a
training budget) and by the sliding-window predictor itself, which lays its windows out
with the same count. Shapes in voxels in the patch's axis order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def windows_along_axis(size: int, patch: int, step_size: float = 0.5) -> int:
    """Windows along one axis: ``ceil((size - patch) / (patch * step_size)) + 1`` (1 when the patch covers it)."""
    return math.ceil(max(0, int(size) - int(patch)) / (int(patch) * step_size)) + 1


def count_windows(shape: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5) -> int:
    """Sliding windows over a volume of ``shape`` (the patch's dimensions: 3D, or 2D per slice)."""
    return math.prod(windows_along_axis(size, patch, step_size) for size, patch in zip(shape, patch_size))


def network_passes(shape: Sequence[int], patch_size: Sequence[int], mirror_axes: Sequence[int] | None,
                   step_size: float = 0.5) -> int:
    """Network passes to predict a ``(z, y, x)`` case: windows x mirrorings.

    A 2D patch ``(y, x)`` runs on every slice of the case. Test-time mirroring runs every
    combination of the mirrored axes (8 passes for 3 axes).
    """
    mirrorings = 2 ** len(mirror_axes or [])
    if len(patch_size) == 2:
        return int(shape[0]) * count_windows(shape[1:], patch_size, step_size) * mirrorings
    return count_windows(shape, patch_size, step_size) * mirrorings
