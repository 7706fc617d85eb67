"""What a model loses on acquisitions unlike its training data: random folds against folds by acquisition.

Results in BENCHMARKS.md, "What a model loses on acquisitions unlike its training data".

Usage: python benchmarks/bench_split_gap.py [--budget 2m] [--cases 30] [--root /tmp/autoseg_bench_split_gap]

A synthetic CT set whose slice thickness varies 1-5 mm between cases (so the slice counts
vary too) is planned; one configuration (``--configuration``, default 3d_fullres) is trained
on all 5 random folds and on all 5 folds by acquisition (``--split-by spacing``: cases
sorted by slice count and thickness, cut into contiguous groups, so each validation fold
holds the acquisitions least like its training data), each fold within ``--budget``; then
``autoseg ensemble`` scores both and states the gap. Every step is a whole ``autoseg``
process; wall time, peak RAM and the load average before each are recorded in
benchmarks/results/split_gap.json, the ensemble report in split_gap_ensemble.txt. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import RESULTS, run_step, save_results  # noqa: E402
from measure import autoseg_command as autoseg  # noqa: E402

from autoseg.evaluation.selection import format_candidates  # noqa: E402
from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402

NAME = "split_gap"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="2m", help="time budget per fold")
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--root", default="/tmp/autoseg_bench_split_gap")
    args = parser.parse_args()
    root = Path(args.root)
    spec = SyntheticDatasetSpec(num_training=args.cases, seed=7, slice_thickness_mm=(1.0, 5.0),
                                dataset_name="Dataset907_MixedSliceCT")
    raw = root / spec.dataset_name
    if not (raw / "dataset.json").is_file():
        generate_synthetic_dataset(root, spec)
    work = WorkDir(root / "work")
    results: dict = {"dataset": spec.dataset_name, "cases": args.cases, "slice_thickness_mm": spec.slice_thickness_mm,
                     "configuration": args.configuration, "budget_per_fold": args.budget}
    if not work.plans_path.is_file():
        run_step("plan", autoseg("plan", str(raw), "-o", str(work.root)), results, NAME)
    for mode in ("random", "spacing"):
        run_step(f"train {args.configuration} -f all --split-by {mode}",
                 autoseg("train", str(work.root), "-c", args.configuration, "-f", "all", "--split-by", mode,
                         "--time-budget", args.budget), results, NAME)
    run_step("ensemble", autoseg("ensemble", str(work.root)), results, NAME)
    plan = work.read_inference_plan()
    (RESULTS / f"{NAME}_ensemble.txt").write_text(format_candidates(plan) + "\n")  # what ensemble printed
    results["acquisition_split"] = plan["acquisition_split"]
    results["random_candidates"] = [{key: value for key, value in candidate.items() if key != "per_case_dice"}
                                    for candidate in plan["candidates"]]
    save_results(NAME, results)


if __name__ == "__main__":
    main()
