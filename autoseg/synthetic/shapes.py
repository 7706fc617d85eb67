"""Shape helpers shared by the anatomies: coordinates, rotations, ellipsoids and index boxes.

Coordinates are voxel centres in mm relative to the volume centre, in array axis order
``(z, y, x)``; rotations are 3x3 matrices in the same order whose columns are the local axes.
The box helpers voxelize ellipsoids in float32 inside bounding boxes (the large anatomies).
"""

from __future__ import annotations

import numpy as np

from autoseg.synthetic.spec import SyntheticDatasetSpec


def _centered_coordinates(shape: tuple[int, int, int], spacing: tuple[float, float, float]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open grids of voxel-centre coordinates (mm) relative to the volume centre, ``(z, y, x)``."""
    grids = []
    for axis, (size, step) in enumerate(zip(shape, spacing, strict=True)):
        values = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * step
        view = [1, 1, 1]
        view[axis] = size
        grids.append(values.reshape(view))
    return grids[0], grids[1], grids[2]


def _rotation_about(axis: int, angle: float) -> np.ndarray:
    """Rotation matrix in ``(z, y, x)`` coordinates about one coordinate axis (radians)."""
    matrix = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    c, s = np.cos(angle), np.sin(angle)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def _random_orientation(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """Any rotation about z, then a tilt of the long (z) axis by up to ``max_tilt_deg``."""
    spin = _rotation_about(0, rng.uniform(0.0, np.pi))
    tilt_axis = 1 if rng.random() < 0.5 else 2
    tilt = _rotation_about(tilt_axis, np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg)))
    return spin @ tilt


def _ellipsoid_mask(grid: tuple[np.ndarray, ...], center: np.ndarray, rotation: np.ndarray,
                    semi_axes: np.ndarray) -> np.ndarray:
    """Voxels whose centre lies in an ellipsoid (mm; local axes are the columns of ``rotation``)."""
    offsets = [grid[axis] - center[axis] for axis in range(3)]
    total = 0.0
    for local in range(3):
        along = (rotation[0, local] * offsets[0] + rotation[1, local] * offsets[1]
                 + rotation[2, local] * offsets[2])
        total = total + (along / semi_axes[local]) ** 2
    return np.asarray(total <= 1.0)


def _half_extents(rotation: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """Half size (mm) of the axis-aligned bounding box of a rotated ellipsoid, ``(z, y, x)``."""
    return np.sqrt(((rotation * semi_axes[None, :]) ** 2).sum(axis=1))


def _ellipse_2d(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


Box = tuple[slice, slice, slice]


def _axis_coordinates(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Voxel-centre coordinates (mm, float64, ascending) of each axis relative to the volume centre."""
    return [(np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * step
            for size, step in zip(shape, spacing, strict=True)]


def _anatomy_scale(spec: SyntheticDatasetSpec, reference_half_fov_mm: float) -> float:
    """1 when the smallest in-plane half field of view holds the anatomy, else the factor that shrinks it."""
    half_fov = min(spec.in_plane_shape) * spec.in_plane_spacing_mm[0] / 2.0
    return min(1.0, half_fov / reference_half_fov_mm)


def _small_rotation(rng: np.random.Generator, max_spin_deg: float, max_tilt_deg: float) -> np.ndarray:
    """Rotation about z by up to ``max_spin_deg``, then a tilt of z by up to ``max_tilt_deg`` (degrees)."""
    spin = _rotation_about(0, np.deg2rad(rng.uniform(-max_spin_deg, max_spin_deg)))
    tilt_axis = 1 if rng.random() < 0.5 else 2
    return spin @ _rotation_about(tilt_axis, np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg)))


def _box(coords: list[np.ndarray], low_mm: np.ndarray, high_mm: np.ndarray) -> Box | None:
    """Index box of the voxels whose centres lie in ``[low_mm, high_mm]`` per axis; None if empty."""
    slices = []
    for axis in range(3):
        start = int(np.searchsorted(coords[axis], low_mm[axis], side="left"))
        stop = int(np.searchsorted(coords[axis], high_mm[axis], side="right"))
        if stop <= start:
            return None
        slices.append(slice(start, stop))
    return slices[0], slices[1], slices[2]


def _ellipsoid_box(coords: list[np.ndarray], center: np.ndarray, rotation: np.ndarray, semi_axes: np.ndarray,
                   pad_mm: float = 0.0) -> Box | None:
    """Index box of an ellipsoid (mm), grown by ``pad_mm`` on every side."""
    half = _half_extents(rotation, semi_axes) + pad_mm
    return _box(coords, center - half, center + half)


def _union_box(boxes: list[Box | None]) -> Box | None:
    """Smallest box holding every given box (None entries are ignored)."""
    boxes = [box for box in boxes if box is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _box_shape(box: Box) -> tuple[int, int, int]:
    return box[0].stop - box[0].start, box[1].stop - box[1].start, box[2].stop - box[2].start


def _quadratic_form(coords: list[np.ndarray], box: Box, center: np.ndarray, rotation: np.ndarray,
                    semi_axes: np.ndarray) -> np.ndarray:
    """float32 ``sum_k (local_k / semi_axis_k)^2`` at the voxel centres of ``box`` (<= 1 inside)."""
    matrix = rotation @ np.diag(1.0 / np.asarray(semi_axes, dtype=np.float64) ** 2) @ rotation.T
    a = [[float(v) for v in row] for row in matrix]  # Python floats keep the float32 arithmetic
    dz, dy, dx = ((coords[axis][box[axis]] - center[axis]).astype(np.float32) for axis in range(3))
    dy, dx = dy[:, None], dx[None, :]
    plane = a[1][1] * dy * dy + a[2][2] * dx * dx + (2.0 * a[1][2]) * (dy * dx)
    slope = (2.0 * a[0][1]) * dy + (2.0 * a[0][2]) * dx
    form = dz[:, None, None] * slope[None]
    form += plane[None]
    form += (a[0][0] * dz * dz)[:, None, None]
    return form


def _or_ellipsoid(mask: np.ndarray, box: Box, coords: list[np.ndarray], center: np.ndarray,
                  rotation: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """OR an ellipsoid (mm) into ``mask``, a bool array covering ``box``; only its own box is evaluated."""
    own = _ellipsoid_box(coords, center, rotation, semi_axes)
    if own is None:
        return mask
    inter = tuple(slice(max(o.start, b.start), min(o.stop, b.stop)) for o, b in zip(own, box, strict=True))
    if any(s.stop <= s.start for s in inter):
        return mask
    local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(inter, box, strict=True))
    mask[local] |= _quadratic_form(coords, inter, center, rotation, semi_axes) <= 1.0
    return mask


def _ellipsoids_in(box: Box, coords: list[np.ndarray],
                   ellipsoids: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Union of ``(center, rotation, semi_axes)`` ellipsoids as a bool array covering ``box``."""
    mask = np.zeros(_box_shape(box), dtype=bool)
    for center, rotation, semi_axes in ellipsoids:
        _or_ellipsoid(mask, box, coords, center, rotation, semi_axes)
    return mask
