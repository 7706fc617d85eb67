"""Measuring how fast a configuration trains on this device (seconds per iteration, loader included).

:func:`measure_speed` times real training steps of a :class:`~autoseg.training.trainer.Trainer`
(robust to a busy machine: :func:`robust_step_seconds`) and one forward pass as prediction runs it;
:func:`stored_speed` reuses a measurement recorded earlier for the same device, threads and workers
(``autoseg plan --benchmark`` or an earlier fold, kept in the work folder's measurements).
"""

from __future__ import annotations

import statistics
import time

import torch

from autoseg.model.device import device_name
from autoseg.planning.training_cost import SpeedMeasurement
from autoseg.plans.schema import ConfigurationPlan
from autoseg.training.trainer import Trainer

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
