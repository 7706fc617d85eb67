"""Background loading of augmented training batches.

:class:`TrainingBatches` runs ``PatchSampler`` + augmentation either in the calling
process (``num_workers=0``, batchgenerators ``SingleThreadedAugmenter``) or in worker
processes (batchgenerators ``MultiThreadedAugmenter``) and hands out torch tensors:
``{"data": float32 (B, C_in, *patch), "target": uint8 (B, 1, *patch), "case_ids": [...]}``
with ``patch`` = ``(z, y, x)`` (3D) or ``(y, x)`` (2D).

Randomness: the sampler draws from its own generator and the augmentation (which
uses numpy's and Python's global random state, as batchgenerators does) runs with its
own saved state that is swapped in per batch, so batches depend only on ``seed`` and
the worker index, never on other code using ``np.random`` — and 0 or 1 workers give the
same batches for the same seed. Worker ``i`` uses stream ``(seed, i)``; batches come
round-robin from the workers, so the sequence is reproducible for a fixed worker count.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from autoseg.plans.schema import ConfigurationPlan
from autoseg.plans.training import TrainingConfig
from autoseg.training.augmentation import (
    augmentation_patch_size,
    build_training_transforms,
    build_validation_transforms,
)
from autoseg.training.sampling import PatchSampler
from autoseg.utils.parallel import available_cores

__all__ = ["TrainingBatches", "default_num_workers", "make_training_batches", "make_validation_batches"]

#: Batches each worker keeps ready (batchgenerators found 2 to be enough).
CACHED_BATCHES_PER_WORKER = 2


def default_num_workers(device_type: str = "cuda") -> int:
    """Augmentation worker processes that fit the machine and the training device.

    - GPU (``cuda``/``mps``): cores - 1, at least 1. The network runs on the GPU, so
      augmentation in workers overlaps with the training step instead of stalling it.
    - CPU: 0, augmentation runs in the training process between steps. The network
      already uses every core, and a worker competing for them stalls the compute
      threads far longer than augmenting in place takes: on 2 cores, Task04
      3d_fullres (batch 9) trains at 8.6 s per iteration with 0 workers and 12.6 s
      with 1; 2d (batch 366) at 8.0 s and 9.4 s (BENCHMARKS.md, "Seconds per training iteration").
    """
    if device_type == "cpu":
        return 0
    return max(1, available_cores() - 1)


class _BatchPipeline:
    """Sampler + transforms as one batchgenerators data loader with its own random streams."""

    def __init__(self, sampler: PatchSampler, transforms: Any, seed: int):
        self.sampler = sampler
        self.transforms = transforms
        self.seed = seed
        self._reseed(0)

    def _reseed(self, worker: int) -> None:
        self.sampler.reseed(worker)
        sequence = np.random.SeedSequence([self.seed, worker])
        words = sequence.generate_state(4)
        self._numpy_state = np.random.RandomState(words).get_state()
        self._python_state = random.Random(int.from_bytes(words.tobytes(), "little")).getstate()

    def set_thread_id(self, thread_id: int) -> None:
        """Called by ``MultiThreadedAugmenter`` in each worker process after fork."""
        torch.set_num_threads(1)  # the main process trains; workers must not oversubscribe the cores
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=1)
        except ImportError:  # pragma: no cover - batchgenerators depends on threadpoolctl
            pass
        self._reseed(thread_id)

    def __iter__(self) -> _BatchPipeline:
        return self

    def __next__(self) -> dict:
        batch = self.sampler.sample_batch()
        if self.transforms is None:
            return batch
        saved_numpy, saved_python = np.random.get_state(), random.getstate()  # noqa: NPY002
        np.random.set_state(self._numpy_state)  # noqa: NPY002
        random.setstate(self._python_state)
        try:
            return self.transforms(**batch)
        finally:
            self._numpy_state, self._python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
            np.random.set_state(saved_numpy)  # noqa: NPY002
            random.setstate(saved_python)


class TrainingBatches:
    """Iterator of augmented batches as torch tensors (see the module docstring).

    Args:
        sampler: draws the raw regions.
        transforms: a batchgenerators transform (``build_training_transforms`` /
            ``build_validation_transforms``) ending with ``data`` and ``target`` arrays.
        num_workers: 0 = in the calling process; >= 1 = that many worker processes, each
            keeping ``CACHED_BATCHES_PER_WORKER`` batches ready.
        seed: seed of all random streams.
        pin_memory: pin the tensors (only when CUDA is available) for faster host-to-GPU copies.

    Use as a context manager or call :meth:`close` to stop the workers.
    """

    def __init__(self, sampler: PatchSampler, transforms: Any, num_workers: int, seed: int,
                 pin_memory: bool = False):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = int(num_workers)
        self.seed = seed
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self._pipeline = _BatchPipeline(sampler, transforms, seed)
        if self.num_workers == 0:
            self._augmenter: Any = SingleThreadedAugmenter(self._pipeline, None)
        else:
            seeds = [int(np.random.SeedSequence([seed, worker]).generate_state(1)[0])
                     for worker in range(self.num_workers)]
            self._augmenter = MultiThreadedAugmenter(self._pipeline, None, self.num_workers,
                                                     num_cached_per_queue=CACHED_BATCHES_PER_WORKER,
                                                     seeds=seeds, pin_memory=False)
        self._closed = False

    def __iter__(self) -> TrainingBatches:
        return self

    def __next__(self) -> dict:
        if self._closed:
            raise RuntimeError("TrainingBatches is closed")
        batch = next(self._augmenter)
        data = torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32))
        target = torch.from_numpy(np.ascontiguousarray(batch["target"]))
        if self.pin_memory:
            data, target = data.pin_memory(), target.pin_memory()
        return {"data": data, "target": target, "case_ids": list(batch.get("case_ids", []))}

    def close(self) -> None:
        """Stop and join the worker processes (idempotent; safe during interpreter shutdown)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        augmenter = getattr(self, "_augmenter", None)
        if isinstance(augmenter, MultiThreadedAugmenter):
            augmenter._finish()

    _finish = close

    def __enter__(self) -> TrainingBatches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a destructor
            pass


