"""Reading and writing images, whatever their format (see :mod:`autoseg.io.formats`).

Arrays come back in array axis order ``(z, y, x)``, with their :class:`ImageGeometry`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.io.formats import format_for
from autoseg.io.geometry import ImageGeometry, geometry_mismatch


def read_raw(path: str | os.PathLike) -> tuple[np.ndarray, ImageGeometry]:
    """Voxels of one image file in their stored dtype, ``(z, y, x)``, and its geometry."""
    path = Path(path)
    return format_for(path).read(path)


def image_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete, readable image (one line naming it), or None when it is."""
    path = Path(path)
    try:
        format_for(path).verify(path)
    except AutosegInputError as error:
        return str(error)
    return None


def read_image(path: str | os.PathLike, dtype: type = np.float32) -> tuple[np.ndarray, ImageGeometry]:
    """Read one image file as a ``(z, y, x)`` array of ``dtype`` and its geometry."""
    array, geometry = read_raw(path)
    return array.astype(dtype, copy=False), geometry


def labels_as_integers(array: np.ndarray) -> np.ndarray:
    """A label map as int16 (float-stored labels are rounded)."""
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    return array.astype(np.int16, copy=False)


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, ImageGeometry]:
    """Read a label map as an int16 ``(z, y, x)`` array (float-stored labels are rounded)."""
    array, geometry = read_raw(path)
    return labels_as_integers(array), geometry


def write_image(array: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike,
                compress: bool = True) -> None:
    """Write a ``(z, y, x)`` array with the geometry's header, atomically.

    The format follows ``path`` (``.nii.gz``, ``.nrrd``, ``.mha``, ...).
    """
    path = Path(path)
    format_for(path).write(array, geometry, path, compress)


def write_segmentation(segmentation: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike) -> None:
    """Write an integer label map (uint8 when labels fit, else uint16) atomically."""
    dtype = np.uint8 if segmentation.max(initial=0) < 256 else np.uint16
    write_image(segmentation.astype(dtype, copy=False), geometry, path)


def read_case_images(paths: Sequence[str | os.PathLike], tolerance: float = 1e-3) -> tuple[np.ndarray, ImageGeometry]:
    """Read the channel files of one case as a ``(C, z, y, x)`` float32 array.

    All channels must share channel 0's geometry (within ``tolerance``); the geometry of
    channel 0 is returned. (Every reader refuses NaN/Inf voxels and non-positive spacings.)
    """
    arrays = []
    reference = None
    for path in paths:
        array, geometry = read_image(path)
        if reference is None:
            reference = geometry
        else:
            mismatch = geometry_mismatch(reference, geometry, tolerance)
            if mismatch:
                raise AutosegInputError(f"{path}: {mismatch} (channel 0: {Path(paths[0]).name})")
        arrays.append(array)
    if reference is None:
        raise AutosegInputError("no image files given")
    return np.stack(arrays), reference
