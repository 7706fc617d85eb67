"""One array orientation for every image: axes transposed and flipped to the closest patient axes.

Scanners and converters store volumes in any axis order and direction: LPS-ordered DICOM,
RAS-ordered NIfTI (x and y reversed), sagittal or coronal acquisitions (axes permuted),
oblique ones. autoseg trains and predicts on arrays whose ``(z, y, x)`` axes run as nearly as
the direction cosines allow along the patient's superior, posterior and left directions
(DICOM's LPS patient system: SimpleITK direction closest to the identity), so a network sees
the anatomy the same way up whatever the file says. Only transposes and flips are used (no
resampling): an oblique image keeps its small obliquity. Results are brought back to the
file's own axis order before they are written (:func:`from_canonical`), so outputs overlay
their inputs exactly. 2D files are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autoseg.io.geometry import ImageGeometry


@dataclass(frozen=True)
class Orientation:
    """How an array ``(..., z, y, x)`` becomes canonical: canonical axis ``i`` is the file's array axis
    ``axes[i]`` (of the last three), reversed when ``flipped[i]``."""

    axes: tuple[int, int, int] = (0, 1, 2)
    flipped: tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flipped)

    def to_dict(self) -> dict[str, Any]:
        return {"axes": list(self.axes), "flipped": list(self.flipped)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Orientation:
        if not data:
            return cls()
        return cls(tuple(int(v) for v in data["axes"]), tuple(bool(v) for v in data["flipped"]))


def canonical_orientation(geometry: ImageGeometry) -> Orientation:
    """The transpose and flips that bring an image's array axes closest to patient S, P, L (z, y, x).

    Array axis ``a`` (0 = z, 1 = y, 2 = x) points along column ``2 - a`` of the direction matrix;
    the axes are matched to patient axes greedily, most clearly aligned first, so an oblique
    image still gets a permutation.
    """
    if geometry.file_dimension != 3 or len(geometry.sitk_direction) != 9:
        return Orientation()
    direction = np.asarray(geometry.sitk_direction, dtype=float).reshape(3, 3)
    vectors = {array_axis: direction[:, 2 - array_axis] for array_axis in range(3)}
    taken: dict[int, int] = {}  # patient axis -> array axis
    for array_axis in sorted(vectors, key=lambda a: -np.abs(vectors[a]).max()):
        for patient_axis in np.argsort(-np.abs(vectors[array_axis])):
            if int(patient_axis) not in taken:
                taken[int(patient_axis)] = array_axis
                break
    axes, flipped = [], []
    for canonical_axis in range(3):
        array_axis = taken[2 - canonical_axis]  # canonical z, y, x = patient S, P, L (indices 2, 1, 0)
        axes.append(array_axis)
        flipped.append(bool(vectors[array_axis][2 - canonical_axis] < 0))
    return Orientation(tuple(axes), tuple(flipped))


def to_canonical(array: np.ndarray, orientation: Orientation) -> np.ndarray:
    """``(..., z, y, x)`` in the file's axis order -> canonical order (a view where possible)."""
    if orientation.is_identity:
        return array
    lead = array.ndim - 3
    result = np.transpose(array, [*range(lead), *(lead + a for a in orientation.axes)])
    flips = [lead + i for i, flip in enumerate(orientation.flipped) if flip]
    return np.flip(result, flips) if flips else result


def from_canonical(array: Any, orientation: Orientation) -> Any:
    """Inverse of :func:`to_canonical`: canonical ``(..., z, y, x)`` -> the file's axis order (a numpy
    view, or for a torch tensor a flipped copy / permuted view)."""
    if orientation.is_identity:
        return array
    lead = array.ndim - 3
    flips = [lead + i for i, flip in enumerate(orientation.flipped) if flip]
    order = [*range(lead), *(lead + int(a) for a in np.argsort(orientation.axes))]
    if not isinstance(array, np.ndarray):  # a torch tensor
        return (array.flip(flips) if flips else array).permute(order)
    return np.transpose(np.flip(array, flips) if flips else array, order)


def canonical_geometry(geometry: ImageGeometry, orientation: Orientation) -> ImageGeometry:
    """The geometry of the canonical array: the same voxels in space, axes reordered and flipped."""
    if orientation.is_identity:
        return geometry
    direction = np.asarray(geometry.sitk_direction, dtype=float).reshape(3, 3)
    sitk_spacing = np.asarray(geometry.sitk_spacing, dtype=float)
    shape = [geometry.shape[a] for a in orientation.axes]
    spacing = [geometry.spacing[a] for a in orientation.axes]
    columns, first_voxel = [], np.zeros(3)  # first_voxel: file array index (z, y, x) of canonical voxel 0
    for canonical_axis in (2, 1, 0):  # SimpleITK order x, y, z = canonical array axes 2, 1, 0
        array_axis = orientation.axes[canonical_axis]
        sign = -1.0 if orientation.flipped[canonical_axis] else 1.0
        columns.append(sign * direction[:, 2 - array_axis])
        if orientation.flipped[canonical_axis]:
            first_voxel[array_axis] = geometry.shape[array_axis] - 1
    origin = np.asarray(geometry.sitk_origin) + direction @ (sitk_spacing * first_voxel[::-1])
    return ImageGeometry(shape=tuple(int(v) for v in shape), spacing=tuple(float(v) for v in spacing),
                         sitk_spacing=tuple(float(v) for v in spacing[::-1]),
                         sitk_origin=tuple(float(v) for v in origin),
                         sitk_direction=tuple(float(v) for v in np.stack(columns, axis=1).ravel()),
                         file_dimension=geometry.file_dimension)
