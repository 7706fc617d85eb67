"""Training speed on a busy machine: 2 vs 1 compute threads beside one busy process.

Usage: python benchmarks/bench_busy_machine.py [--iterations 10] [--root /tmp/autoseg_bench_busy]

Task04 3d_fullres at 16 base features and batch 2 (the variant CPU budgets train), timed as
``bench_train.py`` times it ("compute": the network step on one batch; "trainer": with batches
from the loader), in this order: idle with 2 threads, then beside one busy single-threaded
process (a Python loop) with 2 and with 1 thread, then idle with 1 thread. The rule it checks:
``autoseg.model.device.threads_for`` (compute threads = free cores). Run with nothing else on
the machine. Results: benchmarks/results/busy_machine.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_budget import prepare_variant  # noqa: E402
from bench_train import bench_configuration  # noqa: E402
from measure import require_shared, save_results  # noqa: E402

from autoseg.commands.plan import run_planning  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--root", default="/tmp/autoseg_bench_busy")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    root = Path(args.root)
    run_planning(dataset, root / "base", num_workers=2, progress=False)
    work = prepare_variant(root / "base", root, "3d_fullres", "16x2")
    results = {"idle, 2 threads": bench_configuration(work, "3d_fullres", args.iterations, 0, 2)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for threads in (2, 1):
            results[f"busy, {threads} threads"] = bench_configuration(work, "3d_fullres", args.iterations, 0, threads)
    finally:
        busy.kill()
        busy.wait()
    results["idle, 1 thread"] = bench_configuration(work, "3d_fullres", args.iterations, 0, 1)
    for label, result in results.items():
        print(f"{label}: trainer {result['trainer_seconds_per_iteration']:.3f} s/it "
              f"(steps {min(result['raw']['trainer']):.3f}-{max(result['raw']['trainer']):.3f}), compute "
              f"{result['compute_seconds_per_iteration']:.3f} s/it")
    save_results("busy_machine", {"dataset": "Dataset004_Hippocampus", "variant": "3d_fullres 16x2",
                                  "results": results})


if __name__ == "__main__":
    main()
