"""Model selection by cross-validation and learned postprocessing (``autoseg ensemble WORK``).

Every configuration whose five folds left validation probabilities for all of their
validation cases is a candidate on its own, and every pair of them is a candidate
(the average of their probabilities). Each training case was a validation case of
exactly one fold, so each configuration has one out-of-fold prediction per case: the
candidates are scored on these predictions against the raw reference labels, with the
metrics of :mod:`autoseg.evaluation.metrics` (Dice, HD95, NSD, ...) summarised per class by
:func:`autoseg.evaluation.summary.summarize`.

Score of a candidate: the mean foreground Dice, i.e. the mean over foreground classes
of the per-class mean Dice over cases (Dice 1 when reference and prediction of a class
are both empty, as in :mod:`autoseg.evaluation.metrics`). Also reported: the spread of
the per-case foreground-mean Dice (std, 5th percentile, worst cases with their size;
:mod:`autoseg.evaluation.stability`), the best single configuration against the ensemble,
and a plot of every candidate's sorted per-case Dice (``WORK/ensemble_report.png``). The
best score wins; a candidate within :data:`TIE_TOLERANCE` of a better one counts as tied,
and ties go to the simpler candidate (one configuration before a pair, then plans order).

Then connected-component postprocessing is learned on the chosen candidate's
cross-validation segmentations with
:func:`autoseg.evaluation.learn_postprocessing.learn_postprocessing`, and everything is
written to ``WORK/inference_plan.json``, which ``autoseg predict`` reads.

Candidates are chosen on the random splits (``results/{C}/``), whose models ``autoseg
predict`` uses. Configurations also trained on folds by acquisition (``autoseg train
--split-by spacing -f all``: ``results/{C}__split_spacing/``) are scored there too, and
the difference (random minus acquisition folds) is reported as the Dice the model is
expected to lose on a new scanner or protocol.
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

from autoseg.errors import AutosegInputError
from autoseg.evaluation.ensemble import argmax_segmentation
from autoseg.evaluation.learn_postprocessing import learn_postprocessing
from autoseg.evaluation.metrics import bounding_box, compute_case_metrics, without_ignored
from autoseg.evaluation.report_plot import plot_candidates
from autoseg.evaluation.stability import acquisition_gap, per_case_spread, stability_comparison
from autoseg.evaluation.summary import summarize
from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import read_label
from autoseg.io.probabilities import load_probabilities, probability_paths
from autoseg.plans.schema import Plans
from autoseg.utils.files import to_json_text
from autoseg.utils.progress_bars import progress_bar
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


def _validation_base(work_dir: Path, configuration: str, fold: int, case: str, split_mode: str = "random") -> Path:
    """``{fold folder}/validation/{case}``, the base path of a case's probability files."""
    return WorkDir(work_dir).validation_dir(configuration, fold, split_mode) / case


def missing_validation(work_dir: str | os.PathLike, configuration: str, folds: Sequence[dict],
                       split_mode: str = "random") -> dict[int, int]:
    """Folds of ``configuration`` lacking validation probabilities: ``{fold: number of missing cases}``."""
    work_dir = Path(work_dir)
    missing: dict[int, int] = {}
    for index, fold in enumerate(folds):
        count = 0
        for case in fold["val"]:
            npz_path, json_path = probability_paths(_validation_base(work_dir, configuration, index, case,
                                                                     split_mode))
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
def _load_case(reference_path: Path, bases: Sequence[Path],
               num_classes: int) -> tuple[np.ndarray, ImageGeometry, list[np.ndarray]]:
    """Reference label map, its geometry and every configuration's probabilities (float16, as stored) of one case."""
    reference, reference_geometry = read_label(reference_path)
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
    return reference, reference_geometry, probabilities


def _candidate_segmentation(probabilities: Sequence[np.ndarray],
                            regions_class_order: Sequence[int] | None = None) -> np.ndarray:
    """Label map of the average of one or two ``(K, z, y, x)`` probability arrays (argmax, or regions
    thresholded and written in ``regions_class_order``)."""
    if len(probabilities) == 1:
        return argmax_segmentation(probabilities[0], regions_class_order)
    total = np.add(probabilities[0], probabilities[1], dtype=np.float32)
    for extra in probabilities[2:]:
        total += extra
    if regions_class_order is not None:  # thresholds apply to the mean; the argmax of the sum is that of the mean
        total /= np.float32(len(probabilities))
    return argmax_segmentation(total, regions_class_order)


