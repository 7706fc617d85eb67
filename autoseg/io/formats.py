"""Image file formats: one reader/writer class per format, in a registry.

Every image autoseg reads or writes goes through :func:`format_for`, which asks the
registered formats in order which one claims a path. :class:`SimpleITKFormat` (the
default) claims files whose name ends with one of the endings SimpleITK reads. A new
format (e.g. a folder holding a DICOM series) is a subclass of :class:`ImageFormat`
registered with ``IMAGE_FORMATS.add(...)``; dataset verification, planning and
prediction then read it without any other change. :class:`DicomSeriesFormat` claims a folder
holding one DICOM series (:mod:`autoseg.io.dicom`).

Arrays are in array axis order ``(z, y, x)``; a 2D file gives ``(1, y, x)``.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoseg.errors import AutosegInputError
from autoseg.io.dicom import checked_slices, is_series_path, read_series, series_at
from autoseg.io.file_integrity import check_image_file
from autoseg.io.geometry import FAKE_SLICE_SPACING_2D, ImageGeometry
from autoseg.utils.files import atomic_path, free_bytes
from autoseg.utils.registry import Registry


class ImageFormat:
    """Reads and writes one kind of image file.

    Attributes:
        file_endings: endings (lower case, e.g. ``".nii.gz"``) this format handles;
            used to find images in folders and to name outputs.
    """

    file_endings: tuple[str, ...] = ()

    def claims(self, path: Path) -> bool:
        """Whether this format reads ``path`` (default: its name ends with one of :attr:`file_endings`)."""
        name = path.name.lower()
        return any(name.endswith(ending) for ending in self.file_endings)

    def read(self, path: Path) -> tuple[np.ndarray, ImageGeometry]:
        """The voxels in their stored dtype, ``(z, y, x)``, and the geometry.

        Raises :class:`AutosegInputError` (one line naming ``path``) when the file cannot
        be read or is not a scalar 2D/3D image.
        """
        raise NotImplementedError

    def write(self, array: np.ndarray, geometry: ImageGeometry, path: Path, compress: bool = True) -> None:
        """Write a ``(z, y, x)`` array with the geometry's header, atomically."""
        raise NotImplementedError(f"{type(self).__name__} cannot write images")

    def verify(self, path: Path) -> None:
        """Raise :class:`AutosegInputError` unless ``path`` is a complete, readable image (default: read it)."""
        self.read(path)

    def voxel_count(self, path: Path) -> int:
        """Voxels (times components) the image decodes to, from its header where the format allows
        (default: read it). Lets a service refuse a small file that decodes to a huge volume."""
        return int(self.read(path)[0].size)


