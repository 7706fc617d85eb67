"""Ensembling saved class probabilities: average, argmax, postprocess, write.

A probability file pair ``{case}.npz`` + ``{case}.json`` is what ``autoseg train``
(validation cases) and ``autoseg predict --save-probabilities`` write through
:mod:`autoseg.io.probabilities`: the npz holds ``"probabilities"``, float16
``(K, z, y, x)`` in the original image grid (K classes including background), and the
JSON ``{"geometry": ImageGeometry.to_dict(), "num_classes": K}``.

Memory: one case at a time per worker, ``2 x K x voxels x 4`` bytes (the float32 sum
and the file being added), e.g. 0.6 GB for 3 classes on a 512x512x100 CT.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from autoseg.errors import AutosegInputError
from autoseg.inference.export import probabilities_to_segmentation
from autoseg.io.formats import known_file_endings
from autoseg.io.geometry import ImageGeometry, geometry_mismatch
from autoseg.io.images import write_segmentation
from autoseg.io.probabilities import (
    list_probability_cases,
    load_probabilities,
    probability_paths,
    probability_regions,
    save_probabilities,
)
from autoseg.postprocessing.components import apply_postprocessing, check_postprocessing_steps
from autoseg.utils.progress_bars import progress_bar

#: How many missing cases an error message lists.
MAX_LISTED_CASES = 5


def argmax_segmentation(probabilities: np.ndarray, regions_class_order: Sequence[int] | None = None) -> np.ndarray:
    """Argmax over the class axis of ``(K, z, y, x)`` -> uint8 (uint16 for > 256 classes) ``(z, y, x)``;
    for region probabilities (``regions_class_order`` given) the thresholded regions written in that order.

    Ties go to the lower class index (:func:`autoseg.inference.export.probabilities_to_segmentation`).
    """
    return probabilities_to_segmentation(torch.from_numpy(np.ascontiguousarray(probabilities)), regions_class_order)


def average_probabilities(bases: Sequence[Path]) -> tuple[np.ndarray, ImageGeometry]:
    """Mean of the probabilities of several files of one case, float32 ``(K, z, y, x)``.

    Every file must have the first one's geometry and number of classes. Only the
    running sum and the file being added are in memory.
    """
    total, geometry = load_probabilities(bases[0])
    first_npz = probability_paths(bases[0])[0]
    for base in bases[1:]:
        probabilities, other = load_probabilities(base)
        npz_path = probability_paths(base)[0]
        mismatch = geometry_mismatch(geometry, other)
        if mismatch is not None:
            raise AutosegInputError(f"{npz_path}: {mismatch} (compared with {first_npz})")
        if probabilities.shape[0] != total.shape[0]:
            raise AutosegInputError(f"{npz_path}: {probabilities.shape[0]} classes, {first_npz} has "
                                    f"{total.shape[0]}")
        total += probabilities
        del probabilities
    if len(bases) > 1:
        total /= np.float32(len(bases))
    return total, geometry


def _ensemble_case(task: tuple[str, list[Path], Path, bool, list[dict], str]) -> str:
    case, bases, output_dir, keep_probabilities, postprocessing, file_ending = task
    probabilities, geometry = average_probabilities(bases)
    orders = [probability_regions(base) for base in bases]
    for base, order in zip(bases, orders):
        if order != orders[0]:
            raise AutosegInputError(f"{probability_paths(base)[1]}: regions_class_order {order} differs from "
                                    f"{orders[0]} of {probability_paths(bases[0])[1]}")
    segmentation = argmax_segmentation(probabilities, orders[0])
    if postprocessing:
        segmentation = apply_postprocessing(segmentation, postprocessing)
    write_segmentation(segmentation, geometry, output_dir / f"{case}{file_ending}")
    if keep_probabilities:
        save_probabilities(probabilities, geometry, output_dir / case, orders[0])
    return case


def _check_same_cases(input_dirs: Sequence[Path]) -> list[str]:
    listed = {folder: set(list_probability_cases(folder)) for folder in input_dirs}
    every = set().union(*listed.values())
    if not every:
        raise AutosegInputError(f"{', '.join(str(f) for f in input_dirs)}: no *.npz probability files "
                                "(write them with --save-probabilities)")
    problems = []
    for folder, cases in listed.items():
        missing = sorted(every - cases)
        if missing:
            shown = ", ".join(missing[:MAX_LISTED_CASES])
            more = len(missing) - MAX_LISTED_CASES
            problems.append(f"{folder}: no probabilities for {len(missing)} case(s) present in other folders: "
                            f"{shown}" + (f" and {more} more" if more > 0 else ""))
    if problems:
        raise AutosegInputError("; ".join(problems))
    return sorted(every)


def ensemble_folders(input_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                     save_probabilities: bool = False, postprocessing: list[dict] | None = None,
                     file_ending: str = ".nii.gz", num_workers: int = 1) -> list[str]:
    """Average the saved probabilities of the same cases in several folders and write segmentations.

    Per case ``{case}.npz``/``.json`` of every folder: probabilities averaged (float32),
    argmax, ``postprocessing`` steps applied (see
    :mod:`autoseg.evaluation.postprocessing`), ``{case}{file_ending}`` written in the
    case's geometry; with ``save_probabilities`` also the averaged ``{case}.npz``/``.json``.
    A single folder is allowed (argmax + postprocessing of its probabilities).

    Args:
        input_dirs: folders with ``*.npz`` + ``*.json`` probability files.
        output_dir: folder for the results (created; must not be an input folder).
        save_probabilities: also write the averaged probabilities (float16 npz).
        postprocessing: steps to apply to each segmentation (None = none).
        file_ending: format of the written segmentations, e.g. ``".nii.gz"``.
        num_workers: worker processes (1 = this process).

    Returns:
        The ensembled case names, sorted.

    Raises:
        AutosegInputError: no folder given, folders hold different cases, or a case's
            files differ in geometry or number of classes (the message names both files).
    """
    input_dirs = [Path(folder) for folder in input_dirs]
    output_dir = Path(output_dir)
    if not input_dirs:
        raise AutosegInputError("ensemble: no input folders given")
    if len({folder.resolve() for folder in input_dirs}) != len(input_dirs):
        raise AutosegInputError(f"ensemble: an input folder is given twice ({', '.join(map(str, input_dirs))})")
    if any(output_dir.resolve() == folder.resolve() for folder in input_dirs):
        raise AutosegInputError(f"{output_dir}: the output folder must not be one of the input folders")
    if file_ending.lower() not in known_file_endings():
        raise AutosegInputError(f"--file-ending {file_ending!r} is not supported "
                                f"(one of {', '.join(known_file_endings())})")
    steps = check_postprocessing_steps(postprocessing or [], "postprocessing")
    cases = _check_same_cases(input_dirs)
    output_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(case, [folder / case for folder in input_dirs], output_dir, save_probabilities, steps, file_ending)
             for case in cases]
    progress = {"total": len(tasks), "desc": "ensembling", "unit": "case"}
    if num_workers > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(num_workers, len(tasks)), mp_context=context)
        try:
            for _ in progress_bar(pool.map(_ensemble_case, tasks), **progress):
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for task in progress_bar(tasks, **progress):
            _ensemble_case(task)
    return cases
