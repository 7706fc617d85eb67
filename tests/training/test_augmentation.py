"""Augmentation: region size, spatial transform, label integrity, mirroring, in-plane rotation, CT options, cascade."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from autoseg.plans.training import AugmentationConfig
from autoseg.training.augmentation import (
    IntensityShiftTransform,
    SliceThicknessTransform,
    augmentation_patch_size,
    build_training_transforms,
    build_validation_transforms,
    simulate_slice_thickness,
)

#: Every probability 0 and no mirroring: the pipeline must be a plain centre crop.
OFF = AugmentationConfig(
    rotation_probability=0.0, scale_probability=0.0, noise_probability=0.0, blur_probability=0.0,
    brightness_probability=0.0, contrast_probability=0.0, low_resolution_probability=0.0, gamma_probability=0.0,
    inverted_gamma_probability=0.0, mirror_axes=[], slice_thickness_probability=0.0, intensity_shift_probability=0.0)


@pytest.fixture(autouse=True)
def _seeded():
    """batchgenerators draws from numpy's / Python's global random state."""
    import random

    np.random.seed(0)  # noqa: NPY002
    random.seed(0)


def centre(array: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """Centre crop of the spatial axes of (B, C, *spatial)."""
    starts = [(s - p) // 2 for s, p in zip(array.shape[2:], patch)]
    return array[(slice(None), slice(None), *(slice(a, a + p) for a, p in zip(starts, patch)))]


def blocky_label(shape: tuple[int, ...], values=(0, 1, 3), block: int = 4, seed: int = 0) -> np.ndarray:
    """Integer label map made of ``block``-sized cubes of random values (few interfaces)."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(values, size=[-(-s // block) for s in shape])
    for axis in range(len(shape)):
        coarse = np.repeat(coarse, block, axis=axis)
    return coarse[tuple(slice(0, s) for s in shape)].astype(np.int16)


def batch_of(label: np.ndarray, channels: int = 1, data: np.ndarray | None = None) -> dict:
    """Batch dict with ``label`` (B, *spatial) as seg channel 0 and data = 10 * label (float32) unless given."""
    if data is None:
        data = np.repeat(label[:, None].astype(np.float32) * 10, channels, axis=1)
    return {"data": data.astype(np.float32), "seg": label[:, None].copy()}


# --- region size ----------------------------------------------------------------------------

def test_augmentation_patch_size_bounds():
    patch = (16, 24, 20)
    config = AugmentationConfig()
    assert augmentation_patch_size(patch, OFF, 3) == patch
    sizes = [augmentation_patch_size(patch, replace(config, rotation_degrees=d, scale_probability=0.0), 3)
             for d in (0, 5, 15, 30)]
    assert sizes[0] == patch
    for smaller, larger in zip(sizes, sizes[1:]):
        assert all(a <= b for a, b in zip(smaller, larger)) and smaller != larger
    # Zooming out to 0.7 needs a 1/0.7 times larger field of view.
    zoomed = augmentation_patch_size(patch, replace(OFF, scale_probability=0.2), 3)
    assert all(z >= int(p / 0.7) for z, p in zip(zoomed, patch))
    full = augmentation_patch_size(patch, config, 3)
    assert all(p <= f <= 2 * p for p, f in zip(patch, full))  # capped at 2x per axis
    assert all((f - p) % 2 == 0 for p, f in zip(patch, full))  # voxel-aligned centre crop
    in_plane = augmentation_patch_size(patch, replace(config, rotate_in_plane_only=True), 3)
    assert in_plane[0] == patch[0] and in_plane[1:] > patch[1:]
    flat = augmentation_patch_size((24, 20), replace(config, rotation_degrees=10, scale_probability=0.0), 2)
    assert all(f > p for f, p in zip(flat, (24, 20)))


