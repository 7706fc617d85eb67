"""What sparse annotations cost: Task04 fold 0 with half of every training label's slices unannotated.

Results in BENCHMARKS.md, "Sparse labels: half of every training label's slices unannotated".

Usage: python benchmarks/bench_sparse_labels.py [--budget 30m] [--root /tmp/autoseg_bench_sparse]
                                                [--cases N (default: all 260)]

Two copies of ../shared/data/Dataset004_Hippocampus are made: ``full`` (as it is) and
``sparse``: dataset.json gains ``"ignore": 3`` and a random half of the axial slices of every
label map is set to 3 (seeded). Each is planned and 3d_fullres fold 0 trained within the
budget (``autoseg train -c 3d_fullres -f 0 --time-budget B``, whole processes). Both folds
hold the same validation cases (the splits depend on the case ids only). The sparse
model's validation predictions are then scored against the *complete* labels of those
cases with ``autoseg evaluate``, beside the fully labelled model's. Results:
benchmarks/results/sparse_labels.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import autoseg_command as autoseg  # noqa: E402
from measure import require_shared, run_step, save_results  # noqa: E402

from autoseg.io.images import read_label, write_image  # noqa: E402
from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402

NAME = "sparse_labels"


def copy_dataset(source: Path, destination: Path, cases: list[str]) -> None:
    for folder in ("imagesTr", "labelsTr"):
        (destination / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        shutil.copy(source / "imagesTr" / f"{case}_0000.nii.gz", destination / "imagesTr")
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz", destination / "labelsTr")
    content = json.loads((source / "dataset.json").read_text())
    content["numTraining"] = len(cases)
    (destination / "dataset.json").write_text(json.dumps(content, indent=2))


def unannotate_half_of_the_slices(dataset: Path, seed: int = 0) -> float:
    """Declare ``ignore`` and set a random half of every label map's slices to it; the fraction of voxels ignored."""
    content = json.loads((dataset / "dataset.json").read_text())
    ignore = max(content["labels"].values()) + 1
    content["labels"]["ignore"] = ignore
    (dataset / "dataset.json").write_text(json.dumps(content, indent=2))
    rng = np.random.default_rng(seed)
    ignored = total = 0
    for path in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        label, geometry = read_label(path)
        slices = rng.choice(label.shape[0], label.shape[0] // 2, replace=False)
        label[slices] = ignore
        write_image(label.astype(np.uint8), geometry, path)
        ignored += int(np.count_nonzero(label == ignore))
        total += label.size
    return ignored / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="30m", help="time budget of fold 0")
    parser.add_argument("--cases", type=int, default=None, help="use the first N cases (default: all)")
    parser.add_argument("--root", default="/tmp/autoseg_bench_sparse")
    args = parser.parse_args()
    source = require_shared("Dataset004_Hippocampus")
    root = Path(args.root)
    if root.exists():
        shutil.rmtree(root)
    cases = sorted(p.name[: -len(".nii.gz")] for p in (source / "labelsTr").glob("*.nii.gz"))[: args.cases]
    results: dict = {"budget": args.budget, "cases": len(cases), "runs": {}}
    for kind in ("full", "sparse"):
        dataset = root / f"Dataset004_Hippocampus_{kind}"
        copy_dataset(source, dataset, cases)
        if kind == "sparse":
            results["fraction_of_voxels_unannotated"] = unannotate_half_of_the_slices(dataset)
        work = WorkDir(root / f"work_{kind}")
        run_step(f"plan {kind}", autoseg("plan", str(dataset), "-o", str(work.root), "-c", "3d_fullres"),
                 results, NAME)
        run_step(f"train {kind}", autoseg("train", str(work.root), "-c", "3d_fullres", "-f", "0",
                                          "--time-budget", args.budget), results, NAME)
        trained = next(name for name in [*work.load_plans().variants_of("3d_fullres"), "3d_fullres"]
                       if work.checkpoint_path(name, 0, "final").is_file())
        validation = work.validation_dir(trained, 0)
        complete = root / f"complete_labels_{kind}"  # the validation cases' complete labels
        complete.mkdir()
        for path in validation.glob("*.nii.gz"):
            shutil.copy(source / "labelsTr" / path.name, complete / path.name)
        scores = root / f"scores_{kind}"
        run_step(f"evaluate {kind}", autoseg("evaluate", "-r", str(complete), "-p", str(validation), "-l",
                                             str(source / "dataset.json"), "-o", str(scores)), results, NAME)
        summary = read_json(scores / "summary.json")["summary"]
        run = read_json(work.run_record_path(trained, 0))
        results["runs"][kind] = {
            "trained_as": trained, "iterations": run.get("iterations"),
            "validation_cases": len(list(validation.glob("*.nii.gz"))),
            "dice_per_class": {label: entry["dice"] for label, entry in summary["per_class"].items()},
            "foreground_mean_dice": summary["foreground_mean"]["dice"]}
        save_results(NAME, results)
    full, sparse = (results["runs"][kind]["foreground_mean_dice"] for kind in ("full", "sparse"))
    results["dice_lost_to_sparse_labels"] = full - sparse
    save_results(NAME, results)
    print(f"mean foreground Dice on complete labels: full {full:.4f}, sparse {sparse:.4f}, cost {full - sparse:+.4f}")


if __name__ == "__main__":
    main()
