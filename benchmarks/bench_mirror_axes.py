"""What each test-time mirror axis buys: validation Dice and network time per mirroring setting.

Results in BENCHMARKS.md, "What each test-time mirror axis buys".

Usage: python benchmarks/bench_mirror_axes.py WORKDIR [--configurations 2d 3d_fullres] [--folds 0]

For trained folds of a work folder (e.g. the Task04 cross-validation of bench_task04_cv.py),
every validation case is predicted from the preprocessed cache with every subset of the axes
mirrored in training (3D: none, z, y, x, zy, zx, yx, zyx; 2D: none, y, x, yx), restored to
its original grid and scored against its reference; per setting: mean foreground Dice over
the cases, the loss against mirroring every axis, and the network seconds per case. The
cheapest setting whose mean Dice is within 0.002 of the best is named (the rule
for the CPU default). Results: benchmarks/results/mirror_axes.json. Not a test.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import save_results  # noqa: E402

from autoseg.evaluation.evaluate import evaluate_arrays  # noqa: E402
from autoseg.inference.export import restore_segmentation  # noqa: E402
from autoseg.inference.predictor import ARRAY_AXES, Predictor  # noqa: E402
from autoseg.io.images import read_label  # noqa: E402
from autoseg.model.checkpoints import load_checkpoint  # noqa: E402
from autoseg.preprocessing.cache import load_cached_case  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402

NAME = "mirror_axes"
#: A setting may lose at most this much mean Dice against the best to be the cheaper default.
TOLERATED_LOSS = 0.002


def settings(dimension: int) -> list[str]:
    """Every subset of the array axes of a configuration, by number of axes ("" = no mirroring)."""
    axes = ARRAY_AXES[3 - dimension:]
    return ["".join(subset) for size in range(len(axes) + 1) for subset in itertools.combinations(axes, size)]


def measure(work: WorkDir, configuration: str, fold: int) -> dict:
    plans = work.load_plans()
    trained_as = next(name for name in [configuration, *plans.variants_of(configuration)]
                      if work.trained_folds(name) and fold in work.trained_folds(name))
    config = plans.configuration(trained_as)
    state = load_checkpoint(work.checkpoint_path(trained_as, fold, "final"))["network"]
    predictor = Predictor(plans, trained_as, [state])
    cases = work.read_splits("random")[fold]["val"]
    labels_dir = Path(plans.raw_dataset) / "labelsTr"
    cache = work.cache_folder(config.data_identifier)
    pairs: dict[str, list] = {setting: [] for setting in settings(config.dimension)}
    seconds: dict[str, float] = {setting: 0.0 for setting in pairs}
    for case in cases:
        image, _, properties = load_cached_case(cache, case)
        reference, _ = read_label(labels_dir / f"{case}{plans.file_ending}")
        spacing = properties["geometry"]["spacing"]
        for setting in pairs:
            began = time.perf_counter()
            probabilities = predictor.predict_preprocessed(np.asarray(image), use_mirroring=setting or False)
            seconds[setting] += time.perf_counter() - began
            segmentation = restore_segmentation([(probabilities, properties)],
                                                regions_class_order=plans.regions_class_order)
            pairs[setting].append((case, reference, segmentation, spacing))
    rows = {}
    for setting, case_pairs in pairs.items():
        summary = evaluate_arrays(case_pairs, plans.labels, regions_class_order=plans.regions_class_order)["summary"]
        rows[setting or "none"] = {"mean_dice": summary["foreground_mean"]["dice"],
                                   "seconds_per_case": seconds[setting] / len(cases)}
    best = max(row["mean_dice"] for row in rows.values())
    full = rows[ARRAY_AXES[3 - config.dimension:]]["mean_dice"]
    for row in rows.values():
        row["loss_vs_all_axes"] = full - row["mean_dice"]
    cheapest = min((name for name, row in rows.items() if row["mean_dice"] >= best - TOLERATED_LOSS),
                   key=lambda name: (rows[name]["seconds_per_case"], name))
    return {"configuration": configuration, "trained_as": trained_as, "fold": fold, "cases": len(cases),
            "settings": rows, "best_mean_dice": best, "cheapest_within_tolerance": cheapest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir")
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    work = WorkDir(args.work_dir)
    results = {"work_dir": str(work.root), "tolerated_loss": TOLERATED_LOSS, "measurements": []}
    for configuration in args.configurations:
        for fold in args.folds:
            measured = measure(work, configuration, fold)
            results["measurements"].append(measured)
            print(f"{configuration} fold {fold} ({measured['cases']} cases): " + ", ".join(
                f"{name} {row['mean_dice']:.4f} ({row['seconds_per_case']:.2f} s)"
                for name, row in measured["settings"].items())
                + f"; cheapest within {TOLERATED_LOSS}: {measured['cheapest_within_tolerance']}")
            save_results(NAME, results)


if __name__ == "__main__":
    main()
