"""Learning connected-component postprocessing on cross-validation predictions.

Which keep-largest-component steps (see :mod:`autoseg.postprocessing.components`)
improve Dice on the out-of-fold segmentations of the chosen model; ``autoseg ensemble``
stores the result in the inference plan and ``autoseg predict`` applies it. For a
region-based model each region (the union of its label values) is a class of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autoseg.evaluation.metrics import dice_score
from autoseg.io.labels import class_mask
from autoseg.postprocessing.components import keep_largest_component, make_keep_largest_step


def _mean_label_dice(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray],
                     classes: Mapping[int, Sequence[int]]) -> dict[int, float]:
    return {key: float(np.mean([dice_score(class_mask(reference, values), class_mask(prediction, values))
                                for prediction, reference in zip(predictions, references, strict=True)]))
            for key, values in classes.items()}


def _step_entry(values: Sequence[int]) -> int | list[int]:
    """A postprocessing step's entry for a class: its value, or a region's list of values."""
    return int(values[0]) if len(values) == 1 else [int(v) for v in values]


def checked_cases(cases: Sequence[tuple[np.ndarray, np.ndarray]],
                  foreground_labels: Sequence[int] | Mapping[int, Sequence[int]]
                  ) -> tuple[dict[int, tuple[int, ...]], list[np.ndarray], list[np.ndarray]]:
    """``(classes, predictions, references)`` of :func:`learn_postprocessing`'s arguments, checked: at least one
    case and one label, prediction and reference of each case of the same shape (ValueError otherwise)."""
    if not cases:
        raise ValueError("learn_postprocessing needs at least one (prediction, reference) case")
    classes = ({int(key): tuple(values) for key, values in foreground_labels.items()}
               if isinstance(foreground_labels, Mapping) else {int(v): (int(v),) for v in foreground_labels})
    if not classes:
        raise ValueError("learn_postprocessing needs at least one foreground label")
    predictions = [np.asarray(prediction) for prediction, _ in cases]
    references = [np.asarray(reference) for _, reference in cases]
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        if prediction.shape != reference.shape:
            raise ValueError(f"case {index}: prediction shape {prediction.shape} differs from "
                             f"reference shape {reference.shape}")
    return classes, predictions, references


def learn_postprocessing(cases: Sequence[tuple[np.ndarray, np.ndarray]],
                         foreground_labels: Sequence[int] | Mapping[int, Sequence[int]],
                         connectivity: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Choose keep-largest-component steps that improve Dice on ``(prediction, reference)`` pairs.

    1. Whole-foreground step: kept only if the mean foreground Dice (mean over labels of
       the mean Dice over cases) strictly improves.
    2. On the result, for each label, the per-label step: kept only if that label's mean
       Dice over cases strictly improves.

    Dice uses the convention of :mod:`autoseg.evaluation.metrics` (both empty = 1).
    Pass *all* foreground labels: the whole-foreground step can remove voxels of any
    label, and only the labels given are measured. ``foreground_labels`` may map class keys to
    label values (regions: the per-class step then keeps the largest component of the
    region's union, step entry ``[values]``).

    Returns:
        ``(steps, report)``: the plan for :func:`apply_postprocessing` and a JSON-able
        report with the Dice before/after every tried step, whether it was kept and why,
        and how many cases the kept steps changed (``cases_changed``).
    """
    classes, predictions, references = checked_cases(cases, foreground_labels)
    steps: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    initial_predictions = predictions
    initial = _mean_label_dice(predictions, references, classes)
    current_dice = dict(initial)

    step = make_keep_largest_step(None, connectivity)
    candidate = [keep_largest_component(p, None, connectivity) for p in predictions]
    candidate_dice = _mean_label_dice(candidate, references, classes)
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

    for label in classes:
        entry = _step_entry(classes[label])
        step = make_keep_largest_step([entry], connectivity)
        candidate = [keep_largest_component(p, [entry], connectivity) for p in predictions]
        after = _mean_label_dice(candidate, references, {label: classes[label]})[label]
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
        "cases_changed": sum(not np.array_equal(before, after)
                             for before, after in zip(initial_predictions, predictions, strict=True)),
    }
    return steps, report
