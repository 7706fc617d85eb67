"""DICOM voxels decoded with pydicom: what SimpleITK's GDCM cannot read, and enhanced multi-frame images.

pydicom decodes the compressed transfer syntaxes with its own RLE decoder and the installed
plugins (pylibjpeg with pylibjpeg-openjpeg for JPEG 2000, pyjpegls for JPEG-LS, Pillow for
JPEG baseline); Rescale Slope/Intercept are applied (from the Pixel Value Transformation
functional group of an enhanced image, per frame or shared), and the SimpleITK image is built
from the headers' geometry: origin the first slice's Image Position (Patient), directions the
Image Orientation (Patient) row and column and the slice normal, spacing (mm) Pixel Spacing and
the gap between slice positions. A file that cannot be decoded is one line naming it and its
transfer syntax. Arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.io.dicom_headers import SliceHeader, error_reason, functional_group, require_pydicom


def _syntax_name(dataset: Any) -> str:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return getattr(syntax, "name", str(syntax)) if syntax else "no Transfer Syntax UID"


def _rescale(dataset: Any, frame: int | None) -> tuple[float, float]:
    """Rescale (slope, intercept) of ``frame`` of an enhanced image, or of a single-frame ``dataset``."""
    item = functional_group(dataset, frame, "PixelValueTransformationSequence") if frame is not None else None
    source = item if item is not None else dataset
    slope, intercept = source.get("RescaleSlope"), source.get("RescaleIntercept")
    return (float(slope) if slope not in (None, "") else 1.0, float(intercept) if intercept not in (None, "") else 0.0)


def decoded_pixels(path: Path) -> tuple[Any, np.ndarray]:
    """The dataset of ``path`` and its stored pixel values (``(frames, y, x)`` or ``(y, x)``); a one-line
    error naming the file and its transfer syntax when they cannot be decoded."""
    pydicom = require_pydicom()
    dataset = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path)
            return dataset, dataset.pixel_array
    except Exception as error:  # pydicom and its decoders raise many kinds
        syntax = _syntax_name(dataset) if dataset is not None else "unreadable header"
        raise AutosegInputError(f"{path}: pixel data cannot be decoded ({syntax}: {error_reason(error, 120)})"
                                ) from None


def _as_voxels(planes: list[np.ndarray]) -> np.ndarray:
    """Rescaled planes stacked ``(z, y, x)``: int32 where every value is a whole number, else float32."""
    volume = np.stack(planes)
    if np.all(np.isfinite(volume)) and np.all(volume == np.rint(volume)) and np.abs(volume).max(initial=0) < 2**31:
        return volume.astype(np.int32)
    return volume.astype(np.float32)


def pydicom_image(name: str, files: Sequence[Path], headers: Sequence[SliceHeader], slice_spacing: float) -> Any:
    """The SimpleITK image of a series decoded with pydicom: ``files`` single-frame slices sorted along the
    normal (``headers`` theirs, in that order), or one multi-frame file (frames sorted by their positions for
    an enhanced image, else taken in stored order). ``slice_spacing``: the through-plane spacing (mm)."""
    import SimpleITK as sitk

    first = headers[0]
    planes = []
    if len(files) == 1 and first.frames > 1:
        dataset, pixels = decoded_pixels(files[0])
        if pixels.ndim != 3:
            raise AutosegInputError(f"{name}: {first.frames} frames decoded as a {pixels.ndim}D array "
                                    "(colour images are not scans)")
        order = list(range(pixels.shape[0]))
        origin = first.position
        if first.frame_positions is not None:
            normal = _normal(first.orientation)
            order = sorted(order, key=lambda index: float(np.dot(first.frame_positions[index], normal)))
            origin = first.frame_positions[order[0]]
        enhanced = first.frame_positions is not None
        for index in order:
            slope, intercept = _rescale(dataset, index if enhanced else None)
            planes.append(pixels[index].astype(np.float64) * slope + intercept)
    else:
        for path in files:
            dataset, pixels = decoded_pixels(path)
            if pixels.ndim != 2:
                raise AutosegInputError(f"{path}: decoded as a {pixels.ndim}D array, one 2D slice expected "
                                        "(colour images are not scans)")
            slope, intercept = _rescale(dataset, None)
            planes.append(pixels.astype(np.float64) * slope + intercept)
        origin = first.position
    image = sitk.GetImageFromArray(_as_voxels(planes))
    row, column = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:6])
    image.SetDirection(tuple(np.column_stack([row, column, _normal(first.orientation)]).ravel().tolist()))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing((float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), float(slice_spacing)))
    return image


def _normal(orientation: Sequence[float]) -> np.ndarray:
    normal = np.cross(np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:6], dtype=float))
    return normal / np.linalg.norm(normal)
