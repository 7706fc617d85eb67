"""From network output back to the original image: undo resampling and cropping, write files.

``properties`` is the dictionary :func:`autoseg.preprocessing.preprocess.preprocess_case`
returns (geometry of the raw image, crop box, shapes, thick axis).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import write_segmentation
from autoseg.preprocessing.resample import resample_probabilities


def restore_original_shape(probabilities: torch.Tensor, properties: dict) -> torch.Tensor:
    """Class probabilities ``(K, z, y, x)`` at the target spacing -> ``(K, *original shape)``.

    Resampled (linearly; nearest along the thick axis) to the cropped shape, then
    placed into the full image; outside the crop box everything is background.
    """
    cropped_shape = properties["shape_after_crop"]
    resampled = resample_probabilities(probabilities, cropped_shape, properties.get("thick_axis"))
    full_shape = tuple(properties["geometry"]["shape"])
    box = properties["bounding_box"]
    if [list(b) for b in box] == [[0, s] for s in full_shape]:
        return resampled
    full = torch.zeros((resampled.shape[0],) + full_shape, dtype=resampled.dtype, device=resampled.device)
    full[0] = 1.0
    region = (slice(None),) + tuple(slice(start, stop) for start, stop in box)
    full[region] = resampled
    return full


def probabilities_to_segmentation(probabilities: torch.Tensor) -> np.ndarray:
    """Argmax over classes, as a uint8/uint16 ``(z, y, x)`` numpy array."""
    labels = torch.argmax(probabilities, dim=0)
    dtype = np.uint8 if probabilities.shape[0] <= 256 else np.uint16
    return labels.cpu().numpy().astype(dtype)


def export_segmentation(segmentation: np.ndarray, properties: dict, path: str | os.PathLike) -> None:
    """Write a ``(z, y, x)`` label map in the raw image's own geometry (atomic)."""
    write_segmentation(segmentation, ImageGeometry.from_dict(properties["geometry"]), path)
