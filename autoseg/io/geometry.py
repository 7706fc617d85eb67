"""Where an image lies in physical space, in array axis order and as the file header says.

Arrays are in array axis order ``(z, y, x)`` (see CONTRIBUTING.md). The header needed
to write a result back exactly (SimpleITK spacing, origin and direction in its own
``(x, y, z)`` order) is kept alongside. A 2D file becomes an array of shape
``(1, y, x)`` with a fake slice spacing of :data:`FAKE_SLICE_SPACING_2D` mm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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
