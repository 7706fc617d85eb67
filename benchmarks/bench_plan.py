"""Fingerprint + planning + preprocessing throughput on the shared Hippocampus dataset.

Usage: python benchmarks/bench_plan.py [--workers 2] [--repeats 3]
Each repeat starts from an empty work folder (cold: nothing reused).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, run_measured, save_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    num_cases = len(list((dataset / "labelsTr").glob("*.nii.gz")))
    runs = []
    for repeat in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="autoseg_bench_plan_"))
        try:
            result = run_measured([sys.executable, "-m", "autoseg.cli", "plan", str(dataset), "-o", str(work),
                                   "-j", str(args.workers)], env={"TQDM_DISABLE": "1"})
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if result["exit_code"] != 0:
            print(result["output_tail"])
            raise SystemExit("autoseg plan failed")
        runs.append(result)
        print(f"run {repeat + 1}: {result['wall_seconds']:.1f} s wall, "
              f"peak RAM {result['peak_rss_bytes'] / 2**30:.2f} GiB")
    wall = statistics.median(run["wall_seconds"] for run in runs)
    peak = max(run["peak_rss_bytes"] for run in runs)
    print(f"median {wall:.1f} s for {num_cases} cases = {num_cases / wall:.1f} cases/s "
          f"(fingerprint + plans + preprocessing of 2d and 3d_fullres, {args.workers} workers, "
          f"process start-up included); peak RAM {peak / 2**30:.2f} GiB")
    save_results("plan", {"dataset": "Dataset004_Hippocampus", "num_cases": num_cases, "workers": args.workers,
                          "median_wall_seconds": wall, "cases_per_second": num_cases / wall,
                          "peak_rss_bytes": peak, "runs": runs})


if __name__ == "__main__":
    main()
