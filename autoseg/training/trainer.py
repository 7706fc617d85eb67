"""Training one fold of one configuration: the loop, and the hooks a trainer variant overrides.

Outputs, in ``WORK/results/{configuration}/fold_{k}/`` (see :mod:`autoseg.workdir`)::

    checkpoint_latest.pt   every few epochs and on interruption (resume point)
    checkpoint_best.pt     best exponential moving average of the validation pseudo-Dice
    checkpoint_final.pt    after the last epoch
    training_log.txt       settings, per-epoch losses, pseudo-Dice, learning rate, time
    progress.png           the curves

The Trainer owns the loop; how long it runs is an input: an :class:`IterationPlan`
(from the plans, the command line or the time-budget decision of
:mod:`autoseg.training.network_choice`) and, optionally, a :class:`TimeBudget` whose deadline
the epochs are fitted to as training goes. Predicting and scoring the validation
cases afterwards is :func:`autoseg.evaluation.cross_validation.validate_fold`.

Variants: subclass :class:`Trainer`, override :meth:`Trainer.build_network`,
:meth:`~Trainer.build_loss`, :meth:`~Trainer.build_optimizer` or
:meth:`~Trainer.learning_rate`, and register it with ``@TRAINERS.register("name")``;
``"trainer": "name"`` in a configuration's ``training`` in plans.json, or
``autoseg train --trainer name``, selects it. Inference rebuilds networks from plans.json
with :func:`autoseg.model.builders.build_network`, so a variant that changes the network
architecture must register that architecture instead.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autoseg.errors import AutosegInputError
from autoseg.io.labels import class_mask
from autoseg.model.builders import build_network
from autoseg.model.checkpoints import load_checkpoint, save_checkpoint
from autoseg.model.device import prepare_device
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.plans.training import ForegroundSampling, IterationPlan, TrainingConfig
from autoseg.preprocessing.previous_stage import prepare_previous_stage
from autoseg.training.dataloader import default_num_workers, make_training_batches, make_validation_batches
from autoseg.training.distributed import DistributedContext, rank_batch_size
from autoseg.training.fine_tuning import (
    LOADED,
    FineTuningSchedule,
    InitialisationSource,
    choose_fine_tuning_schedule,
    describe_transfer,
    network_facts,
    parameter_group,
    source_state,
    transfer_weights,
)
from autoseg.training.loss import (
    DeepSupervisionLoss,
    DiceCELoss,
    RegionDiceBCELoss,
    deep_supervision_weights,
    downsample_target,
)
from autoseg.training.progress import TrainingCurves, TrainingLog, plot_progress
from autoseg.training.splits import load_or_create_splits
from autoseg.utils.progress_bars import progress_bar
from autoseg.utils.registry import Registry
from autoseg.workdir import WorkDir, checkpoint_file

#: Smoothing of the validation pseudo-Dice that selects checkpoint_best.
PSEUDO_DICE_EMA = 0.9
#: checkpoint_latest.pt is also written when the last one is older than this (long CPU epochs), so
#: a killed run loses at most this plus one epoch. Writing a 45 MB checkpoint (Task04, 32 base
#: features) takes 0.04 s: 0.03% of the time at this age (it was 600 s; a kill at minute 9 lost all).
LATEST_CHECKPOINT_MAX_AGE_SECONDS = 120


@dataclass
class TrainingOptions:
    """Choices of one training run that are not in plans.json.

    Attributes:
        device: ``cuda``, ``cpu``, ``mps`` or None (detected).
        num_workers: augmentation worker processes (None: from plans.json, else fit the device).
        split_mode: ``random`` or ``spacing`` folds (see :mod:`autoseg.training.splits`).
        seed: seed of initialisation and sampling.
        progress: progress bars and echoing the log.
        trainer: trainer name (:data:`TRAINERS`) overriding the configuration's ``training.trainer``.
        distributed: join a torchrun job when launched in one (False: train alone even then, e.g. to
            measure a network's speed on rank 0 for a time budget).
        initialise_from: start a new run from a trained model's weights, fine-tuned
            (:mod:`autoseg.training.fine_tuning`); a resumed run keeps what its checkpoint records.
    """

    device: str | None = None
    num_workers: int | None = None
    split_mode: str = "random"
    seed: int = 0
    progress: bool = True
    trainer: str | None = None
    distributed: bool = True
    initialise_from: InitialisationSource | None = None


@dataclass(frozen=True)
class TimeBudget:
    """Training must end ``seconds`` after ``started_at`` (``time.time()``), time spent before included.

    A resumed run has ``seconds`` minus the training time its checkpoint records left. With
    ``min_epochs`` and ``limit_seconds``, training that runs slower than measured (a busy machine)
    still gets ``min_epochs`` epochs as long as they end within ``limit_seconds`` (the demo's
    iteration floor).
    """

    seconds: float
    started_at: float
    min_epochs: int = 0
    limit_seconds: float | None = None

    def deadline(self, seconds_already_trained: float = 0.0) -> float:
        return self.started_at + max(0.0, self.seconds - seconds_already_trained)

    def limit(self, seconds_already_trained: float = 0.0) -> float:
        """The latest end for reaching ``min_epochs`` (the deadline when no limit is set)."""
        seconds = max(self.seconds, self.limit_seconds or 0.0)
        return self.started_at + max(0.0, seconds - seconds_already_trained)


def time_fraction(now: float, origin: float, end: float) -> float:
    """Fraction ``(now - origin) / (end - origin)`` of a training time span (seconds), clipped to [0, 1]."""
    if end <= origin:
        return 1.0
    return min(1.0, max(0.0, (now - origin) / (end - origin)))


#: Under a time budget the epochs left are re-estimated from the median time of this many recent epochs,
#: so one slow epoch (a busy machine) neither cuts training short nor moves the schedule.
EPOCH_TIME_WINDOW = 5


def pseudo_dice_counts(logits: torch.Tensor, target: torch.Tensor, classes: Sequence[Sequence[int]],
                       ignore_label: int | None = None, region_outputs: bool = False) -> np.ndarray:
    """(3, len(classes)) true positives, false positives, false negatives over a batch.

    ``classes`` holds the label values of each scored class (several for a region). Softmax
    outputs are scored by their argmax; with ``region_outputs`` output ``i`` is the sigmoid
    logit of region ``classes[i]``, predicted where it is above 0 (probability 0.5). Voxels
    of ``ignore_label`` in the target count nowhere.
    """
    reference = target[:, 0].long()
    annotated = None if ignore_label is None else reference != ignore_label
    argmax = None if region_outputs else logits.argmax(1)
    counts = np.zeros((3, len(classes)))
    for index, values in enumerate(classes):
        predicted = logits[:, index] > 0 if region_outputs else class_mask(argmax, values)
        actual = class_mask(reference, values)
        if annotated is not None:
            predicted = predicted & annotated
        counts[0, index] = (predicted & actual).sum().item()
        counts[1, index] = (predicted & ~actual).sum().item()
        counts[2, index] = (~predicted & actual).sum().item()
    return counts


#: Each rank of a distributed run samples with the fold's seed plus this times its rank.
RANK_SEED_STRIDE = 100_003


class Trainer:
    """Trains one fold of one configuration from the preprocessed cache of a work folder.

    Args:
        work_dir: the work folder.
        configuration_name: the configuration whose results folder is written.
        fold: 0..4.
        options: device, workers, split mode, seed, progress (see :class:`TrainingOptions`).
        iteration_plan: training length; default the configuration's ``training`` in plans.json.
            On resume, the interrupted run's length is kept unless one is given.
        time_budget: fit the epochs (and the learning-rate schedule) to this budget's deadline.
        configuration: use this plan instead of the one in plans.json (e.g. to measure a
            candidate variant's speed before it is recorded).
        foreground_sampling: how to draw foreground (from the time-budget decision: the share of
            forced-foreground samples and the weight of each class); default the plans' settings with
            every class equally often. On resume, the interrupted run's is kept unless one is given.
    """

    def __init__(self, work_dir: str | os.PathLike | WorkDir, configuration_name: str, fold: int,
                 options: TrainingOptions | None = None, iteration_plan: IterationPlan | None = None,
                 time_budget: TimeBudget | None = None, configuration: ConfigurationPlan | None = None,
                 foreground_sampling: ForegroundSampling | None = None):
        self.work = WorkDir.of(work_dir)
        self.options = options or TrainingOptions()
        self.plans: Plans = self.work.load_plans()
        self.configuration_name = configuration_name
        self.configuration = configuration or self.plans.configuration(configuration_name)
        self.fold = fold
        self.config: TrainingConfig = copy.deepcopy(self.configuration.training)
        if self.options.num_workers is not None:
            self.config.num_workers = self.options.num_workers
        if self.options.trainer is not None:
            self.config.trainer = self.options.trainer
        self._iteration_plan_given = iteration_plan is not None
        self.foreground_sampling: ForegroundSampling | None = None
        self._foreground_sampling_given = foreground_sampling is not None
        self.use_foreground_sampling(foreground_sampling)
        plan = iteration_plan or self.config.iteration_plan()
        self.epochs = plan.epochs
        self.iterations_per_epoch = plan.iterations_per_epoch
        self.validation_iterations = plan.validation_iterations_per_epoch
        self.time_budget = time_budget
        self.deadline: float | None = None
        self.limit: float | None = None
        # the time span the learning-rate schedule follows under a time budget (time.time(); None: by step)
        self._schedule_origin = 0.0
        self._schedule_end: float | None = None
        self.distributed = DistributedContext.from_environment() if self.options.distributed else DistributedContext()
        self.device = prepare_device(self.distributed.device_name(self.options.device))
        self.distributed.start(self.device)
        if self.distributed.enabled:  # the planned batch split across ranks (distributed.py)
            self.configuration = copy.deepcopy(self.configuration)
            self.configuration.batch_size = rank_batch_size(self.configuration.batch_size,
                                                            self.distributed.world_size)
        if self.config.num_workers is None:
            self.config.num_workers = default_num_workers(self.device.type)
        self.output_dir = self.work.fold_dir(configuration_name, fold, self.options.split_mode)
        self.cache = self.work.cache_folder(self.configuration.data_identifier)
        case_ids = self.work.read_cache_index(self.configuration.data_identifier)["cases"]
        fingerprint = self.work.read_fingerprint()
        folds = load_or_create_splits(self.work, case_ids, self.options.split_mode, fingerprint)
        if not 0 <= fold < len(folds):
            raise AutosegInputError(f"fold {fold} does not exist (folds 0..{len(folds) - 1})")
        self.train_cases, self.val_cases = folds[fold]["train"], folds[fold]["val"]
        self.previous_stage_folder = None
        if self.configuration.previous_stage:
            self.previous_stage_folder = prepare_previous_stage(self.work, self.plans, configuration_name,
                                                                case_ids, self.options.split_mode)
        torch.manual_seed(self.options.seed + fold)
        self.network = self.build_network().to(self.device)
        # channels-last convolutions are 12-20% faster on CPU (BENCHMARKS.md, "Seconds per training iteration")
        self.memory_format = None
        if self.device.type == "cpu":
            self.memory_format = torch.channels_last_3d if self.configuration.dimension == 3 else torch.channels_last
            self.network = self.network.to(memory_format=self.memory_format)
        self.model: torch.nn.Module = self.network  # what runs forward: the network, or its DDP wrapper
        # fine-tuning (initialise_from): the tensors that start fresh, the schedule, what run.json records
        self.new_parameters: set[str] = set()
        self.fine_tuning: FineTuningSchedule | None = None
        self.initialisation: dict | None = None
        self._frozen_groups: set[str] = set()
        if self.distributed.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = self.build_optimizer()
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        self.loss = self.build_loss()
        self.curves = TrainingCurves()
        self.epoch = 0
        self.best_ema = -math.inf
        self.training_seconds = 0.0
        self.finished_at: float | None = None
        self._last_latest_save = time.time()
        self.log = (TrainingLog(self.output_dir / "training_log.txt", echo=self.options.progress)
                    if self.distributed.is_main else (lambda message: None))

    def use_foreground_sampling(self, sampling: ForegroundSampling | None) -> None:
        """Draw training (and pseudo-Dice) patches with ``sampling`` (None: the plans' settings)."""
        self.foreground_sampling = sampling
        if sampling is not None:
            self.config.oversample_foreground = sampling.oversample_foreground

    # ------------------------------------------------------------------ hooks
    def build_network(self) -> torch.nn.Module:
        """The network to train (default: built from plans.json by architecture name)."""
        return build_network(self.configuration.network, self.plans.input_channels(self.configuration_name),
                             self.plans.num_classes)

    def build_loss(self) -> torch.nn.Module:
        """Dice + cross-entropy over the network's outputs (softmax classes, cross-entropy weighted as the
        plans say; or Dice + binary cross-entropy of one sigmoid per region), deep supervision weights
        halving per level."""
        if self.plans.is_region_based:
            base = RegionDiceBCELoss(self.plans.regions, batch_dice=True, ignore_label=self.plans.ignore_label)
        else:
            base = DiceCELoss(batch_dice=True, ignore_label=self.plans.ignore_label,
                              class_weighting=self.config.cross_entropy_weighting)
        return DeepSupervisionLoss(base, deep_supervision_weights(len(self.network.output_scales())))

    def build_optimizer(self) -> torch.optim.Optimizer:
        """SGD with Nesterov momentum (nnU-Net's), over :meth:`parameter_groups`."""
        return torch.optim.SGD(self.parameter_groups(), lr=self.config.initial_lr, momentum=self.config.momentum,
                               weight_decay=self.config.weight_decay, nesterov=True)

    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups, each with its ``name``: one (``"all"``) when training from
        scratch; when fine-tuning, ``"loaded"`` and ``"new"`` (:mod:`autoseg.training.fine_tuning`)."""
        if self.fine_tuning is None:
            return [{"params": list(self.network.parameters()), "name": "all"}]
        groups: dict[str, list] = {}
        for name, parameter in self.network.named_parameters():
            groups.setdefault(parameter_group(name, self.new_parameters), []).append(parameter)
        return [{"params": parameters, "name": group} for group, parameters in sorted(groups.items())]

    def group_learning_rate_factor(self, group: str, progress: float) -> float:
        """Multiplier of :meth:`learning_rate` for parameter group ``group`` at schedule ``progress`` (0..1)."""
        return 1.0 if self.fine_tuning is None else self.fine_tuning.factor(group, progress)

    # ------------------------------------------------------------------ fine-tuning
    def initialise_from(self, source: InitialisationSource) -> None:
        """Start from ``source``'s weights (:func:`~autoseg.training.fine_tuning.transfer_weights`), with the
        fine-tuning schedule chosen for what loaded; logs the summary line and records it for run.json."""
        target = self.network.state_dict()
        facts = network_facts(self.plans, self.configuration_name)
        transfer = transfer_weights(source_state(source), target, source.facts, facts, source.description)
        self.network.load_state_dict(transfer.state)
        schedule = choose_fine_tuning_schedule(transfer)
        self.initialisation = {
            "source": source.description, "sha256": source.sha256, "configuration": source.configuration,
            "fold": source.fold, "summary": describe_transfer(transfer, source.description),
            "tensors": len(transfer.state), "loaded": len(transfer.loaded), "adapted": transfer.adapted,
            "reinitialised": transfer.reinitialised, "schedule": schedule.to_dict()}
        self._use_fine_tuning(schedule, transfer.new_parameters)
        self.log(self.initialisation["summary"])
        self.log(f"fine-tuning schedule: {schedule.reason}")

    def _use_fine_tuning(self, schedule: FineTuningSchedule, new_parameters: set[str]) -> None:
        self.fine_tuning, self.new_parameters = schedule, new_parameters
        self.optimizer = self.build_optimizer()

    def _drop_frozen_gradients(self) -> None:
        """Frozen groups take no step: their gradients go (SGD skips parameters without one, so neither
        momentum nor weight decay moves them)."""
        for group in self.optimizer.param_groups:
            if group.get("name") in self._frozen_groups:
                for parameter in group["params"]:
                    parameter.grad = None

    def learning_rate(self, step: int) -> float:
        """Learning rate of training iteration ``step`` (0-based): polynomial decay over
        :meth:`schedule_progress` (the iterations done, or under a time budget the time used)."""
        return self.config.initial_lr * (1.0 - self.schedule_progress(step)) ** self.config.lr_exponent

    def schedule_progress(self, step: int) -> float:
        """How far training is, 0..1, for the schedule: ``step / total_steps``; under a time budget the
        fraction of the training time used (wall clock, resumed runs included), which moves smoothly
        whatever one epoch costs, where the epoch count re-estimated from epoch times would jump."""
        end = self._schedule_end
        if end is None:
            return min(step, self.total_steps()) / max(self.total_steps(), 1)
        return time_fraction(time.time(), self._schedule_origin, end)

    # ------------------------------------------------------------------ checkpoints
    def iteration_plan(self) -> IterationPlan:
        """The training length as it stands (the epochs follow the deadline under a time budget)."""
        return IterationPlan(self.epochs, self.iterations_per_epoch, self.validation_iterations)

    def checkpoint_content(self) -> dict:
        return {
            "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler else None,
            "epoch": self.epoch, "curves": self.curves.to_dict(), "best_ema": self.best_ema,
            "configuration": self.configuration_name, "fold": self.fold, "trainer": self.config.trainer,
            "iteration_plan": self.iteration_plan().to_dict(), "training_config": self.config.to_dict(),
            "training_seconds": self.training_seconds,
            "foreground_sampling": self.foreground_sampling.to_dict() if self.foreground_sampling else None,
            "initialisation": self.initialisation,
        }

    def save(self, which: str) -> None:
        """Write ``checkpoint_{which}.pt`` (rank 0 alone when distributed)."""
        if self.distributed.is_main:
            save_checkpoint(checkpoint_file(self.output_dir, which), self.checkpoint_content())

    def load(self, which: str) -> None:
        content = load_checkpoint(checkpoint_file(self.output_dir, which), map_location=self.device)
        self.network.load_state_dict(content["network"])
        initialisation = content.get("initialisation")
        if initialisation:  # a fine-tuned run: the same parameter groups before their state loads
            self.initialisation = initialisation
            self._use_fine_tuning(FineTuningSchedule.from_dict(initialisation["schedule"]),
                                  set(initialisation["reinitialised"]))
        self.optimizer.load_state_dict(content["optimizer"])
        if self.grad_scaler is not None and content.get("grad_scaler"):
            self.grad_scaler.load_state_dict(content["grad_scaler"])
        self.epoch = int(content["epoch"])
        self.curves = TrainingCurves.from_dict(content["curves"])
        self.best_ema = float(content["best_ema"])
        self.training_seconds = float(content.get("training_seconds", 0.0))
        if not self._foreground_sampling_given and content.get("foreground_sampling"):
            self.use_foreground_sampling(ForegroundSampling.from_dict(content["foreground_sampling"]))
        if not self._iteration_plan_given:  # the schedule of the interrupted run (older checkpoints: training_config)
            saved = content.get("iteration_plan") or content.get("training_config", {})
            self.epochs = int(saved.get("epochs", self.epochs))
            self.iterations_per_epoch = int(saved.get("iterations_per_epoch", self.iterations_per_epoch))
            self.validation_iterations = int(saved.get("validation_iterations_per_epoch",
                                                       self.validation_iterations))

    # ------------------------------------------------------------------ steps
    def _targets(self, target: torch.Tensor):
        return downsample_target(target, self.network.output_scales()) if self.network.deep_supervision else target

    def _input(self, batch: dict) -> torch.Tensor:
        data = batch["data"].to(self.device, non_blocking=True)
        return data if self.memory_format is None else data.contiguous(memory_format=self.memory_format)

    def train_step(self, batch: dict) -> float:
        data = self._input(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss = self.loss(self.model(data), self._targets(target))
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self._drop_frozen_gradients()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.gradient_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            self._drop_frozen_gradients()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.gradient_clip_norm)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: dict) -> tuple[float, np.ndarray]:
        data = self._input(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            outputs = self.model(data)
            loss = self.loss(outputs, self._targets(target))
        full_resolution = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        classes = self.plans.regions or list(self.plans.evaluated_classes.values())
        return float(loss), pseudo_dice_counts(full_resolution.float(), target, classes, self.plans.ignore_label,
                                               region_outputs=self.plans.is_region_based)

    @property
    def label_classes(self) -> int:
        """Values the label maps hold besides the ignore value (background included; for regions the
        values the regions are made of, not the network's outputs)."""
        return len(self.plans.foreground_labels) + 1

    def training_batches(self, seed: int):
        """Augmented training batches of this fold (also used to measure the speed of a step); each rank
        of a distributed run samples with its own seed."""
        return make_training_batches(
            self.cache, self.train_cases, self.configuration, self.config, self.label_classes,
            self.plans.foreground_labels, self.previous_stage_folder,
            seed=seed + RANK_SEED_STRIDE * self.distributed.rank, num_workers=self.config.num_workers,
            annotated_only=self.plans.ignore_label is not None, class_weights=self.class_weights)

    @property
    def class_weights(self) -> dict[int, float] | None:
        """How often a forced-foreground patch is centred on each label value (None: equally often)."""
        return self.foreground_sampling.class_weights if self.foreground_sampling else None

    # ------------------------------------------------------------------ loop
    def total_steps(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def has_checkpoints(self) -> bool:
        return any(checkpoint_file(self.output_dir, which).is_file() for which in ("latest", "final"))

    def check_can_start(self, resume: bool, overwrite: bool) -> None:
        """Refuse to silently overwrite a trained or interrupted fold."""
        if self.has_checkpoints() and not resume and not overwrite:
            raise AutosegInputError(f"{self.output_dir}: already has checkpoints; use --resume to continue "
                                    "or --overwrite to start again")

    def load_resume_point(self) -> bool:
        """Load checkpoint_final (else checkpoint_latest); False when there is none."""
        for which in ("final", "latest"):
            if checkpoint_file(self.output_dir, which).is_file():
                self.load(which)
                return True
        return False

    def run(self, resume: bool = False, overwrite: bool = False) -> TrainingCurves:
        """Train (or resume) to the last epoch (or the time budget's deadline); write checkpoint_final."""
        self.check_can_start(resume, overwrite)
        self.distributed.barrier()  # every rank has checked before rank 0 writes anything
        resumed = resume and self.load_resume_point()
        if resume and not resumed:
            self.log(f"no checkpoint in {self.output_dir} to resume from: starting from scratch")
        if not resumed and self.options.initialise_from is not None and self.initialisation is None:
            self.initialise_from(self.options.initialise_from)
        if self.time_budget is not None:
            self.deadline = self.time_budget.deadline(self.training_seconds)
            self.limit = self.time_budget.limit(self.training_seconds)
            if self.epoch:
                self.log(f"time budget: resuming with {(self.deadline - time.time()) / 60:.1f} of "
                         f"{self.time_budget.seconds / 60:.1f} min left")
        self.log(f"training {self.configuration_name} fold {self.fold} on {self.device} "
                 f"({torch.get_num_threads()} threads, trainer {self.config.trainer!r}): "
                 f"{len(self.train_cases)} training / {len(self.val_cases)} validation cases, "
                 f"{self.epochs} epochs x {self.iterations_per_epoch} iterations, "
                 f"patch {self.configuration.patch_size}, batch {self.configuration.batch_size}"
                 + (f" per rank x {self.distributed.world_size} ranks" if self.distributed.enabled else "")
                 + (f"; resuming at epoch {self.epoch}" if self.epoch else ""))
        if self.epoch < self.epochs:
            self._train_epochs()
        self.save("final")
        self.distributed.barrier()  # checkpoint_final is written before any rank goes on
        self.distributed.finish()  # every rank leaves the group together; rank 0 alone validates after
        self.finished_at = time.time()
        return self.curves

    def _train_epochs(self) -> None:
        config = self.config
        seed = self.options.seed * 1000 + self.fold * 100 + self.epoch
        train_batches = self.training_batches(seed)
        val_batches = make_validation_batches(
            self.cache, self.val_cases, self.configuration, config, self.label_classes,
            self.plans.foreground_labels, self.previous_stage_folder,
            seed=seed + 1 + RANK_SEED_STRIDE * self.distributed.rank, num_workers=min(1, config.num_workers),
            annotated_only=self.plans.ignore_label is not None, class_weights=self.class_weights)
        if self.deadline is not None:  # the schedule spans the training time, earlier sessions included
            self._schedule_origin = time.time() - self.training_seconds
            self._schedule_end = self.deadline
        try:
            while self.epoch < self.epochs:
                self._one_epoch(train_batches, val_batches, self.validation_iterations)
                self._fit_epochs_to_deadline()
                self.epochs = self.distributed.broadcast(self.epochs)  # rank 0's clock decides for all
        except KeyboardInterrupt:
            self.save("latest")
            self.log(f"interrupted: saved {checkpoint_file(self.output_dir, 'latest')} at epoch {self.epoch}; "
                     "continue with --resume")
            raise
        finally:
            train_batches.close()
            val_batches.close()

    def _fit_epochs_to_deadline(self) -> None:
        """With a time budget, set the number of epochs to what still fits before the deadline.

        The learning-rate schedule follows, so it still ends at (nearly) zero when
        the budget runs out, whether training runs slower or faster than measured. Never
        fewer than the budget's ``min_epochs`` while they fit its limit.
        """
        if self.deadline is None or not self.curves.epoch_seconds:
            return
        epoch_seconds = float(np.median(self.curves.epoch_seconds[-EPOCH_TIME_WINDOW:]))
        now = time.time()
        remaining = self.deadline - now
        fitting = self.epoch + max(0, int(remaining // epoch_seconds))
        floor = ""
        if fitting < self.time_budget.min_epochs and self.limit is not None:
            within_limit = self.epoch + max(0, int((self.limit - now) // epoch_seconds))
            if min(self.time_budget.min_epochs, within_limit) > fitting:
                fitting = min(self.time_budget.min_epochs, within_limit)
                floor = (f" (at least {self.time_budget.min_epochs} epochs while they end within "
                         f"{(self.limit - now) / 60:.1f} min)")
        if self._schedule_end is not None:  # the schedule ends where training is expected to
            self._schedule_end = max(self.deadline, now + (fitting - self.epoch) * epoch_seconds)
        if fitting != self.epochs:
            self.log(f"time budget: {remaining / 60:.1f} min left at {epoch_seconds:.1f} s per epoch: "
                     f"{fitting} epochs in total instead of {self.epochs}{floor}")
            self.epochs = fitting

    def _one_epoch(self, train_batches, val_batches, n_val: int) -> None:
        config = self.config
        start = time.perf_counter()
        self.network.train()
        losses = []
        step0 = self.epoch * self.iterations_per_epoch
        # A bar on a terminal only: in a log the epoch line below is the progress.
        bar = progress_bar(range(self.iterations_per_epoch), desc=f"epoch {self.epoch + 1}/{self.epochs}",
                           unit="it", disable=not (self.options.progress and self.distributed.is_main), leave=False,
                           plain_lines=False)
        for iteration in bar:
            lr = self.learning_rate(step0 + iteration)
            progress = self.schedule_progress(step0 + iteration) if self.fine_tuning else 0.0
            for group in self.optimizer.param_groups:
                group["lr"] = lr * self.group_learning_rate_factor(group.get("name", "all"), progress)
            self._frozen_groups = {LOADED} if self.fine_tuning and self.fine_tuning.frozen(LOADED, progress) else set()
            losses.append(self.train_step(next(train_batches)))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        bar.close()
        self.network.eval()
        val_losses, counts = [], np.zeros((3, len(self.plans.evaluated_classes)))
        for _ in range(n_val):
            loss, batch_counts = self.validation_step(next(val_batches))
            val_losses.append(loss)
            counts += batch_counts
        counts = self.distributed.sum(counts)  # every rank's patches, as one process with the global batch
        train_loss, val_loss = self.distributed.sum(np.array([np.mean(losses), np.mean(val_losses)])) \
            / self.distributed.world_size
        tp, fp, fn = counts
        dice = [float(2 * t / (2 * t + p + n)) if (2 * t + p + n) > 0 else float("nan")
                for t, p, n in zip(tp, fp, fn)]
        mean_dice = float(np.nanmean(dice)) if not all(np.isnan(dice)) else 0.0
        previous = self.curves.ema_pseudo_dice[-1] if self.curves.ema_pseudo_dice else mean_dice
        ema = PSEUDO_DICE_EMA * previous + (1 - PSEUDO_DICE_EMA) * mean_dice
        self.epoch += 1
        curves = self.curves
        curves.train_loss.append(float(train_loss))
        curves.val_loss.append(float(val_loss))
        curves.pseudo_dice.append(dice)
        curves.ema_pseudo_dice.append(float(ema))
        curves.learning_rate.append(float(self.optimizer.param_groups[0]["lr"]))
        curves.epoch_seconds.append(time.perf_counter() - start)
        self.training_seconds += curves.epoch_seconds[-1]
        remaining = (self.epochs - self.epoch) * float(np.median(curves.epoch_seconds[-EPOCH_TIME_WINDOW:]))
        self.log(f"epoch {self.epoch}/{self.epochs}: train loss {curves.train_loss[-1]:.4f}, "
                 f"val loss {curves.val_loss[-1]:.4f}, pseudo Dice {[round(d, 4) for d in dice]}, "
                 f"EMA {ema:.4f}, lr {curves.learning_rate[-1]:.2e}, {curves.epoch_seconds[-1]:.1f} s, "
                 f"ETA {remaining / 60:.1f} min")
        if ema > self.best_ema:
            self.best_ema = ema
            self.save("best")
        if (self.epoch % config.checkpoint_every_epochs == 0 or self.epoch == self.epochs
                or time.time() - self._last_latest_save > LATEST_CHECKPOINT_MAX_AGE_SECONDS):
            self.save("latest")
            self._last_latest_save = time.time()
        if self.distributed.is_main:
            plot_progress(curves, self.output_dir / "progress.png",
                          f"{self.plans.dataset_name} {self.configuration_name} fold {self.fold}",
                          [self.plans.class_names[key] for key in self.plans.evaluated_classes])


#: Trainer name (``training.trainer`` in plans.json, ``--trainer``) -> trainer class.
TRAINERS: Registry[type[Trainer]] = Registry("trainer")
TRAINERS.add("default", Trainer)
