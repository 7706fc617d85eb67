"""Training within a time budget: measured speed, iteration count, and scaling the network down.

A GPU-sized plan is unusable on a CPU: on a 2-core machine the nnU-Net-sized
3d_fullres network of Task04 Hippocampus takes ~9 s per iteration, so 30 minutes
buy ~200 iterations — far too few to learn (see BENCHMARKS.md). Given a budget,
autoseg measures the seconds per iteration on the actual device, and, when the
budget allows fewer than :data:`MIN_USEFUL_ITERATIONS`, scales the configuration
down along :func:`budget_variants` until it does.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass

from autoseg.errors import AutosegInputError
from autoseg.planning.plans import ConfigurationPlan
from autoseg.planning.topology import features_per_stage

#: The smallest number of iterations worth training for. Measured on Task04 (BENCHMARKS.md,
#: "network size for a CPU budget"): 100-250 iterations leave the network near chance
#: (Dice 0.0-0.38), 700-1500 reach 0.82-0.85, and at 30 minutes 2,750 iterations of a
#: half-width network beat 800 of the full-width one. Below this, the network is scaled down.
MIN_USEFUL_ITERATIONS = 1000
#: Default training time per fold on a CPU (seconds) when no budget is given.
DEFAULT_CPU_BUDGET_SECONDS = 30 * 60
#: Iterations per epoch under a time budget (shorter epochs than nnU-Net's 250 give
#: the pseudo-Dice, checkpoints and the deadline check more often).
BUDGET_ITERATIONS_PER_EPOCH = 50
#: Measuring the planned network's speed may take at most this fraction of the budget.
MEASUREMENT_BUDGET_FRACTION = 0.05
#: A validation iteration (forward only) costs about this fraction of a training iteration.
VALIDATION_COST_FRACTION = 0.35


def parse_duration(text: str) -> float:
    """Seconds in ``"45m"``, ``"2h"``, ``"1h30m"``, ``"90s"`` or a plain number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", value)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != value.replace(" ", ""):
            raise AutosegInputError(f"--time-budget: cannot read {text!r} (use e.g. 45m, 2h, 1h30m or seconds)")
        seconds = sum(float(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)
    if seconds <= 0:
        raise AutosegInputError(f"--time-budget must be positive, got {text!r}")
    return seconds


@dataclass(frozen=True)
class IterationPlan:
    """How a budget is spent: ``epochs x iterations_per_epoch`` training iterations."""

    epochs: int
    iterations_per_epoch: int
    validation_iterations_per_epoch: int

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch


def iterations_for_budget(budget_seconds: float, seconds_per_iteration: float,
                          iterations_per_epoch: int = BUDGET_ITERATIONS_PER_EPOCH,
                          validation_iterations: int | None = None) -> IterationPlan:
    """Epochs that fit ``budget_seconds`` at ``seconds_per_iteration``, validation batches included.

    Each epoch costs ``iterations_per_epoch`` training iterations plus
    ``validation_iterations`` forward-only batches (default: a fifth of the training
    iterations) at :data:`VALIDATION_COST_FRACTION` of the cost. At least one epoch.
    """
    if validation_iterations is None:
        validation_iterations = max(1, math.ceil(iterations_per_epoch / 5))
    epoch_seconds = seconds_per_iteration * (iterations_per_epoch + VALIDATION_COST_FRACTION * validation_iterations)
    epochs = max(1, int(budget_seconds // epoch_seconds))
    return IterationPlan(epochs, iterations_per_epoch, validation_iterations)


def scaled_configuration(configuration: ConfigurationPlan, base_features: int, batch_size: int) -> ConfigurationPlan:
    """``configuration`` with ``base_features`` doubling per stage (same cap ratio) and ``batch_size``."""
    scaled = copy.deepcopy(configuration)
    network = scaled.network
    cap = max(network.features_per_stage) * base_features // network.features_per_stage[0]
    network.features_per_stage = features_per_stage(network.n_stages, network.dimension, base_features, cap)
    scaled.batch_size = batch_size
    return scaled


def budget_variants(configuration: ConfigurationPlan) -> list[tuple[str, ConfigurationPlan]]:
    """Smaller versions of a configuration, from the planned one down, for short budgets.

    Order (see BENCHMARKS.md for the measurements behind it): the batch size goes to
    2 first (on a CPU, more iterations beat bigger batches), then the features per
    stage halve (32 -> 16 -> 8 at the first stage). The patch is never shrunk: it is
    the context the network sees, and the planner sized it to the images.
    """
    base = configuration.network.features_per_stage[0]
    variants = [("planned", configuration)]
    if configuration.batch_size > 2:
        variants.append((f"batch 2, {base} base features", scaled_configuration(configuration, base, 2)))
    for features in (base // 2, base // 4):
        if features >= 4:
            variants.append((f"batch 2, {features} base features", scaled_configuration(configuration, features, 2)))
    return variants


@dataclass
class SpeedMeasurement:
    """Measured training speed of one configuration on one device."""

    seconds_per_iteration: float
    device: str
    device_name: str
    threads: int
    augmentation_workers: int
    iterations_timed: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def measure_speed(trainer, iterations: int = 5, warmup: int = 3, time_limit: float | None = None) -> SpeedMeasurement:
    """Median time of ``iterations`` real training steps of ``trainer``, loader included.

    The first ``warmup`` steps are not timed: they include the augmentation workers'
    start-up and the one-off set-up of the convolution kernels for these shapes.
    With ``time_limit`` (seconds), measuring stops early once it is exceeded (a slow
    network is recognised as too slow without spending the budget on it).
    """
    import statistics
    import time

    import torch

    from autoseg.training.dataloader import make_training_batches

    workers = trainer.config.num_workers  # the trainer resolved it for its device
    batches = make_training_batches(trainer.cache, trainer.train_cases, trainer.configuration, trainer.config,
                                    trainer.plans.num_classes, trainer.plans.foreground_labels,
                                    trainer.previous_stage_folder, seed=12345, num_workers=workers)
    times, began = [], time.perf_counter()
    try:
        trainer.network.train()
        for index in range(warmup + iterations):
            start = time.perf_counter()
            trainer.train_step(next(batches))
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            step = time.perf_counter() - start
            if index >= warmup:
                times.append(step)
            if time_limit is not None and time.perf_counter() - began > time_limit and index >= 1:
                times = times or [step]
                break
    finally:
        batches.close()
    return SpeedMeasurement(statistics.median(times), trainer.device.type, device_name(trainer.device),
                            torch.get_num_threads(), workers, len(times))


def fold_has_checkpoints(work_dir, configuration_name: str) -> bool:
    from autoseg.inference.predictor import results_dir

    folder = results_dir(work_dir, configuration_name)
    return folder.is_dir() and any(folder.glob("fold_*/checkpoint_*.pt"))


def train_fold(work_dir, configuration_name: str, fold: int, options, resume: bool = False,
               overwrite: bool = False) -> tuple[object, dict | None]:
    """Train one fold; with a time budget (given, or the CPU default) fit the plan to it first.

    Returns the trainer and the validation summary.
    """
    import time

    from autoseg.planning.plans import save_plans
    from autoseg.training.trainer import Trainer
    from autoseg.utils.device import resolve_device, use_all_cores
    from autoseg.utils.files import write_json

    device = resolve_device(options.device)
    budget = options.time_budget_seconds
    if budget is None and device.type == "cpu" and options.epochs is None:
        budget = DEFAULT_CPU_BUDGET_SECONDS
        print(f"no GPU: training within the default CPU budget of {budget / 60:.0f} minutes per fold "
              "(--time-budget to change it; --epochs for a fixed length)")
    if budget is None:
        trainer = Trainer(work_dir, configuration_name, fold, options)
        return trainer, trainer.run(resume=resume, overwrite=overwrite)
    if device.type == "cpu":
        use_all_cores()
    start = time.time()
    trainer = Trainer(work_dir, configuration_name, fold, options)
    trainer.check_can_start(resume, overwrite)
    if resume and trainer.load_resume_point():
        trainer.deadline = start + max(0.0, budget - trainer.training_seconds)
        trainer.log(f"time budget: resuming with {(trainer.deadline - start) / 60:.1f} of {budget / 60:.1f} min left")
        return trainer, trainer.run(already_loaded=True)
    measurement_limit = max(5.0, MEASUREMENT_BUDGET_FRACTION * budget)
    speed = measure_speed(trainer, time_limit=measurement_limit)
    chosen_name, reason = "planned", ""
    plan = iterations_for_budget(budget, speed.seconds_per_iteration)
    trainer.log(f"measured {speed.seconds_per_iteration:.2f} s per iteration on {speed.device_name} "
                f"({speed.threads} threads, {speed.augmentation_workers} augmentation workers): "
                f"{plan.total_iterations} iterations fit {budget / 60:.1f} min")
    smaller = budget_variants(trainer.configuration)[1:]
    if plan.total_iterations < MIN_USEFUL_ITERATIONS:
        if fold_has_checkpoints(work_dir, configuration_name):
            why = "other folds were trained with it"
        elif not options.scale_to_budget:
            why = "--keep-network"
        elif not smaller:
            why = "it is already the smallest variant"
        else:
            why = None
        if why is not None:
            trainer.log(f"WARNING: only {plan.total_iterations} iterations fit the budget (< "
                        f"{MIN_USEFUL_ITERATIONS}), but the network is kept: {why}")
        else:
            for chosen_name, variant in smaller:
                trainer = Trainer(work_dir, configuration_name, fold, options, configuration=variant)
                speed = measure_speed(trainer, time_limit=measurement_limit)
                plan = iterations_for_budget(budget - (time.time() - start), speed.seconds_per_iteration)
                trainer.log(f"variant '{chosen_name}': {speed.seconds_per_iteration:.3f} s per iteration, "
                            f"{plan.total_iterations} iterations fit")
                if plan.total_iterations >= MIN_USEFUL_ITERATIONS:
                    break
            reason = (f"time budget {budget / 60:.1f} min on {speed.device_name} ({speed.threads} threads): the "
                      f"planned network allowed fewer than {MIN_USEFUL_ITERATIONS} iterations, so it was scaled "
                      f"down to '{chosen_name}' (measured {speed.seconds_per_iteration:.3f} s per iteration, "
                      f"{plan.total_iterations} iterations)")
            plans = trainer.plans
            configuration = trainer.configuration
            configuration.reasons["time_budget"] = reason
            configuration.estimated_memory_bytes = 0
            plans.configurations[configuration_name] = configuration
            save_plans(plans, trainer.work_dir / "plans.json")
            trainer.log(reason)
    if options.epochs is None:
        trainer.config.epochs = plan.epochs
        trainer.config.iterations_per_epoch = plan.iterations_per_epoch
        trainer.config.validation_iterations_per_epoch = plan.validation_iterations_per_epoch
    trainer.deadline = start + budget
    record = {
        "time_budget_seconds": budget, "measured_speed": speed.to_dict(), "variant": chosen_name,
        "variant_reason": reason, "planned_epochs": trainer.config.epochs,
        "iterations_per_epoch": trainer.config.iterations_per_epoch,
        "patch_size": trainer.configuration.patch_size, "batch_size": trainer.configuration.batch_size,
        "features_per_stage": trainer.configuration.network.features_per_stage}
    write_json(trainer.output_dir / "run.json", record)
    summary = trainer.run(overwrite=True)
    record.update(epochs=trainer.epoch, iterations=trainer.epoch * trainer.config.iterations_per_epoch,
                  training_seconds=trainer.training_seconds,
                  seconds_from_start_to_final_checkpoint=trainer.finished_at - start)
    write_json(trainer.output_dir / "run.json", record)
    return trainer, summary
