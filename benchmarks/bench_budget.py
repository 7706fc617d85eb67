"""Which network size gives the best Dice for a fixed CPU training budget? (Task04 Hippocampus, fold 0)

Usage: python benchmarks/bench_budget.py --budget 8m --variants 32x2 16x9 16x2 8x2 [--configuration 3d_fullres]
       python benchmarks/bench_budget.py --budget 30m --variants planned auto --name budget_30m

Each variant ``FxB`` trains the configuration with ``F`` base features (doubling per
stage, same cap ratio) and batch size ``B`` for the budget on this machine
(``--keep-network``: no automatic scaling), then predicts the fold-0 validation
cases; ``planned`` is the planner's network, ``auto`` lets autoseg scale it to the
budget. Work folders share the preprocessed cache of a planned base folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, run_measured, save_results  # noqa: E402

from autoseg.commands.plan import run_planning  # noqa: E402
from autoseg.planning.variants import scaled_configuration  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def prepare_variant(base: Path, root: Path, configuration: str, variant: str) -> Path:
    work = root / variant
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("plans.json", "dataset_fingerprint.json", "splits.json"):
        if (base / name).is_file():
            shutil.copy(base / name, work / name)
    (work / "preprocessed").symlink_to(base / "preprocessed")
    if variant not in ("planned", "auto"):
        features, batch = (int(v) for v in variant.split("x"))
        plans = WorkDir(work).load_plans()
        plans.configurations[configuration] = scaled_configuration(plans.configurations[configuration], features, batch)
        WorkDir(work).save_plans(plans)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="8m")
    parser.add_argument("--variants", nargs="+", default=["32x2", "16x9", "16x2", "8x2"])
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--root", default="/tmp/autoseg_bench_budget")
    parser.add_argument("--name", default="budget")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    root = Path(args.root)
    base = root / "base"
    run_planning(dataset, base, num_workers=2, progress=False)
    results = []
    for variant in args.variants:
        work = prepare_variant(base, root, args.configuration, variant)
        command = [sys.executable, "-m", "autoseg.cli", "train", str(work), "-c", args.configuration, "-f", "0",
                   "--time-budget", args.budget]
        if variant != "auto":
            command.append("--keep-network")
        started = time.time()
        measured = run_measured(command, env={"TQDM_DISABLE": "1"})
        plans = WorkDir(work).load_plans()  # `auto` may have trained a budget variant under its own name
        trained = next(name for name in [args.configuration] + plans.variants_of(args.configuration)
                       if WorkDir(work).trained_folds(name))
        fold = WorkDir(work).fold_dir(trained, 0)
        if measured["exit_code"] != 0:
            print(measured["output_tail"])
            raise SystemExit(f"variant {variant} failed")
        summary = json.loads((fold / "validation" / "summary.json").read_text())["summary"]
        run = json.loads((fold / "run.json").read_text())
        per_class = {str(k): {s: v["dice"][s] for s in ("mean", "std", "worst")}
                     for k, v in summary["per_class"].items()}
        result = {"variant": variant, "budget": args.budget, "wall_seconds": time.time() - started,
                  "peak_rss_bytes": measured["peak_rss_bytes"], "run": run,
                  "mean_dice": summary["foreground_mean"]["dice"], "per_class_dice": per_class}
        results.append(result)
        print(f"{variant}: {run['epochs'] * run['iterations_per_epoch']} iterations at "
              f"{run['measured_speed']['seconds_per_iteration']:.3f} s, mean Dice {result['mean_dice']:.4f} "
              f"{per_class}", flush=True)
        save_results(args.name, {"dataset": "Dataset004_Hippocampus", "configuration": args.configuration,
                                 "fold": 0, "results": results})


if __name__ == "__main__":
    main()
