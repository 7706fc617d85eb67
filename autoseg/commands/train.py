"""``autoseg train``: train folds of a configuration (within a time budget), then score their validation cases."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.utils.durations import parse_duration
from autoseg.utils.files import remove_stale_temporaries
from autoseg.utils.locks import FileLock
from autoseg.workdir import NUM_FOLDS, SPLIT_MODES, WorkDir


def parse_folds(text: list[str]) -> list[int]:
    """``all`` -> every fold; otherwise fold numbers (``0``, ``0 1 2`` or ``0,1``)."""
    values = [part for item in text for part in item.split(",") if part]
    last = NUM_FOLDS - 1
    if values == ["all"]:
        return list(range(NUM_FOLDS))
    try:
        folds = [int(value) for value in values]
    except ValueError:
        raise AutosegInputError(f"-f/--folds: expected fold numbers 0-{last} or 'all', got {' '.join(text)}") from None
    if any(not 0 <= fold < NUM_FOLDS for fold in folds):
        raise AutosegInputError(f"-f/--folds: folds are 0-{last}, got {folds}")
    return folds


def elastic_restart() -> bool:
    """Whether torchrun restarted this job after a failure (``--max-restarts``): it then resumes from
    ``checkpoint_latest.pt`` whether or not ``--resume`` was given."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def train_and_validate(work_dir: str | os.PathLike | WorkDir, configuration_name: str, fold: int, options=None,
                       length=None, resume: bool = False, overwrite: bool = False, validate: bool = True):
    """Train one fold (:func:`autoseg.training.fold_training.train_fold`), then predict and score its
    validation cases (:func:`autoseg.evaluation.cross_validation.validate_fold`), holding the fold's
    lock (a second process on the same configuration and fold stops with one line; a lock left by a
    killed run is reported and taken over) and first removing temporary files killed runs left.

    Returns ``(trainer, validation summary or None)``.
    """
    from autoseg.training.distributed import DistributedContext  # start-up time (torch)

    work = WorkDir.of(work_dir)
    split_mode = options.split_mode if options is not None else "random"
    if not DistributedContext.from_environment().is_main:  # torchrun: rank 0 holds the fold's lock
        return _train_and_validate(work, configuration_name, fold, options, length, resume, overwrite, validate)
    with FileLock(work.training_lock_path(configuration_name, fold, split_mode),
                  f"training {configuration_name} fold {fold}") as lock:
        if lock.stale_message:
            print(lock.stale_message)
        removed = remove_stale_temporaries(work.results_dir(configuration_name, split_mode).parent)
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an interrupted run, e.g. {removed[0]}")
        return _train_and_validate(work, configuration_name, fold, options, length, resume, overwrite, validate)


def _train_and_validate(work_dir, configuration_name, fold, options, length, resume, overwrite, validate):
    # Deferred for start-up time: training and evaluation import torch.
    from autoseg.evaluation.cross_validation import validate_fold
    from autoseg.training.fold_training import train_fold

    trained = train_fold(work_dir, configuration_name, fold, options, length, resume=resume, overwrite=overwrite)
    trainer, summary = trained.trainer, None
    if validate and trainer.distributed.is_main:
        began = time.time()
        summary = validate_fold(trainer.work, trainer.configuration_name, fold, trainer.network.state_dict(),
                                trainer.device, trainer.options.split_mode, trainer.options.progress, trainer.log,
                                use_mirroring=trained.validation.use_mirroring)
        seconds = time.time() - began
        trainer.log(f"validation took {seconds:.0f} s (estimated {trained.validation.estimated_seconds:.0f} s)")
        record_validation(trainer.work, trainer.configuration_name, fold, trainer.options.split_mode,
                          validation_seconds=seconds, validation_mirroring=trained.validation.use_mirroring)
    return trainer, summary


