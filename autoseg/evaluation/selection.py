"""Model selection by cross-validation and learned postprocessing (``autoseg ensemble WORK``).

Every configuration whose five folds left validation probabilities for all of their
validation cases is a candidate on its own, and every pair of them is a candidate
(the average of their probabilities). Each training case was a validation case of
exactly one fold, so each configuration has one out-of-fold prediction per case: the
candidates are scored on these predictions against the raw reference labels.

Score of a candidate: the mean foreground Dice, i.e. the mean over foreground classes
of the per-class mean Dice over cases (Dice 1 when reference and prediction of a class
are both empty, as in :mod:`autoseg.evaluation.metrics`). Also reported: the standard
deviation (ddof=0) and the worst value of the per-case foreground-mean Dice. The best
score wins; a candidate within :data:`TIE_TOLERANCE` of a better one counts as tied,
and ties go to the simpler candidate (one configuration before a pair, then plans order).

Then connected-component postprocessing is learned on the chosen candidate's
cross-validation segmentations with
:func:`autoseg.evaluation.postprocessing.learn_postprocessing`, and everything is
written to ``WORK/inference_plan.json``, which ``autoseg predict`` reads.

Only configurations trained on the random splits (``results/{C}/``) are candidates;
``--split-by spacing`` runs (``results/{C}__split_spacing/``) are robustness
estimates on other folds and are ignored.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from autoseg.errors import AutosegInputError
from autoseg.evaluation.ensemble import argmax_segmentation
from autoseg.evaluation.learn_postprocessing import learn_postprocessing
from autoseg.evaluation.metrics import bounding_box, dice_score
from autoseg.io.images import read_label
from autoseg.io.probabilities import load_probabilities, probability_paths
from autoseg.plans.schema import Plans
from autoseg.utils.files import to_json_text
from autoseg.workdir import WorkDir

INFERENCE_PLAN_VERSION = 1
#: Mean-Dice differences up to this are ties (resolved towards the simpler candidate).
TIE_TOLERANCE = 1e-6
#: Checkpoint whose validation predictions are scored (the trainer validates the final one).
SELECTED_CHECKPOINT = "final"


# ---------------------------------------------------------------------- inputs
def load_folds(work_dir: str | os.PathLike | WorkDir) -> list[dict]:
    """The random cross-validation folds (``[{"train": [...], "val": [...]}, ...]``); an error when none exist."""
    work = WorkDir.of(work_dir)
    folds = work.read_splits("random")
    if folds is None:
        raise AutosegInputError(f"{work.splits_path('random')}: not found; train the configurations first "
                                "(`autoseg train WORK -c CONFIG -f all`)")
    return folds


def _validation_base(work_dir: Path, configuration: str, fold: int, case: str) -> Path:
    """``{fold folder}/validation/{case}`` (random splits), the base path of a case's probability files."""
    return WorkDir(work_dir).validation_dir(configuration, fold) / case


def missing_validation(work_dir: str | os.PathLike, configuration: str, folds: Sequence[dict]) -> dict[int, int]:
    """Folds of ``configuration`` lacking validation probabilities: ``{fold: number of missing cases}``."""
    work_dir = Path(work_dir)
    missing: dict[int, int] = {}
    for index, fold in enumerate(folds):
        count = 0
        for case in fold["val"]:
            npz_path, json_path = probability_paths(_validation_base(work_dir, configuration, index, case))
            if not (npz_path.is_file() and json_path.is_file()):
                count += 1
        if count:
            missing[index] = count
    return missing


def complete_configurations(work_dir: str | os.PathLike) -> list[str]:
    """Configurations (plans order) with validation probabilities for every case of all their folds."""
    plans = WorkDir.of(work_dir).load_plans()
    folds = load_folds(work_dir)
    return [name for name in plans.configurations if not missing_validation(work_dir, name, folds)]


def _incomplete_message(work_dir: Path, incomplete: Mapping[str, Mapping[int, int]], num_folds: int) -> str:
    example = next(iter(incomplete), "CONFIG")
    return (f"{work_dir}: no configuration has validation probabilities for all {num_folds} folds "
            f"({_describe_missing(incomplete)}); all {num_folds} folds must be trained, e.g. "
            f"`autoseg train {work_dir} -c {example} -f all`")


