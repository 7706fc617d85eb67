"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files are matched by case id (the file name without ``file_ending``); every
prediction needs a reference and every reference a prediction. Metrics follow
:mod:`autoseg.evaluation.metrics` (arrays in ``(z, y, x)`` order, spacing in mm from
the reference file header); summaries follow :mod:`autoseg.evaluation.summary`.

2D files are read as ``(1, y, x)`` arrays with the fake 999 mm slice spacing of
:mod:`autoseg.io.images`: surface distances are in-plane contour distances, but the
volume fields then hold ``pixel count x pixel area x 999 mm / 1000`` and are not
physical volumes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.evaluation.metrics import compute_case_metrics, dice_score, without_ignored
from autoseg.evaluation.summary import summarize, write_results
from autoseg.io.geometry import geometry_mismatch
from autoseg.io.images import read_label
from autoseg.io.labels import class_mask, class_names, evaluated_classes, ignore_value, map_values
from autoseg.utils.progress_bars import progress_bar

#: How many missing file names an error message lists before "and N more".
MAX_LISTED_FILES = 5

SUMMARY_FILE = "summary.json"
PER_CASE_FILE = "per_case.csv"


def _list_cases(folder: Path, file_ending: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise AutosegInputError(f"{folder}: folder not found")
    return {path.name[: -len(file_ending)]: path for path in sorted(folder.iterdir())
            if path.is_file() and path.name.endswith(file_ending) and not path.name.startswith(".")
            and len(path.name) > len(file_ending)}


def _name_list(names: Sequence[str]) -> str:
    listed = ", ".join(names[:MAX_LISTED_FILES])
    extra = len(names) - MAX_LISTED_FILES
    return listed + (f" and {extra} more" if extra > 0 else "")


def _foreground(labels: Mapping[str, Any] | Sequence[int], regions_class_order: Sequence[int] | None = None
                ) -> tuple[dict[int, tuple[int, ...]], dict[int, str], int]:
    """Classes to evaluate (key -> label values: foreground labels, or regions under their
    ``regions_class_order`` value), their names, and the highest value a reference may hold."""
    if isinstance(labels, Mapping):
        try:
            classes = evaluated_classes(labels, regions_class_order)
        except ValueError as error:
            raise AutosegInputError(f"labels {dict(labels)}: {error}") from None
        names = class_names(labels, regions_class_order)
        highest = max(map_values(labels))
    else:
        classes = {int(value): (int(value),) for value in labels if int(value) != 0}
        names = {key: str(key) for key in classes}
        highest = max([0, *classes])
    if not classes:
        raise AutosegInputError(f"labels {dict(labels) if isinstance(labels, Mapping) else list(labels)}: "
                                "no foreground label to evaluate")
    return dict(sorted(classes.items())), names, highest


def undeclared_values(label_map: np.ndarray, highest: int) -> list[int]:
    """Values of an integer label map outside the declared ``0..highest`` (dataset.json's labels are
    consecutive), sorted; found from the out-of-range voxels only, so a valid map costs a min and a max."""
    if label_map.size == 0 or (label_map.min() >= 0 and label_map.max() <= highest):
        return []
    return np.unique(label_map[(label_map < 0) | (label_map > highest)]).tolist()


def _evaluate_case(task: tuple[str, Path, Path, dict[int, tuple[int, ...]], int, float, int | None]
                   ) -> tuple[str, dict[int, dict]]:
    case_id, reference_path, prediction_path, classes, highest_value, tolerance, ignore = task
    reference, reference_geometry = read_label(reference_path)
    prediction, prediction_geometry = read_label(prediction_path)
    highest_predicted = highest_value if ignore is None else highest_value - 1
    for path, label_map, highest in ((reference_path, reference, highest_value),
                                     (prediction_path, prediction, highest_predicted)):
        undeclared = undeclared_values(label_map, highest)
        if undeclared:
            what = ("the ignore label value, which no prediction may hold" if undeclared == [ignore]
                    else "not declared in dataset.json")
            raise AutosegInputError(f"{path}: label values {undeclared} are {what} (declared: 0..{highest})")
    mismatch = geometry_mismatch(reference_geometry, prediction_geometry)
    if mismatch is not None:
        raise AutosegInputError(f"{prediction_path}: {mismatch} (reference {reference_path})")
    metrics = compute_case_metrics(reference, prediction, reference_geometry.spacing, classes, tolerance,
                                   ignore_label=ignore)
    return case_id, metrics


def evaluate_folders(reference_dir: str | os.PathLike, prediction_dir: str | os.PathLike,
                     labels: Mapping[str, Any], file_ending: str = ".nii.gz",
                     surface_tolerance_mm: float = 1.0, num_workers: int = 1,
                     output_dir: str | os.PathLike | None = None,
                     regions_class_order: Sequence[int] | None = None) -> dict[str, Any]:
    """Evaluate every ``{case}{file_ending}`` of ``prediction_dir`` against ``reference_dir``.

    Args:
        reference_dir, prediction_dir: folders of integer label maps.
        labels: label name -> value (or list of values, a region) as in dataset.json; background (0)
            is skipped, and reference voxels of the ``ignore`` label (sparse annotations) count in no
            metric. Regions are scored each as the union of its values, keyed by their
            ``regions_class_order`` value (:mod:`autoseg.io.labels`).
        file_ending: e.g. ``".nii.gz"``.
        surface_tolerance_mm: NSD tolerance in mm.
        num_workers: worker processes (1 = evaluate in this process).
        output_dir: if given, ``summary.json`` and ``per_case.csv`` are written there.

    Returns:
        ``{"per_case": {case: {label: metrics}}, "summary": summarize(...)}``; the summary
        also carries ``label_names`` (value or region key -> name).

    Raises:
        AutosegInputError: a folder is missing or empty, a prediction or reference has
            no counterpart, or a prediction's geometry differs from its reference.
    """
    reference_dir, prediction_dir = Path(reference_dir), Path(prediction_dir)
    classes, names, highest = _foreground(labels, regions_class_order)
    references = _list_cases(reference_dir, file_ending)
    predictions = _list_cases(prediction_dir, file_ending)
    problems = []
    missing_predictions = sorted(set(references) - set(predictions))
    if missing_predictions:
        problems.append(f"{prediction_dir}: no prediction for {len(missing_predictions)} reference case(s): "
                        + _name_list([c + file_ending for c in missing_predictions]))
    missing_references = sorted(set(predictions) - set(references))
    if missing_references:
        problems.append(f"{reference_dir}: no reference for {len(missing_references)} prediction(s): "
                        + _name_list([c + file_ending for c in missing_references]))
    if problems:
        raise AutosegInputError("; ".join(problems))
    if not references:
        raise AutosegInputError(f"{reference_dir}: no *{file_ending} files to evaluate")

    ignore = ignore_value(labels)
    tasks = [(case_id, references[case_id], predictions[case_id], classes, highest, surface_tolerance_mm, ignore)
             for case_id in sorted(references)]
    per_case: dict[str, dict[int, dict]] = {}
    progress = {"total": len(tasks), "desc": "evaluating", "unit": "case"}
    if num_workers > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(num_workers, len(tasks)), mp_context=context)
        try:
            for case_id, metrics in progress_bar(pool.map(_evaluate_case, tasks), **progress):
                per_case[case_id] = metrics
        finally:
            # On an error, do not wait for the remaining cases.
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        for task in progress_bar(tasks, **progress):
            case_id, metrics = _evaluate_case(task)
            per_case[case_id] = metrics

    summary = summarize(per_case, list(classes))
    summary["label_names"] = names
    if output_dir is not None:
        output_dir = Path(output_dir)
        write_results(per_case, summary, output_dir / SUMMARY_FILE, output_dir / PER_CASE_FILE)
    return {"per_case": per_case, "summary": summary}