def record_validation(work: WorkDir, configuration_name: str, fold: int, split_mode: str, **facts) -> None:
    """Add how a fold was validated (``validation_mirroring``, ``validation_seconds``) to its ``run.json``,
    when it has one (time-budgeted runs do)."""
    if work.run_record_path(configuration_name, fold, split_mode).is_file():
        record = work.read_run_record(configuration_name, fold, split_mode)
        record.update(facts)
        work.write_run_record(configuration_name, fold, record, split_mode)


def validate_trained_fold(work_dir: str | os.PathLike | WorkDir, configuration_name: str, fold: int,
                          device: str | None = None, split_mode: str = "random", progress: bool = True
                          ) -> tuple[str, dict]:
    """Score an already trained fold's validation cases again from its ``checkpoint_final.pt``, with
    test-time mirroring (nnU-Net's ``--val``): after an upgrade that measures more (e.g. what each
    mirror axis buys), or after ``--no-validation``. ``configuration_name`` may be the planned name of
    a budget variant. Records it in ``run.json``; returns the trained name and the summary."""
    from autoseg.evaluation.cross_validation import validate_fold  # start-up time (torch)
    from autoseg.model.checkpoints import load_checkpoint
    from autoseg.model.device import prepare_device

    work = WorkDir.of(work_dir)
    plans = work.load_plans()
    plans.configuration(configuration_name)
    trained = [name for name in [configuration_name, *plans.variants_of(configuration_name)]
               if work.checkpoint_path(name, fold, "final", split_mode).is_file()]
    if not trained:
        raise AutosegInputError(f"{work.checkpoint_path(configuration_name, fold, 'final', split_mode)}: not found; "
                                "train the fold before validating it")
    name = trained[0]
    state = load_checkpoint(work.checkpoint_path(name, fold, "final", split_mode), map_location="cpu")["network"]
    with FileLock(work.training_lock_path(configuration_name, fold, split_mode), f"validating {name} fold {fold}"):
        summary = validate_fold(work, name, fold, state, prepare_device(device), split_mode, progress,
                                use_mirroring=True)
        record_validation(work, name, fold, split_mode, validation_mirroring=True)
    return name, summary


def initialisation_source(model: str | os.PathLike, work_dir: str | os.PathLike | WorkDir, configuration: str,
                          fold: int, model_fold: int | None = None):
    """What ``--init-from MODEL [--init-fold K]`` starts fold ``fold`` of ``configuration`` from
    (:class:`~autoseg.training.fine_tuning.InitialisationSource`, checked against the work folder's network
    before anything is written), and the configuration to train.

    The model's configuration: ``configuration`` as the model trained it (or its budget variant, then trained
    as that); else a trained one of the same dimension and spacing (a 2d model for a 2.5d configuration);
    ``auto``: the model's first chosen configuration. Its fold: ``model_fold``, else ``fold`` when trained,
    else its first. One-line errors when the model has none, the work folder's plans lack it or the
    networks do not fit."""
    from autoseg.inference.bundle import trained_model  # start-up time (torch)
    from autoseg.training.fine_tuning import InitialisationSource, check_transfer, network_facts
    from autoseg.utils.files import file_sha256

    path = Path(model)
    source = trained_model(path, "--init-from")
    source_plans = source.load_plans()
    work = WorkDir.of(work_dir)
    plans = work.load_plans()
    trained = [name for name in source_plans.configurations if source.trained_folds(name)]
    if configuration == "auto":
        candidates = ((source.read_inference_plan() or {}).get("configurations") or trained)[:1]
    else:
        candidates = [configuration, *source_plans.variants_of(configuration)]
        if configuration in plans.configurations:
            wanted = plans.configurations[configuration]
            candidates += [name for name in trained if source_plans.configurations[name].dimension == wanted.dimension
                           and source_plans.configurations[name].target_spacing == wanted.target_spacing]
    found = [name for name in candidates if name in trained]
    if not found:
        raise AutosegInputError(f"{path}: --init-from: no trained {configuration} in the model (trained: "
                                f"{', '.join(trained) or 'none'})")
    name = found[0]
    same_network = configuration == "auto" or name == configuration or name in source_plans.variants_of(configuration)
    to_train = name if same_network else configuration  # else: another of the same dimension and spacing (2d -> 2.5d)
    if to_train not in plans.configurations:
        raise AutosegInputError(f"{work.plans_path}: no configuration {to_train!r}, the one the model trained; plan "
                                f"this dataset with `autoseg plan DATA -o WORK --plans-from {path}`")
    folds = source.trained_folds(name)
    if model_fold is not None and model_fold not in folds:
        raise AutosegInputError(f"{path}: --init-fold {model_fold}: the model's {name} has folds {folds}")
    chosen_fold = model_fold if model_fold is not None else (fold if fold in folds else folds[0])
    checkpoint = source.checkpoint_path(name, chosen_fold, "final")
    initialisation = InitialisationSource(
        description=f"{path.name} fold {chosen_fold} ({name})", checkpoint=checkpoint,
        facts=network_facts(source_plans, name), configuration=name, fold=chosen_fold,
        sha256=file_sha256(path if path.is_file() else checkpoint))
    check_transfer(initialisation, plans, to_train)
    return initialisation, to_train


