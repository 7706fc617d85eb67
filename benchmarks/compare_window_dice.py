"""Dice and time of predicting one case with the inference window against the training patch.

Usage: python benchmarks/compare_window_dice.py MODEL_WORKDIR CONFIGURATION IMAGE LABEL

Same model, same case, no mirroring: once with the window the predictor chooses
(:func:`autoseg.planning.inference_cost.inference_window`), once forced to the training patch.
Prints the window, the seconds of prediction (network and restoring) and Dice per class.
Not part of the test suite.
"""

from __future__ import annotations

import sys
import time

from autoseg.evaluation.evaluate import evaluate_arrays
from autoseg.inference.predictor import Predictor
from autoseg.io.images import read_case_images, read_label
from autoseg.workdir import WorkDir


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    model, configuration, image_path, label_path = sys.argv[1:]
    image, geometry = read_case_images([image_path])
    reference, _ = read_label(label_path)
    plans = WorkDir(model).load_plans()
    for mode in ("window", "patch"):
        predictor = Predictor.from_work_dir(model, configuration, [0], use_mirroring=False)
        if mode == "patch":
            patch = list(predictor.configuration.patch_size)
            predictor.window_for = lambda shape, patch=patch: patch
        began = time.perf_counter()
        prediction = predictor.predict_case(image, geometry)
        segmentation = prediction.segmentation()
        seconds = time.perf_counter() - began
        summary = evaluate_arrays([("case", reference, segmentation, geometry.spacing)], plans.labels)["summary"]
        dice = {label: round(values["dice"]["mean"], 4) for label, values in summary["per_class"].items()
                if values["dice"]["mean"] is not None}
        print(f"{mode}: {predictor.window_for(prediction.probabilities.shape[1:])}, {seconds:.1f} s, Dice {dice}, "
              f"foreground mean {summary['foreground_mean']['dice']:.4f}", flush=True)


if __name__ == "__main__":
    main()