def _case_size(reference: np.ndarray, geometry: ImageGeometry, ignore: int | None) -> dict[str, Any]:
    """Image shape (voxels, ``(z, y, x)``) and reference foreground volume (mL, ignored voxels left out)."""
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    foreground = (reference > 0) if ignore is None else (reference > 0) & (reference != ignore)
    return {"shape": list(reference.shape), "foreground_ml": float(np.count_nonzero(foreground) * voxel_ml)}


def _score_case(task: tuple) -> tuple[str, dict[str, Any], list[dict[int, dict]]]:
    """One case: its size, and per candidate the metrics of every foreground label
    (:func:`autoseg.evaluation.metrics.compute_case_metrics`)."""
    case, reference_path, bases, candidates, labels, num_classes, ignore, regions_class_order = task
    reference, geometry, probabilities = _load_case(reference_path, bases, num_classes)
    scores = []
    for members in candidates:
        segmentation = _candidate_segmentation([probabilities[i] for i in members], regions_class_order)
        scores.append(compute_case_metrics(reference, segmentation, geometry.spacing, labels, ignore_label=ignore))
    return case, _case_size(reference, geometry, ignore), scores


def _case_pair(task: tuple) -> tuple[str, np.ndarray, np.ndarray]:
    """(prediction, reference) of one case for learning postprocessing, as small integer arrays.

    Both are cropped to the bounding box of their joint foreground: outside it both are
    background, so Dice and connected components (hence what postprocessing learns) are
    exactly those of the full arrays. Unannotated voxels (the ignore label) are background in
    both (:func:`autoseg.evaluation.metrics.without_ignored`).
    """
    case, reference_path, bases, num_classes, ignore, regions_class_order = task
    reference, _, probabilities = _load_case(reference_path, bases, num_classes)
    reference, prediction = without_ignored(reference, _candidate_segmentation(probabilities, regions_class_order),
                                            ignore)
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
    yield from progress_bar(results, total=len(tasks), desc=description, unit="case", disable=not progress)


# ---------------------------------------------------------------------- selection
#: Per-class metrics reported for every candidate (their statistics over cases).
CANDIDATE_METRICS = ("dice", "hd95_mm", "nsd")


