"""Small and rare structures within a time budget: per-class validation Dice against the budget.

Usage:
    python benchmarks/bench_small_structures.py --dataset brain [--root DIR] [--budgets 10m 5m 20m 40m]
    python benchmarks/bench_small_structures.py --dataset ct [--root /tmp/autoseg_bench_large_ct] [--budgets 10m]

``brain``: 10 synthetic BraTS-like MR cases (:func:`autoseg.synthetic.brain_mr_spec`: 240x240x155 at
1 mm, T1ce + FLAIR, necrosis inside an enhancing rim inside edema, each sub-region 0.3-2 % of the
volume, textured tumour) are generated under ROOT/data unless there. ``ct``: the 20 synthetic
512x512 abdominal CTs of ``benchmarks/bench_large_ct.py`` (liver, kidneys, spleen and 8-24 mm liver
lesions). Then ``autoseg plan --time-budget FIRST`` (unless ROOT/work is planned; ``--replan``
plans again, which also re-prints the per-class warnings) and, per budget, one whole
``autoseg train ROOT/work -c auto -f 0 --time-budget B`` process from the same plans.json
(``benchmarks/bench_budget_curve.py``'s ``run_one``).

Recorded per run and class: mean, standard deviation over the validation cases and worst case of
Dice; plus the configuration, iterations, wall time (choice and validation included) and the
per-class outlook the budget decision logged (classes predicted to stay unlearned). Written to
benchmarks/results/NAME.json (default ``small_structures_DATASET``) after every run. Not part of
the test suite; run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_budget_curve import run_one  # noqa: E402
from measure import run_measured, save_results  # noqa: E402

from autoseg.synthetic import brain_mr_spec, generate_synthetic_dataset, large_ct_spec  # noqa: E402
from autoseg.utils.files import read_json  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402

SPECS = {"brain": lambda: brain_mr_spec(num_training=10, seed=0), "ct": lambda: large_ct_spec(num_training=20, seed=0)}
ROOTS = {"brain": "/tmp/autoseg_bench_brain", "ct": "/tmp/autoseg_bench_large_ct"}


def per_class_spread(csv_path: Path) -> dict[str, dict[str, float]]:
    """Per label name: mean, population std and worst Dice over the cases that score it."""
    values: dict[str, list[float]] = defaultdict(list)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["label"]) > 0 and row["dice"] != "":
                values[row["label_name"] or row["label"]].append(float(row["dice"]))
    return {name: {"mean": statistics.fmean(dice), "std": statistics.pstdev(dice) if len(dice) > 1 else 0.0,
                   "worst": min(dice), "cases": len(dice)} for name, dice in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SPECS), required=True)
    parser.add_argument("--root", default=None)
    parser.add_argument("--budgets", nargs="+", default=["10m", "5m", "20m", "40m"])
    parser.add_argument("--replan", action="store_true", help="plan the time budget again first")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    root = Path(args.root or ROOTS[args.dataset])
    name = args.name or f"small_structures_{args.dataset}"
    spec = SPECS[args.dataset]()
    dataset = root / "data" / spec.dataset_name
    if not (dataset / "dataset.json").is_file():
        dataset = generate_synthetic_dataset(root / "data", spec)
    work = WorkDir(root / "work")
    original_plans = root / "plans_as_planned.json"
    plan = None
    if args.replan or not (work.root / "plans.json").is_file():
        if original_plans.is_file():
            original_plans.unlink()
        plan = run_measured([sys.executable, "-m", "autoseg.cli", "plan", str(dataset), "-o", str(work.root), "-j",
                             "2", "--time-budget", args.budgets[0]], env={"TQDM_DISABLE": "1"})
        print(plan["output_tail"][-3000:], flush=True)
    if not original_plans.is_file():
        original_plans.write_bytes((work.root / "plans.json").read_bytes())
    results = {"root": str(root), "dataset": str(dataset), "plan": plan, "runs": []}
    for budget in args.budgets:
        label = f"auto_{budget}"
        entry = run_one(work, root / "curve" / name, original_plans, label, "auto", budget)
        validation = root / "curve" / name / label
        trained = entry.get("trained_as") or []
        if trained:
            entry["per_class"] = per_class_spread(validation / trained[0] / "fold_0" / "validation" / "per_case.csv")
            run_record = validation / trained[0] / "fold_0" / "run.json"
            if run_record.is_file():
                record = read_json(run_record)
                entry["class_outlooks"] = record.get("class_outlooks", [])
                entry["iterations"] = record.get("iterations")
        results["runs"].append(entry)
        print(f"{label}: trained as {trained}, {entry['wall_seconds'] / 60:.1f} min, per class "
              f"{ {k: round(v['mean'], 3) for k, v in entry.get('per_class', {}).items()} }", flush=True)
        save_results(name, results)


if __name__ == "__main__":
    main()
