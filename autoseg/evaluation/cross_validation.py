"""Scoring a trained fold: its validation cases predicted in their own geometry and evaluated.

After training, every validation case of the fold is predicted from the preprocessed
cache at full resolution, mapped back to its original geometry, written as a label
map and as class probabilities (``autoseg ensemble`` selects models on these), and
scored against the raw reference label. Outputs go to the fold's ``validation/``
folder (see :mod:`autoseg.workdir`): ``{case}{ending}``, ``{case}.npz`` + ``.json``,
``summary.json`` and ``per_case.csv``.

With test-time mirroring, the same network passes also give every case's prediction without
mirroring and with each single mirror axis (the flip passes they need are a subset of those
of all axes: :meth:`~autoseg.inference.predictor.Predictor.predict_preprocessed_per_mirroring`),
which are scored too, so ``summary.json`` records what mirroring and each axis gained on this
fold (``summary["mirroring"]``, see :func:`mirroring_measurement`); ``autoseg predict`` uses
the cheapest setting that pays for its cost (:mod:`autoseg.inference.mirroring`). Single axes
are left out when their extra accumulators would exceed :data:`MIRROR_SETTINGS_MAX_BYTES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from autoseg.evaluation.evaluate import evaluate_arrays, foreground_mean_dice
from autoseg.evaluation.summary import format_table, write_results
from autoseg.inference.export import (
    export_segmentation,
    probabilities_to_segmentation,
    restore_original_shape,
    restore_segmentation,
)
from autoseg.inference.mirroring import SETTING_NAMES
from autoseg.inference.predictor import Predictor, patch_axis_letters
from autoseg.io.images import read_label
from autoseg.io.probabilities import save_probabilities
from autoseg.preprocessing.cache import load_cached_case
from autoseg.preprocessing.previous_stage import previous_stage_one_hot
from autoseg.utils.progress_bars import progress_bar
from autoseg.workdir import WorkDir

#: Most memory (bytes) the extra probability accumulators of the single-axis mirroring settings may
#: take during validation (one ``K x voxels`` float32 array per setting); above it only all-axes and
#: no-mirroring are measured. 2 GiB: 5 settings of a 3-class 512x512x300 CT would take 4.5 GiB.
MIRROR_SETTINGS_MAX_BYTES = 2**31


def mirror_settings_to_measure(mirrored_axes: list[int] | None, dimension: int, num_classes: int,
                               voxels: int) -> dict[str, bool | str]:
    """Mirroring settings a validation scores, by name: ``all`` (the prediction itself), ``none``, and
    each single mirrored axis (``z``, ``y``, ``x``: array axes) when there are several and their
    accumulators fit :data:`MIRROR_SETTINGS_MAX_BYTES`."""
    settings: dict[str, bool | str] = dict(SETTING_NAMES)
    letters = [patch_axis_letters(dimension)[axis] for axis in (mirrored_axes or [])]
    if len(letters) > 1 and len(letters) * num_classes * voxels * 4 <= MIRROR_SETTINGS_MAX_BYTES:
        settings.update({letter: letter for letter in letters})
    return settings


def validate_fold(work_dir: str | os.PathLike | WorkDir, configuration_name: str, fold: int,
                  network_state: dict, device: torch.device | str = "cpu", split_mode: str = "random",
                  progress: bool = True, log: Callable[[str], None] = print, use_mirroring: bool = True) -> dict:
    """Predict, export and score the validation cases of one trained fold; returns the summary.

    ``network_state`` is the trained network's state dict (e.g. of ``checkpoint_final.pt``);
    ``use_mirroring`` switches test-time mirroring (a short time budget may leave no room for it).
    """
    work = WorkDir.of(work_dir)
    plans = work.load_plans()
    configuration = plans.configuration(configuration_name)
    folds = work.read_splits(split_mode)
    if folds is None or not 0 <= fold < len(folds):
        raise ValueError(f"{work.splits_path(split_mode)}: fold {fold} does not exist")
    val_cases = folds[fold]["val"]
    output = work.validation_dir(configuration_name, fold, split_mode)
    output.mkdir(parents=True, exist_ok=True)
    cache = work.cache_folder(configuration.data_identifier)
    previous_folder = None
    if configuration.previous_stage:
        previous_folder = work.previous_stage_folder(configuration.data_identifier, configuration.previous_stage)
    predictor = Predictor(plans, configuration_name, [network_state], device, use_mirroring=use_mirroring)
    ending = plans.file_ending
    labels_folder = Path(plans.raw_dataset) / "labelsTr"
    pairs: list[tuple] = []
    # mean foreground Dice of each case by mirroring setting (scores only: the label maps are not kept)
    setting_dice: dict[str, list[float]] = {}
    for case_id in progress_bar(val_cases, desc="validation cases", unit="case", disable=not progress):
        image, _, properties = load_cached_case(cache, case_id)
        network_input = np.asarray(image)
        if previous_folder is not None:
            previous = np.load(previous_folder / f"{case_id}.npy")
            network_input = np.concatenate([network_input, previous_stage_one_hot(previous, plans.foreground_labels)])
        settings = {"all": use_mirroring}
        if use_mirroring:
            settings = mirror_settings_to_measure(predictor.mirror_axes(True), configuration.dimension,
                                                  plans.num_classes, int(np.prod(network_input.shape[1:])))
        per_setting = predictor.predict_preprocessed_per_mirroring(network_input, list(settings.values()))
        predicted = dict(zip(settings, per_setting, strict=True))
        probabilities = restore_original_shape(predicted.pop("all"), properties, plans.is_region_based)
        segmentation = probabilities_to_segmentation(probabilities, plans.regions_class_order)
        export_segmentation(segmentation, properties, output / f"{case_id}{ending}")
        save_probabilities(probabilities.cpu().numpy(), properties["geometry"], output / case_id,
                           plans.regions_class_order)
        reference, _ = read_label(labels_folder / f"{case_id}{ending}")
        spacing = properties["geometry"]["spacing"]
        pairs.append((case_id, reference, segmentation, spacing))
        if use_mirroring:
            for name, other in [("all", None), *predicted.items()]:
                scored = segmentation if other is None else restore_segmentation(
                    [(other, properties)], regions_class_order=plans.regions_class_order)
                setting_dice.setdefault(name, []).append(
                    foreground_mean_dice([(reference, scored)], plans.labels, plans.regions_class_order))
    results = evaluate_arrays(pairs, plans.labels, regions_class_order=plans.regions_class_order)
    if use_mirroring and pairs:
        # every case has a Dice for every class (1.0 where both are empty), so the mean over cases of the
        # per-case class means is the summary's mean over classes of the per-class case means
        dice = {name: float(np.mean(scores)) for name, scores in setting_dice.items()
                if len(scores) == len(pairs)}  # single axes measured on every case (memory allowing)
        results["summary"]["mirroring"] = mirroring_measurement(results["summary"], dice)
    write_results(results["per_case"], results["summary"], output / "summary.json", output / "per_case.csv")
    label_names = plans.class_names
    log(f"validation of {configuration_name} fold {fold} ({len(pairs)} cases, original geometry, "
        f"{'with' if use_mirroring else 'without'} test-time mirroring):\n"
        + format_table(results["summary"], label_names))
    if "mirroring" in results["summary"]:
        measured = results["summary"]["mirroring"]
        per_setting = ", ".join(f"{name} {value:.4f}" for name, value in measured["dice_per_setting"].items())
        log(f"test-time mirroring: mean foreground Dice {measured['dice_with']:.4f} with, "
            f"{measured['dice_without']:.4f} without (gain {measured['gain']:+.4f}); by mirrored axes: {per_setting}")
    return results["summary"]


def mirroring_measurement(with_mirroring: dict, dice_per_setting: dict[str, float]) -> dict:
    """What test-time mirroring gained on one fold: ``{"dice_with", "dice_without", "gain", "num_cases",
    "dice_per_setting"}``; ``dice_with`` is the summary's mean foreground Dice (all axes mirrored),
    ``dice_per_setting`` the Dice-only mean foreground Dice by setting (``all``, ``none``, single axes)."""
    dice_with = with_mirroring["foreground_mean"]["dice"]
    dice_without = dice_per_setting.get("none")
    gain = None if dice_with is None or dice_without is None else dice_with - dice_without
    return {"dice_with": dice_with, "dice_without": dice_without, "gain": gain,
            "num_cases": with_mirroring["num_cases"], "dice_per_setting": dict(dice_per_setting)}
