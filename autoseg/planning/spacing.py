"""Target spacing rule: the median spacing, with special handling of thick slices.

All spacings are in mm and all shapes in voxels, in array axis order ``(z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: An axis is "thick" when its median spacing exceeds this many times the next-thickest axis ...
ANISOTROPY_SPACING_RATIO = 3.0
#: ... and its median voxel count times this factor is below the smallest other count.
ANISOTROPY_VOXEL_RATIO = 3.0
#: Percentile of the thick axis' spacings used on anisotropic data.
THICK_AXIS_PERCENTILE = 10.0


@dataclass(frozen=True)
class TargetSpacingDecision:
    """The chosen target spacing (mm, ``(z, y, x)``) and why.

    ``thick_axis`` is the index of the axis treated as anisotropic, or None.
    """

    target_spacing: tuple[float, ...]
    thick_axis: int | None
    reason: str


def choose_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> TargetSpacingDecision:
    """Choose the spacing all cases are resampled to for 3D configurations.

    Args:
        spacings: (num_cases, 3) voxel spacings in mm, ``(z, y, x)``.
        shapes: (num_cases, 3) shapes in voxels after cropping, ``(z, y, x)``.

    The rule (nnU-Net, Isensee et al. 2021): the per-axis median spacing. If the
    thickest axis' median spacing is more than 3x the next-thickest one, *and*
    that axis has few voxels (median count x 3 below the smallest other median
    count, both at the median spacing), the thick axis uses the 10th percentile of
    its spacings instead — finer slices keep more information when slices are thin
    in some cases — but never finer than the other axes.
    """
    spacings = np.asarray(spacings, dtype=np.float64)
    shapes = np.asarray(shapes, dtype=np.float64)
    median_spacing = np.median(spacings, axis=0)
    # Size of each case in voxels at the median spacing, then its median.
    median_shape = np.median(shapes * spacings / median_spacing, axis=0)
    thick_axis = int(np.argmax(median_spacing))
    other_axes = [axis for axis in range(len(median_spacing)) if axis != thick_axis]
    other_spacing = median_spacing[other_axes]
    spacing_ratio = median_spacing[thick_axis] / max(other_spacing.max(), 1e-8)
    thick_axis_voxels = median_shape[thick_axis]
    fewest_other_voxels = median_shape[other_axes].min()
    median_text = _format(median_spacing)
    if spacing_ratio > ANISOTROPY_SPACING_RATIO and thick_axis_voxels * ANISOTROPY_VOXEL_RATIO < fewest_other_voxels:
        percentile = float(np.percentile(spacings[:, thick_axis], THICK_AXIS_PERCENTILE))
        chosen = max(percentile, float(other_spacing.max()))
        target = median_spacing.copy()
        target[thick_axis] = chosen
        reason = (
            f"median spacing {median_text} mm; axis {thick_axis} is anisotropic (median spacing "
            f"{spacing_ratio:.1f}x the next axis > {ANISOTROPY_SPACING_RATIO:g}, and {thick_axis_voxels:.0f} "
            f"voxels x {ANISOTROPY_VOXEL_RATIO:g} < {fewest_other_voxels:.0f}), so it uses the "
            f"{THICK_AXIS_PERCENTILE:g}th percentile of its spacings ({percentile:.3g} mm)"
            + (f", raised to {chosen:.3g} mm so it is not finer than the other axes" if chosen > percentile else "")
        )
        return TargetSpacingDecision(tuple(float(v) for v in target), thick_axis, reason)
    reason = (f"per-axis median spacing {median_text} mm (largest/next spacing ratio {spacing_ratio:.1f}, "
              f"not anisotropic by the 3x spacing and 3x voxel-count rule)")
    return TargetSpacingDecision(tuple(float(v) for v in median_spacing), None, reason)


def _format(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def shape_after_resampling(shape, spacing, target_spacing) -> np.ndarray:
    """Voxel counts after resampling ``shape`` from ``spacing`` to ``target_spacing`` (rounded)."""
    shape = np.asarray(shape, dtype=np.float64)
    ratio = np.asarray(spacing, dtype=np.float64) / np.asarray(target_spacing, dtype=np.float64)
    return np.maximum(np.round(shape * ratio), 1).astype(int)