def test_augmentation_patch_size_covers_rotated_corners():
    # A 2D square rotated by 45 degrees needs its diagonal: (p - 1) * sqrt(2) + 1.
    size = augmentation_patch_size((21, 21), replace(OFF, rotation_probability=1.0, rotation_degrees=45.0), 2)
    assert size[0] >= 20 * np.sqrt(2) + 1 and size[0] <= 20 * np.sqrt(2) + 4


# --- spatial transform ----------------------------------------------------------------------

@pytest.mark.parametrize("dimension, patch, in_plane", [(3, (8, 16, 12), False), (3, (6, 16, 12), True),
                                                         (2, (16, 12), False)])
def test_output_shape_and_label_set(dimension, patch, in_plane):
    config = replace(AugmentationConfig(), rotation_probability=1.0, scale_probability=1.0,
                     rotate_in_plane_only=in_plane, low_resolution_probability=0.5)
    region = augmentation_patch_size(patch, config, dimension)
    label = blocky_label((4, *region))
    transforms = build_training_transforms(patch, config, dimension, False, 2)
    out = transforms(**batch_of(label, channels=2))
    assert out["data"].shape == (4, 2, *patch) and out["data"].dtype == np.float32
    assert out["target"].shape == (4, 1, *patch) and out["target"].dtype == np.uint8
    assert "seg" not in out
    # Nearest-neighbour labels: only values of the label set, never interpolated ones (e.g. 2).
    assert set(np.unique(out["target"]).tolist()) <= {0, 1, 3}


@pytest.mark.parametrize("dimension, patch", [(3, (8, 10, 12)), (2, (10, 12))])
def test_all_probabilities_zero_is_a_centre_crop(dimension, patch):
    region = tuple(p + 6 for p in patch)
    rng = np.random.default_rng(0)
    label = blocky_label((3, *region))
    data = rng.normal(size=(3, 2, *region)).astype(np.float32)
    out = build_training_transforms(patch, OFF, dimension, False, 2)(**batch_of(label, data=data))
    np.testing.assert_array_equal(out["data"], centre(data, patch))
    np.testing.assert_array_equal(out["target"], centre(label[:, None], patch))


def test_mirroring_moves_data_and_labels_together():
    patch = (6, 8, 10)
    label = blocky_label((16, 8, 10, 12), values=(0, 1, 2, 3), block=2)
    rng = np.random.default_rng(1)
    extra = rng.normal(size=label.shape).astype(np.float32)  # a second channel, to recognise flips
    data = np.stack([label * 10.0, extra], axis=1).astype(np.float32)
    config = replace(OFF, mirror_axes=[0, 1, 2])
    out = build_training_transforms(patch, config, 3, False, 3)(**batch_of(label, data=data))
    np.testing.assert_array_equal(out["data"][:, 0], out["target"][:, 0] * 10.0)
    crop_data, crop_label = centre(data, patch), centre(label[:, None], patch)
    flips = [tuple(a for a in range(3) if mask >> a & 1) for mask in range(8)]
    used = set()
    for b in range(len(label)):
        matches = [f for f in flips if np.array_equal(out["data"][b], np.flip(crop_data[b], [a + 1 for a in f]))]
        assert len(matches) == 1
        np.testing.assert_array_equal(out["target"][b], np.flip(crop_label[b], [a + 1 for a in matches[0]]))
        used.add(matches[0])
    assert len(used) > 2  # mirroring happened, along several axes


def test_rotation_and_zoom_keep_data_and_labels_aligned():
    patch = (12, 16, 16)
    config = replace(OFF, rotation_probability=1.0, scale_probability=1.0)
    region = augmentation_patch_size(patch, config, 3)
    label = blocky_label((4, *region), values=(0, 1, 2), block=6)
    out = build_training_transforms(patch, config, 3, False, 2)(**batch_of(label))
    assert not np.array_equal(out["target"], centre(label[:, None], patch))  # it did rotate / zoom
    # Data is cubic-interpolated, labels nearest: they agree everywhere but at block borders.
    agreement = np.mean(np.rint(out["data"][:, 0] / 10) == out["target"][:, 0])
    assert agreement > 0.9


