"""Fine-tuning from a trained model against training from scratch, at equal time budgets.

Usage:
    python benchmarks/bench_fine_tuning.py --setting shift [--runs model ft:2m scratch:2m ft:5m ...]
    python benchmarks/bench_fine_tuning.py --setting merged --model TWO_LABEL_BUNDLE.zip [--runs ft:5m scratch:30m]

``shift``: the acquisition-shift setting (the synthetic CT whose slice thickness varies between
acquisitions). Acquisition A: 20 cases of 1-2.5 mm slices; acquisition B: 16 cases of 3.5-5 mm slices
(other seeds). The model is 2d trained on A (fold 0, ``--source-budget``, default 5m: the budget decides its
network, as for any user) and exported; on B,
fold 0 trains on 4 cases ("a few cases of the other scanner") and is scored on the other 12, fine-tuned
from the model (``ft:``: ``plan --plans-from``, ``train --init-from``) or from scratch (``scratch:``:
B's own plans), each for the budget given. ``model``: the model as it is on B's 12 cases (one
iteration at the warm-up's learning rate 0, then the same validation).

``merged``: transfer to other labels: Task04 (../shared) with anterior and posterior merged into one
label, fold 0 (208 training, 52 validation cases), fine-tuned from ``--model`` (a two-label Task04
bundle, e.g. ``autoseg export`` of a 30-minute 3d_fullres fold 0, whose training cases are this fold's)
or trained from scratch (``-c 3d_fullres``: the budget decides its network, as for any user).

Each run is one whole ``autoseg train ... -f 0 --time-budget B`` process. Recorded per run: per-class
mean, std and worst validation Dice, iterations, seconds per iteration, wall time, the initialisation
line; written to benchmarks/results/fine_tuning_SETTING.json after every run. Not a test; run it alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_small_structures import per_class_spread  # noqa: E402
from measure import autoseg_command, require_shared, run_measured, save_results  # noqa: E402

from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset  # noqa: E402
from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402

ROOT = Path("/tmp/autoseg_bench_fine_tuning")
#: Acquisitions of the shift setting: slice thickness ranges (mm) and seeds.
ACQUISITION_A = SyntheticDatasetSpec(num_training=20, seed=7, slice_thickness_mm=(1.0, 2.5),
                                     dataset_name="Dataset931_AcquisitionA")
ACQUISITION_B = SyntheticDatasetSpec(num_training=16, seed=8, slice_thickness_mm=(3.5, 5.0),
                                     dataset_name="Dataset932_AcquisitionB")
#: Cases of acquisition B fold 0 trains on; the others are scored.
FEW_CASES = 4


def autoseg(*arguments: str) -> dict:
    """Run one autoseg command (bars off); exit with its output when it fails."""
    measured = run_measured(autoseg_command(*arguments), env={"TQDM_DISABLE": "1"})
    if measured["exit_code"] != 0:
        print(measured["output_tail"])
        raise SystemExit(f"autoseg {' '.join(arguments[:2])} failed")
    return measured


def merged_labels_copy(source: Path, target: Path) -> Path:
    """``source`` (raw layout) with every foreground value as label 1 ("hippocampus")."""
    if (target / "dataset.json").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source / "imagesTr", staging / "imagesTr")
    (staging / "labelsTr").mkdir()
    for path in sorted((source / "labelsTr").glob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        merged = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 0).astype(np.uint8))
        merged.CopyInformation(image)
        sitk.WriteImage(merged, str(staging / "labelsTr" / path.name))
    description = json.loads((source / "dataset.json").read_text())
    description["labels"] = {"background": 0, "hippocampus": 1}
    (staging / "dataset.json").write_text(json.dumps(description, indent=2))
    staging.rename(target)
    return target


def few_case_splits(work: WorkDir, cases: list[str]) -> None:
    """Fold 0 trains on the first :data:`FEW_CASES` cases and scores the others (fold 1 the reverse, so that
    every case is validated once, as the splits file requires)."""
    few, scored = cases[:FEW_CASES], cases[FEW_CASES:]
    work.write_splits("random", [{"train": few, "val": scored}, {"train": scored, "val": few}], 0)


def shift_model(root: Path, source_budget: str) -> Path:
    """The bundle of a 2d model trained on acquisition A (trained and exported once)."""
    bundle = root / "model_a.zip"
    if bundle.is_file():
        return bundle
    data = root / "data" / ACQUISITION_A.dataset_name
    if not (data / "dataset.json").is_file():
        generate_synthetic_dataset(root / "data", ACQUISITION_A)
    work = root / "work_a"
    trained = sorted((work / "results").glob("*/fold_0/checkpoint_final.pt"))
    if not trained:
        autoseg("plan", str(data), "-o", str(work), "-j", "2")
        autoseg("train", str(work), "-c", "2d", "-f", "0", "--time-budget", source_budget, "--overwrite")
        trained = sorted((work / "results").glob("*/fold_0/checkpoint_final.pt"))
    autoseg("export", str(work), "-o", str(bundle), "-c", trained[0].parent.parent.name)  # 2d or its budget variant
    return bundle


def prepared_work(root: Path, dataset: Path, kind: str, model: Path, few_cases: bool) -> WorkDir:
    """The work folder of ``kind`` (``ft``: planned from the model; ``scratch``: its own plans), planned once."""
    work = WorkDir(root / f"work_{kind}")
    if not work.plans_path.is_file():
        extra = ["--plans-from", str(model)] if kind == "ft" else []
        autoseg("plan", str(dataset), "-o", str(work.root), "-j", "2", *extra)
        if few_cases:
            cases = sorted(work.read_cache_index(next(iter(work.load_plans().configurations.values())).data_identifier)
                           ["cases"])
            few_case_splits(work, cases)
    return work


def one_run(work: WorkDir, configuration: str, budget: str, model: Path | None, label: str, runs: Path) -> dict:
    """Train fold 0 (from ``model`` when given) within ``budget``; the validation's per-class spread and facts."""
    if (work.root / "results").exists():
        shutil.rmtree(work.root / "results")
    arguments = ["train", str(work.root), "-c", configuration, "-f", "0"]
    if model is not None:
        arguments += ["--init-from", str(model)]
    arguments += ["--epochs", "1", "--iterations-per-epoch", "1"] if budget == "0" else ["--time-budget", budget]
    measured = autoseg(*arguments)
    [fold] = [path.parent for path in (work.root / "results").glob("*/fold_0/checkpoint_final.pt")]
    record = read_json(fold / "run.json") if (fold / "run.json").is_file() else {}
    entry = {"label": label, "command": measured["command"], "wall_seconds": measured["wall_seconds"],
             "trained_as": fold.parent.name, "per_class": per_class_spread(fold / "validation" / "per_case.csv"),
             "iterations": record.get("iterations"), "training_seconds": record.get("training_seconds"),
             "initialisation": (record.get("initialisation") or {}).get("summary"),
             "schedule": ((record.get("initialisation") or {}).get("schedule") or {}).get("reason"),
             "log_tail": (fold / "training_log.txt").read_text().splitlines()[-6:]}
    if entry["iterations"] and entry["training_seconds"]:
        entry["seconds_per_iteration"] = entry["training_seconds"] / entry["iterations"]
    destination = runs / label
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work.root / "results"), destination)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=["shift", "merged"], required=True)
    parser.add_argument("--model", default=None, help="merged: the two-label Task04 bundle")
    parser.add_argument("--runs", nargs="+", default=None,
                        help="KIND:BUDGET (ft or scratch), model, or source (shift: only train the model)")
    parser.add_argument("--source-budget", default="5m", help="shift: the model's training budget on acquisition A")
    parser.add_argument("--root", default=None)
    args = parser.parse_args()
    root = Path(args.root or ROOT / args.setting)
    root.mkdir(parents=True, exist_ok=True)
    name = f"fine_tuning_{args.setting}"
    if args.setting == "shift":
        model = shift_model(root, args.source_budget)
        if args.runs == ["source"]:
            return
        dataset = root / "data" / ACQUISITION_B.dataset_name
        if not (dataset / "dataset.json").is_file():
            generate_synthetic_dataset(root / "data", ACQUISITION_B)
        configuration = "2d"
        runs = args.runs or ["model", "ft:2m", "scratch:2m", "ft:5m", "scratch:5m", "ft:10m", "scratch:10m"]
    else:
        if args.model is None:
            raise SystemExit("--setting merged needs --model (a two-label Task04 bundle)")
        model = Path(args.model).resolve()
        dataset = merged_labels_copy(require_shared("Dataset004_Hippocampus"),
                                     root / "data" / "Dataset914_HippocampusMerged")
        configuration = "3d_fullres"
        runs = args.runs or ["ft:5m", "scratch:5m", "scratch:30m"]
    path = Path(__file__).resolve().parent / "results" / f"{name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update({"setting": args.setting, "model": str(model), "dataset": str(dataset)})
    results.setdefault("runs", {})
    for run in runs:
        kind, _, budget = run.partition(":")
        fine_tuned = kind in ("ft", "model")
        work = prepared_work(root, dataset, "ft" if fine_tuned else "scratch", model, args.setting == "shift")
        label = "model_as_is" if kind == "model" else f"{kind}_{budget}"
        entry = one_run(work, configuration, "0" if kind == "model" else budget, model if fine_tuned else None,
                        label, root / "runs")
        results["runs"][label] = entry
        save_results(name, results)
        print(f"{label}: {entry['trained_as']}, {entry['iterations']} iterations, "
              f"{ {key: round(value['mean'], 4) for key, value in entry['per_class'].items()} }", flush=True)


if __name__ == "__main__":
    main()