def _candidate_entry(members: Sequence[str], per_case: Mapping[str, Mapping[int, Mapping]], labels: Sequence[int],
                     names: Mapping[int, str], case_sizes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of one candidate over cases: mean Dice, spread, HD95, NSD, per class and per case."""
    summary = summarize(per_case, labels)
    per_case_dice = {case: float(np.mean([per_case[case][label]["dice"] for label in labels]))
                     for case in sorted(per_case)}
    return {
        "configurations": list(members),
        "mean_dice": float(summary["foreground_mean"]["dice"]),
        **per_case_spread(per_case_dice, case_sizes),
        "hd95_mm": summary["foreground_mean"]["hd95_mm"],
        "nsd": summary["foreground_mean"]["nsd"],
        "per_class": {names[label]: float(summary["per_class"][label]["dice"]["mean"]) for label in labels},
        "per_class_metrics": {names[label]: {metric: {key: summary["per_class"][label][metric][key]
                                                      for key in ("mean", "std", "worst", "n_undefined")}
                                             for metric in CANDIDATE_METRICS}
                              for label in labels},
        "per_case_dice": per_case_dice,
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


def _fold_of_cases(work: WorkDir, folds: Sequence[dict], split_mode: str) -> dict[str, int]:
    """``{case: the fold it is a validation case of}``; an error when a case is in two folds."""
    fold_of: dict[str, int] = {}
    for index, fold in enumerate(folds):
        for case in fold["val"]:
            if case in fold_of:
                raise AutosegInputError(f"{work.splits_path(split_mode)}: case {case} is a validation case of folds "
                                        f"{fold_of[case]} and {index}")
            fold_of[case] = index
    return fold_of


def _score_candidates(work: WorkDir, plans: Plans, folds: Sequence[dict], split_mode: str,
                      configurations: Sequence[str], pool: ProcessPoolExecutor | None,
                      progress: bool) -> list[dict[str, Any]]:
    """Every candidate of ``configurations`` (alone and in pairs) scored on the out-of-fold
    predictions of ``folds`` (:func:`_candidate_entry` each, in :func:`candidate_list` order)."""
    classes = plans.evaluated_classes
    names = plans.class_names
    labels_dir = Path(plans.raw_dataset) / "labelsTr"
    fold_of = _fold_of_cases(work, folds, split_mode)
    cases = sorted(fold_of)
    candidates = candidate_list(configurations)
    member_index = [tuple(configurations.index(name) for name in members) for members in candidates]
    tasks = [(case, labels_dir / f"{case}{plans.file_ending}",
              [_validation_base(work.root, name, fold_of[case], case, split_mode) for name in configurations],
              member_index, classes, plans.num_classes, plans.ignore_label, plans.regions_class_order)
             for case in cases]
    per_candidate: list[dict[str, dict]] = [{} for _ in candidates]
    sizes: dict[str, dict[str, Any]] = {}
    description = "scoring candidates" + ("" if split_mode == "random" else f" ({split_mode} folds)")
    for case, size, scores in _run_tasks(_score_case, tasks, pool, description, progress):
        sizes[case] = size
        for index, metrics in enumerate(scores):
            per_candidate[index][case] = metrics
    return [_candidate_entry(members, per_candidate[i], list(classes), names, sizes)
            for i, members in enumerate(candidates)]


def _acquisition_candidates(work: WorkDir, plans: Plans, configurations: Sequence[str],
                            pool: ProcessPoolExecutor | None, progress: bool) -> list[dict[str, Any]]:
    """The candidates of ``configurations`` trained on every fold by acquisition, scored there
    (empty when there are no such folds or no configuration has them all)."""
    folds = work.read_splits("spacing")
    if folds is None:
        return []
    complete = [name for name in configurations if not missing_validation(work.root, name, folds, "spacing")]
    return _score_candidates(work, plans, folds, "spacing", complete, pool, progress) if complete else []


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
        num_cases, candidates, stability, acquisition_split, cross_validation_dice,
        postprocessing_report``. Also writes ``WORK/ensemble_report.png``.

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
    classes = plans.evaluated_classes
    names = plans.class_names
    labels_dir = Path(plans.raw_dataset) / "labelsTr"
    if not labels_dir.is_dir():
        raise AutosegInputError(f"{labels_dir}: reference labels not found (plans.json 'raw_dataset' must point "
                                "to the raw dataset the models were trained on)")
    fold_of = _fold_of_cases(work, folds, "random")
    cases = sorted(fold_of)

    with _worker_pool(num_workers, len(cases)) as pool:
        entries = _score_candidates(work, plans, folds, "random", complete, pool, progress)
        chosen = entries[choose_candidate(entries)]
        pair_tasks = [(case, labels_dir / f"{case}{plans.file_ending}",
                       [_validation_base(work_dir, name, fold_of[case], case) for name in chosen["configurations"]],
                       plans.num_classes, plans.ignore_label, plans.regions_class_order) for case in cases]
        pairs = [(prediction, reference) for _, prediction, reference in
                 _run_tasks(_case_pair, pair_tasks, pool, "learning postprocessing", progress)]
        acquisition = _acquisition_candidates(work, plans, complete, pool, progress)
    steps, report = learn_postprocessing(pairs, classes)
    del pairs

    plan = {
        "version": INFERENCE_PLAN_VERSION,
        "configurations": list(chosen["configurations"]),
        "folds": list(range(len(folds))),
        "checkpoint": SELECTED_CHECKPOINT,
        "postprocessing": steps,
        "label_names": {str(key): names[key] for key in classes},
        "num_cases": len(cases),
        "candidates": entries,
        "stability": stability_comparison(entries, chosen["configurations"]),
        "acquisition_split": ({"num_cases": len(acquisition[0]["per_case_dice"]),
                               "candidates": acquisition,
                               **acquisition_gap(entries, acquisition, chosen["configurations"])}
                              if acquisition else None),
        "cross_validation_dice": {"before_postprocessing": report["dice_before"]["foreground_mean"],
                                  "after_postprocessing": report["dice_after"]["foreground_mean"]},
        "postprocessing_report": report,
    }
    plan = json.loads(to_json_text(plan, indent=None))  # exactly what a reader of the file gets
    plot_candidates(entries, chosen["configurations"], work.ensemble_report_path, acquisition)
    work.write_inference_plan(plan)
    return plan


# ---------------------------------------------------------------------- report
def _describe_step(step: Mapping[str, Any], label_names: Mapping[str, str]) -> str:
    labels = step.get("labels")
    target = "whole foreground" if labels is None else ", ".join(
        f"region {'+'.join(str(v) for v in label)}" if isinstance(label, list)
        else label_names.get(str(label), str(label)) for label in labels)
    return f"{step['operation']} ({target})"


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _best_first(candidates: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Candidates by mean Dice, best first; equal ones with fewer configurations first."""
    return sorted(candidates, key=lambda c: (-c["mean_dice"], len(c["configurations"])))


def _candidate_table(candidates: Sequence[Mapping[str, Any]], chosen: Sequence[str]) -> list[str]:
    """One row per candidate, best first: mean Dice ± std, 5th percentile, worst case, HD95, NSD, Dice per class."""
    class_names = list(candidates[0]["per_class"]) if candidates else []
    rows = _best_first(candidates)
    titles = [" + ".join(c["configurations"]) for c in rows]
    name_width = max([len("candidate")] + [len(t) for t in titles]) + 2
    class_widths = [max(len(name), 6) for name in class_names]
    header = ("candidate".ljust(name_width) + " " + "Dice mean ± std".rjust(17) + " " + "5th pct".rjust(7) + " "
              + "worst".rjust(7) + "  " + "worst case".ljust(14) + "HD95 mm".rjust(8) + " " + "NSD".rjust(6)
              + "".join(" " + n.rjust(w) for n, w in zip(class_names, class_widths)))
    lines = [header, "-" * len(header)]
    for candidate, title in zip(rows, titles):
        mark = "* " if list(candidate["configurations"]) == list(chosen) else "  "
        worst_case = candidate["worst_cases"][0]["case"] if candidate.get("worst_cases") else ""
        line = ((mark + title).ljust(name_width) + " "
                + f"{candidate['mean_dice']:.4f} ± {candidate['std']:.4f}".rjust(17) + " "
                + f"{candidate['percentile_5']:.4f}".rjust(7) + " " + f"{candidate['worst']:.4f}".rjust(7) + "  "
                + worst_case.ljust(14) + _number(candidate.get("hd95_mm"), 2).rjust(8) + " "
                + _number(candidate.get("nsd"), 3).rjust(6))
        line += "".join(" " + f"{candidate['per_class'][n]:.4f}".rjust(w) for n, w in zip(class_names, class_widths))
        lines.append(line.rstrip())
    return lines


def _per_class_lines(candidates: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per candidate and class: Dice mean ± std and worst, HD95 (mm) and NSD means."""
    lines = ["per class: Dice mean ± std (worst) | HD95 mm | NSD"]
    for candidate in _best_first(candidates):
        parts = []
        for name, metrics in candidate["per_class_metrics"].items():
            dice, hd95, nsd = metrics["dice"], metrics["hd95_mm"], metrics["nsd"]
            undefined = f" ({hd95['n_undefined']} undefined)" if hd95["n_undefined"] else ""
            parts.append(f"{name} {_number(dice['mean'])} ± {_number(dice['std'])} ({_number(dice['worst'])}) | "
                         f"{_number(hd95['mean'], 2)}{undefined} | {_number(nsd['mean'], 3)}")
        lines.append(f"  {' + '.join(candidate['configurations'])}: " + "; ".join(parts))
    return lines


def _stability_lines(result: Mapping[str, Any]) -> list[str]:
    """The best single configuration against the ensemble, and the chosen candidate's worst cases."""
    lines = []
    comparison = result.get("stability")
    if comparison:
        single, ensemble = " + ".join(comparison["single"]), " + ".join(comparison["ensemble"])
        lines.append("stability of the per-case Dice (std, 5th percentile, worst):")
        for index, title in ((0, f"{single} (best single)"), (1, ensemble)):
            lines.append(f"  {title}: {comparison['std'][index]:.4f}, {comparison['percentile_5'][index]:.4f}, "
                         f"{comparison['worst'][index]:.4f}")
        lines.append(f"  {comparison['verdict']}")
    chosen = next(c for c in result["candidates"] if list(c["configurations"]) == list(result["configurations"]))
    lines.append(f"worst cases of {' + '.join(chosen['configurations'])} (Dice, image voxels, reference foreground):")
    lines += [f"  {case['case']}: {case['dice']:.4f}, {'x'.join(map(str, case.get('shape', [])))}, "
              f"{case.get('foreground_ml', 0.0):.1f} mL" for case in chosen.get("worst_cases", [])]
    return lines


def _acquisition_lines(result: Mapping[str, Any]) -> list[str]:
    """Random against acquisition folds, and what the chosen model is expected to lose on a new protocol."""
    split = result.get("acquisition_split")
    chosen = " + ".join(result["configurations"])
    if not split:
        return [f"new scanner/protocol: not measured (train {chosen} with `--split-by spacing -f all` as well, then "
                "run `autoseg ensemble` again, to estimate what it loses on acquisitions unlike its training data)"]
    lines = [f"folds by acquisition (--split-by spacing, {split['num_cases']} cases): mean Dice random folds / "
             "acquisition folds / gap"]
    for row in split["per_candidate"]:
        lines.append(f"  {' + '.join(row['configurations'])}: {row['random']:.4f} / {row['acquisition']:.4f} / "
                     f"{row['gap']:+.4f}")
    row = split.get("chosen")
    if row:
        lines.append(f"new scanner/protocol: {chosen} is expected to lose about {row['gap']:.3f} mean Dice "
                     f"({row['random']:.4f} on random folds, {row['acquisition']:.4f} on folds by acquisition)")
    else:
        measured = ", ".join(" + ".join(r["configurations"]) for r in split["per_candidate"]) or "none"
        lines.append(f"new scanner/protocol: not measured for {chosen} (folds by acquisition complete for: "
                     f"{measured})")
    return lines


def _postprocessing_lines(result: Mapping[str, Any]) -> list[str]:
    label_names = dict(result.get("label_names") or {})
    steps = result.get("postprocessing") or []
    lines = ["postprocessing: " + ("; ".join(_describe_step(s, label_names) for s in steps) if steps
                                   else "none (no keep-largest-component step improved Dice)")]
    dice = result["cross_validation_dice"]
    report = result.get("postprocessing_report") or {}
    after = report.get("dice_after", {}).get("per_label", {})
    per_label = ", ".join(f"{label_names.get(label, label)} {before:.4f} -> {after[label]:.4f}"
                          for label, before in report.get("dice_before", {}).get("per_label", {}).items())
    changed = (f"; changed {report['cases_changed']} of {report['num_cases']} cases"
               if "cases_changed" in report else "")
    lines.append(f"mean foreground Dice: {dice['before_postprocessing']:.4f} before postprocessing, "
                 f"{dice['after_postprocessing']:.4f} after" + (f" ({per_label}){changed}" if per_label else changed))
    return lines


def format_candidates(result: Mapping[str, Any]) -> str:
    """The report of ``autoseg ensemble``: every candidate (best first; ``*`` = chosen) with its mean
    Dice ± std over cases, 5th percentile, worst case, HD95, NSD and Dice per class; per-class
    details; the stability comparison; the acquisition-split gap; the choice and its postprocessing."""
    lines = [f"cross-validation of {result.get('num_cases', '?')} cases (random folds; Dice, HD95 and NSD are "
             "means over foreground classes)"]
    lines += _candidate_table(result["candidates"], result["configurations"])
    lines += [""] + _per_class_lines(result["candidates"])
    lines += [""] + _stability_lines(result)
    lines += [""] + _acquisition_lines(result)
    lines += ["", f"chosen: {' + '.join(result['configurations'])} (folds {result['folds']}, checkpoint "
                  f"{result['checkpoint']}): the best mean Dice (ties go to the simpler candidate)"]
    lines += _postprocessing_lines(result)
    return "\n".join(lines)
