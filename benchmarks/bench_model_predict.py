"""A shipped model on a CPU: seconds per case and Dice, torch vs ``--backend auto``, with and
without test-time mirroring and with predict's own choice, each a fresh ``autoseg predict -m model.zip`` process.

Usage:
  python benchmarks/bench_model_predict.py --work WORK -c CONFIG --dataset DATASET [--validation-fold K]
                                           [--cases 20] [--name model_predict] [--modes all default none]

The trained configuration is exported (``autoseg export WORK -c CONFIG``, fold(s) it has) and
used from the bundle. Cases: the first ``--cases`` validation cases of ``--validation-fold`` in
WORK's splits (so the Dice is out-of-sample), else the first ``--cases`` of DATASET/imagesTr;
their labels come from DATASET/labelsTr. Per run: wall seconds of the whole process divided by
the cases (start-up, reading and writing included: what a user waits), the median seconds per
case the predictor prints, peak RAM of the process tree, mean foreground Dice (``autoseg
evaluate``) and the voxels whose label differs from the torch run with the same mirroring.
Results: benchmarks/results/NAME.json. Not a test.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import autoseg_command as autoseg  # noqa: E402
from measure import run_measured, save_results  # noqa: E402

from autoseg.io.images import read_label  # noqa: E402
from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def pick_cases(work: WorkDir, dataset: Path, fold: int | None, count: int) -> list[str]:
    if fold is not None:
        return sorted(work.read_splits()[fold]["val"])[:count]
    return sorted(p.name[: -len(".nii.gz")] for p in (dataset / "labelsTr").glob("*.nii.gz"))[:count]


def differing_voxels(first: Path, second: Path) -> int:
    total = 0
    for path in sorted(first.glob("*.nii.gz")):
        total += int(np.count_nonzero(read_label(path)[0] != read_label(second / path.name)[0]))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("-c", "--configuration", required=True)
    parser.add_argument("--dataset", required=True, help="raw dataset with imagesTr/labelsTr of the cases")
    parser.add_argument("--validation-fold", type=int, default=None)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--name", default="model_predict")
    parser.add_argument("--modes", nargs="+", default=["all", "default", "none"],
                        help="test-time mirroring: all, none, or default (predict's own per-axis rule)")
    args = parser.parse_args()
    work, dataset = WorkDir(args.work), Path(args.dataset)
    scratch = Path(tempfile.mkdtemp(prefix="autoseg_bench_model_predict_"))
    results: dict = {"work": str(work.root), "configuration": args.configuration, "runs": {}}
    try:
        cases = pick_cases(work, dataset, args.validation_fold, args.cases)
        inputs, labels = scratch / "input", scratch / "labels"
        inputs.mkdir()
        labels.mkdir()
        for case in cases:
            for image in sorted((dataset / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz")):
                shutil.copy(image, inputs)
            shutil.copy(dataset / "labelsTr" / f"{case}.nii.gz", labels)
        results["cases"] = cases
        bundle = scratch / "model.zip"
        exported = run_measured(autoseg("export", str(work.root), "-c", args.configuration, "-o", str(bundle)))
        assert exported["exit_code"] == 0, exported["output_tail"]
        results["bundle_mib"] = bundle.stat().st_size / 2**20
        for mirroring in args.modes:
            for backend in ("torch", "auto"):
                label = f"{backend}, tta {mirroring}"
                output = scratch / f"out_{backend}_{mirroring}"
                tta = [] if mirroring == "default" else ["--tta", mirroring]
                measured = run_measured(autoseg("predict", "-m", str(bundle), "-i", str(inputs), "-o", str(output),
                                                "--backend", backend, *tta), env={"TQDM_DISABLE": "1"})
                assert measured["exit_code"] == 0, measured["output_tail"]
                median = re.search(r"([\d.]+) s per case \(median", measured["output_tail"])
                chosen = re.search(r"backend (\w+)", measured["output_tail"]) if backend == "auto" else None
                scores = scratch / f"scores_{backend}_{mirroring}"
                evaluated = run_measured(autoseg("evaluate", "-r", str(labels), "-p", str(output), "-l",
                                                 str(dataset / "dataset.json"), "-o", str(scores)))
                assert evaluated["exit_code"] == 0, evaluated["output_tail"]
                summary = read_json(scores / "summary.json")["summary"]
                run = {"wall_seconds": measured["wall_seconds"],
                       "wall_seconds_per_case": measured["wall_seconds"] / len(cases),
                       "median_seconds_per_case": float(median[1]) if median else None,
                       "peak_rss_bytes": measured["peak_rss_bytes"],
                       "mean_dice": summary["foreground_mean"]["dice"],
                       "dice_per_class": {name: entry["dice"] for name, entry in summary["per_class"].items()},
                       "backend_chosen": chosen[1] if chosen else backend,
                       "mirroring_line": next((line for line in measured["output_tail"].splitlines()
                                               if "mirroring" in line), None),
                       "output_tail": measured["output_tail"]}
                if backend != "torch":
                    run["voxels_differing_from_torch"] = differing_voxels(scratch / f"out_torch_{mirroring}", output)
                    run["voxels_total"] = int(sum(read_label(p)[0].size for p in output.glob("*.nii.gz")))
                results["runs"][label] = run
                save_results(args.name, results)
                print(f"{label}: {run['wall_seconds_per_case']:.2f} s/case wall (median "
                      f"{run['median_seconds_per_case']} s), Dice {run['mean_dice']:.4f}, peak "
                      f"{run['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
