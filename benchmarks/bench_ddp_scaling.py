"""Data-parallel scaling on this machine: 1 process x N threads against N torchrun processes x 1 thread.

Results in BENCHMARKS.md, "Data-parallel training with torchrun".

Usage: python benchmarks/bench_ddp_scaling.py [--processes 2] [--epochs 3] [--iterations 20]
                                             [--root /tmp/autoseg_bench_ddp]

Task04 (../shared/data) is planned once; its planned 3d_fullres is trained on fold 0 for a
fixed length without validation, the same global batch either way (the planned batch; under
torchrun each rank samples batch // processes), first in one process with ``--processes``
threads, then with ``torchrun --nproc-per-node PROCESSES`` and one thread per rank. Reported:
the median epoch time after the first (from the training log), seconds per iteration and patches
per second: the global batch under torchrun is ``(batch // processes) * processes``, smaller than
the planned batch when it does not divide (9 -> 8 with 2 ranks), so compare patches per second.
Results: benchmarks/results/ddp_scaling.json. Not a test; run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, save_results  # noqa: E402

from autoseg.workdir import WorkDir  # noqa: E402

NAME = "ddp_scaling"


def epoch_seconds(log: Path) -> list[float]:
    return [float(match) for match in re.findall(r"epoch \d+/\d+: .*?, ([\d.]+) s, ETA", log.read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--root", default="/tmp/autoseg_bench_ddp")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    work = WorkDir(Path(args.root) / "work")
    python = sys.executable
    if not work.plans_path.is_file():
        subprocess.run([python, "-m", "autoseg.cli", "plan", str(dataset), "-o", str(work.root)], check=True)
    train = ["-m", "autoseg.cli", "train", str(work.root), "-c", "3d_fullres", "-f", "0", "--epochs",
             str(args.epochs), "--iterations-per-epoch", str(args.iterations), "--num-workers", "0",
             "--no-validation", "--overwrite"]
    results: dict = {"processes": args.processes, "epochs": args.epochs, "iterations_per_epoch": args.iterations,
                     "batch_size": work.load_plans().configuration("3d_fullres").batch_size, "runs": {}}
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    runs = {
        f"1 process x {args.processes} threads": ([python, *train],
                                                  {"AUTOSEG_NUM_THREADS": str(args.processes),
                                                   "OMP_NUM_THREADS": str(args.processes)}),
        f"{args.processes} processes x 1 thread": ([str(Path(python).with_name("torchrun")), "--standalone",
                                                    f"--nproc-per-node={args.processes}", *train],
                                                   {"AUTOSEG_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}),
    }
    batch = results["batch_size"]
    per_rank = max(1, batch // args.processes)
    global_batches = {label: batch if label.startswith("1 process") else per_rank * args.processes for label in runs}
    for label, (command, extra) in runs.items():
        fold = work.fold_dir("3d_fullres", 0)
        shutil.rmtree(fold, ignore_errors=True)
        subprocess.run(command, check=True, env={**environment, **extra})
        seconds = epoch_seconds(fold / "training_log.txt")[1:]
        median = statistics.median(seconds)
        patches_per_second = global_batches[label] * args.iterations / median
        results["runs"][label] = {"epoch_seconds": seconds, "median_epoch_seconds": median,
                                  "seconds_per_iteration": median / args.iterations,
                                  "global_batch": global_batches[label], "patches_per_second": patches_per_second}
        print(f"{label}: {median / args.iterations:.3f} s per iteration of {global_batches[label]} patches, "
              f"{patches_per_second:.3f} patches/s (median epoch {median:.1f} s)")
        save_results(NAME, results)


if __name__ == "__main__":
    main()
