"""Training one fold of one configuration.

Outputs, in ``{work_dir}/results/{configuration}/fold_{k}/``::

    checkpoint_latest.pt   every few epochs and on interruption (resume point)
    checkpoint_best.pt     best exponential moving average of the validation pseudo-Dice
    checkpoint_final.pt    after the last epoch
    training_log.txt       settings, per-epoch losses, pseudo-Dice, learning rate, time
    progress.png           the curves
    validation/            every validation case predicted at full resolution in its
                           original geometry ({case}.nii.gz), probabilities
                           ({case}.npz + .json) and summary.json (Dice etc.)
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from autoseg.errors import AutosegInputError
from autoseg.evaluation.evaluate import evaluate_arrays
from autoseg.evaluation.summary import format_table, write_results
from autoseg.inference.export import (
    export_segmentation,
    probabilities_to_segmentation,
    restore_original_shape,
    save_probabilities,
)
from autoseg.inference.predictor import Predictor, fold_dir, previous_stage_one_hot, previous_stage_to_grid
from autoseg.io.images import read_label
from autoseg.planning.plans import ConfigurationPlan, Plans, load_plans
from autoseg.preprocessing.cache import PREPROCESSED_FOLDER, cache_folder, load_cached_case
from autoseg.training.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from autoseg.training.config import TrainingConfig
from autoseg.training.dataloader import default_num_workers, make_training_batches, make_validation_batches
from autoseg.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights, downsample_target
from autoseg.training.network import build_network
from autoseg.training.progress import TrainingCurves, TrainingLog, plot_progress
from autoseg.training.splits import load_or_create_splits
from autoseg.utils.device import resolve_device, use_all_cores
from autoseg.utils.files import read_json, save_npy

#: Smoothing of the validation pseudo-Dice that selects checkpoint_best.
PSEUDO_DICE_EMA = 0.9
#: checkpoint_latest.pt is also written when the last one is older than this (long CPU epochs).
LATEST_CHECKPOINT_MAX_AGE_SECONDS = 600


@dataclass
class TrainingOptions:
    """Command-line choices of one training run (the rest comes from plans.json)."""

    device: str | None = None
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    num_workers: int | None = None
    split_mode: str = "random"
    seed: int = 0
    progress: bool = True
    validate: bool = True
    time_budget_seconds: float | None = None
    scale_to_budget: bool = True


def polynomial_lr(initial_lr: float, step: int, total_steps: int, exponent: float) -> float:
    """``initial_lr * (1 - step / total_steps) ** exponent`` (nnU-Net's schedule, per iteration)."""
    return initial_lr * (1 - min(step, total_steps) / max(total_steps, 1)) ** exponent


def validation_iterations(config: TrainingConfig) -> int:
    """Validation batches per epoch: the configured number, at most a fifth of the training iterations."""
    return max(1, min(config.validation_iterations_per_epoch, math.ceil(config.iterations_per_epoch / 5)))


def pseudo_dice_counts(logits: torch.Tensor, target: torch.Tensor, foreground_labels: list[int]) -> np.ndarray:
    """(3, n_foreground) true positives, false positives, false negatives of the argmax over a batch."""
    prediction = logits.argmax(1)
    reference = target[:, 0].long()
    counts = np.zeros((3, len(foreground_labels)))
    for index, label in enumerate(foreground_labels):
        predicted, actual = prediction == label, reference == label
        counts[0, index] = (predicted & actual).sum().item()
        counts[1, index] = (predicted & ~actual).sum().item()
        counts[2, index] = (~predicted & actual).sum().item()
    return counts


class Trainer:
    """Trains one fold of one configuration from the preprocessed cache of a work folder."""

    def __init__(self, work_dir: str | os.PathLike, configuration_name: str, fold: int,
                 options: TrainingOptions | None = None, configuration: ConfigurationPlan | None = None):
        self.work_dir = Path(work_dir)
        self.options = options or TrainingOptions()
        self.plans: Plans = load_plans(self.work_dir / "plans.json")
        self.configuration_name = configuration_name
        # ``configuration`` overrides the planned one (used to measure scaled-down variants).
        self.configuration = configuration or self.plans.configuration(configuration_name)
        self.fold = fold
        self.config: TrainingConfig = copy.deepcopy(self.configuration.training)
        if self.options.epochs is not None:
            self.config.epochs = self.options.epochs
        if self.options.iterations_per_epoch is not None:
            self.config.iterations_per_epoch = self.options.iterations_per_epoch
        if self.options.num_workers is not None:
            self.config.num_workers = self.options.num_workers
        self.device = resolve_device(self.options.device)
        if self.config.num_workers is None:
            self.config.num_workers = default_num_workers(self.device.type)
        self.output_dir = fold_dir(self.work_dir, configuration_name, fold, self.options.split_mode)
        self.cache = cache_folder(self.work_dir, self.configuration.data_identifier)
        cache_index = self.cache / "cache.json"
        if not cache_index.is_file():
            raise AutosegInputError(f"{cache_index}: not found; run `autoseg plan` for {configuration_name} first")
        case_ids = read_json(cache_index)["cases"]
        fingerprint = read_json(self.work_dir / "dataset_fingerprint.json")
        folds = load_or_create_splits(self.work_dir, case_ids, self.options.split_mode, fingerprint)
        if not 0 <= fold < len(folds):
            raise AutosegInputError(f"fold {fold} does not exist (folds 0..{len(folds) - 1})")
        self.train_cases, self.val_cases = folds[fold]["train"], folds[fold]["val"]
        self.previous_stage_folder = None
        if self.configuration.previous_stage:
            self.previous_stage_folder = prepare_previous_stage(self.work_dir, self.plans, configuration_name,
                                                                case_ids, self.options.split_mode)
        torch.manual_seed(self.options.seed + fold)
        self.network = build_network(self.configuration.network, self.plans.input_channels(configuration_name),
                                     self.plans.num_classes).to(self.device)
        # channels-last convolutions are 12-20% faster on CPU (measured, see BENCHMARKS.md)
        self.memory_format = None
        if self.device.type == "cpu":
            self.memory_format = torch.channels_last_3d if self.configuration.dimension == 3 else torch.channels_last
            self.network = self.network.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=self.config.initial_lr,
                                         momentum=self.config.momentum, weight_decay=self.config.weight_decay,
                                         nesterov=True)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        self.loss = DeepSupervisionLoss(DiceCELoss(batch_dice=True),
                                        deep_supervision_weights(len(self.network.output_scales())))
        self.curves = TrainingCurves()
        self.epoch = 0
        self.best_ema = -math.inf
        # Time budget: training stops (with its learning-rate schedule adjusted) by the deadline.
        self.deadline: float | None = None
        self.training_seconds = 0.0
        self._last_latest_save = time.time()
        self.log = TrainingLog(self.output_dir / "training_log.txt", echo=self.options.progress)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_content(self) -> dict:
        return {
            "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler else None,
            "epoch": self.epoch, "curves": self.curves.to_dict(), "best_ema": self.best_ema,
            "configuration": self.configuration_name, "fold": self.fold,
            "training_config": self.config.to_dict(), "training_seconds": self.training_seconds,
        }

    def save(self, which: str) -> None:
        save_checkpoint(checkpoint_path(self.output_dir, which), self.checkpoint_content())

    def load(self, which: str) -> None:
        content = load_checkpoint(checkpoint_path(self.output_dir, which), map_location=self.device)
        self.network.load_state_dict(content["network"])
        self.optimizer.load_state_dict(content["optimizer"])
        if self.grad_scaler is not None and content.get("grad_scaler"):
            self.grad_scaler.load_state_dict(content["grad_scaler"])
        self.epoch = int(content["epoch"])
        self.curves = TrainingCurves.from_dict(content["curves"])
        self.best_ema = float(content["best_ema"])
        self.training_seconds = float(content.get("training_seconds", 0.0))
        saved = content.get("training_config", {})
        overrides = {"epochs": self.options.epochs, "iterations_per_epoch": self.options.iterations_per_epoch,
                     "validation_iterations_per_epoch": None}
        for key, override in overrides.items():
            if key in saved and override is None:  # the schedule of the interrupted run, unless given now
                setattr(self.config, key, int(saved[key]))

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
            loss = self.loss(self.network(data), self._targets(target))
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.gradient_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.gradient_clip_norm)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: dict) -> tuple[float, np.ndarray]:
        data = self._input(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            outputs = self.network(data)
            loss = self.loss(outputs, self._targets(target))
        full_resolution = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        return float(loss), pseudo_dice_counts(full_resolution.float(), target, self.plans.foreground_labels)

    # ------------------------------------------------------------------ loop
    def total_steps(self) -> int:
        return self.config.epochs * self.config.iterations_per_epoch

    def has_checkpoints(self) -> bool:
        return any(checkpoint_path(self.output_dir, which).is_file() for which in ("latest", "final"))

    def check_can_start(self, resume: bool, overwrite: bool) -> None:
        """Refuse to silently overwrite a trained or interrupted fold."""
        if self.has_checkpoints() and not resume and not overwrite:
            raise AutosegInputError(f"{self.output_dir}: already has checkpoints; use --resume to continue "
                                    "or --overwrite to start again")

    def load_resume_point(self) -> bool:
        """Load checkpoint_final (else checkpoint_latest); False when there is none."""
        for which in ("final", "latest"):
            if checkpoint_path(self.output_dir, which).is_file():
                self.load(which)
                return True
        return False

    def run(self, resume: bool = False, overwrite: bool = False, already_loaded: bool = False) -> dict | None:
        """Train (or resume) to the last epoch, then predict and score the validation cases."""
        self.check_can_start(resume or already_loaded, overwrite)
        if resume and not already_loaded and not self.load_resume_point():
            self.log(f"no checkpoint in {self.output_dir} to resume from: starting from scratch")
        if self.device.type == "cpu":
            threads = use_all_cores()
        else:
            threads = torch.get_num_threads()
        self.log(f"training {self.configuration_name} fold {self.fold} on {self.device} ({threads} threads): "
                 f"{len(self.train_cases)} training / {len(self.val_cases)} validation cases, "
                 f"{self.config.epochs} epochs x {self.config.iterations_per_epoch} iterations, "
                 f"patch {self.configuration.patch_size}, batch {self.configuration.batch_size}"
                 + (f"; resuming at epoch {self.epoch}" if self.epoch else ""))
        if self.epoch < self.config.epochs:
            self._train_epochs()
        self.save("final")
        self.finished_at = time.time()
        summary = None
        if self.options.validate:
            summary = self.predict_validation()
        return summary

    def _train_epochs(self) -> None:
        config = self.config
        seed = self.options.seed * 1000 + self.fold * 100 + self.epoch
        train_batches = make_training_batches(
            self.cache, self.train_cases, self.configuration, config, self.plans.num_classes,
            self.plans.foreground_labels, self.previous_stage_folder, seed=seed, num_workers=config.num_workers)
        val_batches = make_validation_batches(
            self.cache, self.val_cases, self.configuration, config, self.plans.num_classes,
            self.plans.foreground_labels, self.previous_stage_folder, seed=seed + 1,
            num_workers=min(1, config.num_workers))
        n_val = validation_iterations(config)
        try:
            while self.epoch < config.epochs:
                self._one_epoch(train_batches, val_batches, n_val)
                self._fit_epochs_to_deadline()
        except KeyboardInterrupt:
            self.save("latest")
            self.log(f"interrupted: saved {checkpoint_path(self.output_dir, 'latest')} at epoch {self.epoch}; "
                     "continue with --resume")
            raise
        finally:
            train_batches.close()
            val_batches.close()

    def _fit_epochs_to_deadline(self) -> None:
        """With a time budget, set the number of epochs to what still fits before the deadline.

        The learning-rate schedule follows, so it still ends at (nearly) zero when
        the budget runs out, whether training runs slower or faster than measured.
        """
        if self.deadline is None or not self.curves.epoch_seconds:
            return
        epoch_seconds = float(np.mean(self.curves.epoch_seconds[-3:]))
        remaining = self.deadline - time.time()
        fitting = self.epoch + max(0, int(remaining // epoch_seconds))
        if fitting != self.config.epochs:
            self.log(f"time budget: {remaining / 60:.1f} min left at {epoch_seconds:.1f} s per epoch: "
                     f"{fitting} epochs in total instead of {self.config.epochs}")
            self.config.epochs = fitting

    def _one_epoch(self, train_batches, val_batches, n_val: int) -> None:
        config = self.config
        start = time.perf_counter()
        self.network.train()
        losses = []
        step0 = self.epoch * config.iterations_per_epoch
        bar = tqdm(range(config.iterations_per_epoch), desc=f"epoch {self.epoch + 1}/{config.epochs}",
                   unit="it", disable=not self.options.progress, leave=False)
        for iteration in bar:
            lr = polynomial_lr(config.initial_lr, step0 + iteration, self.total_steps(), config.lr_exponent)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            losses.append(self.train_step(next(train_batches)))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        bar.close()
        self.network.eval()
        val_losses, counts = [], np.zeros((3, len(self.plans.foreground_labels)))
        for _ in range(n_val):
            loss, batch_counts = self.validation_step(next(val_batches))
            val_losses.append(loss)
            counts += batch_counts
        tp, fp, fn = counts
        dice = [float(2 * t / (2 * t + p + n)) if (2 * t + p + n) > 0 else float("nan")
                for t, p, n in zip(tp, fp, fn)]
        mean_dice = float(np.nanmean(dice)) if not all(np.isnan(dice)) else 0.0
        previous = self.curves.ema_pseudo_dice[-1] if self.curves.ema_pseudo_dice else mean_dice
        ema = PSEUDO_DICE_EMA * previous + (1 - PSEUDO_DICE_EMA) * mean_dice
        self.epoch += 1
        curves = self.curves
        curves.train_loss.append(float(np.mean(losses)))
        curves.val_loss.append(float(np.mean(val_losses)))
        curves.pseudo_dice.append(dice)
        curves.ema_pseudo_dice.append(float(ema))
        curves.learning_rate.append(float(self.optimizer.param_groups[0]["lr"]))
        curves.epoch_seconds.append(time.perf_counter() - start)
        self.training_seconds += curves.epoch_seconds[-1]
        remaining = (config.epochs - self.epoch) * float(np.mean(curves.epoch_seconds[-3:]))
        self.log(f"epoch {self.epoch}/{config.epochs}: train loss {curves.train_loss[-1]:.4f}, "
                 f"val loss {curves.val_loss[-1]:.4f}, pseudo Dice {[round(d, 4) for d in dice]}, "
                 f"EMA {ema:.4f}, lr {curves.learning_rate[-1]:.2e}, {curves.epoch_seconds[-1]:.1f} s, "
                 f"ETA {remaining / 60:.1f} min")
        if ema > self.best_ema:
            self.best_ema = ema
            self.save("best")
        if (self.epoch % config.checkpoint_every_epochs == 0 or self.epoch == config.epochs
                or time.time() - self._last_latest_save > LATEST_CHECKPOINT_MAX_AGE_SECONDS):
            self.save("latest")
            self._last_latest_save = time.time()
        plot_progress(curves, self.output_dir / "progress.png",
                      f"{self.plans.dataset_name} {self.configuration_name} fold {self.fold}")

    # ------------------------------------------------------------------ validation
    def predict_validation(self) -> dict:
        """Predict every validation case at full resolution, export it and score it against the raw label."""
        output = self.output_dir / "validation"
        output.mkdir(parents=True, exist_ok=True)
        self.network.deep_supervision = False
        predictor = Predictor(self.plans, self.configuration_name, [self.network.state_dict()], self.device)
        self.network.deep_supervision = self.configuration.network.deep_supervision
        ending = self.plans.file_ending
        labels_folder = Path(self.plans.raw_dataset) / "labelsTr"
        pairs = []
        for case_id in tqdm(self.val_cases, desc="validation cases", unit="case", disable=not self.options.progress):
            image, _, properties = load_cached_case(self.cache, case_id)
            network_input = np.asarray(image)
            if self.previous_stage_folder is not None:
                previous = np.load(self.previous_stage_folder / f"{case_id}.npy")
                network_input = np.concatenate([network_input,
                                                previous_stage_one_hot(previous, self.plans.foreground_labels)])
            probabilities = restore_original_shape(predictor.predict_preprocessed(network_input), properties)
            segmentation = probabilities_to_segmentation(probabilities)
            export_segmentation(segmentation, properties, output / f"{case_id}{ending}")
            save_probabilities(probabilities, properties, output / case_id)
            reference, _ = read_label(labels_folder / f"{case_id}{ending}")
            pairs.append((case_id, reference, segmentation, properties["geometry"]["spacing"]))
        results = evaluate_arrays(pairs, self.plans.labels)
        write_results(results["per_case"], results["summary"], output / "summary.json", output / "per_case.csv")
        label_names = {value: name for name, value in self.plans.labels.items()}
        self.log(f"validation of fold {self.fold} ({len(pairs)} cases, original geometry):\n"
                 + format_table(results["summary"], label_names))
        return results["summary"]


def prepare_previous_stage(work_dir: Path, plans: Plans, configuration_name: str, case_ids: list[str],
                           split_mode: str) -> Path:
    """Put the previous stage's cross-validation predictions on this configuration's grid.

    A cascade trains on the predictions its previous stage made for each case while
    that case was held out, so all of the previous stage's folds must be trained.
    Written to ``preprocessed/{data_identifier}__from_{previous}/{case}.npy``.
    """
    configuration = plans.configuration(configuration_name)
    previous = configuration.previous_stage
    target = work_dir / PREPROCESSED_FOLDER / f"{configuration.data_identifier}__from_{previous}"
    target.mkdir(parents=True, exist_ok=True)
    cache = cache_folder(work_dir, configuration.data_identifier)
    missing = []
    for case_id in case_ids:
        destination = target / f"{case_id}.npy"
        if destination.is_file():
            continue
        found = None
        for fold in range(5):
            candidate = fold_dir(work_dir, previous, fold, split_mode) / "validation" / f"{case_id}{plans.file_ending}"
            if candidate.is_file():
                found = candidate
                break
        if found is None:
            missing.append(case_id)
            continue
        segmentation, _ = read_label(found)
        properties = read_json(cache / f"{case_id}.json")
        on_grid = previous_stage_to_grid(segmentation, properties, configuration.resampling.label_mode)
        save_npy(destination, on_grid.astype(np.int8))
    if missing:
        raise AutosegInputError(f"{configuration_name} needs the cross-validation predictions of {previous} "
                                f"for every case; missing {len(missing)} (e.g. {missing[0]}): train {previous} "
                                "with -f all first")
    return target
