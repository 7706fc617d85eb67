"""Preprocessing of one case: canonical orientation, crop to the body, normalize, resample to the target spacing.

:func:`preprocess_case` is the one function both the training cache and the
predictor use, so a new scan is prepared exactly like the training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autoseg.io.geometry import ImageGeometry
from autoseg.io.labels import class_values, map_values
from autoseg.io.orientation import canonical_geometry, canonical_orientation, to_canonical
from autoseg.planning.spacing import shape_after_resampling
from autoseg.plans.normalization import normalize_image
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.preprocessing.resample import resample_image, resample_label, thick_axis_for_resampling
from autoseg.utils.crop import BoundingBox, bounding_box, crop_to_box, nonzero_mask

#: Foreground voxel locations stored per class for foreground oversampling.
CLASS_LOCATIONS_PER_CLASS = 1000


@dataclass
class PreprocessedCase:
    """A case ready for the network.

    Attributes:
        image: ``(C, z, y, x)`` float32, normalized, at the target spacing.
        label: ``(z, y, x)`` int8/int16 at the target spacing, or None (prediction).
        properties: what is needed to map results back (see :func:`preprocess_case`).
    """

    image: np.ndarray
    label: np.ndarray | None
    properties: dict = field(default_factory=dict)


def target_spacing_for_case(configuration: ConfigurationPlan, case_spacing) -> list[float]:
    """3D target spacing of a case: the plan's, or for 2D the plan's in-plane one with the case's own slices."""
    if configuration.dimension == 2:
        return [float(case_spacing[0])] + [float(v) for v in configuration.target_spacing]
    return [float(v) for v in configuration.target_spacing]


def sample_class_locations(label: np.ndarray, classes, rng: np.random.Generator,
                           per_class: int = CLASS_LOCATIONS_PER_CLASS) -> dict[str, list[list[int]]]:
    """Up to ``per_class`` random voxel indices ``(z, y, x)`` of each of ``classes`` present."""
    locations = {}
    flat = label.ravel()
    for value in classes:
        indices = np.flatnonzero(flat == value)
        if indices.size == 0:
            continue
        if indices.size > per_class:
            indices = np.sort(rng.choice(indices, per_class, replace=False))
        locations[str(value)] = np.stack(np.unravel_index(indices, label.shape), axis=1).tolist()
    return locations


def label_dtype(num_classes: int) -> type:
    return np.int8 if num_classes <= 127 else np.int16


def preprocess_case(image: np.ndarray, geometry: ImageGeometry, plans: Plans, configuration: ConfigurationPlan,
                    label: np.ndarray | None = None, seed: int = 0) -> PreprocessedCase:
    """Crop, normalize and resample one case.

    Args:
        image: ``(C, z, y, x)`` raw intensities (HU for CT).
        geometry: the geometry of the raw image (see ``autoseg.io.images``).
        label: ``(z, y, x)`` integer label map of the raw image, for training.

    Returns the preprocessed case; ``properties`` holds the raw geometry, the
    orientation that brought the arrays to the canonical axis order
    (:mod:`autoseg.io.orientation`) and the canonical shape, the crop box, shapes and
    spacings before and after resampling (canonical order), the thick axis used and,
    with a label, sampled foreground locations per class (with an ignore label, of
    background too: the annotated voxels).
    """
    raw_geometry = geometry
    orientation = canonical_orientation(geometry)
    image = to_canonical(image, orientation)
    geometry = canonical_geometry(geometry, orientation)
    if label is not None:
        label = to_canonical(label, orientation)
    box: BoundingBox = bounding_box(nonzero_mask(image))
    cropped = crop_to_box(image, box)
    nonzero = nonzero_mask(cropped)
    normalized = normalize_image(cropped, plans.normalization, nonzero)
    spacing = list(geometry.spacing)
    target_spacing = target_spacing_for_case(configuration, spacing)
    new_shape = shape_after_resampling(cropped.shape[1:], spacing, target_spacing).tolist()
    thick_axis = thick_axis_for_resampling(spacing, target_spacing,
                                           configuration.resampling.anisotropy_threshold)
    resampled = resample_image(normalized, new_shape, thick_axis, configuration.resampling.image_order,
                               configuration.resampling.thick_axis_order)
    properties = {
        "geometry": raw_geometry.to_dict(),
        "orientation": orientation.to_dict(),
        "canonical_shape": list(geometry.shape),
        "bounding_box": box,
        "shape_after_crop": list(cropped.shape[1:]),
        "spacing": spacing,
        "target_spacing": target_spacing,
        "shape_after_resampling": [int(v) for v in new_shape],
        "thick_axis": thick_axis,
    }
    resampled_label = None
    if label is not None:
        cropped_label = crop_to_box(label, box)
        resampled_label = resample_label(cropped_label, new_shape, thick_axis,
                                         configuration.resampling.label_mode)
        resampled_label = resampled_label.astype(label_dtype(max(map_values(plans.labels)) + 1))
        # With sparse annotations, annotated background too: the sampler centres patches on annotated voxels.
        classes = plans.foreground_labels if plans.ignore_label is None else class_values(plans.labels)
        properties["class_locations"] = sample_class_locations(resampled_label, classes, np.random.default_rng(seed))
    return PreprocessedCase(np.ascontiguousarray(resampled, dtype=np.float32), resampled_label, properties)
