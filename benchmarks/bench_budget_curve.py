"""Validation Dice against time budget on the large synthetic CT
(BENCHMARKS.md, "Dice against time budget: large synthetic CT").

Usage: python benchmarks/bench_budget_curve.py [--root /tmp/autoseg_bench_large_ct] [--budgets 10m 40m 20m 5m]

Needs the work folder made by ``benchmarks/bench_large_ct.py`` (20 cases of about 512x512x150,
planned and preprocessed). For each budget, ``autoseg train WORK -c auto -f 0 --time-budget B``
runs as a whole process (choice, training and validation of fold 0's 4 cases); then, for
comparison, ``-c 3d_fullres`` at full resolution with ``--fullres-budget`` (10m). Every run
starts from the same plans.json (the one ``plan`` wrote), so no run inherits another's variant,
and its results folder is moved to ROOT/curve/LABEL afterwards.

Recorded per run: the configuration trained, its iterations, wall time (choice and validation
included), peak RAM, mean Dice per class and the per-case spread (std, worst case) of the mean
foreground Dice. Written to benchmarks/results/NAME.json (``--name``, default budget_curve)
after every run; with another name the results folders go to ROOT/curve/NAME/LABEL.
Not part of the test suite; run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import run_measured, save_results  # noqa: E402

from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def per_case_foreground_dice(csv_path: Path) -> dict[str, float]:
    """Mean Dice over the foreground labels, per case (labels absent from both masks are skipped)."""
    values: dict[str, list[float]] = defaultdict(list)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["label"]) > 0 and row["dice"] != "":
                values[row["case_id"]].append(float(row["dice"]))
    return {case: statistics.fmean(dice) for case, dice in values.items()}


def run_one(work: WorkDir, curve_dir: Path, original_plans: Path, label: str, configuration: str,
            budget: str) -> dict:
    shutil.copyfile(original_plans, work.root / "plans.json")
    if (work.root / "results").exists():
        shutil.rmtree(work.root / "results")
    command = [sys.executable, "-m", "autoseg.cli", "train", str(work.root), "-c", configuration, "-f", "0",
               "--time-budget", budget]
    measured = run_measured(command, env={"TQDM_DISABLE": "1"})
    print(measured["output_tail"][-1500:], flush=True)
    trained = [path.parent.parent.name for path in (work.root / "results").glob("*/fold_0/checkpoint_final.pt")]
    entry = {"label": label, "configuration": configuration, "budget": budget, "exit_code": measured["exit_code"],
             "wall_seconds": measured["wall_seconds"], "peak_rss_bytes": measured["peak_rss_bytes"],
             "trained_as": trained}
    if trained:
        fold = work.fold_dir(trained[0], 0)
        validation = work.validation_dir(trained[0], 0)
        summary = read_json(validation / "summary.json")["summary"]
        per_case = per_case_foreground_dice(validation / "per_case.csv")
        dice = list(per_case.values())
        entry.update({
            "dice_per_class": {label: values["dice"]["mean"] for label, values in summary["per_class"].items()},
            "foreground_mean_dice": summary["foreground_mean"]["dice"],
            "per_case_foreground_dice": per_case,
            "std_over_cases": statistics.pstdev(dice) if len(dice) > 1 else 0.0,
            "worst_case": min(dice),
            "log_tail": (fold / "training_log.txt").read_text().splitlines()[-12:]
            if (fold / "training_log.txt").is_file() else []})
        entry["plans_entry"] = work.load_plans().configuration(trained[0]).to_dict()
    destination = curve_dir / label
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work.root / "results"), destination)
    shutil.copyfile(work.root / "plans.json", destination / "plans.json")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/autoseg_bench_large_ct")
    # the most informative runs first (10 min and its full-resolution comparison, then 40 min, ...)
    parser.add_argument("--budgets", nargs="+", default=["10m", "40m", "20m", "5m"])
    parser.add_argument("--fullres-budget", default="10m", help="none: no full-resolution comparison")
    parser.add_argument("--name", default="budget_curve")
    args = parser.parse_args()
    root = Path(args.root)
    work = WorkDir(root / "work")
    if not (work.root / "plans.json").is_file():
        raise SystemExit(f"{work.root}: run benchmarks/bench_large_ct.py first")
    original_plans = root / "plans_as_planned.json"
    if not original_plans.is_file():
        shutil.copyfile(work.root / "plans.json", original_plans)
    runs = []
    for budget in args.budgets:  # the full-resolution comparison right after the auto run of its budget
        runs.append((f"auto_{budget}", "auto", budget))
        if budget == args.fullres_budget:
            runs.append((f"3d_fullres_{budget}", "3d_fullres", budget))
    results = []
    for label, configuration, budget in runs:
        curve_dir = root / "curve" if args.name == "budget_curve" else root / "curve" / args.name
        entry = run_one(work, curve_dir, original_plans, label, configuration, budget)
        results.append(entry)
        print(f"{label}: trained as {entry['trained_as']}, {entry['wall_seconds'] / 60:.1f} min, foreground Dice "
              f"{entry.get('foreground_mean_dice')}, worst case {entry.get('worst_case')}", flush=True)
        save_results(args.name, {"root": str(root), "runs": results})
    shutil.copyfile(original_plans, work.root / "plans.json")


if __name__ == "__main__":
    main()