def _describe_missing(incomplete: Mapping[str, Mapping[int, int]]) -> str:
    return "; ".join(f"{name}: fold(s) {', '.join(map(str, missing))} not trained or without validation "
                     "probabilities" for name, missing in incomplete.items())


def candidate_list(configurations: Sequence[str]) -> list[tuple[str, ...]]:
    """Every configuration alone, then every pair, in the given order."""
    singles = [(name,) for name in configurations]
    return singles + list(itertools.combinations(configurations, 2))


# ---------------------------------------------------------------------- per case work
def _load_case(reference_path: Path, bases: Sequence[Path], num_classes: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reference label map and every configuration's probabilities (float16, as stored) of one case."""
    reference, _ = read_label(reference_path)
    probabilities = []
    for base in bases:
        array, geometry = load_probabilities(base, dtype=np.float16)
        npz_path = probability_paths(base)[0]
        if geometry.shape != reference.shape:
            raise AutosegInputError(f"{npz_path}: image shape {list(geometry.shape)} differs from the reference "
                                    f"{reference_path} {list(reference.shape)}")
        if array.shape[0] != num_classes:
            raise AutosegInputError(f"{npz_path}: {array.shape[0]} classes, plans.json has {num_classes}")
        probabilities.append(array)
    return reference, probabilities


def _candidate_segmentation(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Argmax of the average of one or two ``(K, z, y, x)`` probability arrays."""
    if len(probabilities) == 1:
        return argmax_segmentation(probabilities[0])
    total = np.add(probabilities[0], probabilities[1], dtype=np.float32)
    for extra in probabilities[2:]:
        total += extra
    return argmax_segmentation(total)  # the argmax of the sum is the argmax of the mean


def _score_case(task: tuple) -> tuple[str, list[list[float]]]:
    """Per candidate, the Dice of every foreground label for one case."""
    case, reference_path, bases, candidates, labels, num_classes = task
    reference, probabilities = _load_case(reference_path, bases, num_classes)
    masks = {label: reference == label for label in labels}
    scores = []
    for members in candidates:
        segmentation = _candidate_segmentation([probabilities[i] for i in members])
        scores.append([dice_score(masks[label], segmentation == label) for label in labels])
    return case, scores


def _case_pair(task: tuple) -> tuple[str, np.ndarray, np.ndarray]:
    """(prediction, reference) of one case for learning postprocessing, as small integer arrays.

    Both are cropped to the bounding box of their joint foreground: outside it both are
    background, so Dice and connected components (hence what postprocessing learns) are
    exactly those of the full arrays.
    """
    case, reference_path, bases, num_classes = task
    reference, probabilities = _load_case(reference_path, bases, num_classes)
    prediction = _candidate_segmentation(probabilities)
    box = bounding_box((prediction > 0) | (reference > 0))
    if box is None:
        box = tuple(slice(0, 1) for _ in reference.shape)
    dtype = np.uint8 if max(num_classes, int(reference.max(initial=0)) + 1) <= 256 else np.uint16
    return case, prediction[box].astype(dtype), reference[box].astype(dtype)


@contextlib.contextmanager
def _worker_pool(num_workers: int, num_tasks: int) -> Iterator[ProcessPoolExecutor | None]:
    """A spawn process pool for ``num_workers > 1`` (None otherwise); on an error pending work is cancelled."""
    if num_workers <= 1 or num_tasks <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=min(num_workers, num_tasks),
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_tasks(function: Callable, tasks: Sequence[tuple], pool: ProcessPoolExecutor | None, description: str,
               progress: bool) -> Iterable:
    results = pool.map(function, tasks) if pool is not None else map(function, tasks)
    yield from tqdm(results, total=len(tasks), desc=description, unit="case", disable=not progress)


# ---------------------------------------------------------------------- selection
def _candidate_entry(members: Sequence[str], per_case: Mapping[str, Sequence[float]], labels: Sequence[int],
                     names: Mapping[int, str]) -> dict[str, Any]:
    cases = sorted(per_case)
    table = np.array([per_case[case] for case in cases], dtype=np.float64)  # (cases, labels)
    case_means = table.mean(axis=1)
    worst = int(np.argmin(case_means))
    return {
        "configurations": list(members),
        "mean_dice": float(table.mean(axis=0).mean()),
        "std": float(case_means.std(ddof=0)),
        "worst": float(case_means[worst]),
        "worst_case": cases[worst],
        "per_class": {names[label]: float(value) for label, value in zip(labels, table.mean(axis=0))},
    }


def choose_candidate(candidates: Sequence[Mapping[str, Any]]) -> int:
    """Index of the best mean Dice; ties (within :data:`TIE_TOLERANCE`) go to fewer configurations, then order."""
    best = 0
    for index, candidate in enumerate(candidates):
        current = candidates[best]
        if candidate["mean_dice"] > current["mean_dice"] + TIE_TOLERANCE:
            best = index
        elif (abs(candidate["mean_dice"] - current["mean_dice"]) <= TIE_TOLERANCE
              and len(candidate["configurations"]) < len(current["configurations"])):
            best = index
    return best


def _check_configurations(work_dir: Path, plans: Plans, folds: Sequence[dict],
                          configurations: Sequence[str] | None) -> list[str]:
    requested = list(configurations) if configurations else list(plans.configurations)
    for name in requested:
        plans.configuration(name)  # raises for an unknown name
    if len(set(requested)) != len(requested):
        raise AutosegInputError(f"-c: a configuration is listed twice ({' '.join(requested)})")
    incomplete = {name: missing for name in requested
                  if (missing := missing_validation(work_dir, name, folds))}
    if configurations and incomplete:
        raise AutosegInputError(f"{work_dir}: requested configuration(s) without validation probabilities for all "
                                f"{len(folds)} folds ({_describe_missing(incomplete)}); train them with "
                                f"`autoseg train {work_dir} -c {next(iter(incomplete))} -f all`")
    complete = [name for name in requested if name not in incomplete]
    if not complete:
        raise AutosegInputError(_incomplete_message(work_dir, incomplete, len(folds)))
    return complete


def select_model(work_dir: str | os.PathLike, configurations: Sequence[str] | None = None,
                 num_workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Pick the best configuration or pair by cross-validation Dice, learn postprocessing, write the plan.

    Args:
        work_dir: work folder with plans.json, splits.json and trained folds.
        configurations: restrict the candidates to these (each must be complete);
            default: every complete configuration of the plans.
        num_workers: worker processes reading and scoring cases (1 = this process).
        progress: show progress bars.

    Returns:
        The content written to ``WORK/inference_plan.json`` (see the module docstring):
        ``version, configurations, folds, checkpoint, postprocessing, label_names,
        num_cases, candidates, cross_validation_dice, postprocessing_report``.

    Memory: scoring holds one case at a time per worker, every complete configuration's
    probabilities as float16 (``configs x K x voxels x 2`` bytes) plus, per candidate in
    turn, a float32 sum and its argmax.
    Learning postprocessing keeps every case's (prediction, reference) pair in memory,
    as uint8 arrays cropped to their joint foreground bounding box: at most
    ``2 x voxels`` bytes per case (about 100 MB per 512x512x200 CT, usually far less);
    this is the limit for very large datasets.

    Raises:
        AutosegInputError: plans, splits or labels are missing, a requested configuration
            is incomplete, no configuration is complete, or files do not match.
    """
    work = WorkDir.of(work_dir)
    work_dir = work.root
    plans = work.load_plans()
    folds = load_folds(work)
    complete = _check_configurations(work_dir, plans, folds, configurations)
    labels = plans.foreground_labels
    names = {value: name for name, value in plans.labels.items()}
    labels_dir = Path(plans.raw_dataset) / "labelsTr"
    if not labels_dir.is_dir():
        raise AutosegInputError(f"{labels_dir}: reference labels not found (plans.json 'raw_dataset' must point "
                                "to the raw dataset the models were trained on)")

    fold_of: dict[str, int] = {}
    for index, fold in enumerate(folds):
        for case in fold["val"]:
            if case in fold_of:
                raise AutosegInputError(f"{work.splits_path('random')}: case {case} is a validation case of folds "
                                        f"{fold_of[case]} and {index}")
            fold_of[case] = index
    cases = sorted(fold_of)
    ending = plans.file_ending

    def bases(case: str, members: Sequence[str]) -> list[Path]:
        return [_validation_base(work_dir, name, fold_of[case], case) for name in members]

    candidates = candidate_list(complete)
    member_index = [tuple(complete.index(name) for name in members) for members in candidates]
    score_tasks = [(case, labels_dir / f"{case}{ending}", bases(case, complete), member_index, labels,
                    plans.num_classes) for case in cases]
    per_candidate: list[dict[str, list[float]]] = [{} for _ in candidates]
    with _worker_pool(num_workers, len(cases)) as pool:
        for case, scores in _run_tasks(_score_case, score_tasks, pool, "scoring candidates", progress):
            for index, values in enumerate(scores):
                per_candidate[index][case] = values
        entries = [_candidate_entry(members, per_candidate[i], labels, names)
                   for i, members in enumerate(candidates)]
        chosen = entries[choose_candidate(entries)]

        pair_tasks = [(case, labels_dir / f"{case}{ending}", bases(case, chosen["configurations"]),
                       plans.num_classes) for case in cases]
        pairs = [(prediction, reference) for _, prediction, reference in
                 _run_tasks(_case_pair, pair_tasks, pool, "learning postprocessing", progress)]
    steps, report = learn_postprocessing(pairs, labels)
    del pairs

    plan = {
        "version": INFERENCE_PLAN_VERSION,
        "configurations": list(chosen["configurations"]),
        "folds": list(range(len(folds))),
        "checkpoint": SELECTED_CHECKPOINT,
        "postprocessing": steps,
        "label_names": {str(value): names[value] for value in labels},
        "num_cases": len(cases),
        "candidates": entries,
        "cross_validation_dice": {"before_postprocessing": report["dice_before"]["foreground_mean"],
                                  "after_postprocessing": report["dice_after"]["foreground_mean"]},
        "postprocessing_report": report,
    }
    plan = json.loads(to_json_text(plan, indent=None))  # exactly what a reader of the file gets
    work.write_inference_plan(plan)
    return plan


# ---------------------------------------------------------------------- report
def _describe_step(step: Mapping[str, Any], label_names: Mapping[str, str]) -> str:
    labels = step.get("labels")
    target = "whole foreground" if labels is None else ", ".join(
        label_names.get(str(label), str(label)) for label in labels)
    return f"{step['operation']} ({target})"


def format_candidates(result: Mapping[str, Any]) -> str:
    """A text table of every candidate (best first; ``*`` = chosen) and the postprocessing outcome.

    Columns: mean foreground Dice ± std over cases, worst case, then the mean Dice per class.
    """
    label_names = dict(result.get("label_names") or {})
    candidates = list(result["candidates"])
    chosen = list(result["configurations"])
    class_names = list(candidates[0]["per_class"]) if candidates else []
    rows = sorted(candidates, key=lambda c: (-c["mean_dice"], len(c["configurations"])))
    titles = [" + ".join(c["configurations"]) for c in rows]
    name_width = max([len("candidate")] + [len(t) for t in titles]) + 2
    class_widths = [max(len(name), 6) for name in class_names]
    header = ("candidate".ljust(name_width) + " " + "mean ± std".rjust(17) + " " + "worst".rjust(7) + "  "
              + "worst case".ljust(12) + "".join(" " + n.rjust(w) for n, w in zip(class_names, class_widths)))
    lines = [f"cross-validation Dice of {result.get('num_cases', '?')} cases (mean over foreground classes)",
             header, "-" * len(header)]
    for candidate, title in zip(rows, titles):
        mark = "* " if list(candidate["configurations"]) == chosen else "  "
        line = ((mark + title).ljust(name_width) + " "
                + f"{candidate['mean_dice']:.4f} ± {candidate['std']:.4f}".rjust(17) + " "
                + f"{candidate['worst']:.4f}".rjust(7) + "  " + str(candidate.get("worst_case", "")).ljust(12))
        line += "".join(" " + f"{candidate['per_class'][n]:.4f}".rjust(w) for n, w in zip(class_names, class_widths))
        lines.append(line.rstrip())
    lines.append("")
    lines.append(f"chosen: {' + '.join(chosen)} (folds {result['folds']}, checkpoint {result['checkpoint']})")
    steps = result.get("postprocessing") or []
    lines.append("postprocessing: " + ("; ".join(_describe_step(s, label_names) for s in steps) if steps
                                       else "none (no keep-largest-component step improved Dice)"))
    dice = result["cross_validation_dice"]
    lines.append(f"mean foreground Dice: {dice['before_postprocessing']:.4f} before postprocessing, "
                 f"{dice['after_postprocessing']:.4f} after")
    return "\n".join(lines)
