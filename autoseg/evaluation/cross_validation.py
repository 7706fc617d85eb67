"""Scoring a trained fold: its validation cases predicted in their own geometry and evaluated.

After training, every validation case of the fold is predicted from the preprocessed
cache at full resolution, mapped back to its original geometry, written as a label
map and as class probabilities (``autoseg ensemble`` selects models on these), and
scored against the raw reference label. Outputs go to the fold's ``validation/``
folder (see :mod:`autoseg.workdir`): ``{case}{ending}``, ``{case}.npz`` + ``.json``,
``summary.json`` and ``per_case.csv``.

With test-time mirroring, every case is also predicted once without it (one network pass
more than the 4 or 8 mirrored ones) and scored, so ``summary.json`` records what mirroring
gained on this fold (``summary["mirroring"]``, see :func:`mirroring_measurement`);
``autoseg predict`` mirrors only where the gain pays for its cost
(:mod:`autoseg.inference.mirroring`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from autoseg.evaluation.evaluate import evaluate_arrays
from autoseg.evaluation.summary import format_table, write_results
from autoseg.inference.export import (
    export_segmentation,
    probabilities_to_segmentation,
    restore_original_shape,
    restore_segmentation,
)
from autoseg.inference.predictor import Predictor
from autoseg.io.images import read_label
from autoseg.io.probabilities import save_probabilities
from autoseg.preprocessing.cache import load_cached_case
from autoseg.preprocessing.previous_stage import previous_stage_one_hot
from autoseg.workdir import WorkDir


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
    pairs, unmirrored_pairs = [], []
    for case_id in tqdm(val_cases, desc="validation cases", unit="case", disable=not progress):
        image, _, properties = load_cached_case(cache, case_id)
        network_input = np.asarray(image)
        if previous_folder is not None:
            previous = np.load(previous_folder / f"{case_id}.npy")
            network_input = np.concatenate([network_input, previous_stage_one_hot(previous, plans.foreground_labels)])
        probabilities = restore_original_shape(predictor.predict_preprocessed(network_input), properties,
                                               plans.is_region_based)
        segmentation = probabilities_to_segmentation(probabilities, plans.regions_class_order)
        export_segmentation(segmentation, properties, output / f"{case_id}{ending}")
        save_probabilities(probabilities.cpu().numpy(), properties["geometry"], output / case_id,
                           plans.regions_class_order)
        reference, _ = read_label(labels_folder / f"{case_id}{ending}")
        spacing = properties["geometry"]["spacing"]
        pairs.append((case_id, reference, segmentation, spacing))
        if use_mirroring:
            unmirrored = predictor.predict_preprocessed(network_input, use_mirroring=False)
            unmirrored_pairs.append((case_id, reference, restore_segmentation(
                [(unmirrored, properties)], regions_class_order=plans.regions_class_order), spacing))
    results = evaluate_arrays(pairs, plans.labels, regions_class_order=plans.regions_class_order)
    if unmirrored_pairs:
        without = evaluate_arrays(unmirrored_pairs, plans.labels,
                                  regions_class_order=plans.regions_class_order)["summary"]
        results["summary"]["mirroring"] = mirroring_measurement(results["summary"], without)
    write_results(results["per_case"], results["summary"], output / "summary.json", output / "per_case.csv")
    label_names = plans.class_names
    log(f"validation of {configuration_name} fold {fold} ({len(pairs)} cases, original geometry, "
        f"{'with' if use_mirroring else 'without'} test-time mirroring):\n"
        + format_table(results["summary"], label_names))
    if unmirrored_pairs:
        measured = results["summary"]["mirroring"]
        log(f"test-time mirroring: mean foreground Dice {measured['dice_with']:.4f} with, "
            f"{measured['dice_without']:.4f} without (gain {measured['gain']:+.4f})")
    return results["summary"]


def mirroring_measurement(with_mirroring: dict, without_mirroring: dict) -> dict:
    """What test-time mirroring gained on one fold: mean foreground Dice with and without it, and the
    difference (``{"dice_with", "dice_without", "gain", "num_cases"}``)."""
    dice_with = with_mirroring["foreground_mean"]["dice"]
    dice_without = without_mirroring["foreground_mean"]["dice"]
    gain = None if dice_with is None or dice_without is None else dice_with - dice_without
    return {"dice_with": dice_with, "dice_without": dice_without, "gain": gain,
            "num_cases": with_mirroring["num_cases"]}
