"""Reading and writing medical images with SimpleITK.

Arrays come back in array axis order ``(z, y, x)`` (see CONTRIBUTING.md). The
header needed to write a result back exactly (SimpleITK spacing, origin and
direction in its own ``(x, y, z)`` order) is kept in :class:`ImageGeometry`.
A 2D file becomes an array of shape ``(1, y, x)`` with a fake slice spacing of
:data:`FAKE_SLICE_SPACING_2D` mm.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from autoseg.errors import AutosegInputError
from autoseg.utils.files import atomic_path

#: Spacing (mm) given to the missing slice axis of a 2D image.
FAKE_SLICE_SPACING_2D = 999.0


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image lies in physical space.

    Attributes:
        shape: array shape in ``(z, y, x)`` order (voxels); 2D files get z = 1.
        spacing: voxel size in mm, array axis order ``(z, y, x)``.
        sitk_spacing, sitk_origin, sitk_direction: the file header as SimpleITK
            reports it (``(x, y[, z])`` order, origin in mm, direction cosines
            flattened row-major); used to write results back exactly.
        file_dimension: 2 or 3, the dimension of the file on disk.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    sitk_spacing: tuple[float, ...]
    sitk_origin: tuple[float, ...]
    sitk_direction: tuple[float, ...]
    file_dimension: int

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageGeometry:
        return cls(
            shape=tuple(int(v) for v in data["shape"]),
            spacing=tuple(float(v) for v in data["spacing"]),
            sitk_spacing=tuple(float(v) for v in data["sitk_spacing"]),
            sitk_origin=tuple(float(v) for v in data["sitk_origin"]),
            sitk_direction=tuple(float(v) for v in data["sitk_direction"]),
            file_dimension=int(data["file_dimension"]),
        )


def read_sitk_image(path: str | os.PathLike) -> sitk.Image:
    """Read a file with SimpleITK, turning its errors into one-line input errors."""
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()
        detail = next((line for line in reason if "rror" in line), reason[-1] if reason else "")
        raise AutosegInputError(f"{path}: cannot be read as an image ({detail.strip()[:200]})") from None


def geometry_of(image: sitk.Image) -> ImageGeometry:
    """Geometry of a 2D or 3D SimpleITK image (see :class:`ImageGeometry`)."""
    dimension = image.GetDimension()
    sitk_spacing = tuple(float(v) for v in image.GetSpacing())
    size_xyz = image.GetSize()
    if dimension == 2:
        shape = (1, size_xyz[1], size_xyz[0])
        spacing = (FAKE_SLICE_SPACING_2D, sitk_spacing[1], sitk_spacing[0])
    else:
        shape = tuple(int(v) for v in size_xyz[::-1])
        spacing = sitk_spacing[::-1]
    return ImageGeometry(
        shape=tuple(int(v) for v in shape),
        spacing=tuple(float(v) for v in spacing),
        sitk_spacing=sitk_spacing,
        sitk_origin=tuple(float(v) for v in image.GetOrigin()),
        sitk_direction=tuple(float(v) for v in image.GetDirection()),
        file_dimension=dimension,
    )


def check_dimension(image: sitk.Image, path: str | os.PathLike) -> None:
    """Raise an input error unless ``image`` is a scalar 2D or 3D image."""
    if image.GetDimension() not in (2, 3):
        raise AutosegInputError(
            f"{path}: image is {image.GetDimension()}D, expected a 2D or 3D image "
            "(split 4D series into one file per channel: _0000, _0001, ...)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise AutosegInputError(
            f"{path}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(e.g. RGB); store each channel as its own _XXXX file")


def sitk_to_array(image: sitk.Image, dtype: type = np.float32) -> np.ndarray:
    """Voxel array of a 2D/3D image in ``(z, y, x)`` order (2D gets z = 1)."""
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        array = array[None]
    return array.astype(dtype, copy=False)


def read_image(path: str | os.PathLike, dtype: type = np.float32) -> tuple[np.ndarray, ImageGeometry]:
    """Read one image file as a ``(z, y, x)`` array of ``dtype`` and its geometry."""
    image = read_sitk_image(path)
    check_dimension(image, path)
    return sitk_to_array(image, dtype), geometry_of(image)


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, ImageGeometry]:
    """Read a label map as an int16 ``(z, y, x)`` array (float-stored labels are rounded)."""
    image = read_sitk_image(path)
    check_dimension(image, path)
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        array = array[None]
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    return array.astype(np.int16, copy=False), geometry_of(image)


def geometry_mismatch(reference: ImageGeometry, other: ImageGeometry,
                      tolerance: float = 1e-3) -> str | None:
    """Describe how ``other`` differs from ``reference`` (None when they match).

    Shapes must be equal; spacing, origin and direction are compared with a
    relative tolerance on spacing (``tolerance``), an absolute tolerance of
    ``max(tolerance, 1e-3 * spacing)`` mm scaled to the image on origin, and an
    absolute tolerance on the direction cosines.
    """
    if reference.shape != other.shape:
        return f"shape {list(other.shape)} differs from {list(reference.shape)}"
    if not np.allclose(reference.sitk_spacing, other.sitk_spacing, rtol=tolerance, atol=1e-6):
        return f"spacing {list(other.sitk_spacing)} differs from {list(reference.sitk_spacing)}"
    origin_tolerance = max(1e-3, tolerance * float(max(reference.sitk_spacing)))
    if not np.allclose(reference.sitk_origin, other.sitk_origin, rtol=0, atol=origin_tolerance):
        return f"origin {list(other.sitk_origin)} differs from {list(reference.sitk_origin)}"
    if not np.allclose(reference.sitk_direction, other.sitk_direction, rtol=0, atol=tolerance):
        return "direction differs"
    return None


def array_to_sitk(array: np.ndarray, geometry: ImageGeometry) -> sitk.Image:
    """Wrap a ``(z, y, x)`` array (z = 1 for 2D files) in the header of ``geometry``."""
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    if geometry.file_dimension == 2:
        array = array[0]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.sitk_spacing)
    image.SetOrigin(geometry.sitk_origin)
    image.SetDirection(geometry.sitk_direction)
    return image


def write_image(array: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike,
                compress: bool = True) -> None:
    """Write a ``(z, y, x)`` array with the geometry's header, atomically.

    The format follows the file ending of ``path`` (``.nii.gz``, ``.nrrd``, ``.mha``, ...).
    """
    image = array_to_sitk(array, geometry)
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), compress)


def write_segmentation(segmentation: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike) -> None:
    """Write an integer label map (uint8 when labels fit, else uint16) atomically."""
    dtype = np.uint8 if segmentation.max(initial=0) < 256 else np.uint16
    write_image(segmentation.astype(dtype, copy=False), geometry, path)


def read_case_images(paths, tolerance: float = 1e-3) -> tuple[np.ndarray, ImageGeometry]:
    """Read the channel files of one case as a ``(C, z, y, x)`` float32 array.

    All channels must share channel 0's geometry (within ``tolerance``); the
    geometry of channel 0 is returned.
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
