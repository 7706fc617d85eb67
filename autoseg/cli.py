"""The ``autoseg`` command line: parse arguments, call the library, report.

Errors in the user's input are printed as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from autoseg.errors import AutosegInputError, DatasetVerificationError


def _add_plan(subparsers) -> None:
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
    parser.add_argument("--residual-encoder", action="store_true",
                        help="plan the residual-encoder U-Net variant")
    parser.add_argument("--replan", action="store_true", help="recompute plans.json even if it exists")
    parser.add_argument("--no-preprocess", action="store_true", help="stop after writing plans.json")
    parser.add_argument("--benchmark", action="store_true",
                        help="time a few training iterations of each configuration on this machine and store "
                             "the speed in plans.json")
    parser.add_argument("--device", default=None, help="device for --benchmark: cuda, cpu or mps (default: detected)")
    parser.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from autoseg.planning.pipeline import run_planning

    start = time.perf_counter()
    result = run_planning(
        args.dataset, args.output, gpu_memory_gb=args.gpu_memory_gb, num_workers=args.num_workers,
        configurations=args.configurations, preprocess=not args.no_preprocess, replan=args.replan,
        ct_window=tuple(args.ct_window) if args.ct_window else None,
        architecture="residual_encoder_unet" if args.residual_encoder else "unet", benchmark=args.benchmark,
        device=args.device)
    for message in result.messages:
        print(message)
    plans = result.plans
    print(f"dataset {plans.dataset_name}: {plans.num_training_cases} cases, "
          f"{plans.num_channels} channel(s), labels {plans.labels}")
    print(f"memory budget: {plans.memory_budget['reason']}")
    for name, configuration in plans.configurations.items():
        spacing = ", ".join(f"{v:.3g}" for v in configuration.target_spacing)
        print(f"  {name:<20} spacing ({spacing}) mm  patch {configuration.patch_size}  "
              f"batch {configuration.batch_size}  stages {configuration.network.n_stages}")
    for identifier, counts in result.preprocessing.items():
        print(f"  cache {identifier}: {counts['preprocessed']} preprocessed, {counts['skipped']} already done")
    print(f"plans: {args.output}/plans.json  ({time.perf_counter() - start:.1f} s)")
    return 0


def parse_folds(text: list[str]) -> list[int]:
    """``all`` -> 0..4; otherwise fold numbers (``0``, ``0 1 2`` or ``0,1``)."""
    values = [part for item in text for part in item.split(",") if part]
    if values == ["all"]:
        return list(range(5))
    try:
        folds = [int(value) for value in values]
    except ValueError:
        raise AutosegInputError(f"-f/--folds: expected fold numbers 0-4 or 'all', got {' '.join(text)}") from None
    if any(not 0 <= fold < 5 for fold in folds):
        raise AutosegInputError(f"-f/--folds: folds are 0-4, got {folds}")
    return folds


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a configuration with 5-fold cross-validation",
        description=("Train one or more folds of a planned configuration from the preprocessed cache. Each fold "
                     "writes checkpoints, a log, progress.png and its validation cases predicted in their "
                     "original geometry (with probabilities, for `autoseg ensemble`) to "
                     "WORKDIR/results/CONFIG/fold_K."))
    parser.add_argument("work_dir", help="work folder made by `autoseg plan`")
    parser.add_argument("-c", "--configuration", required=True,
                        help="2d, 3d_fullres, 3d_lowres or 3d_cascade_fullres (as planned)")
    parser.add_argument("-f", "--folds", nargs="+", default=["0"], help="fold(s) 0-4 or 'all' (default: 0)")
    parser.add_argument("--time-budget", default=None,
                        help="training time per fold, e.g. 45m, 2h, 1h30m or seconds: the speed is measured, the "
                             "iterations and learning-rate schedule fit the budget, and a network too slow for it is "
                             "scaled down (default: none on a GPU; 30m on a CPU)")
    parser.add_argument("--keep-network", action="store_true",
                        help="with a time budget, never scale the planned network down")
    parser.add_argument("--epochs", type=int, default=None,
                        help="number of epochs (default: from the plans, or from the time budget)")
    parser.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="training iterations per epoch (default: from the plans)")
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="augmentation worker processes (default: cores - 1 on a GPU; 0 on the CPU, "
                             "where augmentation runs between steps, measured faster)")
    parser.add_argument("--split-by", choices=["random", "spacing"], default="random",
                        help="folds: seeded random K-fold, or by slice count/thickness so validation "
                             "cases differ in acquisition from training cases")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint_latest.pt")
    parser.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start again")
    parser.add_argument("--no-validation", action="store_true",
                        help="skip predicting the validation cases at the end")
    parser.add_argument("--seed", type=int, default=0, help="random seed of sampling and initialisation")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from autoseg.training.budget import parse_duration, train_fold
    from autoseg.training.trainer import TrainingOptions

    folds = parse_folds(args.folds)
    for option in ("epochs", "iterations_per_epoch"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise AutosegInputError(f"--{option.replace('_', '-')} must be at least 1")
    budget = parse_duration(args.time_budget) if args.time_budget else None
    options = TrainingOptions(device=args.device, epochs=args.epochs, iterations_per_epoch=args.iterations_per_epoch,
                              num_workers=args.num_workers, split_mode=args.split_by, seed=args.seed,
                              validate=not args.no_validation, time_budget_seconds=budget,
                              scale_to_budget=not args.keep_network)
    for fold in folds:
        start = time.perf_counter()
        trainer, summary = train_fold(args.work_dir, args.configuration, fold, options, resume=args.resume,
                                      overwrite=args.overwrite)
        message = f"fold {fold} done in {(time.perf_counter() - start) / 60:.1f} min: {trainer.output_dir}"
        if summary is not None:
            message += f" (validation mean foreground Dice {summary['foreground_mean']['dice']:.4f})"
        print(message)
    return 0


def _add_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment new scans with trained models",
        description=("Segment every case in a folder ({case}_0000{ending}, one file per channel, any supported "
                     "format). Each segmentation is written in the input's own format and geometry. By default "
                     "the models and postprocessing chosen by `autoseg ensemble` are used; otherwise give -c. "
                     "A case that cannot be read is reported and skipped; the exit code is 1 if any failed."))
    parser.add_argument("-i", "--input", required=True, help="folder of scans to segment")
    parser.add_argument("-o", "--output", required=True, help="folder for the segmentations")
    parser.add_argument("-m", "--model", required=True, help="work folder with trained models (from autoseg train)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configuration(s) to use; several are averaged (default: from inference_plan.json)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to average (default: every trained fold)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default=None,
                        help="which checkpoint of each fold (default: final)")
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    parser.add_argument("--no-tta", action="store_true", help="no test-time mirroring (about 8x faster in 3D)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (default 0.5)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write {case}.npz (class probabilities) and {case}.json (geometry) for ensembling")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="skip the postprocessing learned by autoseg ensemble")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists")
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from autoseg.inference.predict_folder import choose_models, predict_folder
    from autoseg.utils.device import resolve_device, use_all_cores

    if not 0 < args.step_size <= 1:
        raise AutosegInputError("--step-size must be in (0, 1]")
    start = time.perf_counter()
    device = resolve_device(args.device)
    if device.type == "cpu":
        use_all_cores()
    choice = choose_models(args.model, args.configurations, parse_folds(args.folds) if args.folds else None,
                           args.checkpoint, use_postprocessing=not args.no_postprocessing)
    print(f"models: {' + '.join(choice.configurations)} ({choice.source}), checkpoint {choice.checkpoint}, "
          f"postprocessing {choice.postprocessing or 'none'}, device {device}")
    report = predict_folder(args.model, args.input, args.output, choice, device, use_mirroring=not args.no_tta,
                            step_size=args.step_size, save_probabilities_too=args.save_probabilities,
                            overwrite=args.overwrite)
    print(f"{len(report.predicted)} predicted, {len(report.skipped)} already done (skipped; --overwrite redoes "
          f"them), {len(report.failed)} failed, in {time.perf_counter() - start:.1f} s -> {args.output}")
    for problem in (report.failed[case] for case in sorted(report.failed)):
        print(f"error: {problem}", file=sys.stderr)
    return 1 if report.failed else 0


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on built-in synthetic CT data (or --data DIR)",
        description=("Generate a small synthetic CT dataset (body in HU, organ with a lesion, varying slice "
                     "thickness), then plan, train one fold of 3d_fullres within a short time budget, predict the "
                     "held-out cases and evaluate them. Prints the Dice table, the time of each step and where "
                     "the outputs are. With --data, the same on your dataset (held-out cases: imagesTs/labelsTs "
                     "if present, else the fold-0 validation cases)."))
    parser.add_argument("-o", "--output", default="autoseg_demo", help="output folder (default: ./autoseg_demo)")
    parser.add_argument("--data", default=None, help="a raw dataset folder to use instead of the synthetic one")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="configuration to train")
    parser.add_argument("--time-budget", default="8m",
                        help="training time (default 8m: enough for the synthetic lesion; 4m learns only the organ)")
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    parser.add_argument("--num-workers", type=int, default=None, help="worker processes")
    parser.add_argument("--overwrite", action="store_true", help="train again even if the demo model exists")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from autoseg.demo import run_demo
    from autoseg.evaluation.summary import format_table
    from autoseg.training.budget import parse_duration

    report = run_demo(args.output, args.data, args.configuration, parse_duration(args.time_budget), args.device,
                      args.num_workers, overwrite=args.overwrite)
    print()
    if report.summary is not None:
        names = report.summary.get("label_names")
        label_names = {int(k): v for k, v in names.items()} if isinstance(names, dict) else None
        print(f"Dice on {report.summary_source}:")
        print(format_table(report.summary, label_names))
    print("time per step: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report.step_seconds.items()))
    print(f"total {sum(report.step_seconds.values()) / 60:.1f} min")
    for name, path in report.paths.items():
        print(f"  {name:<14} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoseg", description="Self-configuring medical image segmentation for CT and MRI.")
    from autoseg import __version__

    parser.add_argument("--version", action="version", version=f"autoseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_plan(subparsers)
    _add_train(subparsers)
    _add_predict(subparsers)
    _add_demo(subparsers)
    from autoseg.evaluation.commands import add_ensemble_parser, add_evaluate_parser

    add_ensemble_parser(subparsers)
    add_evaluate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DatasetVerificationError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"autoseg {args.command}: {len(error.problems)} problem(s) in the dataset; nothing was written",
              file=sys.stderr)
        return 1
    except AutosegInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
