"""Where a CPU training iteration spends its time (torch profiler), Task04 Hippocampus.

Usage: python benchmarks/profile_train.py [--configuration 3d_fullres] [--iterations 3]
         [--features 32] [--batch-size 9] [--threads 2]

Profiles ``--iterations`` training steps (forward, loss, backward, SGD) of the planned
network on one fixed augmented batch, after one warm-up step, and prints the operators
by total CPU time, grouped into convolution forward/backward, normalization, and the
rest. Saves the grouped shares to ``benchmarks/results/profile_{configuration}.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, save_results  # noqa: E402

from autoseg.commands.plan import run_planning  # noqa: E402
from autoseg.training.dataloader import make_training_batches  # noqa: E402
from autoseg.training.trainer import Trainer, TrainingOptions  # noqa: E402

#: Operator name fragments -> group, first match wins (names of torch 2.x CPU kernels).
GROUPS = [
    ("convolution_backward", "convolution backward"),
    ("convolution", "convolution forward"),
    ("conv3d", "convolution forward"),
    ("conv2d", "convolution forward"),
    ("native_group_norm_backward", "normalization backward"),
    ("group_norm", "normalization forward"),
    ("leaky_relu", "activation"),
    ("softmax", "loss"),
    ("nll_loss", "loss"),
    ("sgd", "optimizer"),
    ("_foreach", "optimizer"),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for fragment, group in GROUPS:
        if fragment in lowered:
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/autoseg_bench_hippocampus")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    run_planning(dataset, args.work, num_workers=2, progress=False)
    trainer = Trainer(Path(args.work), args.configuration, 0,
                      TrainingOptions(num_workers=0, progress=False))
    torch.set_num_threads(args.threads)
    batches = make_training_batches(trainer.cache, trainer.train_cases, trainer.configuration, trainer.config,
                                    trainer.plans.num_classes, trainer.plans.foreground_labels, num_workers=0,
                                    seed=0)
    batch = next(batches)
    trainer.network.train()
    trainer.train_step(batch)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.iterations):
            trainer.train_step(batch)
    # Self time of every operator, so nested calls are not counted twice.
    per_group: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        per_group[group_of(event.key)] += event.self_cpu_time_total
    total = sum(per_group.values())
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"{args.configuration}: patch {trainer.configuration.patch_size} batch "
          f"{trainer.configuration.batch_size}, {args.threads} threads, {args.iterations} iterations")
    shares = {}
    for group, micros in sorted(per_group.items(), key=lambda item: -item[1]):
        shares[group] = micros / total
        print(f"  {group:32s} {micros / 1e6 / args.iterations:7.2f} s/it  {100 * micros / total:5.1f}%")
    save_results(f"profile_{args.configuration}", {
        "dataset": "Dataset004_Hippocampus", "configuration": args.configuration,
        "patch_size": trainer.configuration.patch_size, "batch_size": trainer.configuration.batch_size,
        "threads": args.threads, "iterations": args.iterations,
        "seconds_per_iteration_by_group": {g: m / 1e6 / args.iterations for g, m in per_group.items()},
        "share_by_group": shares})


if __name__ == "__main__":
    main()
