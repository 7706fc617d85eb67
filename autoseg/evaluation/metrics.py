"""Per-case segmentation metrics (pure numpy/scipy, no I/O).

Arrays are integer label maps in array axis order ``(z, y, x)`` (2D ``(y, x)``
arrays work too); ``spacing`` is the voxel size in mm in the same axis order.
Each foreground label is evaluated on the binary masks ``reference == label``
and ``prediction == label``.

Definitions
    * Overlap: ``dice = 2 TP / (2 TP + FP + FN)``, ``iou = TP / (TP + FP + FN)``;
      TP, FP, FN are voxel counts.
    * Surface of a mask: the mask minus its binary erosion with the face-connected
      (6-neighbourhood in 3D, 4 in 2D) structuring element; voxels on the array
      border count as surface. Axes of length 1 (for example the fake slice axis of
      a 2D image stored as ``(1, y, x)``) are dropped for surfaces and distances, so
      such images get in-plane contours rather than "every voxel is surface".
    * Surface distances: for every surface voxel of one mask, the Euclidean distance
      in mm (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``) to
      the nearest surface voxel of the other mask. This gives two directed sets.
    * ``hd95_mm``: the larger of the two directed 95th percentiles (numpy's default
      linear interpolation).
    * ``msd_mm``: mean symmetric surface distance, the mean over the union of both
      directed sets.
    * ``nsd``: normalized surface Dice at ``surface_tolerance_mm``: the number of
      surface voxels of both masks whose distance to the other surface is
      ``<= tolerance``, divided by the total number of surface voxels (surface voxels
      are counted, not weighted by surface area).
    * Volumes: voxel count x ``prod(spacing)`` mm^3 / 1000, in mL.
      ``volume_difference_ml = predicted - reference``;
      ``volume_difference_percent = 100 * difference / reference``.
    * Components: connected components of a mask under full connectivity by default
      (26-neighbourhood in 3D, 8 in 2D, ``generate_binary_structure(ndim, ndim)``);
      ``connectivity=r`` uses ``generate_binary_structure(ndim, r)`` instead
      (r = 1: face neighbours only). A predicted component is a false positive when it
      shares no voxel with the reference mask; a reference component is a false
      negative when it shares no voxel with the prediction.

Empty-mask conventions
    * Both masks empty (correct absence): dice 1, iou 1, nsd 1, hd95 0, msd 0.
    * Exactly one mask empty: dice 0, iou 0, nsd 0, hd95 None, msd None (distances
      are undefined; summaries count them as undefined instead of inventing a value).
    * ``volume_difference_percent`` is None whenever the reference is empty.

Sparse annotations: with an ``ignore_label``, voxels whose reference has that value are
left out of every metric: reference and prediction are both set to background there
(:func:`without_ignored`) before anything is computed.

Distance transforms are computed only on the bounding box of the union of both
masks, padded by one voxel (clipped at the array border). This gives exactly the
full-array result: both masks are empty outside the box (and the erosion treats the
outside as empty), and every surface voxel lies inside the box, so the nearest
surface voxel of each query voxel is found there with the same exact Euclidean
distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from autoseg.io.labels import class_mask
from autoseg.postprocessing.components import component_structure

#: Names of the per-label metrics, in the order they are reported.
METRIC_NAMES = (
    "dice", "iou", "tp", "fp", "fn", "hd95_mm", "msd_mm", "nsd",
    "reference_volume_ml", "predicted_volume_ml", "volume_difference_ml", "volume_difference_percent",
    "false_positive_components", "false_negative_components",
)

MetricValue = float | int | None


def dice_score(reference_mask: np.ndarray, prediction_mask: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (as in :func:`compute_case_metrics`)."""
    tp = int(np.count_nonzero(reference_mask & prediction_mask))
    total = int(np.count_nonzero(reference_mask)) + int(np.count_nonzero(prediction_mask))
    return 1.0 if total == 0 else 2.0 * tp / total


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding all True voxels, padded by ``margin`` voxels
    and clipped at the array border; None for an empty mask."""
    slices = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other_axes))
        if present.size == 0:
            return None
        start = max(int(present[0]) - margin, 0)
        stop = min(int(present[-1]) + 1 + margin, mask.shape[axis])
        slices.append(slice(start, stop))
    return tuple(slices)


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: the mask minus its erosion with face connectivity.

    Voxels on the array border count as surface (the outside is treated as empty).
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _drop_singleton_axes(reference: np.ndarray, prediction: np.ndarray,
                         spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    keep = [axis for axis, size in enumerate(reference.shape) if size > 1] or [reference.ndim - 1]
    if len(keep) == reference.ndim:
        return reference, prediction, tuple(spacing)
    shape = tuple(reference.shape[axis] for axis in keep)
    return reference.reshape(shape), prediction.reshape(shape), tuple(spacing[axis] for axis in keep)


def surface_distances(reference_mask: np.ndarray, prediction_mask: np.ndarray, spacing: Sequence[float],
                      crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty boolean masks.

    Returns ``(reference_to_prediction, prediction_to_reference)``: for each surface
    voxel of the first mask the distance to the nearest surface voxel of the second.
    With ``crop=True`` the work is done on the padded bounding box of the union; the
    result equals ``crop=False`` (whole array).
    """
    reference_mask, prediction_mask, spacing = _drop_singleton_axes(
        np.asarray(reference_mask, dtype=bool), np.asarray(prediction_mask, dtype=bool), spacing)
    if crop:
        box = bounding_box(reference_mask | prediction_mask, margin=1)
        if box is None:
            raise ValueError("surface distances need non-empty masks")
        reference_mask, prediction_mask = reference_mask[box], prediction_mask[box]
    reference_surface = surface_mask(reference_mask)
    prediction_surface = surface_mask(prediction_mask)
    if not reference_surface.any() or not prediction_surface.any():
        raise ValueError("surface distances need non-empty masks")
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=spacing)
    to_reference = ndimage.distance_transform_edt(~reference_surface, sampling=spacing)
    return to_prediction[reference_surface], to_reference[prediction_surface]