class SimpleITKFormat(ImageFormat):
    """Any file SimpleITK reads and writes (NIfTI, NRRD, MetaImage, PNG, TIFF, ...).

    Files are checked first (:func:`autoseg.io.file_integrity.check_image_file`): SimpleITK
    reads a truncated .nii.gz with zeros for its missing part and NIfTI NaN voxels as 0. The
    image read must have a positive spacing and (floating-point voxels) no NaN/Inf.
    """

    file_endings = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff",
                    ".bmp", ".jpg", ".jpeg", ".gipl", ".gipl.gz", ".hdr", ".img")

    def read(self, path: Path) -> tuple[np.ndarray, ImageGeometry]:
        if not path.is_file():
            raise AutosegInputError(f"{path}: file not found")
        check_image_file(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()
            detail = next((line for line in reason if "rror" in line), reason[-1] if reason else "")
            raise AutosegInputError(f"{path}: cannot be read as an image ({detail.strip()[:200]})") from None
        if image.GetDimension() not in (2, 3):
            raise AutosegInputError(
                f"{path}: image is {image.GetDimension()}D, expected a 2D or 3D image "
                "(split 4D series into one file per channel: _0000, _0001, ...)")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise AutosegInputError(
                f"{path}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                "(e.g. RGB); store each channel as its own _XXXX file")
        array = sitk.GetArrayFromImage(image)
        if image.GetDimension() == 2:
            array = array[None]
        geometry = sitk_geometry(image)
        _checked_voxels(path, array, geometry)
        return array, geometry

    def verify(self, path: Path) -> None:
        """Complete (:func:`check_image_file`) and with a readable header; the voxels are not decoded
        where the file's own checks suffice (an integer .nii.gz: its gzip trailer)."""
        if not path.is_file():
            raise AutosegInputError(f"{path}: file not found")
        check_image_file(path)
        _header_of(path)

    def voxel_count(self, path: Path) -> int:
        reader = _header_of(path)
        return math.prod(int(size) for size in reader.GetSize()) * int(reader.GetNumberOfComponents())

    def write(self, array: np.ndarray, geometry: ImageGeometry, path: Path, compress: bool = True) -> None:
        if tuple(array.shape) != tuple(geometry.shape):
            raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
        if geometry.file_dimension == 2:
            array = array[0]
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(geometry.sitk_spacing)
        image.SetOrigin(geometry.sitk_origin)
        image.SetDirection(geometry.sitk_direction)
        with atomic_path(path, needed_bytes=array.nbytes) as temporary:
            try:
                sitk.WriteImage(image, str(temporary), compress)
            except RuntimeError as error:  # SimpleITK reports a full disk as a RuntimeError
                free = free_bytes(temporary)
                if free is not None and free < array.nbytes:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
                detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
                raise AutosegInputError(f"{path}: cannot be written ({detail})") from None


def _header_of(path: Path) -> sitk.ImageFileReader:
    """A reader that has read ``path``'s header only; a one-line error when it cannot."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise AutosegInputError(f"{path}: cannot be read as an image") from None
    return reader


def _checked_voxels(path: Path, array: np.ndarray, geometry: ImageGeometry) -> None:
    """Refuse a non-positive spacing and NaN/Inf voxels (one line naming ``path``)."""
    if not all(math.isfinite(value) and value > 0 for value in geometry.sitk_spacing):
        raise AutosegInputError(f"{path}: voxel spacing {list(geometry.sitk_spacing)} mm (x, y, z) is not "
                                "positive: fix the header")
    if array.dtype.kind == "f":
        non_finite = int(array.size - np.count_nonzero(np.isfinite(array)))
        if non_finite:
            raise AutosegInputError(f"{path}: contains {non_finite} NaN/Inf voxels")


class DicomSeriesFormat(ImageFormat):
    """A folder holding the files of one DICOM series, or ``folder#SeriesInstanceUID`` for one of several
    (read as :mod:`autoseg.io.dicom` says: slices
    sorted along their normal and checked, Rescale Slope/Intercept applied). Read only: segmentations
    of DICOM input are written as NIfTI or DICOM-SEG, never as a series."""

    def claims(self, path: Path) -> bool:
        return is_series_path(path)

    def read(self, path: Path) -> tuple[np.ndarray, ImageGeometry]:
        array, image = read_series(series_at(path))
        geometry = sitk_geometry(image)
        _checked_voxels(path, array, geometry)
        return array, geometry

    def verify(self, path: Path) -> None:
        checked_slices(series_at(path))

    def voxel_count(self, path: Path) -> int:
        return sum(int(header.rows or 0) * int(header.columns or 0) * max(int(header.frames), 1)
                   for header in series_at(path).slices)


def sitk_geometry(image: sitk.Image) -> ImageGeometry:
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


#: Registered formats, asked in order which one claims a path.
IMAGE_FORMATS: Registry[ImageFormat] = Registry("image format")
IMAGE_FORMATS.add("simpleitk", SimpleITKFormat())
IMAGE_FORMATS.add("dicom-series", DicomSeriesFormat())


def format_for(path: str | os.PathLike) -> ImageFormat:
    """The first registered format that claims ``path``; a one-line error when none does."""
    path = Path(path)
    for name in IMAGE_FORMATS:
        image_format = IMAGE_FORMATS.get(name)
        if image_format.claims(path):
            return image_format
    raise AutosegInputError(f"{path}: no image reader for this file type (known endings: "
                            f"{', '.join(known_file_endings())})")


def known_file_endings() -> tuple[str, ...]:
    """Every file ending a registered format handles, longest first (``.nii.gz`` before ``.gz``)."""
    endings = {ending for name in IMAGE_FORMATS for ending in IMAGE_FORMATS.get(name).file_endings}
    return tuple(sorted(endings, key=lambda ending: (-len(ending), ending)))


def ending_of(path: str | os.PathLike) -> str:
    """The known file ending of ``path`` (``.nii.gz`` for ``a.nii.gz``), else its last suffix."""
    path = Path(path)
    name = path.name.lower()
    for ending in known_file_endings():
        if name.endswith(ending):
            return path.name[-len(ending):]
    return path.suffix
