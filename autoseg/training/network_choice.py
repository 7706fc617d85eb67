"""The network one configuration trains as within a time budget, and for how long.

:func:`decide_network` measures (or reuses the recorded speed of) the planned network; when fewer
iterations fit the budget than :data:`~autoseg.planning.training_cost.PREFERRED_ITERATIONS_FACTOR`
times what it needs, it looks for a smaller variant (:func:`autoseg.planning.variants.budget_variants`):
the largest that reaches them is trained, else the smallest (below that, iterations beat width). A
chosen variant is recorded in the work folder's budget decisions (:mod:`autoseg.workdir`) as a
configuration of its own, and every fold of the configuration then trains as it. Then validation and
the iterations are fitted to the budget, and how often each class will be seen is said
(:func:`with_class_outlook`). Which configuration to train is :mod:`autoseg.training.choice`;
running the fold is :mod:`autoseg.training.fold_training`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from autoseg.planning.training_cost import (
    MIN_USEFUL_ITERATIONS,
    PREFERRED_ITERATIONS_FACTOR,
    SpeedMeasurement,
    TrainingLength,
    ValidationPlan,
    epoch_cost_in_iterations,
    extended_time_budget,
    iterations_for_budget,
    iterations_needed,
    median_case_shape,
    patches_per_case,
    plan_validation,
    validation_calibration,
    with_length_overrides,
)
from autoseg.planning.variants import budget_variant_record, budget_variants
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.plans.training import ForegroundSampling, IterationPlan
from autoseg.training.class_exposure import (
    ClassOutlook,
    choose_foreground_sampling,
    class_outlooks,
    measure_exposure_model,
)
from autoseg.training.speed import measure_speed, stored_speed
from autoseg.training.trainer import TRAINERS, Trainer, TrainingOptions
from autoseg.utils.files import read_json
from autoseg.workdir import WorkDir, cached_case_paths

#: Measuring the planned network's speed may take at most this fraction of the budget.
MEASUREMENT_BUDGET_FRACTION = 0.05


def trainer_class(plans: Plans, configuration_name: str, options: TrainingOptions) -> type[Trainer]:
    """The trainer named by ``--trainer``, else by the configuration's ``training.trainer``."""
    return TRAINERS.get(options.trainer or plans.configuration(configuration_name).training.trainer)


def configuration_to_train(plans: Plans, work: WorkDir, configuration_name: str, split_mode: str,
                           time_budget_seconds: float | None = None) -> str:
    """A planned configuration trains as its recorded budget variant when an earlier fold trained one,
    else as the one ``autoseg plan --time-budget`` chose for it for this budget, else as itself."""
    for variant in plans.variants_of(configuration_name):
        if work.has_checkpoints(variant, split_mode):
            return variant
    if (plans.budget_plan and time_budget_seconds is not None
            and plans.budget_plan.get("time_budget_seconds") == time_budget_seconds):
        chosen = plans.budget_choice(configuration_name)
        if chosen in plans.configurations:
            return chosen
    return configuration_name


def validation_shapes(trainer: Trainer) -> tuple[list[list[int]], list[list[int]]]:
    """Shapes (voxels) of the trainer's validation cases: preprocessed, and as read."""
    properties = [read_json(cached_case_paths(trainer.cache, case)[2]) for case in trainer.val_cases]
    return ([entry["shape_after_resampling"] for entry in properties],
            [entry["geometry"]["shape"] for entry in properties])


@dataclass
class NetworkDecision:
    """What a time budget decided for one configuration: the configuration trained (the planned one
    or a budget variant, recorded in WORK/budget/variants/), its speed, the iteration plan and validation."""

    configuration: str
    trained_as: str
    speed: SpeedMeasurement
    iterations: IterationPlan
    validation: ValidationPlan
    variant_reason: str
    decisions: list[str]
    iterations_needed: int = MIN_USEFUL_ITERATIONS
    time_budget_seconds: float | None = None  # the budget trained for (grown for ``min_iterations``)
    class_outlooks: list[ClassOutlook] = field(default_factory=list)  # rarest class first
    foreground_sampling: ForegroundSampling | None = None

    @property
    def feasible(self) -> bool:
        """Whether the budget allows the iterations this configuration needs (:func:`iterations_needed`)."""
        return self.iterations.total_iterations >= self.iterations_needed