def _count_unmatched_components(mask: np.ndarray, other: np.ndarray, structure: np.ndarray) -> int:
    """Components of ``mask`` that share no voxel with ``other``."""
    components, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return 0
    matched = np.unique(components[other])
    return count - int(np.count_nonzero(matched))


def compute_label_metrics(reference_mask: np.ndarray, prediction_mask: np.ndarray, spacing: Sequence[float],
                          surface_tolerance_mm: float = 1.0,
                          connectivity: int | None = None) -> dict[str, MetricValue]:
    """All metrics of :data:`METRIC_NAMES` for one pair of boolean masks (see the module docstring)."""
    voxel_volume_ml = float(np.prod(spacing)) / 1000.0
    box = bounding_box(reference_mask | prediction_mask, margin=1)
    if box is not None:
        reference_mask, prediction_mask = reference_mask[box], prediction_mask[box]
    n_reference = int(np.count_nonzero(reference_mask))
    n_prediction = int(np.count_nonzero(prediction_mask))
    tp = int(np.count_nonzero(reference_mask & prediction_mask))
    fp, fn = n_prediction - tp, n_reference - tp

    if n_reference == 0 and n_prediction == 0:
        dice = iou = nsd = 1.0
        hd95: float | None = 0.0
        msd: float | None = 0.0
    elif n_reference == 0 or n_prediction == 0:
        dice = iou = nsd = 0.0
        hd95 = msd = None
    else:
        dice = 2.0 * tp / (n_reference + n_prediction)
        iou = tp / (tp + fp + fn)
        # The masks are already cropped with a one-voxel margin (or touch the array border).
        to_prediction, to_reference = surface_distances(reference_mask, prediction_mask, spacing, crop=False)
        hd95 = float(max(np.percentile(to_prediction, 95), np.percentile(to_reference, 95)))
        all_distances = np.concatenate([to_prediction, to_reference])
        msd = float(all_distances.mean())
        nsd = float(np.count_nonzero(all_distances <= surface_tolerance_mm)) / all_distances.size

    structure = component_structure(reference_mask.ndim, connectivity)
    reference_volume = n_reference * voxel_volume_ml
    predicted_volume = n_prediction * voxel_volume_ml
    difference = predicted_volume - reference_volume
    return {
        "dice": float(dice),
        "iou": float(iou),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "hd95_mm": hd95,
        "msd_mm": msd,
        "nsd": float(nsd),
        "reference_volume_ml": reference_volume,
        "predicted_volume_ml": predicted_volume,
        "volume_difference_ml": difference,
        "volume_difference_percent": None if n_reference == 0 else 100.0 * difference / reference_volume,
        "false_positive_components": _count_unmatched_components(prediction_mask, reference_mask, structure),
        "false_negative_components": _count_unmatched_components(reference_mask, prediction_mask, structure),
    }


def without_ignored(reference: np.ndarray, prediction: np.ndarray,
                    ignore_label: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``reference`` and ``prediction`` with background (0) wherever the reference is ``ignore_label``
    (unchanged without one): those voxels then count as neither hit nor miss of any class."""
    if ignore_label is None:
        return reference, prediction
    ignored = reference == ignore_label
    if not ignored.any():
        return reference, prediction
    return np.where(ignored, 0, reference), np.where(ignored, 0, prediction)


def compute_case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                         labels: Sequence[int] | Mapping[int, Sequence[int]], surface_tolerance_mm: float = 1.0,
                         connectivity: int | None = None,
                         ignore_label: int | None = None) -> dict[int, dict[str, MetricValue]]:
    """Metrics per foreground label for one case.

    Args:
        reference, prediction: integer label maps of equal shape, ``(z, y, x)`` or ``(y, x)``.
        spacing: voxel size in mm, same axis order and length as the arrays' dimensions.
        labels: foreground label values to evaluate, or key -> label values for regions (a region's
            mask is the union of its values, :func:`autoseg.io.labels.class_mask`; results are keyed by key).
        surface_tolerance_mm: tolerance of the normalized surface Dice, in mm.
        connectivity: neighbourhood rank for component counts (None = full connectivity).
        ignore_label: reference value of unannotated voxels, left out (:func:`without_ignored`).

    Returns:
        ``{label: {metric: value}}`` with the metrics of :data:`METRIC_NAMES`; distances
        in mm, volumes in mL, undefined values as None (see the module docstring).
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from "
                         f"prediction shape {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {reference.ndim}D array")
    if any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {tuple(spacing)}")
    if surface_tolerance_mm < 0:
        raise ValueError(f"surface_tolerance_mm must be >= 0, got {surface_tolerance_mm}")
    component_structure(reference.ndim, connectivity)  # validate early
    spacing = tuple(float(s) for s in spacing)
    reference, prediction = without_ignored(reference, prediction, ignore_label)
    classes = labels if isinstance(labels, Mapping) else {label: (label,) for label in labels}
    return {
        int(key): compute_label_metrics(class_mask(reference, values), class_mask(prediction, values), spacing,
                                        surface_tolerance_mm, connectivity)
        for key, values in classes.items()
    }
