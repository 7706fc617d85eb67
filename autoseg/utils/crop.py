"""Cropping to the nonzero region (the body) and putting crops back.

Bounding boxes are lists of ``[start, stop)`` voxel index pairs per axis, ``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np

BoundingBox = list[list[int]]


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any channel is nonzero; ``image`` is ``(C, z, y, x)``."""
    return np.any(image != 0, axis=0)


def bounding_box(mask: np.ndarray) -> BoundingBox:
    """Smallest box containing all True voxels of ``mask``; the whole array when it has none."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=other_axes))
        if occupied.size == 0:
            return [[0, size] for size in mask.shape]
        box.append([int(occupied[0]), int(occupied[-1]) + 1])
    return box


def box_slices(box: BoundingBox) -> tuple[slice, ...]:
    return tuple(slice(start, stop) for start, stop in box)


def crop_to_box(array: np.ndarray, box: BoundingBox) -> np.ndarray:
    """Crop the last ``len(box)`` axes of ``array`` (leading channel axes are kept)."""
    leading = (slice(None),) * (array.ndim - len(box))
    return array[leading + box_slices(box)]


def paste_into_box(cropped: np.ndarray, box: BoundingBox, full_shape: tuple[int, ...],
                   fill_value: float = 0) -> np.ndarray:
    """Inverse of :func:`crop_to_box`: a ``full_shape`` array with ``cropped`` at ``box``.

    ``full_shape`` is the spatial shape; leading (channel) axes of ``cropped`` are kept.
    """
    leading_shape = cropped.shape[: cropped.ndim - len(box)]
    full = np.full(tuple(leading_shape) + tuple(full_shape), fill_value, dtype=cropped.dtype)
    leading = (slice(None),) * len(leading_shape)
    full[leading + box_slices(box)] = cropped
    return full
