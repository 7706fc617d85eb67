"""Training throughput on CPU for the shared Hippocampus dataset (seconds per iteration, peak RAM).

Usage: python benchmarks/bench_train.py [--configurations 2d 3d_fullres] [--iterations 6] [--workers 1]
         [--threads 2] [--work /tmp/autoseg_bench_hippocampus]

Plans the dataset (reused when the work folder exists), then for each configuration
times ``--iterations`` training steps after two warm-up steps, twice:
- "compute": the network step alone on one pre-fetched batch (forward, loss, backward, SGD);
- "trainer": the full step as the trainer runs it, batches from the augmentation loader.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, save_results  # noqa: E402

from autoseg.commands.plan import run_planning  # noqa: E402
from autoseg.training.dataloader import make_training_batches  # noqa: E402
from autoseg.training.trainer import Trainer, TrainingOptions  # noqa: E402


def peak_rss_bytes() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return own + children


def time_steps(step, batches, iterations: int) -> list[float]:
    for _ in range(2):
        step(next(batches))
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step(next(batches))
        times.append(time.perf_counter() - start)
    return times


def bench_configuration(work: Path, name: str, iterations: int, workers: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    trainer = Trainer(work, name, 0, TrainingOptions(num_workers=workers, progress=False))
    torch.set_num_threads(threads)
    configuration, config = trainer.configuration, trainer.config
    batches = make_training_batches(trainer.cache, trainer.train_cases, configuration, config,
                                    trainer.plans.num_classes, trainer.plans.foreground_labels,
                                    num_workers=workers, seed=0)
    try:
        trainer.network.train()
        fixed = next(batches)
        compute = time_steps(trainer.train_step, iter(lambda: fixed, None), iterations)
        loading = []
        for _ in range(3):
            start = time.perf_counter()
            next(batches)
            loading.append(time.perf_counter() - start)
        full = time_steps(trainer.train_step, batches, iterations)
    finally:
        batches.close()
    result = {"configuration": name, "patch_size": configuration.patch_size,
              "batch_size": configuration.batch_size, "features": configuration.network.features_per_stage,
              "threads": threads, "augmentation_workers": workers,
              "compute_seconds_per_iteration": statistics.median(compute),
              "trainer_seconds_per_iteration": statistics.median(full),
              "batch_wait_seconds": statistics.median(loading), "raw": {"compute": compute, "trainer": full}}
    print(f"{name}: patch {configuration.patch_size} batch {configuration.batch_size}: "
          f"compute {result['compute_seconds_per_iteration']:.2f} s/it, trainer "
          f"{result['trainer_seconds_per_iteration']:.2f} s/it ({threads} threads, {workers} augmentation workers)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/autoseg_bench_hippocampus")
    parser.add_argument("--name", default="train", help="results file name in benchmarks/results/")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    run_planning(dataset, args.work, num_workers=2, progress=False)
    results = [bench_configuration(Path(args.work), name, args.iterations, args.workers, args.threads)
               for name in args.configurations]
    print(f"peak RAM (this process + largest child): {peak_rss_bytes() / 2**30:.2f} GiB")
    save_results(args.name, {"dataset": "Dataset004_Hippocampus", "results": results,
                             "peak_rss_bytes": peak_rss_bytes()})


if __name__ == "__main__":
    main()
