"""Inference speed on CPU for the shared Hippocampus dataset: seconds per case, peak RAM.

Usage: python benchmarks/bench_predict.py [--cases 20] [--configurations 3d_fullres 2d]

Speed does not depend on the weights, so the networks of the planned size (the
nnU-Net-sized plan) get random weights, saved as checkpoints of 5 folds. Each run is
a fresh `autoseg predict` process on ``--cases`` cases copied from imagesTr (process
start-up included), with and without test-time mirroring, with 1 and 5 folds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, run_measured, save_results  # noqa: E402

from autoseg.commands.plan import run_planning  # noqa: E402
from autoseg.model.builders import build_network  # noqa: E402
from autoseg.model.checkpoints import save_checkpoint  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("--work", default="/tmp/autoseg_bench_hippocampus")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    run_planning(dataset, args.work, num_workers=2, progress=False)
    work = Path(tempfile.mkdtemp(prefix="autoseg_bench_predict_"))
    scratch = Path(tempfile.mkdtemp(prefix="autoseg_bench_predict_io_"))
    try:
        for name in ("plans.json", "dataset_fingerprint.json"):
            shutil.copy(Path(args.work) / name, work / name)
        plans = WorkDir(work).load_plans()
        for configuration in args.configurations:
            for fold in range(5):
                network = build_network(plans.configurations[configuration].network, plans.num_channels,
                                        plans.num_classes)
                save_checkpoint(WorkDir(work).checkpoint_path(configuration, fold, "final"),
                                {"network": network.state_dict(), "epoch": 0})
        inputs = scratch / "in"
        inputs.mkdir()
        for path in sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))[: args.cases]:
            shutil.copy(path, inputs / path.name)
        results = []
        for configuration in args.configurations:
            for folds in (["0"], ["0", "1", "2", "3", "4"]):
                for tta in (True, False):
                    output = scratch / f"out_{configuration}_{len(folds)}_{tta}"
                    command = [sys.executable, "-m", "autoseg.cli", "predict", "-i", str(inputs), "-o", str(output),
                               "-m", str(work), "-c", configuration, "-f", *folds]
                    if not tta:
                        command.append("--no-tta")
                    measured = run_measured(command, env={"TQDM_DISABLE": "1"})
                    if measured["exit_code"] != 0:
                        print(measured["output_tail"])
                        raise SystemExit("predict failed")
                    per_case = measured["wall_seconds"] / args.cases
                    results.append({"configuration": configuration, "folds": len(folds), "tta": tta,
                                    "cases": args.cases, "wall_seconds": measured["wall_seconds"],
                                    "seconds_per_case_including_startup": per_case,
                                    "peak_rss_bytes": measured["peak_rss_bytes"]})
                    print(f"{configuration} folds={len(folds)} tta={tta}: {measured['wall_seconds']:.1f} s for "
                          f"{args.cases} cases = {per_case:.2f} s/case (start-up included), peak RAM "
                          f"{measured['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
        save_results("predict", {"dataset": "Dataset004_Hippocampus", "results": results})
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