def slice_stack(batch: int, region: tuple[int, ...]) -> np.ndarray:
    """(B, 1, z, y, x): every slice constant, slice k has value k + 1."""
    values = np.arange(region[0], dtype=np.float32)[:, None, None] + 1
    return np.broadcast_to(values, region)[None, None].repeat(batch, 0).copy()


@pytest.mark.parametrize("in_plane", [True, False])
def test_in_plane_rotation_never_mixes_slices(in_plane):
    patch = (6, 16, 16)
    config = replace(OFF, rotation_probability=1.0, rotation_degrees=30.0, scale_probability=1.0,
                     rotate_in_plane_only=in_plane)
    region = augmentation_patch_size(patch, config, 3)
    region = (region[0], region[1] + 8, region[2] + 8)  # keep the spline's border effects out of sight
    data = slice_stack(6, region)
    label = np.zeros((6, *region), np.int16)
    out = build_training_transforms(patch, config, 3, False, 1)(**batch_of(label, data=data))["data"][:, 0]
    offset = (region[0] - patch[0]) // 2
    expected = np.arange(patch[0], dtype=np.float32)[None, :, None, None] + 1 + offset
    mixed = np.abs(out - expected) > 1e-3
    if in_plane:
        assert not mixed.any()  # each output slice is exactly its input slice, rotated in-plane
    else:
        assert mixed.mean() > 0.1  # the same test catches rotations out of the plane


# --- intensity and CT options -------------------------------------------------------------------

def test_simulate_slice_thickness_keeps_and_interpolates():
    sample = np.random.default_rng(0).normal(size=(2, 9, 4, 5)).astype(np.float32)
    out = simulate_slice_thickness(sample, 2.0, 0.0)
    assert out.shape == sample.shape
    np.testing.assert_allclose(out[:, ::2], sample[:, ::2])  # kept slices
    np.testing.assert_allclose(out[:, 1], (sample[:, 0] + sample[:, 2]) / 2, rtol=1e-6)  # linear in between
    # A float factor keeps the nearest slices of 0, 2.5, 5, 7.5 -> 0, 2, 5, 8 (round half to even).
    out = simulate_slice_thickness(sample, 2.5, 0.0)
    np.testing.assert_allclose(out[:, [0, 2, 5, 8]], sample[:, [0, 2, 5, 8]])
    np.testing.assert_allclose(out[:, 3], sample[:, 2] * 2 / 3 + sample[:, 5] / 3, rtol=1e-5)


def test_slice_thickness_transform_changes_data_not_shape():
    data = np.random.default_rng(0).normal(size=(3, 1, 10, 6, 6)).astype(np.float32)
    original = data.copy()
    out = SliceThicknessTransform((1.5, 3.0), 1.0)(data=data, seg=np.zeros((3, 1, 10, 6, 6)))
    assert out["data"].shape == original.shape
    assert not np.allclose(out["data"], original)
    with pytest.raises(ValueError):
        SliceThicknessTransform((2, 3), 1.0)(data=np.zeros((1, 1, 6, 6)))


def test_intensity_shift_shifts_the_mean():
    data = np.random.default_rng(0).normal(size=(20, 2, 4, 5, 6)).astype(np.float32)
    before = data.mean(axis=(1, 2, 3, 4))
    out = IntensityShiftTransform((-0.2, 0.2), 1.0)(data=data.copy())["data"]
    shift = out.mean(axis=(1, 2, 3, 4)) - before
    assert (np.abs(shift) <= 0.2 + 1e-5).all() and np.ptp(shift) > 0.05
    # The same offset on every voxel and channel of a sample.
    np.testing.assert_allclose(out - data, np.broadcast_to(shift[:, None, None, None, None], data.shape), atol=1e-5)


