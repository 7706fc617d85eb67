"""TrainingBatches: in-process and background batches, seeding, clean shutdown; plan-level helpers."""

from __future__ import annotations

import gc
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from autoseg.plans import ConfigurationPlan
from autoseg.plans.network import NetworkConfig
from autoseg.plans.training import AugmentationConfig, TrainingConfig
from autoseg.preprocessing.preprocess import sample_class_locations
from autoseg.training.augmentation import augmentation_patch_size, build_training_transforms
from autoseg.training.dataloader import (
    TrainingBatches,
    default_num_workers,
    make_training_batches,
    make_validation_batches,
)
from autoseg.training.sampling import PatchSampler
from autoseg.utils.files import save_npy, write_json

PATCH = (8, 12, 10)


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two cases of 10x16x14 voxels, one channel, labels 0/1/2, plus previous-stage maps in ``previous/``."""
    rng = np.random.default_rng(0)
    (tmp_path / "previous").mkdir()
    ids = []
    for index in range(2):
        shape = (10, 16, 14)
        label = np.zeros(shape, np.int8)
        label[3:7, 4:10, 4:9] = 1
        label[4:6, 6:8, 5:7] = 2
        save_npy(tmp_path / f"c{index}.npy", (rng.normal(size=(1, *shape)) + label).astype(np.float32))
        save_npy(tmp_path / f"c{index}_seg.npy", label)
        write_json(tmp_path / f"c{index}.json",
                   {"class_locations": sample_class_locations(label, [1, 2], rng)}, indent=None)
        np.save(tmp_path / "previous" / f"c{index}.npy", label.astype(np.int16))
        ids.append(f"c{index}")
    return tmp_path, ids


def make_batches(folder: Path, ids: list[str], num_workers: int, seed: int = 0) -> TrainingBatches:
    config = AugmentationConfig()
    sampler = PatchSampler(folder, ids, PATCH, 3, 3, 0.33, augmentation_patch_size(PATCH, config, 3), seed=seed)
    transforms = build_training_transforms(PATCH, config, 3, False, 2)
    return TrainingBatches(sampler, transforms, num_workers, seed)


def check_batch(batch: dict, channels: int = 1, batch_size: int = 3, patch=PATCH) -> None:
    assert batch["data"].dtype == torch.float32 and batch["data"].shape == (batch_size, channels, *patch)
    assert batch["target"].dtype == torch.uint8 and batch["target"].shape == (batch_size, 1, *patch)
    assert len(batch["case_ids"]) == batch_size
    assert int(batch["target"].max()) <= 2


def test_in_process_batches(cache):
    folder, ids = cache
    with make_batches(folder, ids, 0) as batches:
        for _ in range(2):
            check_batch(next(batches))
    assert multiprocessing.active_children() == []


def test_background_batches_match_in_process_and_shut_down(cache):
    folder, ids = cache
    with make_batches(folder, ids, 0, seed=4) as batches:
        expected = [next(batches) for _ in range(3)]
    background = make_batches(folder, ids, 1, seed=4)
    received = [next(background) for _ in range(3)]
    workers = list(background._augmenter._processes)
    assert len(workers) == 1 and workers[0].is_alive()
    for a, b in zip(expected, received):
        check_batch(b)
        # One worker uses stream (seed, 0), the same as in-process loading.
        torch.testing.assert_close(a["data"], b["data"])
        assert torch.equal(a["target"], b["target"]) and a["case_ids"] == b["case_ids"]
    background.close()
    assert not any(worker.is_alive() for worker in workers)
    assert multiprocessing.active_children() == []
    background.close()  # idempotent
    with pytest.raises(RuntimeError):
        next(background)
    del background
    gc.collect()


def test_batches_do_not_depend_on_global_random_state(cache):
    folder, ids = cache
    np.random.seed(1)  # noqa: NPY002
    with make_batches(folder, ids, 0, seed=2) as batches:
        first = next(batches)["data"]
    np.random.seed(99)  # noqa: NPY002
    with make_batches(folder, ids, 0, seed=2) as batches:
        torch.testing.assert_close(first, next(batches)["data"])


def test_unclosed_loader_is_cleaned_up_by_the_garbage_collector(cache):
    folder, ids = cache
    batches = make_batches(folder, ids, 1)
    next(batches)
    workers = list(batches._augmenter._processes)
    del batches
    gc.collect()
    assert not any(worker.is_alive() for worker in workers)


def test_default_num_workers_leaves_a_core_for_training_on_a_gpu():
    assert default_num_workers("cuda") >= 1
    assert default_num_workers("cuda") <= max(1, (multiprocessing.cpu_count() or 1) - 1)


def test_default_num_workers_augments_in_process_when_training_on_the_cpu():
    assert default_num_workers("cpu") == 0


def configuration(dimension: int, patch, previous_stage: str | None = None) -> ConfigurationPlan:
    network = NetworkConfig(architecture="unet", dimension=dimension, features_per_stage=[4, 8],
                            kernel_sizes=[[3] * dimension] * 2, strides=[[1] * dimension, [2] * dimension],
                            n_blocks_per_stage_encoder=[1, 1], n_conv_per_stage_decoder=[1])
    return ConfigurationPlan(name="3d_cascade_fullres" if previous_stage else f"{dimension}d",
                             dimension=dimension, data_identifier="x", target_spacing=[1.0] * dimension,
                             patch_size=list(patch), batch_size=4, median_image_shape=[10, 16, 14][-dimension:],
                             network=network, previous_stage=previous_stage)


def test_plan_helpers_2d_3d_and_cascade(cache):
    folder, ids = cache
    training = TrainingConfig()
    with make_training_batches(folder, ids, configuration(2, (12, 8)), training, 3, [1, 2], num_workers=0) as it:
        check_batch(next(it), batch_size=4, patch=(12, 8))
    cascade = configuration(3, PATCH, previous_stage="3d_lowres")
    with pytest.raises(ValueError, match="previous_stage_folder"):
        make_training_batches(folder, ids, cascade, training, 3, [1, 2], num_workers=0)
    with make_training_batches(folder, ids, cascade, training, 3, [1, 2], folder / "previous",
                               num_workers=0) as it:
        batch = next(it)
        check_batch(batch, channels=3, batch_size=4)
        onehot = batch["data"][:, 1:]
        assert set(torch.unique(onehot).tolist()) <= {0.0, 1.0}
    with make_validation_batches(folder, ids, cascade, training, 3, [1, 2], folder / "previous",
                                 num_workers=0) as it:
        batch = next(it)
        check_batch(batch, channels=3, batch_size=4)
        # No augmentation: the previous stage (here equal to the label) matches the target exactly.
        assert torch.equal(batch["data"][:, 1].bool(), batch["target"][:, 0] == 1)
        assert torch.equal(batch["data"][:, 2].bool(), batch["target"][:, 0] == 2)


def test_plan_helpers_with_a_worker(cache):
    folder, ids = cache
    training = TrainingConfig(num_workers=1)
    with make_validation_batches(folder, ids, configuration(3, PATCH), training, 3, [1, 2]) as it:
        assert it.num_workers == 1
        check_batch(next(it), batch_size=4)
    assert multiprocessing.active_children() == []
