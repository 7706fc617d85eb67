"""Connected-component postprocessing of predicted label maps and how to learn it.

Segmentations are integer label maps in ``(z, y, x)`` order (any dimension works).
Connected components use full connectivity by default (26-neighbourhood in 3D, 8 in
2D, ``scipy.ndimage.generate_binary_structure(ndim, ndim)``); ``connectivity=r``
uses rank ``r`` instead (1 = face neighbours only).

A postprocessing plan is a JSON-able list of steps applied in order, e.g.::

    [{"operation": "keep_largest_component", "labels": null},
     {"operation": "keep_largest_component", "labels": [2]}]

``labels: null`` treats the whole foreground (label > 0) as one mask. A step may
carry ``"connectivity": r``; without it full connectivity is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from autoseg.evaluation.metrics import component_structure, dice_score

KEEP_LARGEST_COMPONENT = "keep_largest_component"
OPERATIONS = (KEEP_LARGEST_COMPONENT,)


def _outside_largest_component(mask: np.ndarray, structure: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the voxels of ``mask`` outside its largest component (None if nothing to remove).

    Ties between equally large components go to the one labelled first (raster order).
    """
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return None
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    return (components != largest) & mask


def keep_largest_component(segmentation: np.ndarray, labels: Sequence[int] | None = None,
                           connectivity: int | None = None) -> np.ndarray:
    """Remove all but the largest connected component; returns a new array.

    With ``labels=None`` the whole foreground (``segmentation > 0``) is one mask: voxels
    of every component except the largest are set to 0, whatever their label. With a
    list of labels, each label's mask is handled separately and the removed voxels of
    that label are set to 0. Full connectivity unless ``connectivity`` is given.
    """
    segmentation = np.asarray(segmentation)
    structure = component_structure(segmentation.ndim, connectivity)
    result = segmentation.copy()
    masks = [segmentation > 0] if labels is None else [segmentation == label for label in labels]
    for mask in masks:
        remove = _outside_largest_component(mask, structure)
        if remove is not None:
            result[remove] = 0
    return result


def _step_labels(step: Mapping[str, Any]) -> list[int] | None:
    labels = step.get("labels")
    return None if labels is None else [int(label) for label in labels]


def apply_postprocessing(segmentation: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Apply the steps of a postprocessing plan in order; returns a new array."""
    result = np.array(segmentation, copy=True)
    for step in steps:
        operation = step.get("operation")
        if operation != KEEP_LARGEST_COMPONENT:
            raise ValueError(f"unknown postprocessing operation {operation!r} "
                             f"(known: {', '.join(OPERATIONS)})")
        result = keep_largest_component(result, _step_labels(step), step.get("connectivity"))
    return result


def _make_step(labels: list[int] | None, connectivity: int | None) -> dict[str, Any]:
    step: dict[str, Any] = {"operation": KEEP_LARGEST_COMPONENT, "labels": labels}
    if connectivity is not None:
        step["connectivity"] = int(connectivity)
    return step


def _mean_label_dice(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray],
                     labels: Sequence[int]) -> dict[int, float]:
    return {label: float(np.mean([dice_score(reference == label, prediction == label)
                                  for prediction, reference in zip(predictions, references, strict=True)]))
            for label in labels}


def learn_postprocessing(cases: Sequence[tuple[np.ndarray, np.ndarray]], foreground_labels: Sequence[int],
                         connectivity: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Choose keep-largest-component steps that improve Dice on ``(prediction, reference)`` pairs.

    1. Whole-foreground step: kept only if the mean foreground Dice (mean over labels of
       the mean Dice over cases) strictly improves.
    2. On the result, for each label, the per-label step: kept only if that label's mean
       Dice over cases strictly improves.

    Dice uses the convention of :mod:`autoseg.evaluation.metrics` (both empty = 1).
    Pass *all* foreground labels: the whole-foreground step can remove voxels of any
    label, and only the labels given are measured.

    Returns:
        ``(steps, report)``: the plan for :func:`apply_postprocessing` and a JSON-able
        report with the Dice before/after every tried step, whether it was kept and why.
    """
    if not cases:
        raise ValueError("learn_postprocessing needs at least one (prediction, reference) case")
    labels = [int(label) for label in foreground_labels]
    if not labels:
        raise ValueError("learn_postprocessing needs at least one foreground label")
    predictions = [np.asarray(prediction) for prediction, _ in cases]
    references = [np.asarray(reference) for _, reference in cases]
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        if prediction.shape != reference.shape:
            raise ValueError(f"case {index}: prediction shape {prediction.shape} differs from "
                             f"reference shape {reference.shape}")

    steps: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    initial = _mean_label_dice(predictions, references, labels)
    current_dice = dict(initial)

    step = _make_step(None, connectivity)
    candidate = [keep_largest_component(p, None, connectivity) for p in predictions]
    candidate_dice = _mean_label_dice(candidate, references, labels)
    before = float(np.mean(list(current_dice.values())))
    after = float(np.mean(list(candidate_dice.values())))
    kept = after > before
    tried.append({"step": step, "criterion": "mean foreground Dice", "dice_before": before,
                  "dice_after": after, "kept": kept,
                  "reason": f"mean foreground Dice {'improved' if kept else 'did not improve'}: "
                            f"{before:.4f} -> {after:.4f}"})
    if kept:
        steps.append(step)
        predictions, current_dice = candidate, candidate_dice

    for label in labels:
        step = _make_step([label], connectivity)
        candidate = [keep_largest_component(p, [label], connectivity) for p in predictions]
        after = _mean_label_dice(candidate, references, [label])[label]
        before = current_dice[label]
        kept = after > before
        tried.append({"step": step, "criterion": f"mean Dice of label {label}", "dice_before": before,
                      "dice_after": after, "kept": kept,
                      "reason": f"mean Dice of label {label} {'improved' if kept else 'did not improve'}: "
                                f"{before:.4f} -> {after:.4f}"})
        if kept:
            steps.append(step)
            predictions = candidate
            current_dice[label] = after

    report = {
        "num_cases": len(cases),
        "connectivity": "full" if connectivity is None else int(connectivity),
        "tried": tried,
        "dice_before": {"foreground_mean": float(np.mean(list(initial.values()))),
                        "per_label": initial},
        "dice_after": {"foreground_mean": float(np.mean(list(current_dice.values()))),
                       "per_label": current_dice},
        "steps": steps,
    }
    return steps, report