def test_ct_options_in_the_pipeline():
    patch = (8, 8, 8)
    config = replace(OFF, slice_thickness_probability=1.0, intensity_shift_probability=1.0,
                     intensity_shift_range=(0.5, 0.5))
    data = np.random.default_rng(0).normal(size=(2, 1, 8, 8, 8)).astype(np.float32)
    out = build_training_transforms(patch, config, 3, False, 1)(**batch_of(np.zeros((2, 8, 8, 8), np.int16),
                                                                             data=data.copy()))["data"]
    assert out.shape == data.shape
    assert not np.allclose(out - 0.5, data, atol=1e-3)  # slices were dropped and interpolated
    assert abs((out - data).mean() - 0.5) < 0.1  # interpolation keeps the mean roughly, the shift moves it


# --- cascade ------------------------------------------------------------------------------------------

def test_cascade_one_hot_follows_mirroring_and_escapes_intensity_augmentation():
    patch = (6, 8, 8)
    label = blocky_label((8, 6, 8, 8), values=(0, 1, 2), block=2)
    previous = blocky_label((8, 6, 8, 8), values=(0, 1, 2), block=3, seed=1)
    data = (label[:, None] * 10.0).astype(np.float32)
    batch = {"data": data, "seg": np.stack([label, previous], axis=1)}
    config = replace(AugmentationConfig(), rotation_probability=0.0, scale_probability=0.0,
                     noise_probability=1.0, blur_probability=1.0, brightness_probability=1.0,
                     contrast_probability=1.0, gamma_probability=1.0, intensity_shift_probability=1.0,
                     slice_thickness_probability=1.0, mirror_axes=[0, 1, 2])
    out = build_training_transforms(patch, config, 3, True, 2, foreground_labels=[1, 2])(**batch)
    assert out["data"].shape == (8, 3, *patch) and out["target"].shape == (8, 1, *patch)
    onehot = out["data"][:, 1:]
    assert set(np.unique(onehot).tolist()) <= {0.0, 1.0}  # untouched by noise, gamma, shifts ...
    # Mirrored like the label: recover the flips from the label and check the previous stage.
    for b in range(len(label)):
        for mask in range(8):
            axes = [a for a in range(3) if mask >> a & 1]
            if np.array_equal(out["target"][b, 0], np.flip(label[b], axes)):
                flipped = np.flip(previous[b], axes)
                if np.array_equal(onehot[b, 0], flipped == 1) and np.array_equal(onehot[b, 1], flipped == 2):
                    break
        else:
            pytest.fail(f"sample {b}: one-hot channels not aligned with the label")


def test_cascade_one_hot_under_rotation_is_binary():
    patch = (8, 10, 10)
    config = replace(AugmentationConfig(), rotation_probability=1.0, scale_probability=1.0)
    region = augmentation_patch_size(patch, config, 3)
    label = blocky_label((3, *region), values=(0, 1, 2))
    batch = {"data": label[:, None].astype(np.float32), "seg": np.stack([label, label], axis=1)}
    out = build_training_transforms(patch, config, 3, True, 2)(**batch)
    onehot = out["data"][:, 1:]
    assert set(np.unique(onehot).tolist()) <= {0.0, 1.0}
    # The previous stage was identical to the label: it must still be, voxel by voxel.
    np.testing.assert_array_equal(onehot[:, 0], out["target"][:, 0] == 1)
    np.testing.assert_array_equal(onehot[:, 1], out["target"][:, 0] == 2)


def test_validation_transforms():
    patch = (6, 8, 8)
    label = blocky_label((2, 10, 12, 8), values=(0, 1, 2))
    previous = blocky_label((2, 10, 12, 8), values=(0, 2), seed=3)
    data = np.random.default_rng(0).normal(size=(2, 1, 10, 12, 8)).astype(np.float32)
    out = build_validation_transforms(patch, 3, True, 2)(data=data, seg=np.stack([label, previous], 1))
    np.testing.assert_array_equal(out["data"][:, :1], centre(data, patch))
    np.testing.assert_array_equal(out["data"][:, 2], centre(previous[:, None], patch)[:, 0] == 2)
    assert not out["data"][:, 1].any()
    np.testing.assert_array_equal(out["target"], centre(label[:, None], patch))
    assert out["target"].dtype == np.uint8
