"""From network output back to the original image: undo resampling and cropping, write files.

``properties`` is the dictionary :func:`autoseg.preprocessing.preprocess.preprocess_case`
returns (geometry of the raw image, crop box, shapes, thick axis). Probabilities are softmax
class probabilities, or, when ``regions_class_order`` is given, one sigmoid probability per
region (:mod:`autoseg.io.labels`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import write_segmentation
from autoseg.io.labels import REGION_THRESHOLD, region_masks_to_label_map
from autoseg.io.orientation import Orientation, from_canonical
from autoseg.preprocessing.resample import resample_probabilities, resample_probability_rows

#: Restoring a segmentation to the original grid works on slabs of about this many voxels
#: (per class, float32): 2 M voxels = 8 MB per class, 8 slices of a 512x512 CT.
RESTORE_SLAB_VOXELS = 2**21


def class_argmax(probabilities: torch.Tensor) -> np.ndarray:
    """Argmax over the class axis of ``(K, *spatial)`` -> uint8 (uint16 for > 256 classes) ``(*spatial)``;
    ties go to the lower class index.

    A running maximum over the classes, one contiguous class plane at a time: on a CPU,
    ``torch.argmax(dim=0)`` takes 12.7 s for 5 classes of 223x512x512 voxels, this 0.65 s.
    """
    dtype = torch.uint8 if probabilities.shape[0] <= 256 else torch.int32
    best = probabilities[0].clone()
    labels = torch.zeros(probabilities.shape[1:], dtype=dtype, device=probabilities.device)
    for index in range(1, probabilities.shape[0]):
        plane = probabilities[index]
        labels[plane > best] = index
        torch.maximum(best, plane, out=best)
    result = labels.cpu().numpy()
    return result if dtype == torch.uint8 else result.astype(np.uint16)


def region_label_map(probabilities: torch.Tensor, regions_class_order: Sequence[int]) -> np.ndarray:
    """Region probabilities ``(R, *spatial)`` -> uint8/uint16 label map: ``regions_class_order[i]`` where
    region ``i``'s probability exceeds :data:`REGION_THRESHOLD`, later regions overwriting earlier ones."""
    dtype = torch.uint8 if max(regions_class_order) < 256 else torch.int32
    labels = torch.zeros(probabilities.shape[1:], dtype=dtype, device=probabilities.device)
    region_masks_to_label_map(probabilities > REGION_THRESHOLD, regions_class_order, labels)
    result = labels.cpu().numpy()
    return result if dtype == torch.uint8 else result.astype(np.uint16)


def restore_original_shape(probabilities: torch.Tensor, properties: dict, regions: bool = False) -> torch.Tensor:
    """Probabilities ``(K, z, y, x)`` at the target spacing -> ``(K, *original shape)``.

    Resampled (linearly; nearest along the thick axis) to the cropped shape, then
    placed into the full image; outside the crop box everything is background (class 0's
    probability 1, or with ``regions`` every region's probability 0); last, the axes go back
    to the file's own order (:func:`autoseg.io.orientation.from_canonical`).
    """
    cropped_shape = properties["shape_after_crop"]
    resampled = resample_probabilities(probabilities, cropped_shape, properties.get("thick_axis"))
    full_shape = tuple(_canonical_shape(properties))
    orientation = Orientation.from_dict(properties.get("orientation"))
    box = properties["bounding_box"]
    if [list(b) for b in box] == [[0, s] for s in full_shape]:
        return from_canonical(resampled, orientation).contiguous()
    full = torch.zeros((resampled.shape[0],) + full_shape, dtype=resampled.dtype, device=resampled.device)
    if not regions:
        full[0] = 1.0
    region = (slice(None),) + tuple(slice(start, stop) for start, stop in box)
    full[region] = resampled
    return from_canonical(full, orientation).contiguous()


def _canonical_shape(properties: dict) -> list[int]:
    """The full image's shape in the canonical axis order (older caches: the file's, unreoriented)."""
    return properties.get("canonical_shape", properties["geometry"]["shape"])


def restore_segmentation(predictions: Sequence[tuple[torch.Tensor, dict]],
                         slab_voxels: int = RESTORE_SLAB_VOXELS,
                         regions_class_order: Sequence[int] | None = None) -> np.ndarray:
    """The label map in the original image grid from network-grid probabilities, slab by slab.

    ``predictions`` holds ``(probabilities (K, z, y, x) on a configuration's grid, its
    properties)`` for each configuration of an ensemble (one for a single model); they
    belong to the same image, so they share the crop box. The result is the argmax of
    their average (for region probabilities, ``regions_class_order`` given, the
    :func:`region_label_map` of their average), resampled as :func:`restore_original_shape` does, but never holding
    more than one slab of about ``slab_voxels`` voxels per class at full resolution: the
    full-size probabilities (``K x voxels x 4`` bytes, 0.9 GB for 3 classes on a
    512x512x300 CT) are never made. Outside the crop box everything is background (0).
    Every output slice is computed alike whatever the slab size, so the result does not
    depend on it.
    """
    properties = predictions[0][1]
    box = properties["bounding_box"]
    cropped_shape = [int(v) for v in properties["shape_after_crop"]]
    num_classes = int(predictions[0][0].shape[0])
    highest = num_classes - 1 if regions_class_order is None else max(regions_class_order)
    dtype = np.uint8 if highest < 256 else np.uint16
    segmentation = np.zeros(tuple(_canonical_shape(properties)), dtype=dtype)
    rows_per_slab = max(1, int(slab_voxels) // max(1, cropped_shape[1] * cropped_shape[2]))
    (z0, _), (y0, y1), (x0, x1) = box
    for start in range(0, cropped_shape[0], rows_per_slab):
        stop = min(start + rows_per_slab, cropped_shape[0])
        total = None
        for probabilities, case_properties in predictions:
            rows = resample_probability_rows(probabilities, cropped_shape, case_properties.get("thick_axis"),
                                             start, stop)
            total = rows if total is None else total + rows  # rows may be a view: never modified
        if regions_class_order is not None and len(predictions) > 1:
            total = total / len(predictions)  # the threshold applies to the mean
        segmentation[z0 + start: z0 + stop, y0:y1, x0:x1] = probabilities_to_segmentation(total, regions_class_order)
    return np.ascontiguousarray(from_canonical(segmentation, Orientation.from_dict(properties.get("orientation"))))


def probabilities_to_segmentation(probabilities: torch.Tensor,
                                  regions_class_order: Sequence[int] | None = None) -> np.ndarray:
    """The uint8/uint16 label map of ``(K, *spatial)`` probabilities: their argmax (:func:`class_argmax`),
    or for region probabilities (``regions_class_order`` given) :func:`region_label_map`."""
    if regions_class_order is None:
        return class_argmax(probabilities)
    return region_label_map(probabilities, regions_class_order)


def export_segmentation(segmentation: np.ndarray, properties: dict, path: str | os.PathLike) -> None:
    """Write a ``(z, y, x)`` label map in the raw image's own geometry (atomic)."""
    write_segmentation(segmentation, ImageGeometry.from_dict(properties["geometry"]), path)
