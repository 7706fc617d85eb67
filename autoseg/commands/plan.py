"""``autoseg plan``: verify, fingerprint and plan a dataset, then preprocess it (and optionally time it).

Work folder after this step (see :mod:`autoseg.workdir`)::

    WORK/dataset_fingerprint.json
    WORK/plans.json
    WORK/preprocessed/{data_identifier}/...
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.plans.architectures import ARCHITECTURES
from autoseg.plans.schema import Plans
from autoseg.utils.durations import parse_duration
from autoseg.utils.files import output_folder_problem, remove_stale_temporaries
from autoseg.workdir import WorkDir


@dataclass
class PlanCommandResult:
    plans: Plans
    fingerprint_reused: bool
    plans_reused: bool
    preprocessing: dict = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def run_planning(dataset_dir: str | os.PathLike, work_dir: str | os.PathLike | WorkDir, *,
                 gpu_memory_gb: float | None = None, num_workers: int | None = None,
                 configurations: list[str] | None = None, preprocess: bool = True, replan: bool = False,
                 ct_window: tuple[float, float] | None = None, architecture: str = "unet",
                 benchmark: bool = False, device: str | None = None, progress: bool = True,
                 time_budget_seconds: float | None = None, plans_from: str | os.PathLike | None = None
                 ) -> PlanCommandResult:
    """Plan (:func:`autoseg.planning.pipeline.plan_dataset`; with ``plans_from``, a bundle or work folder, the
    configurations come from that model: :func:`model_plans_and_source`), fill the preprocessed cache of the
    given configurations (default: all), with ``benchmark`` store each one's measured speed, and
    with ``time_budget_seconds`` decide what to train in that budget per fold
    (:func:`autoseg.training.choice.plan_time_budget`, recorded in ``WORK/budget/budget_plan.json``)."""
    # Deferred for start-up time (autoseg --help must not load SimpleITK, scipy or torch).
    from autoseg.planning.pipeline import plan_dataset
    from autoseg.preprocessing.cache import preprocess_dataset

    work = WorkDir.of(work_dir)
    if work.root.is_file():
        raise AutosegInputError(f"{work.root}: exists and is a file, not a folder; give -o a folder")
    messages = []
    if work.root.is_dir():
        removed = remove_stale_temporaries(work.root)
        if removed:
            messages.append(f"removed {len(removed)} temporary file(s) left by an interrupted run, e.g. {removed[0]}")
    model_plans, model_source = model_plans_and_source(plans_from) if plans_from is not None else (None, "")
    planned = plan_dataset(dataset_dir, work, gpu_memory_gb=gpu_memory_gb, num_workers=num_workers, replan=replan,
                           ct_window=ct_window, architecture=architecture, progress=progress,
                           model_plans=model_plans, model_source=model_source)
    plans = planned.plans
    names = configurations or list(plans.configurations)
    for name in names:
        plans.configuration(name)  # unknown names fail before any work
    report = {}
    if preprocess:
        report = preprocess_dataset(plans, work, names, num_workers, progress=progress)
    messages += planned.messages
    if benchmark:
        if not preprocess:
            raise AutosegInputError("--benchmark needs the preprocessed data (drop --no-preprocess)")
        benchmark_speed(plans, work, names, device, messages)
    if time_budget_seconds is not None:
        if not preprocess:
            raise AutosegInputError("--time-budget needs the preprocessed data (drop --no-preprocess)")
        from autoseg.training.choice import format_budget_plan, plan_time_budget  # start-up time (torch)
        from autoseg.training.trainer import TrainingOptions

        record = plan_time_budget(work, time_budget_seconds, TrainingOptions(device=device, progress=False))
        messages.append(format_budget_plan(record))
        plans = work.load_plans()
    return PlanCommandResult(plans, planned.fingerprint_reused, planned.plans_reused, report, messages)


def model_plans_and_source(model: str | os.PathLike) -> tuple[Plans, str]:
    """The plans of a trained model (a bundle zip, opened and checked, or a work folder) and how plans.json
    names it: the path and the SHA-256 of the bundle (of a work folder's plans.json)."""
    from autoseg.inference.bundle import trained_model  # start-up time (torch)
    from autoseg.utils.files import file_sha256

    path = Path(model)
    folder = trained_model(path, "--plans-from")
    plans = folder.load_plans()
    hashed = path if path.is_file() else folder.plans_path
    return plans, f"{path} sha256 {file_sha256(hashed)}"


def benchmark_speed(plans: Plans, work: WorkDir, names: list[str], device: str | None,
                    messages: list[str]) -> None:
    """Time a few training iterations of each configuration on ``device``; record them in the work folder.

    A time-budgeted ``autoseg train`` on the same device then uses the stored speed instead of measuring.
    """
    from autoseg.training.speed import measure_speed  # start-up time (torch)
    from autoseg.training.trainer import Trainer, TrainingOptions

    for name in names:
        if plans.configurations[name].previous_stage:
            messages.append(f"{name}: not benchmarked (a cascade needs its previous stage trained first)")
            continue
        trainer = Trainer(work, name, 0, TrainingOptions(device=device, progress=False))
        speed = measure_speed(trainer)
        work.record_measured_speed(name, speed.to_dict())
        messages.append(f"{name}: {speed.seconds_per_iteration:.2f} s per training iteration on "
                        f"{speed.device_name} ({speed.threads} threads) = "
                        f"{3600 / speed.seconds_per_iteration:.0f} iterations per hour")


def add_parser(subparsers) -> None:
    """Register ``autoseg plan``."""
    parser = subparsers.add_parser(
        "plan", help="verify a raw dataset, fingerprint it, plan every configuration and preprocess",
        description=("Verify a dataset in the nnU-Net v2 raw layout (dataset.json, imagesTr/, labelsTr/), "
                     "write dataset_fingerprint.json and plans.json (every decision with its reason) to "
                     "the work folder and fill its preprocessed cache. Re-running reuses the fingerprint "
                     "and an existing (possibly hand-edited) plans.json, and skips cases already "
                     "preprocessed with the same plans."))
    parser.add_argument("dataset", help="raw dataset folder (contains dataset.json)")
    parser.add_argument("-o", "--output", required=True, help="work folder for plans, cache, models")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to preprocess (default: all planned)")
    parser.add_argument("--gpu-memory-gb", type=float, default=None,
                        help="plan for a GPU with this much memory instead of the detected device")
    parser.add_argument("--num-workers", "-j", type=int, default=None,
                        help="worker processes for fingerprint and preprocessing (default: CPU cores, max 8)")
    parser.add_argument("--ct-window", nargs=2, type=float, metavar=("LOW", "HIGH"), default=None,
                        help="use a fixed HU window (e.g. -200 500) for CT channels instead of the "
                             "foreground percentiles")
    parser.add_argument("--architecture", choices=ARCHITECTURES.names(), default="unet",
                        help="network architecture to plan (default unet)")
    parser.add_argument("--residual-encoder", action="store_true",
                        help="plan the residual-encoder U-Net variant (same as --architecture residual_encoder_unet)")
    parser.add_argument("--plans-from", default=None, metavar="MODEL",
                        help="take the configurations (spacing, patch, network, normalization) from a trained model "
                             "(a bundle from `autoseg export` or a work folder), so that `autoseg train --init-from "
                             "MODEL` can fine-tune its weights; every difference from this dataset's own plan is "
                             "printed and recorded in plans.json")
    parser.add_argument("--replan", action="store_true", help="recompute plans.json even if it exists")
    parser.add_argument("--no-preprocess", action="store_true", help="stop after writing plans.json")
    parser.add_argument("--benchmark", action="store_true",
                        help="time a few training iterations of each configuration on this machine and store "
                             "the speed in WORK/budget/speed/ (a time-budgeted train on this machine then uses it)")
    parser.add_argument("--time-budget", default=None,
                        help="training time per fold (e.g. 30m): measure every configuration on this device and state "
                             "what `autoseg train -c auto` will train (configuration, network, spacing, patch, "
                             "iterations) and how long predicting a case will take; recorded in WORK/budget/")
    parser.add_argument("--device", default=None,
                        help="device for --benchmark and --time-budget: cuda, cpu or mps (default: detected)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg plan``."""
    start = time.perf_counter()
    problem = output_folder_problem([args.dataset], args.output, inside_too=False)
    if problem:
        raise AutosegInputError(problem.replace("write the outputs to", "put the work folder in"))
    architecture = "residual_encoder_unet" if args.residual_encoder else args.architecture
    result = run_planning(
        args.dataset, args.output, gpu_memory_gb=args.gpu_memory_gb, num_workers=args.num_workers,
        configurations=args.configurations, preprocess=not args.no_preprocess, replan=args.replan,
        ct_window=tuple(args.ct_window) if args.ct_window else None, architecture=architecture,
        benchmark=args.benchmark, device=args.device,
        time_budget_seconds=parse_duration(args.time_budget) if args.time_budget else None,
        plans_from=args.plans_from)
    plans = result.plans
    print(f"dataset {plans.dataset_name}: {plans.num_training_cases} cases, "
          f"{plans.num_channels} channel(s), labels {plans.labels}")
    print(f"memory budget: {plans.memory_budget['reason']}")
    for name, configuration in plans.configurations.items():
        spacing = ", ".join(f"{v:.3g}" for v in configuration.target_spacing)
        print(f"  {name:<20} spacing ({spacing}) mm  patch {configuration.patch_size}  "
              f"batch {configuration.batch_size}  stages {configuration.network.n_stages}"
              + (f"  (budget variant of {configuration.variant_of})" if configuration.variant_of else ""))
    for identifier, counts in result.preprocessing.items():
        print(f"  cache {identifier}: {counts['preprocessed']} preprocessed, {counts['skipped']} already done")
    for message in result.messages:
        print(message)
    print(f"plans: {WorkDir(args.output).plans_path}  ({time.perf_counter() - start:.1f} s)")
    return 0