@dataclass
class VariantSearch:
    """What choosing a smaller variant needs to know: the fold's trainers are built from these, every
    measurement is said in ``decisions``, and the time left counts from ``start`` (``time.time()``)."""

    work: WorkDir
    name: str
    fold: int
    options: TrainingOptions
    trainer_type: type[Trainer]
    time_budget_seconds: float
    start: float
    measurement_limit: float
    decisions: list[str]

    def iterations_left(self, speed: SpeedMeasurement) -> int:
        """Iterations that still fit the budget at ``speed``."""
        return iterations_for_budget(self.time_budget_seconds - (time.time() - self.start),
                                     speed.seconds_per_iteration).total_iterations

    def variant_speed(self, variant: ConfigurationPlan, recorded: dict[str, ConfigurationPlan]) -> SpeedMeasurement:
        """A variant's speed: recorded before (another budget, `plan --time-budget`) on this device, else measured."""
        candidate = self.trainer_type(self.work, self.name, self.fold, self.options, configuration=variant)
        known = stored_speed(recorded[variant.name], candidate) if variant.name in recorded else None
        measured = known or measure_speed(candidate, time_limit=self.measurement_limit)
        self.decisions.append(f"variant {variant.name}: {measured.seconds_per_iteration:.3f} s per iteration "
                              f"({'measured before' if known else 'measured'}), {self.iterations_left(measured)} "
                              "iterations fit")
        return measured


def choose_variant(search: VariantSearch, smaller: list[ConfigurationPlan], preferred: int
                   ) -> tuple[ConfigurationPlan, SpeedMeasurement, str]:
    """The variant to train (``smaller``: largest first), its speed and why.

    The smallest is measured first: when even it cannot reach the ``preferred`` iterations, it is
    trained without measuring the others, since iterations beat width there
    (BENCHMARKS.md, "Dice against time budget: large synthetic CT": 1,250 iterations of 8 base
    features reached 0.67 where 900 of 16 reached 0.32). Otherwise the variants
    are tried from the largest down, and the first that reaches the preferred iterations wins.
    """
    recorded = search.work.load_plans().configurations
    variant = smaller[-1]
    speeds = {variant.name: search.variant_speed(variant, recorded)}
    if search.iterations_left(speeds[variant.name]) >= preferred:
        for candidate in smaller:  # largest first: the first that reaches the preferred iterations (the smallest does)
            if candidate.name not in speeds:
                speeds[candidate.name] = search.variant_speed(candidate, recorded)
            if search.iterations_left(speeds[candidate.name]) >= preferred:
                variant = candidate
                break
        why = (f"{variant.name} is the largest variant that reaches {PREFERRED_ITERATIONS_FACTOR}x them (just "
               "above the floor, more iterations of a narrower network win)")
    else:
        why = (f"not even the smallest variant reaches {PREFERRED_ITERATIONS_FACTOR}x them, so the smallest is "
               "trained (below that, iterations beat width)")
    smallest = speeds[smaller[-1].name].seconds_per_iteration
    faster = [name for name, other in speeds.items() if other.seconds_per_iteration < smallest]
    if faster:  # a larger network cannot be faster: the machine was busy while the smallest was timed
        search.decisions.append(f"WARNING: {', '.join(faster)} measured faster than the smaller {smaller[-1].name}: "
                                "the machine was busy while measuring, so these timings are unreliable")
    return variant, speeds[variant.name], why