def add_parser(subparsers) -> None:
    """Register ``autoseg train``."""
    parser = subparsers.add_parser(
        "train", help=f"train a configuration with {NUM_FOLDS}-fold cross-validation",
        description=("Train one or more folds of a planned configuration from the preprocessed cache. Each fold "
                     "writes checkpoints, a log, progress.png and its validation cases predicted in their "
                     "original geometry (with probabilities, for `autoseg ensemble`) to "
                     "WORKDIR/results/CONFIG/fold_K. When a time budget makes the planned network too slow, a "
                     "smaller variant is recorded in WORK/budget/variants/ under its own name (e.g. 3d_fullres_f16_b2) "
                     "and every fold of the configuration trains as it."))
    parser.add_argument("work_dir", help="work folder made by `autoseg plan`")
    parser.add_argument("-c", "--configuration", default="auto",
                        help="2d, 3d_fullres, 3d_lowres or 3d_cascade_fullres (as planned), or auto (default): the "
                             "one that learns best within the time budget (see `autoseg plan --time-budget`)")
    parser.add_argument("-f", "--folds", nargs="+", default=["0"],
                        help=f"fold(s) 0-{NUM_FOLDS - 1} or 'all' (default: 0)")
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
    parser.add_argument("--trainer", default=None,
                        help="trainer variant by name (default: the configuration's training.trainer in plans.json)")
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="augmentation worker processes (default: cores - 1 on a GPU; 0 on the CPU, "
                             "where augmentation runs between steps, measured faster)")
    parser.add_argument("--split-by", choices=list(SPLIT_MODES), default="random",
                        help="folds: seeded random K-fold, or by slice count/thickness so validation "
                             "cases differ in acquisition from training cases")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint_latest.pt")
    parser.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start again")
    validation = parser.add_mutually_exclusive_group()
    validation.add_argument("--no-validation", action="store_true",
                            help="skip predicting the validation cases at the end")
    validation.add_argument("--validate-only", action="store_true",
                            help="do not train: score the trained folds' validation cases again (with test-time "
                                 "mirroring, each axis measured), e.g. after an upgrade or --no-validation")
    parser.add_argument("--seed", type=int, default=0, help="random seed of sampling and initialisation")
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="fine-tune: start from a trained model's weights (a bundle from `autoseg export` or a "
                             "work folder; plan with `autoseg plan --plans-from MODEL` so the networks fit). Tensors "
                             "that match load, the output layers re-initialise when the labels differ; a warm-up, a "
                             "lower rate for loaded layers and (after re-initialising) a frozen start are chosen by "
                             "rule and recorded in run.json. -c auto: the model's configuration")
    parser.add_argument("--init-fold", type=int, default=None, metavar="K",
                        help="with --init-from: the model's fold to start from (default: the same fold, else its "
                             "first)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg train``."""
    from autoseg.planning.training_cost import TrainingLength  # start-up time (torch)
    from autoseg.training.trainer import TrainingOptions

    folds = parse_folds(args.folds)
    for option in ("epochs", "iterations_per_epoch"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise AutosegInputError(f"--{option.replace('_', '-')} must be at least 1")
    time_budget_seconds = parse_duration(args.time_budget) if args.time_budget else None
    options = TrainingOptions(device=args.device, num_workers=args.num_workers, split_mode=args.split_by,
                              seed=args.seed, trainer=args.trainer)
    length = TrainingLength(epochs=args.epochs, iterations_per_epoch=args.iterations_per_epoch,
                            time_budget_seconds=time_budget_seconds, scale_to_budget=not args.keep_network)
    configuration = args.configuration
    first_source = None  # --init-from: what the first fold starts from (checked once, used by that fold)
    if args.init_fold is not None and args.init_from is None:
        raise AutosegInputError("--init-fold needs --init-from MODEL")
    if args.init_from is not None:
        if args.validate_only:
            raise AutosegInputError("--init-from starts a training run; --validate-only scores one already trained")
        first_source, configuration = initialisation_source(args.init_from, args.work_dir, configuration, folds[0],
                                                            args.init_fold)
        if configuration != args.configuration:
            print(f"--init-from: training {configuration}, the model's trained network")
        length = replace(length, scale_to_budget=False,  # the model's network, or its weights would not fit
                         keep_network_reason="--init-from: the model's network, so that its weights fit")
    if args.validate_only:
        if configuration == "auto":
            raise AutosegInputError("--validate-only needs the configuration: give -c (e.g. -c 3d_fullres)")
        for fold in folds:
            name, summary = validate_trained_fold(args.work_dir, configuration, fold, args.device, args.split_by)
            dice = summary["foreground_mean"]["dice"]
            print(f"fold {fold} of {name} validated again: mean foreground Dice {dice:.4f}")
        return 0
    if configuration == "auto" and args.init_from is None:
        from autoseg.model.device import device_name, prepare_device
        from autoseg.planning.training_cost import resolve_time_budget
        from autoseg.training.choice import choose_for_budget, format_budget_plan

        device = prepare_device(args.device)
        choosing_began = time.time()
        configuration, record = choose_for_budget(args.work_dir, resolve_time_budget(device.type, length), options,
                                                  device_name(device))
        print(format_budget_plan(record) if record else
              f"-c auto without a time budget: {configuration} (the plans' full schedule)")
        # measuring the configurations to choose counts within the first fold's budget
        length = replace(length, budget_started_at=choosing_began)
    for index, fold in enumerate(folds):
        start = time.perf_counter()
        fold_length = length if index == 0 else replace(length, budget_started_at=None)
        fold_options = options
        if args.init_from is not None:
            source = first_source if index == 0 else initialisation_source(
                args.init_from, args.work_dir, configuration, fold, args.init_fold)[0]
            fold_options = replace(options, initialise_from=source)
        trainer, summary = train_and_validate(args.work_dir, configuration, fold, fold_options, fold_length,
                                              resume=args.resume or elastic_restart(), overwrite=args.overwrite,
                                              validate=not args.no_validation)
        trained_as = (f" (trained as {trainer.configuration_name})"
                      if trainer.configuration_name != configuration else "")
        message = f"fold {fold} done in {(time.perf_counter() - start) / 60:.1f} min{trained_as}: {trainer.output_dir}"
        if summary is not None:
            message += f" (validation mean foreground Dice {summary['foreground_mean']['dice']:.4f})"
        if trainer.distributed.is_main:
            print(message)
    return 0
