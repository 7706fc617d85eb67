"""PatchSampler: shapes, foreground oversampling, padding, determinism, cascade alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import position_image, write_case

from autoseg.errors import AutosegInputError
from autoseg.preprocessing.preprocess import sample_class_locations
from autoseg.training.sampling import PatchSampler, num_foreground_samples
from autoseg.utils.files import save_npy, write_json


@pytest.fixture
def rare_foreground(tmp_path: Path) -> tuple[Path, list[str]]:
    """Three 20x40x40 cases with one tiny object (2x3x3 of label 1, one voxel of label 2) each.

    The first case has its object in a corner of the image (a region centred on it must be
    clipped into the image and still hold it in its centre).
    """
    rng = np.random.default_rng(1)
    ids = []
    for index in range(3):
        shape = (20, 40, 40)
        label = np.zeros(shape, np.int8)
        z, y, x = (0, 0, 0) if index == 0 else (rng.integers(2, 17), rng.integers(2, 36), rng.integers(2, 36))
        label[z:z + 2, y:y + 3, x:x + 3] = 1
        label[z, y, x] = 2
        image = rng.normal(size=(2, *shape))
        write_case(tmp_path, f"case_{index}", image, label)
        ids.append(f"case_{index}")
    return tmp_path, ids


def test_num_foreground_samples():
    assert num_foreground_samples(9, 0.33) == 3
    assert num_foreground_samples(2, 0.33) == 1
    assert num_foreground_samples(2, 0.2) == 1  # round(0.4) = 0, but at least one when B >= 2
    assert num_foreground_samples(1, 0.33) == 0
    assert num_foreground_samples(4, 0.0) == 0
    assert num_foreground_samples(4, 1.0) == 4


def test_shapes_3d_and_2d(rare_foreground):
    folder, ids = rare_foreground
    sampler = PatchSampler(folder, ids, (8, 12, 10), 4, 3, sample_patch_size=(12, 16, 14))
    batch = sampler.sample_batch()
    assert batch["data"].shape == (4, 2, 12, 16, 14) and batch["data"].dtype == np.float32
    assert batch["seg"].shape == (4, 1, 12, 16, 14) and batch["seg"].dtype == np.int16
    assert len(batch["case_ids"]) == 4 and set(batch["case_ids"]) <= set(ids)

    sampler = PatchSampler(folder, ids, (12, 10), 6, 2, sample_patch_size=(16, 14))
    batch = next(iter(sampler))
    assert batch["data"].shape == (6, 2, 16, 14)
    assert batch["seg"].shape == (6, 1, 16, 14)


@pytest.mark.parametrize("dimension, patch, region", [(3, (6, 8, 8), (6, 8, 8)), (3, (6, 8, 8), (10, 14, 12)),
                                                      (2, (8, 8), (8, 8)), (2, (8, 8), (14, 12))])
def test_foreground_ratio_guarantee(rare_foreground, dimension, patch, region):
    folder, ids = rare_foreground
    batch_size, ratio = 5, 0.33  # round(1.65) = 2 forced samples
    sampler = PatchSampler(folder, ids, patch, batch_size, dimension, ratio, sample_patch_size=region, seed=3)
    offset = [(r - p) // 2 for r, p in zip(region, patch)]
    centre = (slice(None), 0, *(slice(o, o + p) for o, p in zip(offset, patch)))
    counts = []
    for _ in range(60):
        seg = sampler.sample_batch()["seg"]
        # Foreground must lie inside the final (centre-cropped) patch, not only the region.
        with_foreground = (seg[centre] > 0).reshape(batch_size, -1).any(1)
        assert with_foreground.sum() >= 2
        counts.append(with_foreground.sum())
    # Foreground is rare: the random samples alone would almost never hit it.
    assert np.mean(counts) < 3


def test_foreground_classes_are_all_sampled(rare_foreground):
    folder, ids = rare_foreground
    sampler = PatchSampler(folder, ids, (4, 4, 4), 2, 3, 1.0, seed=0)
    seen = set()
    for _ in range(40):
        seen |= set(np.unique(sampler.sample_batch()["seg"]).tolist())
    assert {1, 2} <= seen  # the single voxel of class 2 is found by its own class lottery


def test_case_without_foreground_falls_back_to_random(tmp_path):
    write_case(tmp_path, "empty", np.ones((1, 10, 10, 10)), np.zeros((10, 10, 10)))
    sampler = PatchSampler(tmp_path, ["empty"], (4, 4, 4), 4, 3, 1.0)
    batch = sampler.sample_batch()
    assert batch["data"].shape == (4, 1, 4, 4, 4) and (batch["data"] == 1).all()


@pytest.mark.parametrize("oversample", [0.0, 1.0])
def test_padding_when_image_is_smaller(tmp_path, oversample):
    shape = (4, 5, 6)
    image = position_image(shape)
    label = np.zeros(shape, np.int8)
    label[1:3, 2:4, 2:5] = 1
    write_case(tmp_path, "small", image, label)
    sampler = PatchSampler(tmp_path, ["small"], (8, 8, 8), 4, 3, oversample, sample_patch_size=(12, 10, 8))
    batch = sampler.sample_batch()
    for data, seg in zip(batch["data"][:, 0], batch["seg"][:, 0]):
        inside = np.argwhere(data != 0)
        low, high = inside.min(0), inside.max(0) + 1
        # The whole image sits in the region exactly once, the rest is 0 (image and label).
        assert (high - low).tolist() == list(shape)
        block = tuple(slice(a, b) for a, b in zip(low, high))
        np.testing.assert_array_equal(data[block], image[0])
        np.testing.assert_array_equal(seg[block], label)
        assert np.count_nonzero(data) == image.size and seg.sum() == label.sum()
        # ... and inside the final 8x8x8 patch (the centre of the region).
        assert (low >= [2, 1, 0]).all() and (high <= [10, 9, 8]).all()


def test_deterministic_with_seed(rare_foreground):
    folder, ids = rare_foreground

    def batches(seed):
        sampler = PatchSampler(folder, ids, (6, 8, 8), 3, 3, 0.33, sample_patch_size=(8, 12, 10), seed=seed)
        return [sampler.sample_batch() for _ in range(4)]

    first, second, other = batches(7), batches(7), batches(8)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["seg"], b["seg"])
        assert a["case_ids"] == b["case_ids"]
    assert any(not np.array_equal(a["data"], c["data"]) for a, c in zip(first, other))


def test_reseed_gives_worker_streams(rare_foreground):
    folder, ids = rare_foreground
    sampler = PatchSampler(folder, ids, (6, 8, 8), 3, 3, seed=5)
    sampler.set_thread_id(1)
    one = sampler.sample_batch()["data"]
    sampler.set_thread_id(1)
    np.testing.assert_array_equal(one, sampler.sample_batch()["data"])
    sampler.set_thread_id(2)
    assert not np.array_equal(one, sampler.sample_batch()["data"])


@pytest.mark.parametrize("dimension, patch", [(3, (6, 10, 8)), (2, (10, 8))])
def test_cascade_channel_aligned_with_label(tmp_path, dimension, patch):
    shape = (7, 12, 11)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, shape).astype(np.int8)
    previous = rng.integers(0, 3, shape).astype(np.int16)
    write_case(tmp_path, "a", position_image(shape), label)
    previous_folder = tmp_path / "previous"
    previous_folder.mkdir()
    np.save(previous_folder / "a.npy", previous)
    region = tuple(v + 4 for v in patch)
    sampler = PatchSampler(tmp_path, ["a"], patch, 6, dimension, 0.5, sample_patch_size=region,
                           previous_stage_folder=previous_folder)
    batch = sampler.sample_batch()
    assert batch["seg"].shape == (6, 2, *region)
    data, seg = batch["data"][:, 0], batch["seg"]
    inside = data > 0  # padded voxels are 0, real ones carry their flat index + 1
    flat = data[inside].astype(np.int64) - 1
    np.testing.assert_array_equal(seg[:, 0][inside], label.ravel()[flat])
    np.testing.assert_array_equal(seg[:, 1][inside], previous.ravel()[flat])
    assert (seg[:, 0][~inside] == 0).all() and (seg[:, 1][~inside] == 0).all()


def test_missing_previous_stage_is_reported(tmp_path):
    write_case(tmp_path, "a", np.ones((1, 4, 4, 4)), np.ones((4, 4, 4)))
    with pytest.raises(AutosegInputError, match="a.npy"):
        PatchSampler(tmp_path, ["a"], (4, 4, 4), 1, 3, previous_stage_folder=tmp_path / "nowhere")
    (tmp_path / "wrong").mkdir()
    np.save(tmp_path / "wrong" / "a.npy", np.zeros((4, 4, 5), np.int16))
    sampler = PatchSampler(tmp_path, ["a"], (4, 4, 4), 1, 3, previous_stage_folder=tmp_path / "wrong")
    with pytest.raises(AutosegInputError, match="does not match"):
        sampler.sample_batch()


def test_invalid_arguments(rare_foreground):
    folder, ids = rare_foreground
    with pytest.raises(ValueError):
        PatchSampler(folder, ids, (8, 8), 2, 3)
    with pytest.raises(ValueError):
        PatchSampler(folder, ids, (8, 8, 8), 2, 3, sample_patch_size=(4, 8, 8))


@pytest.mark.parametrize("dimension, patch", [(3, (4, 6, 6)), (2, (6, 6))])
def test_sparse_annotations_centre_every_sample_on_annotated_voxels(tmp_path, dimension, patch):
    """Ignore label 3 everywhere but two annotated slabs: background (0) and organ (1)."""
    shape = (12, 30, 30)
    label = np.full(shape, 3, np.int8)
    label[2, 2:8, 2:8] = 0
    label[9, 20:26, 20:26] = 1
    save_npy(tmp_path / "sparse.npy", np.zeros((1, *shape), np.float32))
    save_npy(tmp_path / "sparse_seg.npy", label)
    locations = sample_class_locations(label, [0, 1, 2], np.random.default_rng(0))
    write_json(tmp_path / "sparse.json", {"case_id": "sparse", "class_locations": locations}, indent=None)
    annotated = PatchSampler(tmp_path, ["sparse"], patch, 4, dimension, 0.25, seed=1, annotated_only=True)
    anywhere = PatchSampler(tmp_path, ["sparse"], patch, 4, dimension, 0.25, seed=1)
    for sampler, expect_all in ((annotated, True), (anywhere, False)):
        fractions = []
        for _ in range(30):
            seg = sampler.sample_batch()["seg"][:, 0]
            has_annotation = (seg != 3).reshape(4, -1).any(1)
            assert has_annotation[-1]  # the forced foreground sample
            fractions.append(has_annotation[:-1].mean())
        if expect_all:
            assert min(fractions) == 1.0
        else:
            assert np.mean(fractions) < 0.5  # random placement mostly lands on unannotated voxels


@pytest.fixture
def lesion_in_one_case(tmp_path: Path) -> tuple[Path, list[str]]:
    """Ten 4x24x24 cases, each with an organ (label 1) in its left half; only the last one also has
    a lesion (label 2) in its right half."""
    ids = []
    for index in range(10):
        label = np.zeros((4, 24, 24), np.int8)
        label[:, 4:20, 2:10] = 1
        if index == 9:
            label[:, 10:13, 18:21] = 2
        write_case(tmp_path, f"case_{index}", np.zeros((1, 4, 24, 24)), label, seed=index)
        ids.append(f"case_{index}")
    return tmp_path, ids


def lesion_share(folder: Path, ids: list[str], class_sampling: str) -> float:
    """Fraction of forced-foreground 2D samples (8x8 patches) that show the lesion."""
    sampler = PatchSampler(folder, ids, (8, 8), 4, 2, 1.0, seed=5, class_sampling=class_sampling)
    shown = [bool((sample == 2).any()) for _ in range(100) for sample in sampler.sample_batch()["seg"][:, 0]]
    return float(np.mean(shown))


def test_balanced_class_sampling_shows_a_rare_class_as_often_as_a_common_one(lesion_in_one_case):
    folder, ids = lesion_in_one_case
    # balanced: the lesion is one of two classes -> about half the forced samples
    assert 0.4 < lesion_share(folder, ids, "balanced") < 0.6
    # per case (nnU-Net's): the lesion's case is drawn 1 time in 10, then the lesion 1 time in 2
    assert 0.01 < lesion_share(folder, ids, "per_case") < 0.12


def test_unknown_class_sampling_is_refused(rare_foreground):
    folder, ids = rare_foreground
    with pytest.raises(ValueError, match="class_sampling"):
        PatchSampler(folder, ids, (4, 4, 4), 2, 3, class_sampling="rarest")


def test_class_weights_set_how_often_each_class_is_drawn(lesion_in_one_case):
    folder, ids = lesion_in_one_case
    sampler = PatchSampler(folder, ids, (8, 8), 4, 2, 1.0, seed=2, class_weights={1: 0.1, 2: 0.9, 7: 5.0})
    shown = [bool((sample == 2).any()) for _ in range(100) for sample in sampler.sample_batch()["seg"][:, 0]]
    assert 0.8 < np.mean(shown) < 0.98  # 7 is no case's class: dropped, the rest renormalised
    with pytest.raises(ValueError, match="no weight"):
        PatchSampler(folder, ids, (8, 8), 4, 2, 1.0, class_weights={7: 1.0})