def reason_to_keep_network(work: WorkDir, trainer: Trainer, name: str, length: TrainingLength,
                           split_mode: str) -> str | None:
    """Why the configuration ``name`` must not be scaled down (None: it may be)."""
    if work.has_checkpoints(name, split_mode):
        return "other folds were trained with it"
    if not length.scale_to_budget:
        return length.keep_network_reason
    if trainer.configuration.variant_of:
        return f"it is already a budget variant of {trainer.configuration.variant_of}"
    if not budget_variants(trainer.configuration):
        return "it is already the smallest variant"
    return None


def planned_speed(work: WorkDir, trainer: Trainer, name: str, measurement_limit: float,
                  decisions: list[str]) -> SpeedMeasurement:
    """The configuration's speed: recorded before on this device, else measured and recorded (so that other
    folds and `train -c auto` need not measure again)."""
    speed = stored_speed(trainer.configuration, trainer)
    if speed is not None:
        decisions.append(f"speed {speed.seconds_per_iteration:.3f} s per iteration, measured before "
                         "(`autoseg plan --benchmark` or --time-budget) on this device")
        return speed
    speed = measure_speed(trainer, time_limit=measurement_limit)
    decisions.append(f"measured {speed.seconds_per_iteration:.3f} s per iteration on {speed.device_name} "
                     f"({speed.threads} threads, {speed.augmentation_workers} augmentation workers)")
    work.record_measured_speed(name, speed.to_dict())
    return speed


def needed_iterations_decision(trainer: Trainer, name: str, configuration_name: str, fingerprint: dict
                               ) -> tuple[int, list[str]]:
    """The iterations the configuration needs (:func:`iterations_needed`) and the first decision lines."""
    configuration = trainer.configuration
    median_case = median_case_shape(configuration, fingerprint)
    needed = iterations_needed(configuration, median_case)
    unit = "slice" if configuration.dimension == 2 else "case"
    return needed, [
        f"chosen configuration {name}" + (f" (the budget variant of {configuration_name} chosen before)"
                                          if name != configuration_name else ""),
        f"{name} needs at least {needed} iterations ({MIN_USEFUL_ITERATIONS} x the square root of the "
        f"{patches_per_case(configuration, median_case):.1f} patches that cover its median {unit} "
        f"{'x'.join(map(str, median_case[-configuration.dimension:]))}, at least 1)"]


def decide_network(work: WorkDir, configuration_name: str, fold: int, options: TrainingOptions,
                   length: TrainingLength, time_budget_seconds: float, start: float,
                   trainer_type: type[Trainer] = Trainer, class_outlook: bool = True) -> NetworkDecision:
    """Measure (or take the recorded speed of) the configuration; when fewer iterations fit than
    :data:`PREFERRED_ITERATIONS_FACTOR` times what it needs (:func:`iterations_needed`), look for a
    smaller variant (:func:`choose_variant`) and record the one chosen in the work folder (with its
    measured speed, so later folds need not measure again); then fit validation and iterations to the
    time budget. ``start`` is when the budget began (``time.time()``)."""
    plans = work.load_plans()
    name = configuration_to_train(plans, work, configuration_name, options.split_mode, time_budget_seconds)
    trainer = trainer_type(work, name, fold, options)
    needed, decisions = needed_iterations_decision(trainer, name, configuration_name, work.read_fingerprint())
    measurement_limit = max(5.0, MEASUREMENT_BUDGET_FRACTION * time_budget_seconds)
    speed = planned_speed(work, trainer, name, measurement_limit, decisions)
    plan = iterations_for_budget(time_budget_seconds, speed.seconds_per_iteration)
    decisions.append(f"{plan.total_iterations} iterations fit {time_budget_seconds / 60:.1f} min")
    variant_reason = ""
    preferred = PREFERRED_ITERATIONS_FACTOR * needed
    if plan.total_iterations < preferred:
        kept = reason_to_keep_network(work, trainer, name, length, options.split_mode)
        if kept is not None and options.initialise_from is not None:
            decisions.append(f"{plan.total_iterations} iterations fine-tune the model's network ({kept}); the {needed} "
                             "a network needs from random weights do not apply")
        elif kept is not None and plan.total_iterations < needed:
            decisions.append(f"WARNING: only {plan.total_iterations} iterations fit the budget (< {needed}), but the "
                             f"network is kept: {kept}")
        elif kept is None:
            search = VariantSearch(work, name, fold, options, trainer_type, time_budget_seconds, start,
                                   measurement_limit, decisions)
            variant, speed, why = choose_variant(search, budget_variants(trainer.configuration), preferred)
            planned_iterations = plan.total_iterations
            plan = iterations_for_budget(time_budget_seconds - (time.time() - start), speed.seconds_per_iteration)
            variant_reason = (
                f"time budget {time_budget_seconds / 60:.1f} min on {speed.device_name} ({speed.threads} threads): "
                f"{configuration_name} as planned allowed {planned_iterations} iterations, it needs {needed} "
                f"and {preferred} are preferred; {why}: trained as {variant.name} "
                f"({variant.network.features_per_stage[0]} base features, batch {variant.batch_size}; measured "
                f"{speed.seconds_per_iteration:.3f} s per iteration, {plan.total_iterations} iterations)")
            variant.measured_speed = speed.to_dict()
            work.record_budget_variant(budget_variant_record(variant, variant_reason))
            name = variant.name
            decisions.append(variant_reason + f"; recorded as {name} ({work.variant_path(name)})")
    return fitted_decision(work, trainer, configuration_name, name, speed, plan, variant_reason, decisions, needed,
                           length, time_budget_seconds, start, class_outlook)