def _resolve_workers(num_workers: int | None, training_config: TrainingConfig) -> int:
    """An explicit count, else the training config's, else the GPU default (the trainer
    sets the config's count from its device, see :func:`default_num_workers`)."""
    if num_workers is not None:
        return num_workers
    if training_config.num_workers is not None:
        return training_config.num_workers
    return default_num_workers()


def _check_cascade(configuration_plan: ConfigurationPlan, previous_stage_folder: Path | None) -> bool:
    if configuration_plan.previous_stage and previous_stage_folder is None:
        raise ValueError(f"configuration {configuration_plan.name!r} is a cascade stage after "
                         f"{configuration_plan.previous_stage!r}: previous_stage_folder is required")
    return previous_stage_folder is not None


def _check_labels(num_classes: int, foreground_labels: Sequence[int]) -> None:
    if any(not 0 < int(v) < num_classes for v in foreground_labels):
        raise ValueError(f"foreground labels {list(foreground_labels)} must lie in [1, {num_classes})")
    if num_classes > np.iinfo(np.uint8).max + 1:
        raise ValueError(f"{num_classes} classes do not fit uint8 targets")


def make_training_batches(folder: Path, case_ids: Sequence[str], configuration_plan: ConfigurationPlan,
                          training_config: TrainingConfig, num_classes: int, foreground_labels: Sequence[int],
                          previous_stage_folder: Path | None = None, seed: int = 0,
                          num_workers: int | None = None, annotated_only: bool = False,
                          class_weights: Mapping[int, float] | None = None) -> TrainingBatches:
    """Augmented training batches of one configuration.

    The sampler cuts :func:`augmentation_patch_size` regions with
    ``training_config.oversample_foreground`` and ``foreground_class_sampling`` (``class_weights``:
    how often each foreground label value is drawn; ``annotated_only``: the other regions centred on
    annotated voxels, see :class:`PatchSampler`); ``num_workers`` defaults to
    ``training_config.num_workers``, else :func:`default_num_workers`.
    """
    _check_labels(num_classes, foreground_labels)
    cascade = _check_cascade(configuration_plan, previous_stage_folder)
    dimension = configuration_plan.dimension
    patch_size = tuple(configuration_plan.patch_size)
    augmentation = training_config.augmentation
    sampler = PatchSampler(folder, case_ids, patch_size, configuration_plan.batch_size, dimension,
                           oversample_foreground=training_config.oversample_foreground,
                           class_sampling=training_config.foreground_class_sampling, class_weights=class_weights,
                           sample_patch_size=augmentation_patch_size(patch_size, augmentation, dimension),
                           previous_stage_folder=previous_stage_folder, seed=seed, annotated_only=annotated_only,
                           neighbour_slices=configuration_plan.neighbour_slices,
                           neighbour_slice_padding=configuration_plan.neighbour_slice_padding)
    transforms = build_training_transforms(patch_size, augmentation, dimension, cascade, len(foreground_labels),
                                           foreground_labels=foreground_labels,
                                           slices_per_channel=configuration_plan.slices_per_input)
    return TrainingBatches(sampler, transforms, _resolve_workers(num_workers, training_config), seed,
                           pin_memory=torch.cuda.is_available())


def make_validation_batches(folder: Path, case_ids: Sequence[str], configuration_plan: ConfigurationPlan,
                            training_config: TrainingConfig, num_classes: int, foreground_labels: Sequence[int],
                            previous_stage_folder: Path | None = None, seed: int = 0,
                            num_workers: int | None = None, annotated_only: bool = False,
                            class_weights: Mapping[int, float] | None = None) -> TrainingBatches:
    """Un-augmented validation patches (same foreground sampling and ``annotated_only``), for the
    per-epoch pseudo-Dice.

    ``num_workers`` defaults to half the training workers (at least 1; 0 if training runs
    in-process): validation batches are cheap crops.
    """
    _check_labels(num_classes, foreground_labels)
    cascade = _check_cascade(configuration_plan, previous_stage_folder)
    dimension = configuration_plan.dimension
    patch_size = tuple(configuration_plan.patch_size)
    sampler = PatchSampler(folder, case_ids, patch_size, configuration_plan.batch_size, dimension,
                           oversample_foreground=training_config.oversample_foreground,
                           class_sampling=training_config.foreground_class_sampling, class_weights=class_weights,
                           previous_stage_folder=previous_stage_folder, seed=seed, annotated_only=annotated_only,
                           neighbour_slices=configuration_plan.neighbour_slices,
                           neighbour_slice_padding=configuration_plan.neighbour_slice_padding)
    transforms = build_validation_transforms(patch_size, dimension, cascade, len(foreground_labels),
                                             foreground_labels=foreground_labels)
    if num_workers is None:
        training_workers = _resolve_workers(None, training_config)
        num_workers = max(1, training_workers // 2) if training_workers > 0 else 0
    return TrainingBatches(sampler, transforms, num_workers, seed, pin_memory=torch.cuda.is_available())
