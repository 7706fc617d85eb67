"""What training within a time budget costs, and how long it must be: pure rules, no torch.

The request (:class:`TrainingLength`, as asked on the command line, and the CPU default), the
iterations a configuration needs to learn (:func:`iterations_needed`, from the patches that cover its
median case), the epochs a budget fits at a measured speed (:func:`iterations_for_budget`;
:class:`SpeedMeasurement` is that measurement, taken by :mod:`autoseg.training.speed`), and what
predicting the validation cases after training costs (:func:`plan_validation`, from the window counts
of :mod:`autoseg.planning.inference_cost`). Shapes are voxels in array axis order ``(z, y, x)``; times
are seconds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from autoseg.planning.inference_cost import case_cost_in_patches
from autoseg.plans.schema import ConfigurationPlan
from autoseg.plans.training import IterationPlan, validation_iterations

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
    keep_network_reason: str = "--keep-network"  # said when ``scale_to_budget`` is False


def resolve_time_budget(device_type: str, length: TrainingLength) -> float | None:
    """The time budget per fold (s): the one given; on a CPU without one (and without --epochs), the default."""
    if length.time_budget_seconds is None and device_type == "cpu" and length.epochs is None:
        return DEFAULT_CPU_BUDGET_SECONDS
    return length.time_budget_seconds


def extended_time_budget(time_budget_seconds: float, iterations: int, min_iterations: int | None,
                    max_time_budget_seconds: float | None) -> float:
    """The budget (s) that fits ``min_iterations`` where ``time_budget_seconds`` fits ``iterations``
    (time scales with iterations), within ``max_time_budget_seconds``; ``time_budget_seconds`` when enough fit."""
    if not min_iterations or not max_time_budget_seconds or iterations >= min_iterations:
        return time_budget_seconds
    return min(max_time_budget_seconds, time_budget_seconds * min_iterations / max(iterations, 1))


def epoch_cost_in_iterations(iterations_per_epoch: int, validation_batches: int) -> float:
    """An epoch's cost in training iterations: its validation batches cost :data:`VALIDATION_COST_FRACTION`
    of an iteration each."""
    return iterations_per_epoch + VALIDATION_COST_FRACTION * validation_batches


def iterations_for_budget(time_budget_seconds: float, seconds_per_iteration: float,
                          iterations_per_epoch: int = BUDGET_ITERATIONS_PER_EPOCH,
                          validation_batches: int | None = None) -> IterationPlan:
    """Epochs that fit ``time_budget_seconds`` at ``seconds_per_iteration``, validation batches included.

    Each epoch costs ``iterations_per_epoch`` training iterations plus its validation
    batches (default: the trainer's rule, a fifth of the training iterations) at
    :data:`VALIDATION_COST_FRACTION` of the cost. At least one epoch.
    """
    if validation_batches is None:
        validation_batches = validation_iterations(iterations_per_epoch)
    epoch_seconds = seconds_per_iteration * epoch_cost_in_iterations(iterations_per_epoch, validation_batches)
    epochs = max(1, int(time_budget_seconds // epoch_seconds))
    return IterationPlan(epochs, iterations_per_epoch, validation_batches)


def with_length_overrides(plan: IterationPlan, length: TrainingLength) -> IterationPlan:
    """``plan`` with the epochs / iterations per epoch given on the command line."""
    iterations = length.iterations_per_epoch or plan.iterations_per_epoch
    return IterationPlan(length.epochs or plan.epochs, iterations,
                         validation_iterations(iterations, plan.validation_iterations_per_epoch))


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


@dataclass(frozen=True)
class ValidationPlan:
    """How the fold's validation cases are predicted after training, and its estimated cost (s)."""

    use_mirroring: bool
    estimated_seconds: float
    reason: str


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
                    speed: SpeedMeasurement, time_budget_seconds: float,
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
    limit = MAX_VALIDATION_BUDGET_FRACTION * time_budget_seconds
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
