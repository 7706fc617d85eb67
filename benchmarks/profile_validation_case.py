"""Where the time of validating one large case goes: network, restoring, writing, scoring.

Usage: python benchmarks/profile_validation_case.py WORK CONFIGURATION CASE [--checkpoint PATH]
       [--no-mirroring] [--patch-window]

Runs the steps of :func:`autoseg.evaluation.cross_validation.validate_fold` for one cached
case of WORK (e.g. the large synthetic CT of ``bench_large_ct.py``) and prints seconds per
step and the peak RAM of the process. ``--patch-window`` predicts with the training patch
instead of the larger inference window, to compare both. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autoseg.evaluation.evaluate import evaluate_arrays
from autoseg.inference.export import export_segmentation, probabilities_to_segmentation, restore_original_shape
from autoseg.inference.predictor import Predictor
from autoseg.io.images import read_label
from autoseg.io.probabilities import save_probabilities
from autoseg.model.builders import build_network
from autoseg.model.checkpoints import load_checkpoint
from autoseg.preprocessing.cache import load_cached_case
from autoseg.workdir import WorkDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work")
    parser.add_argument("configuration")
    parser.add_argument("case")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint (default: random weights)")
    parser.add_argument("--no-mirroring", action="store_true")
    parser.add_argument("--patch-window", action="store_true")
    args = parser.parse_args()
    work = WorkDir(args.work)
    plans = work.load_plans()
    configuration = plans.configuration(args.configuration)
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint, map_location="cpu")["network"]
    else:
        state = build_network(configuration.network, plans.input_channels(args.configuration),
                              plans.num_classes).state_dict()
    predictor = Predictor(plans, args.configuration, [state], "cpu", use_mirroring=not args.no_mirroring)
    if args.patch_window:
        predictor.window_for = lambda shape: list(configuration.patch_size)
    times = {}

    def step(name, function):
        began = time.perf_counter()
        result = function()
        times[name] = time.perf_counter() - began
        return result

    image, _, properties = step("load cached case", lambda: load_cached_case(work.cache_folder(
        configuration.data_identifier), args.case))
    print(f"case {args.case}: preprocessed {tuple(np.shape(image))}, original {properties['geometry']['shape']}, "
          f"window {predictor.window_for(np.shape(image)[1:])}")
    probabilities = step("network (sliding window)", lambda: predictor.predict_preprocessed(np.asarray(image)))
    restored = step("restore to original grid", lambda: restore_original_shape(probabilities, properties))
    segmentation = step("argmax", lambda: probabilities_to_segmentation(restored))
    with tempfile.TemporaryDirectory() as folder:
        step("write segmentation", lambda: export_segmentation(segmentation, properties,
                                                              Path(folder) / f"x{plans.file_ending}"))
        step("write probabilities (npz)", lambda: save_probabilities(restored.cpu().numpy(),
                                                                     properties["geometry"], Path(folder) / "x"))
    reference, _ = step("read reference", lambda: read_label(Path(plans.raw_dataset) / "labelsTr"
                                                             / f"{args.case}{plans.file_ending}"))
    scores = step("metrics", lambda: evaluate_arrays([(args.case, reference, segmentation,
                                                       properties["geometry"]["spacing"])], plans.labels))
    per_class = {label: round(values["dice"]["mean"], 4) for label, values in scores["summary"]["per_class"].items()
                 if values["dice"]["mean"] is not None}
    print(f"Dice per class {per_class}, foreground mean {scores['summary']['foreground_mean']['dice']:.4f}")
    for name, seconds in times.items():
        print(f"{name:28s} {seconds:7.1f} s")
    print(f"{'total':28s} {sum(times.values()):7.1f} s; peak RAM "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; torch threads "
          f"{torch.get_num_threads()}")


if __name__ == "__main__":
    main()
