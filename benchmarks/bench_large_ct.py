"""Large CT on a CPU: what a time budget chooses, and how long predicting a 512x512x300 CT takes.

Usage: python benchmarks/bench_large_ct.py [--cases 20] [--budget 10m] [--root /tmp/autoseg_bench_large_ct]

1. Generates ``--cases`` training cases of ``autoseg.synthetic.large_ct_spec`` (abdomen CT,
   512x512 in-plane at 0.7-0.9 mm, 100-300 slices of 1-5 mm) and one test case of 512x512x300.
2. ``autoseg plan --time-budget``: plans, preprocesses, measures every configuration and
   records what a training of that budget per fold would be (printed).
3. Predicts the test case with the chosen configuration's network (random weights: speed and
   memory do not depend on them; or ``--checkpoint``), with and without test-time mirroring,
   as whole ``autoseg predict`` processes: wall time (reading and writing included) and peak RAM.
   The model is put in its own folder (ROOT/model), so the work folder is left alone.
   ``--no-plan`` reuses the work folder as planned; ``--configuration`` predicts with another
   configuration recorded in its plans.json (e.g. the one a 30-minute budget trains).

The target: under 60 s and 4 GiB for this prediction on 2 cores
(BENCHMARKS.md, "One large CT: seconds per case and peak memory"). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import run_measured, save_results  # noqa: E402

from autoseg.model.builders import build_network  # noqa: E402
from autoseg.model.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from autoseg.synthetic import generate_synthetic_dataset, large_ct_spec  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--root", default="/tmp/autoseg_bench_large_ct")
    parser.add_argument("--no-plan", action="store_true", help="use the work folder as planned before")
    parser.add_argument("--configuration", default=None, help="default: the budget plan's choice")
    parser.add_argument("--checkpoint", default=None, help="trained weights (default: random)")
    parser.add_argument("--skip-tta", action="store_true", help="predict without test-time mirroring only")
    args = parser.parse_args()
    root = Path(args.root)
    spec = large_ct_spec(num_training=args.cases, num_test=0, seed=0)
    dataset = root / "data" / spec.dataset_name
    if not (dataset / "dataset.json").is_file():
        dataset = generate_synthetic_dataset(root / "data", spec)
    test_spec = large_ct_spec(num_training=1, num_test=0, seed=99, num_slices_range=(300, 300),
                              slice_thickness_mm=(1.0, 1.0), field_of_view_z_mm=(300.0, 300.0),
                              dataset_name="Dataset911_SyntheticAbdomenCTTest")
    test_dataset = root / "data" / test_spec.dataset_name
    if not (test_dataset / "dataset.json").is_file():
        test_dataset = generate_synthetic_dataset(root / "data", test_spec)
    inputs = test_dataset / "imagesTr"
    work = root / "work"
    plan = {"wall_seconds": None, "peak_rss_bytes": None}
    if not args.no_plan:
        plan = run_measured([sys.executable, "-m", "autoseg.cli", "plan", str(dataset), "-o", str(work), "-j", "2",
                             "--time-budget", args.budget], env={"TQDM_DISABLE": "1"})
        print(plan["output_tail"])
        if plan["exit_code"] != 0:
            raise SystemExit("plan failed")
    plans = WorkDir(work).load_plans()
    record = plans.budget_plan
    chosen = args.configuration or record["configurations"][record["chosen"]]["trained_as"]
    configuration = plans.configuration(chosen)
    model = WorkDir(root / "model")
    model.save_plans(plans)
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint, map_location="cpu")["network"]
    else:
        state = build_network(configuration.network, plans.input_channels(chosen), plans.num_classes).state_dict()
    save_checkpoint(model.checkpoint_path(chosen, 0, "final"), {"network": state, "epoch": 0})
    predictions = []
    for tta in (False,) if args.skip_tta else (False, True):
        command = [sys.executable, "-m", "autoseg.cli", "predict", "-i", str(inputs), "-o",
                   str(root / f"out_tta{int(tta)}"), "-m", str(model.root), "-c", chosen, "-f", "0", "--overwrite",
                   "--tta" if tta else "--no-tta"]
        measured = run_measured(command, env={"TQDM_DISABLE": "1"})
        print(measured["output_tail"][-600:])
        predictions.append({"tta": tta, "wall_seconds": measured["wall_seconds"],
                            "peak_rss_bytes": measured["peak_rss_bytes"], "exit_code": measured["exit_code"]})
        print(f"predict 512x512x300 with {chosen}, tta={tta}: {measured['wall_seconds']:.1f} s, peak RAM "
              f"{measured['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    save_results("large_ct", {"dataset": spec.dataset_name, "cases": args.cases, "budget": args.budget,
                              "configuration": chosen, "checkpoint": args.checkpoint,
                              "plan_wall_seconds": plan["wall_seconds"], "plan_peak_rss_bytes": plan["peak_rss_bytes"],
                              "budget_plan": record, "predict_512x512x300": predictions})


if __name__ == "__main__":
    main()