def fitted_decision(work: WorkDir, trainer: Trainer, configuration_name: str, name: str, speed: SpeedMeasurement,
                    plan: IterationPlan, variant_reason: str, decisions: list[str], needed: int,
                    length: TrainingLength, time_budget_seconds: float, start: float,
                    class_outlook: bool) -> NetworkDecision:
    """The decision for the network ``name`` trains as: the budget grown for ``length.min_iterations``,
    validation planned, the iterations that are left, and (``class_outlook``) each class's outlook."""
    grown = extended_time_budget(time_budget_seconds, plan.total_iterations, length.min_iterations,
                            length.max_time_budget_seconds)
    if grown > time_budget_seconds:
        decisions.append(f"only {plan.total_iterations} iterations fit {time_budget_seconds / 60:.1f} min on this "
                         f"machine now (busy, or slower than expected): the budget grows to {grown / 60:.1f} min to "
                         f"reach {length.min_iterations} (at most {length.max_time_budget_seconds / 60:.1f} min)")
        time_budget_seconds = grown
    chosen = work.load_plans().configuration(name)
    validation = plan_validation(*validation_shapes(trainer), chosen, speed, time_budget_seconds,
                                 validation_calibration(work.all_run_records()))
    decisions.append(validation.reason)
    if length.epochs is None:  # training gets what validation leaves of the budget
        plan = iterations_for_budget(time_budget_seconds - validation.estimated_seconds - (time.time() - start),
                                     speed.seconds_per_iteration)
        decisions.append(f"{plan.total_iterations} iterations fit the {time_budget_seconds / 60:.1f} min budget "
                         "after measuring and validation")
    plan = with_length_overrides(plan, length)
    decision = NetworkDecision(configuration_name, name, speed, plan, validation, variant_reason, decisions, needed,
                               time_budget_seconds)
    return with_class_outlook(decision, trainer, time.time() - start) if class_outlook else decision


def with_class_outlook(decision: NetworkDecision, trainer: Trainer, seconds_spent: float) -> NetworkDecision:
    """``decision`` with the foreground sampling its network trains with and each class's outlook then: how
    often its patches show it (measured on the fold of ``trainer``), the iterations it needs, and the budget
    that would fit them (:mod:`autoseg.training.class_exposure`; ``seconds_spent`` choosing and the validation
    estimate included); both are added to its decisions."""
    plans = trainer.plans
    from_trained_model = trainer.options.initialise_from is not None
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
                 *(outlook.describe(from_trained_model) for outlook in outlooks)]
    return replace(decision, decisions=decisions, class_outlooks=outlooks, foreground_sampling=sampling)
