"""Cascade inputs: a previous stage's segmentation put on the next stage's grid, as one-hot channels.

A cascade (``3d_cascade_fullres``) sees, besides the image, the segmentation of its
previous stage (``3d_lowres``) as one extra input channel per foreground class. In
training these are the previous stage's cross-validation predictions (each case
predicted while it was held out); at prediction time, the previous stage's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.io.images import read_label
from autoseg.io.orientation import Orientation, to_canonical
from autoseg.plans.schema import Plans
from autoseg.preprocessing.resample import resample_label
from autoseg.utils.crop import crop_to_box
from autoseg.utils.files import read_json, save_npy
from autoseg.workdir import NUM_FOLDS, WorkDir, cached_case_paths


def previous_stage_one_hot(segmentation: np.ndarray, foreground_labels: Sequence[int]) -> np.ndarray:
    """``(z, y, x)`` label map -> ``(len(foreground_labels), z, y, x)`` float32 one-hot channels."""
    return np.stack([(segmentation == label).astype(np.float32) for label in foreground_labels])


def previous_stage_to_grid(segmentation: np.ndarray, properties: dict, label_mode: str) -> np.ndarray:
    """A previous stage's segmentation in original geometry -> the preprocessed grid of ``properties``."""
    segmentation = to_canonical(segmentation, Orientation.from_dict(properties.get("orientation")))
    cropped = crop_to_box(segmentation, properties["bounding_box"])
    return resample_label(cropped, properties["shape_after_resampling"], properties["thick_axis"], label_mode)


def trained_previous_stage(plans: Plans, work: WorkDir, previous: str, split_mode: str = "random") -> str:
    """The configuration whose trained folds serve as ``previous``: itself, or the budget variant
    it was trained as (see :mod:`autoseg.planning.variants`)."""
    for name in [previous] + plans.variants_of(previous):
        if work.trained_folds(name, "final", split_mode):
            return name
    return previous


def prepare_previous_stage(work_dir: str | WorkDir, plans: Plans, configuration_name: str, case_ids: list[str],
                           split_mode: str = "random") -> Path:
    """Put the previous stage's cross-validation predictions on this configuration's grid.

    A cascade trains on the predictions its previous stage made for each case while
    that case was held out, so all of the previous stage's folds must be trained.
    Returns the folder of ``{case}.npy`` label maps (see ``WorkDir.previous_stage_folder``).
    """
    work = WorkDir.of(work_dir)
    configuration = plans.configuration(configuration_name)
    previous = trained_previous_stage(plans, work, configuration.previous_stage, split_mode)
    target = work.previous_stage_folder(configuration.data_identifier, configuration.previous_stage)
    target.mkdir(parents=True, exist_ok=True)
    cache = work.cache_folder(configuration.data_identifier)
    missing = []
    for case_id in case_ids:
        destination = target / f"{case_id}.npy"
        if destination.is_file():
            continue
        found = None
        for fold in range(NUM_FOLDS):
            candidate = work.validation_dir(previous, fold, split_mode) / f"{case_id}{plans.file_ending}"
            if candidate.is_file():
                found = candidate
                break
        if found is None:
            missing.append(case_id)
            continue
        segmentation, _ = read_label(found)
        properties = read_json(cached_case_paths(cache, case_id)[2])
        on_grid = previous_stage_to_grid(segmentation, properties, configuration.resampling.label_mode)
        save_npy(destination, on_grid.astype(np.int8))
    if missing:
        raise AutosegInputError(f"{configuration_name} needs the cross-validation predictions of {previous} "
                                f"for every case; missing {len(missing)} (e.g. {missing[0]}): train {previous} "
                                "with -f all first")
    return target
