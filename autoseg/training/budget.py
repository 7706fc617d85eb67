"""Training within a time budget: measured speed, the iteration plan, and scaling the network down.

The decision is made here; the Trainer only runs it. Given a budget, the planned
network's seconds per iteration are measured on the actual device (or taken from
``autoseg plan --benchmark`` when it measured this device), the iterations that fit
the budget are computed, and, when they are fewer than twice what the configuration needs
(:func:`iterations_needed`, :data:`PREFERRED_ITERATIONS_FACTOR`), the smaller variants of
:func:`autoseg.planning.variants.budget_variants` are measured: the largest that reaches twice
the floor is trained, else the smallest: below that, iterations beat width.
A chosen variant is recorded in plans.json as a configuration of its own (the planned
one is left as it is) and every fold of the configuration then trains as that variant;
measured speeds are kept in plans.json so that later folds do not measure again. The
validation cases are predicted after training within the same budget
(:func:`plan_validation`); training gets what measuring and validation leave. Which
configuration to train for a budget is :mod:`autoseg.training.choice`.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from autoseg.model.device import device_name, prepare_device
from autoseg.planning.inference_cost import case_cost_in_patches
from autoseg.planning.variants import add_budget_variant, budget_variants
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.plans.training import ForegroundSampling, IterationPlan, validation_iterations
from autoseg.training.class_exposure import (
    ClassOutlook,
    choose_foreground_sampling,
    class_outlooks,
    measure_exposure_model,
)
from autoseg.training.distributed import COLLECTIVE_TIMEOUT_SECONDS, DistributedContext
from autoseg.training.trainer import TRAINERS, TimeBudget, Trainer, TrainingOptions
from autoseg.utils.files import read_json
from autoseg.workdir import WorkDir, cached_case_paths

#: The smallest number of iterations worth training for. Measured on Task04 (BENCHMARKS.md,
#: "Dice against time budget: Task04"): 100-250 iterations leave the network near chance
#: (Dice 0.0-0.38), 700-1500 reach 0.82-0.85, and at 30 minutes 2,700 iterations of a
#: half-width network beat 800 of the full-width one. Below this, the network is scaled down.
MIN_USEFUL_ITERATIONS = 1000
#: When one patch covers only part of a case, the floor grows with the square root of the
#: patches it takes to cover the median case (:func:`iterations_needed`; a 2D network's case is
#: one slice, :func:`patches_per_case`). Measured on 20 synthetic 512x512x100-300 CTs
#: (BENCHMARKS.md, "Dice against time budget: large synthetic CT"): 1,200 iterations of 3d_fullres (60 patches per
#: case) reached a mean foreground Dice of 0.30, where on Task04 (a case smaller than the patch)
#: 1,000 iterations reach 0.84. A linear growth would fit too but would leave no 3D configuration
#: trainable on a CPU for a CT; the square root is the milder rule the points allow.
ITERATIONS_NEEDED_EXPONENT = 0.5
#: A smaller variant is preferred while it reaches this many times the iterations needed: just
#: above the floor, more iterations of a narrower network win, and when no variant reaches this
#: many the smallest is trained. Task04 fold 0, 30 minutes
#: (BENCHMARKS.md, "Dice against time budget: Task04"): 32 base features at 800 and 1,150
#: iterations reached 0.849 and 0.857, 16 base features at 2,550-2,700 iterations 0.867, 32 at
#: 2,100 0.868 (width stops mattering there); large CT, 2D: 16 base features at 900 iterations
#: 0.319, 8 at 1,250 0.665 (BENCHMARKS.md, "Dice against time budget: large synthetic CT").
PREFERRED_ITERATIONS_FACTOR = 2
#: Default training time per fold on a CPU (seconds) when no budget is given.
DEFAULT_CPU_BUDGET_SECONDS = 30 * 60
#: Iterations per epoch under a time budget (shorter epochs than nnU-Net's 250 give
#: the pseudo-Dice, checkpoints and the deadline check more often).
BUDGET_ITERATIONS_PER_EPOCH = 50
#: Measuring the planned network's speed may take at most this fraction of the budget.
MEASUREMENT_BUDGET_FRACTION = 0.05
#: A validation iteration (forward only) costs about this fraction of a training iteration.
VALIDATION_COST_FRACTION = 0.35
#: Restoring a validation case to its original grid, writing its label map and float16
#: probabilities (.npz) and scoring it takes about this long per million voxels of the original
#: image. Measured on 2 cores (BENCHMARKS.md, "What validation costs inside a budget"): 0.2 s on
#: the faster machine (14 s for a 300x512x512 CT from 2d; profile_validation_case.py); on the
#: slower one whole validations of
#: 218 M voxels took 0.36-0.46 s per million beyond their network time (0.46 from 2d_lowres, whose
#: smooth upsampled probabilities compress slower: 24.6 s against 8.9 s from 2d for that CT's .npz).
#: The slower machine's value is used: a validation ending early costs a little training, one
#: ending late breaks the budget.
EXPORT_SECONDS_PER_MEGAVOXEL = 0.4
#: The validation estimate is scaled by the median of measured / estimated seconds of the earlier
#: validations in the same work folder (the export speed above differs between machines: 190 s
#: measured against 137 s estimated for a 10-minute Task04 fold on a slower 2-core machine),
#: within these bounds, so one odd run (a busy machine) cannot distort it much.
VALIDATION_CALIBRATION_BOUNDS = (0.5, 3.0)
#: Predicting the validation cases after training may take at most this fraction of the budget
#: with test-time mirroring; beyond it they are predicted without mirroring (8x fewer passes in 3D).
MAX_VALIDATION_BUDGET_FRACTION = 0.15


@dataclass
class TrainingLength:
    """How long to train, as asked on the command line.

    Attributes:
        epochs, iterations_per_epoch: fixed length (override the plans and the budget's choice).
        time_budget_seconds: training time per fold; None on a GPU means the plans' length,
            on a CPU :data:`DEFAULT_CPU_BUDGET_SECONDS` (unless ``epochs`` is given).
        scale_to_budget: allow a smaller variant when the planned network is too slow.
        min_iterations, max_time_budget_seconds: with a time budget, when fewer than
            ``min_iterations`` fit it at the measured speed (a busy or slow machine), the budget
            grows to reach them, up to ``max_time_budget_seconds`` (the demo: every class learned).
        budget_started_at: when the budget began (``time.time()``) if before the fold starts, so
            that work done for the fold beforehand counts (``train -c auto`` measuring the
            configurations to choose one); None: when the fold starts.
    """

    epochs: int | None = None
    iterations_per_epoch: int | None = None
    time_budget_seconds: float | None = None
    scale_to_budget: bool = True
    min_iterations: int | None = None
    max_time_budget_seconds: float | None = None
    budget_started_at: float | None = None


def extended_budget(budget_seconds: float, iterations: int, min_iterations: int | None,
                    max_budget_seconds: float | None) -> float:
    """The budget (s) that fits ``min_iterations`` where ``budget_seconds`` fits ``iterations``
    (time scales with iterations), within ``max_budget_seconds``; ``budget_seconds`` when enough fit."""
    if not min_iterations or not max_budget_seconds or iterations >= min_iterations:
        return budget_seconds
    return min(max_budget_seconds, budget_seconds * min_iterations / max(iterations, 1))


def epoch_cost_in_iterations(iterations_per_epoch: int, validation_batches: int) -> float:
    """An epoch's cost in training iterations: its validation batches cost :data:`VALIDATION_COST_FRACTION`
    of an iteration each."""
    return iterations_per_epoch + VALIDATION_COST_FRACTION * validation_batches


def iterations_for_budget(budget_seconds: float, seconds_per_iteration: float,
                          iterations_per_epoch: int = BUDGET_ITERATIONS_PER_EPOCH,
                          validation_batches: int | None = None) -> IterationPlan:
    """Epochs that fit ``budget_seconds`` at ``seconds_per_iteration``, validation batches included.

    Each epoch costs ``iterations_per_epoch`` training iterations plus its validation
    batches (default: the trainer's rule, a fifth of the training iterations) at
    :data:`VALIDATION_COST_FRACTION` of the cost. At least one epoch.
    """
    if validation_batches is None:
        validation_batches = validation_iterations(iterations_per_epoch)
    epoch_seconds = seconds_per_iteration * epoch_cost_in_iterations(iterations_per_epoch, validation_batches)
    epochs = max(1, int(budget_seconds // epoch_seconds))
    return IterationPlan(epochs, iterations_per_epoch, validation_batches)


def with_length_overrides(plan: IterationPlan, length: TrainingLength) -> IterationPlan:
    """``plan`` with the epochs / iterations per epoch given on the command line."""
    iterations = length.iterations_per_epoch or plan.iterations_per_epoch
    return IterationPlan(length.epochs or plan.epochs, iterations,
                         validation_iterations(iterations, plan.validation_iterations_per_epoch))


@dataclass
class SpeedMeasurement:
    """Measured training speed of one configuration on one device."""

    seconds_per_iteration: float
    device: str
    device_name: str
    threads: int
    augmentation_workers: int
    iterations_timed: int
    #: one forward pass of a training patch without gradients, as when predicting (s; None when
    #: measured before this was: then :data:`VALIDATION_COST_FRACTION` of an iteration is assumed)
    seconds_per_patch_forward: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def forward_seconds(self, batch_size: int) -> float:
        """Seconds of one patch's forward pass when predicting: measured, else estimated from an iteration."""
        if self.seconds_per_patch_forward:
            return self.seconds_per_patch_forward
        return self.seconds_per_iteration * VALIDATION_COST_FRACTION / batch_size


#: Timed steps whose slowest is more than this times the fastest mark a noisy (busy) machine:
#: as many steps again are timed and the lower quartile is taken.
NOISY_SPREAD = 1.5


def robust_step_seconds(times: list[float]) -> float:
    """One step's time from timed steps: the median, or on a noisy machine (spread above
    :data:`NOISY_SPREAD`) the lower quartile, since other processes only ever add time."""
    if len(times) >= 4 and max(times) > NOISY_SPREAD * min(times):
        return statistics.quantiles(times, n=4)[0]
    return statistics.median(times)


def measure_speed(trainer: Trainer, iterations: int = 5, warmup: int = 3,
                  time_limit: float | None = None) -> SpeedMeasurement:
    """Time of a real training step of ``trainer``, loader included (:func:`robust_step_seconds`).

    The first ``warmup`` steps are not timed: they include the augmentation workers'
    start-up and the one-off set-up of the convolution kernels for these shapes. When the
    timed steps spread more than :data:`NOISY_SPREAD`, as many again are timed. With
    ``time_limit`` (seconds), measuring stops early once it is exceeded (a slow network is
    recognised as too slow without spending the budget on it).
    """
    batches = trainer.training_batches(seed=12345)
    times, began = [], time.perf_counter()
    total = warmup + iterations
    try:
        trainer.network.train()
        index = 0
        while index < total:
            start = time.perf_counter()
            batch = next(batches)
            trainer.train_step(batch)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            step = time.perf_counter() - start
            if index >= warmup:
                times.append(step)
            if time_limit is not None and time.perf_counter() - began > time_limit and index >= 1:
                times = times or [step]
                break
            index += 1
            if index == total == warmup + iterations and max(times) > NOISY_SPREAD * min(times):
                total += iterations  # a busy machine: time as many steps again
    finally:
        batches.close()
    return SpeedMeasurement(robust_step_seconds(times), trainer.device.type, device_name(trainer.device),
                            torch.get_num_threads(), trainer.config.num_workers, len(times),
                            measure_forward_seconds(trainer, batch["data"]))


def measure_forward_seconds(trainer: Trainer, data: torch.Tensor, repeats: int = 2) -> float:
    """Seconds of one patch's forward pass without gradients (median of ``repeats`` after a warm-up),
    batched as prediction batches it (one 3D window; up to 16 slices of a 2D network, per slice)."""
    from autoseg.planning.inference_cost import slices_per_call

    batch = slices_per_call(trainer.configuration.patch_size) if trainer.configuration.dimension == 2 else 1
    sample = data[:1].expand(batch, *data.shape[1:])
    network, deep_supervision = trainer.network, trainer.network.deep_supervision
    network.eval()
    network.deep_supervision = False
    times = []
    try:
        with torch.no_grad():
            inputs = trainer._input({"data": sample})
            for index in range(repeats + 1):
                start = time.perf_counter()
                network(inputs)
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                if index:
                    times.append(time.perf_counter() - start)
    finally:
        network.deep_supervision = deep_supervision
        network.train()
    return statistics.median(times) / batch



def stored_speed(configuration: ConfigurationPlan, trainer: Trainer) -> SpeedMeasurement | None:
    """The speed ``autoseg plan --benchmark`` stored for ``configuration``, if it was measured on
    this device with the same threads and augmentation workers (else None: measure again)."""
    stored = configuration.measured_speed
    if not stored:
        return None
    try:
        speed = SpeedMeasurement(**stored)
    except TypeError:
        return None
    same = (speed.device == trainer.device.type and speed.device_name == device_name(trainer.device)
            and speed.threads == torch.get_num_threads() and speed.augmentation_workers == trainer.config.num_workers)
    return speed if same else None


@dataclass(frozen=True)
class ValidationPlan:
    """How the fold's validation cases are predicted after training, and its estimated cost (s)."""

    use_mirroring: bool
    estimated_seconds: float
    reason: str


@dataclass
class FoldTraining:
    """A trained fold: the trainer (``trainer.configuration_name`` is what was trained: the planned
    configuration or its budget variant) and how its validation is to be predicted."""

    trainer: Trainer
    validation: ValidationPlan


def estimate_prediction_seconds(shapes: list[list[int]], configuration: ConfigurationPlan,
                                speed: SpeedMeasurement, use_mirroring: bool) -> float:
    """Network seconds to predict cases of these preprocessed shapes (voxels, ``(z, y, x)``); used for
    the validation cases after training and for the per-case estimates of ``plan --time-budget``.

    A forward pass of one training patch costs what :meth:`SpeedMeasurement.forward_seconds`
    says (measured with the training speed); a larger inference window costs in proportion
    to its voxels.
    """
    mirror_axes = configuration.training.augmentation.mirror_axes if use_mirroring else None
    divisors = configuration.network.total_downsampling()
    patches = sum(case_cost_in_patches(shape, configuration.patch_size, divisors, mirror_axes) for shape in shapes)
    return patches * speed.forward_seconds(configuration.batch_size)


def export_seconds(shapes: list[list[int]]) -> float:
    """Seconds to restore, write and score validation cases of these original shapes (voxels):
    :data:`EXPORT_SECONDS_PER_MEGAVOXEL` per million voxels."""
    return EXPORT_SECONDS_PER_MEGAVOXEL * sum(math.prod(shape) for shape in shapes) / 1e6


def validation_calibration(run_records: list[dict]) -> tuple[float, int]:
    """``(factor, n)``: the median of measured / estimated validation seconds over the ``n`` run
    records that hold both (``validation_seconds``, ``validation.estimated_seconds``), clipped to
    :data:`VALIDATION_CALIBRATION_BOUNDS`; ``(1.0, 0)`` when none does."""
    ratios = []
    for record in run_records:
        measured = record.get("validation_seconds")
        estimated = (record.get("validation") or {}).get("estimated_seconds")
        if isinstance(measured, (int, float)) and isinstance(estimated, (int, float)) and estimated > 0:
            ratios.append(measured / estimated)
    if not ratios:
        return 1.0, 0
    low, high = VALIDATION_CALIBRATION_BOUNDS
    return float(min(max(statistics.median(ratios), low), high)), len(ratios)


def plan_validation(shapes: list[list[int]], original_shapes: list[list[int]], configuration: ConfigurationPlan,
                    speed: SpeedMeasurement, budget_seconds: float,
                    calibration: tuple[float, int] = (1.0, 0)) -> ValidationPlan:
    """Mirroring when validation with it fits :data:`MAX_VALIDATION_BUDGET_FRACTION` of the budget, else none.

    ``shapes``: the validation cases preprocessed (network grid), ``original_shapes``: as read
    (voxels); the estimate is the network time plus restoring, writing and scoring
    (:func:`export_seconds`), times ``calibration`` (:func:`validation_calibration`: what earlier
    validations on this machine took against their estimates). Validation with mirroring also
    scores each case without it and with each single mirror axis, from the same network passes
    (:mod:`autoseg.evaluation.cross_validation`): no extra pass, but up to 1 + dimension more label
    maps restored to the original grid and scored, each about half an export.
    """
    factor, num_measured = calibration
    export = export_seconds(original_shapes)
    without = factor * (estimate_prediction_seconds(shapes, configuration, speed, False) + export)
    with_mirroring = factor * (estimate_prediction_seconds(shapes, configuration, speed, True) + export
                               + (1 + configuration.dimension) * export / 2)
    limit = MAX_VALIDATION_BUDGET_FRACTION * budget_seconds
    scaled = (f" (scaled by {factor:.2f}, the median measured/estimated time of {num_measured} earlier "
              "validation(s) in this work folder)") if num_measured else ""
    if with_mirroring <= limit:
        return ValidationPlan(True, with_mirroring, f"validation of {len(shapes)} cases with and without test-time "
                                                    f"mirroring: estimated {with_mirroring:.0f} s{scaled}, kept "
                                                    "within the budget")
    return ValidationPlan(False, without, (
        f"validation of {len(shapes)} cases with test-time mirroring would take about {with_mirroring:.0f} s "
        f"(> {MAX_VALIDATION_BUDGET_FRACTION:.0%} of the budget), so it runs without mirroring: estimated "
        f"{without:.0f} s{scaled}, kept within the budget"))


def validation_shapes(trainer: Trainer) -> tuple[list[list[int]], list[list[int]]]:
    """Shapes (voxels) of the trainer's validation cases: preprocessed, and as read."""
    properties = [read_json(cached_case_paths(trainer.cache, case)[2]) for case in trainer.val_cases]
    return ([entry["shape_after_resampling"] for entry in properties],
            [entry["geometry"]["shape"] for entry in properties])


def trainer_class(plans: Plans, configuration_name: str, options: TrainingOptions) -> type[Trainer]:
    """The trainer named by ``--trainer``, else by the configuration's ``training.trainer``."""
    return TRAINERS.get(options.trainer or plans.configuration(configuration_name).training.trainer)


def configuration_to_train(plans: Plans, work: WorkDir, configuration_name: str, split_mode: str,
                           budget: float | None = None) -> str:
    """A planned configuration trains as its recorded budget variant when an earlier fold trained one,
    else as the one ``autoseg plan --time-budget`` chose for it for this budget, else as itself."""
    for variant in plans.variants_of(configuration_name):
        if work.has_checkpoints(variant, split_mode):
            return variant
    if plans.budget_plan and budget is not None and plans.budget_plan.get("time_budget_seconds") == budget:
        chosen = plans.budget_choice(configuration_name)
        if chosen in plans.configurations:
            return chosen
    return configuration_name


def median_case_shape(configuration: ConfigurationPlan, fingerprint: dict) -> list[int]:
    """The median case at the configuration's spacing, ``(z, y, x)`` voxels (2D: the case's own slices)."""
    if configuration.dimension == 3:
        return [int(v) for v in configuration.median_image_shape]
    slices = int(round(fingerprint.get("median_shape_after_crop", [1])[0]))
    return [slices] + [int(v) for v in configuration.median_image_shape]


def patches_per_case(configuration: ConfigurationPlan, case_shape: list[int]) -> float:
    """How many patches it takes to cover a case of ``case_shape`` (``(z, y, x)`` voxels): its voxels over
    the patch's; for a 2D configuration, one slice's (y, x) voxels over the patch's.

    A 2D network's slices are not counted: neighbouring slices look alike, and on the large CT
    (BENCHMARKS.md, "Dice against time budget: large synthetic CT") 2d_f8_b2 with one 512x512 patch
    per slice and about 180 slices per case reached 90% of its 6,250-iteration Dice after 1,250
    iterations and 98% after 1,700, like
    Task04's 3D network whose patch covers the case (0.84 at 1,000); counting the slices asked
    for 12,950.
    """
    voxels = math.prod(case_shape[1:]) if configuration.dimension == 2 else math.prod(case_shape)
    return voxels / math.prod(configuration.patch_size)


def iterations_needed(configuration: ConfigurationPlan, case_shape: list[int]) -> int:
    """The fewest iterations worth training the configuration for, given its median case
    (``(z, y, x)`` voxels at its spacing): :data:`MIN_USEFUL_ITERATIONS` when a patch covers the case,
    growing with ``patches_per_case ** ITERATIONS_NEEDED_EXPONENT`` beyond (multiples of 50)."""
    growth = max(1.0, patches_per_case(configuration, case_shape)) ** ITERATIONS_NEEDED_EXPONENT
    return int(math.ceil(MIN_USEFUL_ITERATIONS * growth / 50.0)) * 50


@dataclass
class NetworkDecision:
    """What a time budget decided for one configuration: the configuration trained (the planned one
    or a budget variant, recorded in plans.json), its speed, the iteration plan and validation."""

    configuration: str
    trained_as: str
    speed: SpeedMeasurement
    iterations: IterationPlan
    validation: ValidationPlan
    variant_reason: str
    decisions: list[str]
    iterations_needed: int = MIN_USEFUL_ITERATIONS
    budget_seconds: float | None = None  # the budget trained for (grown for ``min_iterations``)
    class_outlooks: list[ClassOutlook] = field(default_factory=list)  # rarest class first
    foreground_sampling: ForegroundSampling | None = None

    @property
    def feasible(self) -> bool:
        """Whether the budget allows the iterations this configuration needs (:func:`iterations_needed`)."""
        return self.iterations.total_iterations >= self.iterations_needed


def decide_network(work: WorkDir, configuration_name: str, fold: int, options: TrainingOptions,
                   length: TrainingLength, budget: float, start: float,
                   trainer_type: type[Trainer] = Trainer, class_outlook: bool = True) -> NetworkDecision:
    """Measure (or take the stored speed of) the configuration; when fewer iterations fit than
    :data:`PREFERRED_ITERATIONS_FACTOR` times what it needs (:func:`iterations_needed`), look for a
    smaller variant (measured, unless measured before) and record the one chosen in plans.json (with
    its measured speed, so later folds need not measure again); then fit validation and iterations to
    the budget. ``start`` is when the budget began (``time.time()``).

    The smallest variant is measured first: when even it cannot reach the preferred iterations, it is
    trained without measuring the others, since iterations beat width there
    (BENCHMARKS.md, "Dice against time budget: large synthetic CT": 1,250 iterations of 8 base
    features reached 0.67 where 900 of 16 reached 0.32). Otherwise the variants
    are tried from the largest down, and the first that reaches the preferred iterations wins.
    """
    plans = work.load_plans()
    name = configuration_to_train(plans, work, configuration_name, options.split_mode, budget)
    trainer = trainer_type(work, name, fold, options)
    median_case = median_case_shape(trainer.configuration, work.read_fingerprint())
    needed = iterations_needed(trainer.configuration, median_case)
    decisions = [f"chosen configuration {name}" + (f" (the budget variant of {configuration_name} chosen "
                                                   "before)" if name != configuration_name else ""),
                 f"{name} needs at least {needed} iterations ({MIN_USEFUL_ITERATIONS} x the square root of the "
                 f"{patches_per_case(trainer.configuration, median_case):.1f} patches that cover its median "
                 f"{'slice' if trainer.configuration.dimension == 2 else 'case'} "
                 f"{'x'.join(map(str, median_case[-trainer.configuration.dimension:]))}, at least 1)"]
    measurement_limit = max(5.0, MEASUREMENT_BUDGET_FRACTION * budget)
    speed = stored_speed(trainer.configuration, trainer)
    if speed is not None:
        decisions.append(f"speed {speed.seconds_per_iteration:.3f} s per iteration, measured before "
                         "(`autoseg plan --benchmark` or --time-budget) on this device")
    else:
        speed = measure_speed(trainer, time_limit=measurement_limit)
        decisions.append(f"measured {speed.seconds_per_iteration:.3f} s per iteration on {speed.device_name} "
                         f"({speed.threads} threads, {speed.augmentation_workers} augmentation workers)")
        plans = work.load_plans()  # kept, so other folds and `train -c auto` need not measure again
        plans.configurations[name].measured_speed = speed.to_dict()
        work.save_plans(plans)
    plan = iterations_for_budget(budget, speed.seconds_per_iteration)
    decisions.append(f"{plan.total_iterations} iterations fit {budget / 60:.1f} min")
    variant_reason = ""
    preferred = PREFERRED_ITERATIONS_FACTOR * needed
    if plan.total_iterations < preferred:
        smaller = budget_variants(trainer.configuration)
        if work.has_checkpoints(name, options.split_mode):
            why = "other folds were trained with it"
        elif not length.scale_to_budget:
            why = "--keep-network"
        elif trainer.configuration.variant_of:
            why = f"it is already a budget variant of {trainer.configuration.variant_of}"
        elif not smaller:
            why = "it is already the smallest variant"
        else:
            why = None
        if why is not None:
            if plan.total_iterations < needed:
                decisions.append(f"WARNING: only {plan.total_iterations} iterations fit the budget (< "
                                 f"{needed}), but the network is kept: {why}")
        else:
            recorded = work.load_plans().configurations

            def iterations_left(measured: SpeedMeasurement) -> int:
                return iterations_for_budget(budget - (time.time() - start),
                                             measured.seconds_per_iteration).total_iterations

            def variant_speed(variant: ConfigurationPlan) -> SpeedMeasurement:
                candidate = trainer_type(work, name, fold, options, configuration=variant)
                # a variant recorded before (another budget, `plan --time-budget`) keeps its measured speed
                known = stored_speed(recorded[variant.name], candidate) if variant.name in recorded else None
                measured = known or measure_speed(candidate, time_limit=measurement_limit)
                decisions.append(f"variant {variant.name}: {measured.seconds_per_iteration:.3f} s per iteration "
                                 f"({'measured before' if known else 'measured'}), {iterations_left(measured)} "
                                 "iterations fit")
                return measured

            variant = smaller[-1]
            speeds = {variant.name: variant_speed(variant)}
            if iterations_left(speeds[variant.name]) >= preferred:
                # largest first: the first that reaches the preferred iterations (the smallest does)
                for candidate in smaller:
                    if candidate.name not in speeds:
                        speeds[candidate.name] = variant_speed(candidate)
                    if iterations_left(speeds[candidate.name]) >= preferred:
                        variant = candidate
                        break
                why_variant = (f"{variant.name} is the largest variant that reaches {PREFERRED_ITERATIONS_FACTOR}x "
                               "them (just above the floor, more iterations of a narrower network win)")
            else:
                why_variant = (f"not even the smallest variant reaches {PREFERRED_ITERATIONS_FACTOR}x them, so the "
                               "smallest is trained (below that, iterations beat width)")
            smallest = speeds[smaller[-1].name].seconds_per_iteration
            faster = [name for name, other in speeds.items() if other.seconds_per_iteration < smallest]
            if faster:  # a larger network cannot be faster: the machine was busy while the smallest was timed
                decisions.append(f"WARNING: {', '.join(faster)} measured faster than the smaller {smaller[-1].name}: "
                                 "the machine was busy while measuring, so these timings are unreliable")
            planned_iterations = plan.total_iterations
            speed = speeds[variant.name]
            plan = iterations_for_budget(budget - (time.time() - start), speed.seconds_per_iteration)
            variant_reason = (
                f"time budget {budget / 60:.1f} min on {speed.device_name} ({speed.threads} threads): "
                f"{configuration_name} as planned allowed {planned_iterations} iterations, it needs {needed} "
                f"and {preferred} are preferred; {why_variant}: trained as {variant.name} "
                f"({variant.network.features_per_stage[0]} base features, batch {variant.batch_size}; measured "
                f"{speed.seconds_per_iteration:.3f} s per iteration, {plan.total_iterations} iterations)")
            variant.measured_speed = speed.to_dict()
            plans = work.load_plans()
            add_budget_variant(plans, variant, variant_reason)
            work.save_plans(plans)
            name = variant.name
            decisions.append(variant_reason + f"; recorded in plans.json as {name}")
    grown = extended_budget(budget, plan.total_iterations, length.min_iterations, length.max_time_budget_seconds)
    if grown > budget:
        decisions.append(f"only {plan.total_iterations} iterations fit {budget / 60:.1f} min on this machine now "
                         f"(busy, or slower than expected): the budget grows to {grown / 60:.1f} min to reach "
                         f"{length.min_iterations} (at most {length.max_time_budget_seconds / 60:.1f} min)")
        budget = grown
    chosen = work.load_plans().configuration(name)
    validation = plan_validation(*validation_shapes(trainer), chosen, speed, budget,
                                 validation_calibration(work.all_run_records()))
    decisions.append(validation.reason)
    if length.epochs is None:  # training gets what validation leaves of the budget
        plan = iterations_for_budget(budget - validation.estimated_seconds - (time.time() - start),
                                     speed.seconds_per_iteration)
        decisions.append(f"{plan.total_iterations} iterations fit the {budget / 60:.1f} min budget after "
                         f"measuring and validation")
    plan = with_length_overrides(plan, length)
    decision = NetworkDecision(configuration_name, name, speed, plan, validation, variant_reason, decisions, needed,
                               budget)
    return with_class_outlook(decision, trainer, time.time() - start) if class_outlook else decision


def with_class_outlook(decision: NetworkDecision, trainer: Trainer, seconds_spent: float) -> NetworkDecision:
    """``decision`` with the foreground sampling its network trains with and each class's outlook then: how
    often its patches show it (measured on the fold of ``trainer``), the iterations it needs, and the budget
    that would fit them (:mod:`autoseg.training.class_exposure`; ``seconds_spent`` choosing and the validation
    estimate included); both are added to its decisions."""
    plans = trainer.plans
    chosen = trainer.work.load_plans().configuration(decision.trained_as)
    plan = decision.iterations
    model = measure_exposure_model(trainer.cache, trainer.train_cases, chosen, plans.evaluated_classes,
                                   annotated_only=plans.ignore_label is not None, seed=trainer.fold)
    sampling, exposure = choose_foreground_sampling(model, chosen.batch_size, chosen.training.oversample_foreground,
                                                    decision.iterations_needed, plan.total_iterations,
                                                    plans.class_names)
    epoch_cost = epoch_cost_in_iterations(plan.iterations_per_epoch, plan.validation_iterations_per_epoch) \
        / plan.iterations_per_epoch
    outlooks = class_outlooks(exposure, plans.class_names, decision.iterations_needed, plan.total_iterations,
                              decision.speed.seconds_per_iteration, epoch_cost,
                              seconds_spent + decision.validation.estimated_seconds)
    decisions = [*decision.decisions, f"foreground sampling: {sampling.reason}",
                 *(outlook.describe() for outlook in outlooks)]
    return replace(decision, decisions=decisions, class_outlooks=outlooks, foreground_sampling=sampling)


def training_time_budget(budget: float, validation: ValidationPlan, start: float, length: TrainingLength,
                         iterations_per_epoch: int) -> TimeBudget:
    """The trainer's deadline: the budget less the validation estimate; with ``length.min_iterations``,
    the epochs that reach them are kept while they end within ``length.max_time_budget_seconds``
    (training slower than measured, e.g. on a busy machine, would otherwise cut them)."""
    if not length.min_iterations or not length.max_time_budget_seconds:
        return TimeBudget(budget - validation.estimated_seconds, start)
    return TimeBudget(budget - validation.estimated_seconds, start,
                      min_epochs=math.ceil(length.min_iterations / iterations_per_epoch),
                      limit_seconds=length.max_time_budget_seconds - validation.estimated_seconds)


def resolve_budget(device_type: str, length: TrainingLength) -> float | None:
    """The time budget per fold (s): the one given; on a CPU without one (and without --epochs), the default."""
    if length.time_budget_seconds is None and device_type == "cpu" and length.epochs is None:
        return DEFAULT_CPU_BUDGET_SECONDS
    return length.time_budget_seconds


def train_fold(work_dir: str | os.PathLike | WorkDir, configuration_name: str, fold: int,
               options: TrainingOptions | None = None, length: TrainingLength | None = None,
               resume: bool = False, overwrite: bool = False) -> FoldTraining:
    """Train one fold; with a time budget (given, or the CPU default) decide its length, network and
    validation first (:func:`decide_network`), so that training and validation together end within
    the budget. Each decision and its reason is logged before training starts and written to ``run.json``.
    """
    work = WorkDir.of(work_dir)
    options = options or TrainingOptions()
    length = length or TrainingLength()
    plans = work.load_plans()
    trainer_type = trainer_class(plans, configuration_name, options)
    device = prepare_device(options.device)
    budget = resolve_budget(device.type, length)
    if budget is not None and length.time_budget_seconds is None:
        print(f"no GPU: training within the default CPU budget of {budget / 60:.0f} minutes per fold "
              "(--time-budget to change it; --epochs for a fixed length)")
    if budget is None:
        plan = None
        if length.epochs or length.iterations_per_epoch:
            plan = with_length_overrides(plans.configuration(configuration_name).training.iteration_plan(), length)
        trainer = trainer_type(work, configuration_name, fold, options, iteration_plan=plan)
        trainer.run(resume=resume, overwrite=overwrite)
        if trainer.initialisation is not None and trainer.distributed.is_main:
            work.write_run_record(configuration_name, fold, {
                "configuration": configuration_name, "initialisation": trainer.initialisation, "epochs": trainer.epoch,
                "iterations": trainer.epoch * trainer.iterations_per_epoch,
                "training_seconds": trainer.training_seconds}, options.split_mode)
        return FoldTraining(trainer, ValidationPlan(True, 0.0, "no time budget: validation with test-time mirroring"))

    start = length.budget_started_at or time.time()
    name = configuration_to_train(plans, work, configuration_name, options.split_mode, budget)
    probe = trainer_type(work, name, fold, replace(options, distributed=False))  # no collective: a check only
    probe.check_can_start(resume, overwrite)
    if resume and probe.has_checkpoints():
        validation = ValidationPlan(True, 0.0, "validation with test-time mirroring")
        if work.run_record_path(name, fold, options.split_mode).is_file():
            recorded = work.read_run_record(name, fold, options.split_mode).get("validation")
            validation = ValidationPlan(**recorded) if recorded else validation
        resumed = trainer_type(work, name, fold, options,
                               time_budget=TimeBudget(budget - validation.estimated_seconds, start))
        resumed.run(resume=True)
        return FoldTraining(resumed, validation)

    decision = decide_for_all_ranks(work, configuration_name, fold, options, length, budget, start, trainer_type,
                                    device)  # joins a torchrun job's process group first, with a long timeout
    name, plan, validation = decision.trained_as, decision.iterations, decision.validation
    budget = decision.budget_seconds or budget
    trainer = trainer_type(work, name, fold, options, iteration_plan=plan,
                           time_budget=training_time_budget(budget, validation, start, length,
                                                            plan.iterations_per_epoch),
                           foreground_sampling=decision.foreground_sampling)
    for line in decision.decisions:
        trainer.log(line)
    if options.initialise_from is not None:
        trainer.check_can_start(resume, overwrite)  # before loading weights into a fold that is not to be touched
        trainer.initialise_from(options.initialise_from)
    configuration = trainer.configuration
    record = {
        "time_budget_seconds": budget, "measured_speed": decision.speed.to_dict(), "configuration": name,
        "variant_of": configuration.variant_of, "variant_reason": decision.variant_reason,
        "decisions": decision.decisions, "validation": asdict(validation),
        "class_outlooks": [outlook.to_dict() for outlook in decision.class_outlooks],
        "foreground_sampling": decision.foreground_sampling.to_dict() if decision.foreground_sampling else None,
        "planned_epochs": plan.epochs, "iterations_per_epoch": plan.iterations_per_epoch,
        "patch_size": configuration.patch_size, "batch_size": configuration.batch_size,
        "features_per_stage": configuration.network.features_per_stage,
        "initialisation": trainer.initialisation}
    if trainer.distributed.is_main:
        work.write_run_record(name, fold, record, options.split_mode)
    trainer.run(overwrite=overwrite)
    record.update(epochs=trainer.epoch, iterations=trainer.epoch * trainer.iterations_per_epoch,
                  training_seconds=trainer.training_seconds,
                  seconds_from_start_to_final_checkpoint=trainer.finished_at - start)
    if trainer.distributed.is_main:
        work.write_run_record(name, fold, record, options.split_mode)
    return FoldTraining(trainer, validation)


def decide_for_all_ranks(work: WorkDir, configuration_name: str, fold: int, options: TrainingOptions,
                         length: TrainingLength, budget: float, start: float, trainer_type: type[Trainer],
                         device: torch.device) -> NetworkDecision:
    """:func:`decide_network`, under torchrun made once: rank 0 measures with trainers of its own (not
    data-parallel) while the other ranks wait, then every rank gets its decision. The speed measured
    is one process's; the epochs then follow the data-parallel epochs' measured time (rank 0's clock,
    broadcast every epoch), so the budget holds."""
    context = DistributedContext.from_environment()
    if not context.enabled:
        return decide_network(work, configuration_name, fold, options, length, budget, start, trainer_type)
    context.start(torch.device(context.device_name(device.type) or device.type),
                  timeout_seconds=max(COLLECTIVE_TIMEOUT_SECONDS, 3 * MEASUREMENT_BUDGET_FRACTION * budget))
    decision = None
    if context.is_main:
        decision = decide_network(work, configuration_name, fold, replace(options, distributed=False), length,
                                  budget, start, trainer_type)
    return context.broadcast(decision)
