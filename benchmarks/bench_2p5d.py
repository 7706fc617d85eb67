"""2.5d against 2d and 3d_fullres at equal time budgets: per-class Dice with spread, speed, end slices.

Usage:
    python benchmarks/bench_2p5d.py --dataset task04 --budget 30m [--runs 2.5d 2d 3d_fullres]
    python benchmarks/bench_2p5d.py --dataset brain --budget 10m
    python benchmarks/bench_2p5d.py --dataset ct --budget 10m
    python benchmarks/bench_2p5d.py --dataset task04 --budget 10m --runs 2.5d 2.5d:zero --name ends

``task04``: the shared Dataset004_Hippocampus (fold 0: 208 training, 52 validation cases);
``task04_thick``: the same cases with every 4th slice of array axis 0 kept (1 mm -> 4 mm slices, about
9 slices per case), written under ROOT/data: strongly anisotropic data of real anatomy. ``brain``
and ``ct``: the synthetic sets of ``benchmarks/bench_small_structures.py`` (generated under ROOT/data
unless there). ROOT/work is planned with ``autoseg plan`` unless planned with a 2.5d configuration.

Each run is one whole ``autoseg train ROOT/work -c CONFIGURATION -f 0 --time-budget B`` process from the
same plans.json (the budget decides the network each trains as, as for any user), with
``CONFIGURATION:zero`` a 2.5d run whose plans say ``neighbour_slice_padding: zero``. Recorded per run:
per-class mean, standard deviation and worst case of validation Dice, iterations, seconds per
iteration, training and validation seconds (per case), wall time, and the Dice of the first and last
K slices of each validation case (K = the 2.5d neighbours; where a 2.5d input holds padding) next to
the interior slices. Written to benchmarks/results/NAME.json after every run. Not part of the test
suite; run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_budget_curve import run_one  # noqa: E402
from bench_small_structures import SPECS, per_class_spread  # noqa: E402
from measure import machine_info, require_shared, run_measured, save_results  # noqa: E402

from autoseg.synthetic import generate_synthetic_dataset  # noqa: E402
from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402

ROOTS = {"task04": "/tmp/autoseg_bench_2p5d_task04", "task04_thick": "/tmp/autoseg_bench_2p5d_task04_thick",
         "brain": "/tmp/autoseg_bench_brain", "ct": "/tmp/autoseg_bench_large_ct"}
#: task04_thick keeps every this-many-th slice.
THICK_SLICE_STEP = 4


def thick_slice_copy(source: Path, target: Path, step: int = THICK_SLICE_STEP) -> Path:
    """``source`` (nnU-Net raw layout) with every ``step``-th slice of array axis 0 kept, spacing x ``step``."""
    if (target / "dataset.json").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    for folder in ("imagesTr", "labelsTr"):
        (staging / folder).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / folder).glob("*.nii.gz")):
            image = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(image)[::step]
            thick = sitk.GetImageFromArray(array)
            spacing = list(image.GetSpacing())
            spacing[2] *= step  # SimpleITK (x, y, z): array axis 0 is z
            thick.SetSpacing(spacing)
            thick.SetOrigin(image.GetOrigin())
            thick.SetDirection(image.GetDirection())
            sitk.WriteImage(thick, str(staging / folder / path.name))
    (staging / "dataset.json").write_bytes((source / "dataset.json").read_bytes())
    staging.rename(target)
    return target


def dataset_folder(name: str, root: Path) -> Path:
    if name == "task04":
        return require_shared("Dataset004_Hippocampus")
    if name == "task04_thick":
        return thick_slice_copy(require_shared("Dataset004_Hippocampus"), root / "data" / "Dataset904_HippocampusThick")
    spec = SPECS[name]()
    dataset = root / "data" / spec.dataset_name
    return dataset if (dataset / "dataset.json").is_file() else generate_synthetic_dataset(root / "data", spec)


def end_slice_dice(validation: Path, labels: Path, ends: int) -> dict[str, float]:
    """Foreground Dice (every foreground value as one) over the first and last ``ends`` slices (array
    axis 0) of each validation case, and over the others; means over cases."""
    end, interior = [], []
    for prediction_path in sorted(validation.glob("*.nii.gz")):
        reference_path = labels / prediction_path.name
        if not reference_path.is_file():
            continue
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_path))) > 0
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_path))) > 0
        at_ends = np.zeros(reference.shape[0], bool)
        at_ends[:ends] = at_ends[-ends:] = True
        for selection, into in ((at_ends, end), (~at_ends, interior)):
            p, r = prediction[selection], reference[selection]
            total = p.sum() + r.sum()
            if total:
                into.append(2.0 * np.logical_and(p, r).sum() / total)
    return {"end_slices_dice": statistics.fmean(end) if end else float("nan"), "end_cases": len(end),
            "interior_slices_dice": statistics.fmean(interior) if interior else float("nan")}


def prepared_plans(work: WorkDir, original: Path, padding: str | None) -> Path:
    """plans.json as planned, or with every 2.5d configuration's end padding changed."""
    if padding is None:
        return original
    plans = json.loads(original.read_text())
    for configuration in plans["configurations"].values():
        if configuration.get("neighbour_slices"):
            configuration["neighbour_slice_padding"] = padding
    changed = original.with_name(f"plans_{padding}.json")
    changed.write_text(json.dumps(plans, indent=2))
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(ROOTS), required=True)
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--runs", nargs="+", default=["2.5d", "2d", "3d_fullres"])
    parser.add_argument("--root", default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    root = Path(args.root or ROOTS[args.dataset])
    name = args.name or f"2p5d_{args.dataset}_{args.budget}"
    dataset = dataset_folder(args.dataset, root)
    work = WorkDir(root / "work")
    original = root / "plans_as_planned.json"
    plan = None
    planned = (work.root / "plans.json").is_file() and "2.5d" in work.load_plans().configurations
    if not planned:
        replan = ["--replan"] if (work.root / "plans.json").is_file() else []  # planned before 2.5d existed
        plan = run_measured([sys.executable, "-m", "autoseg.cli", "plan", str(dataset), "-o", str(work.root), "-j",
                             "2", *replan], env={"TQDM_DISABLE": "1"})
        print(plan["output_tail"][-2000:], flush=True)
        original.write_bytes((work.root / "plans.json").read_bytes())
    if not original.is_file():
        original.write_bytes((work.root / "plans.json").read_bytes())
    neighbours = json.loads(original.read_text())["configurations"]["2.5d"]["neighbour_slices"]
    results = {"machine": machine_info(), "dataset": str(dataset), "budget": args.budget, "plan": plan,
               "neighbour_slices": neighbours, "runs": []}
    for run in args.runs:
        configuration, _, padding = run.partition(":")
        label = f"{run.replace(':', '_')}_{args.budget}"
        entry = run_one(work, root / "curve" / name, prepared_plans(work, original, padding or None), label,
                        configuration, args.budget)
        trained = entry.get("trained_as") or []
        if trained:
            fold = root / "curve" / name / label / trained[0] / "fold_0"
            entry["per_class"] = per_class_spread(fold / "validation" / "per_case.csv")
            record = read_json(fold / "run.json")
            cases = len(list((fold / "validation").glob("*.nii.gz")))
            entry.update({key: record.get(key) for key in ("iterations", "training_seconds", "validation_seconds",
                                                           "validation_mirroring", "configuration")})
            entry["seconds_per_iteration"] = record["training_seconds"] / max(record["iterations"], 1)
            entry["validation_seconds_per_case"] = record["validation_seconds"] / max(cases, 1)
            entry["ends"] = end_slice_dice(fold / "validation", dataset / "labelsTr", neighbours)
        results["runs"].append(entry)
        print(f"{label}: {trained}, {entry['wall_seconds'] / 60:.1f} min, "
              f"{ {k: round(v['mean'], 3) for k, v in entry.get('per_class', {}).items()} }, "
              f"ends {entry.get('ends')}", flush=True)
        save_results(name, results)


if __name__ == "__main__":
    main()
