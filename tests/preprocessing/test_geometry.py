"""Crop, resample and their inverses: geometry round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.planning.spacing import shape_after_resampling
from autoseg.preprocessing.resample import (
    resample_image,
    resample_label,
    resample_probabilities,
    thick_axis_for_resampling,
)
from autoseg.utils.crop import bounding_box, crop_to_box, nonzero_mask, paste_into_box


def test_bounding_box_of_nonzero_region():
    image = np.zeros((2, 10, 12, 14), np.float32)
    image[1, 2:5, 3:9, 4:6] = 1
    box = bounding_box(nonzero_mask(image))
    assert box == [[2, 5], [3, 9], [4, 6]]
    assert crop_to_box(image, box).shape == (2, 3, 6, 2)


def test_empty_mask_keeps_the_whole_image():
    assert bounding_box(np.zeros((3, 4, 5), bool)) == [[0, 3], [0, 4], [0, 5]]


def test_crop_then_paste_restores_the_array():
    rng = np.random.default_rng(0)
    label = np.zeros((9, 11, 13), np.int16)
    label[2:7, 3:8, 1:12] = rng.integers(0, 3, (5, 5, 11))
    box = bounding_box(label > 0)
    restored = paste_into_box(crop_to_box(label, box), box, label.shape)
    np.testing.assert_array_equal(restored, label)


def test_thick_axis_detection():
    assert thick_axis_for_resampling([5.0, 0.8, 0.8], [3.0, 0.8, 0.8]) == 0
    assert thick_axis_for_resampling([1.0, 1.0, 1.0], [1.0, 1.0, 4.0]) == 2
    assert thick_axis_for_resampling([1.0, 0.8, 0.8], [1.0, 0.8, 0.8]) is None


def test_resampled_shape_matches_spacing_change():
    image = np.random.default_rng(0).normal(size=(1, 10, 40, 40)).astype(np.float32)
    new_shape = shape_after_resampling(image.shape[1:], [5.0, 0.8, 0.8], [2.5, 1.6, 1.6])
    assert resample_image(image, new_shape).shape == (1, 20, 20, 20)


def test_resampling_a_smooth_image_there_and_back_is_close():
    z, y, x = np.meshgrid(np.linspace(0, 1, 12), np.linspace(0, 1, 30), np.linspace(0, 1, 28), indexing="ij")
    image = np.sin(3 * z + 2 * y + x).astype(np.float32)[None]
    up = resample_image(image, (24, 45, 42))
    back = resample_image(up, image.shape[1:])
    assert back.shape == image.shape
    assert np.abs(back - image)[:, 1:-1, 1:-1, 1:-1].max() < 0.02


def test_thick_axis_uses_nearest_neighbour():
    image = np.arange(4, dtype=np.float32)[None, :, None, None] * np.ones((1, 4, 6, 6), np.float32)
    result = resample_image(image, (8, 6, 6), thick_axis=0)
    # nearest along z: every new slice is a copy of an original slice, no blended values
    assert set(np.unique(result).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(result[0, :, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3])


def test_thick_axis_order_1_interpolates_linearly_between_slices():
    image = np.arange(4, dtype=np.float32)[None, :, None, None] * np.ones((1, 4, 6, 6), np.float32)
    result = resample_image(image, (8, 6, 6), thick_axis=0, thick_axis_order=1)
    # half-voxel convention: new slice centres at 0.25, 0.75, ... old slices (clamped at the ends)
    np.testing.assert_allclose(result[0, :, 0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_image_order_selects_the_interpolation(order):
    image = np.zeros((1, 4, 4, 4), np.float32)
    image[0, :, :, 2:] = 1.0  # a step along x
    result = resample_image(image, (4, 4, 8), order=order)
    profile = result[0, 0, 0]
    if order == 0:
        assert set(np.unique(result).tolist()) == {0.0, 1.0}
    elif order == 1:
        assert profile.min() >= 0 and profile.max() <= 1 and len(np.unique(profile)) > 2
    else:  # cubic convolution overshoots at a step
        assert profile.min() < 0 or profile.max() > 1


def test_unknown_image_order_is_refused():
    with pytest.raises(ValueError, match="order"):
        resample_image(np.zeros((1, 2, 2, 2), np.float32), (4, 4, 4), order=2)


def test_identity_resampling_returns_the_input():
    image = np.ones((1, 3, 4, 5), np.float32)
    assert resample_image(image, (3, 4, 5)) is image


@pytest.mark.parametrize("mode", ["per_class_linear", "nearest"])
def test_label_round_trip_preserves_a_block(mode):
    label = np.zeros((10, 20, 20), np.int8)
    label[2:8, 4:16, 4:16] = 1
    label[4:6, 8:12, 8:12] = 2
    up = resample_label(label, (20, 40, 40), mode=mode)
    assert set(np.unique(up).tolist()) == {0, 1, 2}
    back = resample_label(up, label.shape, mode=mode)
    assert (back == label).mean() > 0.99


def test_per_class_linear_label_volume_is_preserved():
    label = np.zeros((16, 32, 32), np.int8)
    zz, yy, xx = np.ogrid[:16, :32, :32]
    label[((zz - 8) / 6.0) ** 2 + ((yy - 16) / 10.0) ** 2 + ((xx - 16) / 10.0) ** 2 < 1] = 1
    down = resample_label(label, (8, 16, 16))
    assert abs(down.sum() * 8 - label.sum()) / label.sum() < 0.1


def test_probabilities_stay_normalized():
    probabilities = torch.softmax(torch.randn(3, 5, 9, 9), dim=0)
    resampled = resample_probabilities(probabilities, (10, 17, 13), thick_axis=0)
    assert resampled.shape == (3, 10, 17, 13)
    torch.testing.assert_close(resampled.sum(0), torch.ones(10, 17, 13), atol=1e-5, rtol=0)