def foreground_mean_dice(pairs: Iterable[tuple[np.ndarray, np.ndarray]], labels: Mapping[str, Any] | Sequence[int],
                         regions_class_order: Sequence[int] | None = None) -> float:
    """Mean foreground Dice of ``(reference, prediction)`` label maps, Dice only: per class the mean over
    cases (1.0 where both are empty), then the mean over classes, ignore-label voxels left out: the
    ``foreground_mean`` Dice of :func:`evaluate_arrays` without its distance and surface metrics."""
    classes, _, _ = _foreground(labels, regions_class_order)
    ignore = ignore_value(labels) if isinstance(labels, Mapping) else None
    per_class: dict[int, list[float]] = {key: [] for key in classes}
    for reference, prediction in pairs:
        reference, prediction = without_ignored(reference, prediction, ignore)
        for key, values in classes.items():
            per_class[key].append(dice_score(class_mask(reference, values), class_mask(prediction, values)))
    return float(np.mean([np.mean(scores) for scores in per_class.values() if scores]))


def evaluate_arrays(pairs: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
                    labels: Mapping[str, Any] | Sequence[int],
                    surface_tolerance_mm: float = 1.0,
                    regions_class_order: Sequence[int] | None = None) -> dict[str, Any]:
    """Evaluate in-memory ``(case_id, reference, prediction, spacing)`` tuples.

    Arrays are integer label maps in ``(z, y, x)`` order, spacing in mm in the same
    order. ``labels`` is a name -> value mapping or a list of values; 0 is skipped (and, in
    a mapping, the ignore label: reference voxels of its value are left out of every metric;
    regions as in :func:`evaluate_folders`). Returns ``{"per_case", "summary"}`` like :func:`evaluate_folders`.
    """
    classes, names, _ = _foreground(labels, regions_class_order)
    ignore = ignore_value(labels) if isinstance(labels, Mapping) else None
    per_case: dict[str, dict[int, dict]] = {}
    for case_id, reference, prediction, spacing in pairs:
        if case_id in per_case:
            raise ValueError(f"case id {case_id!r} appears twice")
        per_case[case_id] = compute_case_metrics(reference, prediction, spacing, classes,
                                                 surface_tolerance_mm, ignore_label=ignore)
    summary = summarize(per_case, list(classes))
    summary["label_names"] = names
    return {"per_case": per_case, "summary": summary}
