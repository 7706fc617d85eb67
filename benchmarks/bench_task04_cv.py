"""The whole promise on Task04: 2d and 3d_fullres, every fold, ensemble selection, prediction.

Results in BENCHMARKS.md, "Task04: five folds, model selection and stability".

Usage: python benchmarks/bench_task04_cv.py [--budget 10m] [--root /tmp/autoseg_bench_cv]
                                            [--configurations 2d 3d_fullres]

As a user would, each step a whole ``autoseg`` process: ``plan`` on ../shared/data/
Dataset004_Hippocampus, then ``train WORK -c C -f K --time-budget B`` for every
configuration and fold (about 100 CPU-minutes at 10 minutes per fold), ``ensemble WORK``
(the cross-validation table over all 260 cases, stability, postprocessing,
ensemble_report.png) and ``predict`` of imagesTs with what ensemble chose.

Interrupted runs continue: a fold whose validation summary exists is not trained again,
and an interrupted fold resumes (``--resume``). Per step: wall time, peak RAM, the 1-minute
load average before it started (other work on the 2 cores slows training 2-4x; say so
when reporting). Results: benchmarks/results/task04_cv.json (rewritten after every step)
and the ensemble report in benchmarks/results/task04_cv_ensemble.txt. Not a test.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import RESULTS, require_shared, run_step, save_results  # noqa: E402
from measure import autoseg_command as autoseg  # noqa: E402

from autoseg.evaluation.selection import format_candidates  # noqa: E402
from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import NUM_FOLDS, WorkDir  # noqa: E402

NAME = "task04_cv"


def trained_fold(work: WorkDir, configuration: str, fold: int) -> dict | None:
    """What a finished fold trained as and its validation Dice (None when it is not finished)."""
    plans = work.load_plans()
    for name in [configuration, *plans.variants_of(configuration)]:
        summary = work.validation_dir(name, fold) / "summary.json"
        if summary.is_file():
            record = work.read_run_record(name, fold) if work.run_record_path(name, fold).is_file() else {}
            return {"configuration": configuration, "fold": fold, "trained_as": name,
                    "iterations": record.get("iterations"),
                    "foreground_mean_dice": read_json(summary)["summary"]["foreground_mean"]["dice"]}
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="10m", help="time budget per fold")
    parser.add_argument("--root", default="/tmp/autoseg_bench_cv")
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    root = Path(args.root)
    work = WorkDir(root / "work")
    results: dict = {"dataset": dataset.name, "budget_per_fold": args.budget, "steps": [], "folds": []}
    if not work.plans_path.is_file():
        run_step("plan", autoseg("plan", str(dataset), "-o", str(work.root)), results, NAME)
    for configuration in args.configurations:
        for fold in range(NUM_FOLDS):
            if trained_fold(work, configuration, fold) is None:
                resume = ["--resume"] if any(work.has_checkpoints(name) for name in
                                             [configuration, *work.load_plans().variants_of(configuration)]) else []
                run_step(f"train {configuration} fold {fold}",
                         autoseg("train", str(work.root), "-c", configuration, "-f", str(fold),
                                 "--time-budget", args.budget, *resume), results, NAME)
            results["folds"].append(trained_fold(work, configuration, fold))
            save_results(NAME, results)
    run_step("ensemble", autoseg("ensemble", str(work.root)), results, NAME)
    plan = work.read_inference_plan()
    (RESULTS / "task04_cv_ensemble.txt").write_text(format_candidates(plan) + "\n")  # what ensemble printed
    shutil.copyfile(work.ensemble_report_path, RESULTS / "task04_cv_ensemble_report.png")
    results["ensemble"] = {key: plan[key] for key in ("configurations", "postprocessing", "cross_validation_dice",
                                                      "stability", "acquisition_split")}
    results["ensemble"]["candidates"] = [{key: value for key, value in candidate.items() if key != "per_case_dice"}
                                         for candidate in plan["candidates"]]
    output = root / "predictions_imagesTs"
    if output.exists():
        shutil.rmtree(output)
    run_step("predict imagesTs", autoseg("predict", "-i", str(dataset / "imagesTs"), "-o", str(output),
                                         "-m", str(work.root)), results, NAME)
    results["predicted_cases"] = sorted(path.name for path in output.glob("*.nii.gz"))
    save_results(NAME, results)


if __name__ == "__main__":
    main()
