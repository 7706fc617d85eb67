"""Training one fold within its time budget: decide, then train, and record what was decided.

:func:`train_fold` resolves the time budget (given, or the CPU default), has the network, length and
validation decided (:func:`autoseg.training.network_choice.decide_network`; under torchrun once, on
rank 0: :func:`decide_for_all_ranks`), fits the trainer's deadline to what validation leaves
(:func:`training_time_budget`) and writes each decision with its reason to the fold's ``run.json``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace

import torch

from autoseg.model.device import prepare_device
from autoseg.planning.training_cost import TrainingLength, ValidationPlan, resolve_time_budget, with_length_overrides
from autoseg.training.distributed import COLLECTIVE_TIMEOUT_SECONDS, DistributedContext
from autoseg.training.network_choice import (
    MEASUREMENT_BUDGET_FRACTION,
    NetworkDecision,
    configuration_to_train,
    decide_network,
    trainer_class,
)
from autoseg.training.trainer import TimeBudget, Trainer, TrainingOptions
from autoseg.workdir import WorkDir


@dataclass
class FoldTraining:
    """A trained fold: the trainer (``trainer.configuration_name`` is what was trained: the planned
    configuration or its budget variant) and how its validation is to be predicted."""

    trainer: Trainer
    validation: ValidationPlan


def training_time_budget(time_budget_seconds: float, validation: ValidationPlan, start: float, length: TrainingLength,
                         iterations_per_epoch: int) -> TimeBudget:
    """The trainer's deadline: the budget less the validation estimate; with ``length.min_iterations``,
    the epochs that reach them are kept while they end within ``length.max_time_budget_seconds``
    (training slower than measured, e.g. on a busy machine, would otherwise cut them)."""
    if not length.min_iterations or not length.max_time_budget_seconds:
        return TimeBudget(time_budget_seconds - validation.estimated_seconds, start)
    return TimeBudget(time_budget_seconds - validation.estimated_seconds, start,
                      min_epochs=math.ceil(length.min_iterations / iterations_per_epoch),
                      limit_seconds=length.max_time_budget_seconds - validation.estimated_seconds)


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
    time_budget_seconds = resolve_time_budget(device.type, length)
    if time_budget_seconds is not None and length.time_budget_seconds is None:
        print(f"no GPU: training within the default CPU budget of {time_budget_seconds / 60:.0f} minutes per fold "
              "(--time-budget to change it; --epochs for a fixed length)")
    if time_budget_seconds is None:
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
    name = configuration_to_train(plans, work, configuration_name, options.split_mode, time_budget_seconds)
    probe = trainer_type(work, name, fold, replace(options, distributed=False))  # no collective: a check only
    probe.check_can_start(resume, overwrite)
    if resume and probe.has_checkpoints():
        validation = ValidationPlan(True, 0.0, "validation with test-time mirroring")
        if work.run_record_path(name, fold, options.split_mode).is_file():
            recorded = work.read_run_record(name, fold, options.split_mode).get("validation")
            validation = ValidationPlan(**recorded) if recorded else validation
        resumed = trainer_type(work, name, fold, options,
                               time_budget=TimeBudget(time_budget_seconds - validation.estimated_seconds, start))
        resumed.run(resume=True)
        return FoldTraining(resumed, validation)

    # under torchrun this joins the job's process group first, with a long timeout
    decision = decide_for_all_ranks(work, configuration_name, fold, options, length, time_budget_seconds, start,
                                    trainer_type, device)
    name, plan, validation = decision.trained_as, decision.iterations, decision.validation
    time_budget_seconds = decision.time_budget_seconds or time_budget_seconds
    trainer = trainer_type(work, name, fold, options, iteration_plan=plan,
                           time_budget=training_time_budget(time_budget_seconds, validation, start, length,
                                                            plan.iterations_per_epoch),
                           foreground_sampling=decision.foreground_sampling)
    for line in decision.decisions:
        trainer.log(line)
    if options.initialise_from is not None:
        trainer.check_can_start(resume, overwrite)  # before loading weights into a fold that is not to be touched
        trainer.initialise_from(options.initialise_from)
    configuration = trainer.configuration
    record = {
        "time_budget_seconds": time_budget_seconds, "measured_speed": decision.speed.to_dict(), "configuration": name,
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
                         length: TrainingLength, time_budget_seconds: float, start: float, trainer_type: type[Trainer],
                         device: torch.device) -> NetworkDecision:
    """:func:`decide_network`, under torchrun made once: rank 0 measures with trainers of its own (not
    data-parallel) while the other ranks wait, then every rank gets its decision. The speed measured
    is one process's; the epochs then follow the data-parallel epochs' measured time (rank 0's clock,
    broadcast every epoch), so the budget holds."""
    context = DistributedContext.from_environment()
    if not context.enabled:
        return decide_network(work, configuration_name, fold, options, length, time_budget_seconds, start, trainer_type)
    context.start(torch.device(context.device_name(device.type) or device.type),
                  timeout_seconds=max(COLLECTIVE_TIMEOUT_SECONDS,
                                      3 * MEASUREMENT_BUDGET_FRACTION * time_budget_seconds))
    decision = None
    if context.is_main:
        decision = decide_network(work, configuration_name, fold, replace(options, distributed=False), length,
                                  time_budget_seconds, start, trainer_type)
    return context.broadcast(decision)
