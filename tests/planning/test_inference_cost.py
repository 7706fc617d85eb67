"""Counting the work of predicting a case: windows and network passes."""

from __future__ import annotations

import math

import pytest

from autoseg.inference.sliding_window import sliding_window_starts
from autoseg.planning.inference_cost import (
    MAX_WINDOW_VOXELS_FACTOR,
    case_cost_in_patches,
    computed_voxels,
    count_windows,
    inference_window,
    slices_per_call,
    windows_along_axis,
)


@pytest.mark.parametrize(("shape", "patch"), [((40, 56, 40), (40, 56, 40)), ((150, 512, 512), (64, 160, 160)),
                                              ((33, 70, 21), (16, 32, 32)), ((7, 7), (8, 8))])
def test_window_count_is_the_layout_the_predictor_uses(shape, patch):
    padded = [max(size, p) for size, p in zip(shape, patch)]
    assert count_windows(shape, patch) == math.prod(len(axis) for axis in sliding_window_starts(padded, patch))


def test_passes_count_mirrorings_and_2d_slices():
    assert windows_along_axis(100, 40, 0.5) == 4
    assert case_cost_in_patches((40, 56, 40), (40, 56, 40), (8, 8, 8), [0, 1, 2]) == 8
    assert case_cost_in_patches((40, 56, 40), (40, 56, 40), (8, 8, 8), None) == 1
    assert case_cost_in_patches((30, 56, 40), (56, 40), (8, 8), [0, 1]) == 30 * 4  # every slice, 4 mirrorings


def test_a_window_covering_the_slice_replaces_four_overlapping_patches():
    # 563x563 slice, 512x512 patch, 7 poolings of 2: 2x2 windows of 512 (3.3x the slice) vs one of 640
    assert count_windows((563, 563), (512, 512)) == 4
    assert inference_window((563, 563), (512, 512), (128, 128)) == [640, 640]
    assert computed_voxels((563, 563), (640, 640)) < computed_voxels((563, 563), (512, 512)) / 2


def test_a_case_smaller_than_the_patch_keeps_the_patch():
    assert inference_window((36, 50, 35), (40, 56, 40), (8, 8, 8)) == [40, 56, 40]
    assert inference_window((40, 56, 40), (40, 56, 40), (8, 8, 8)) == [40, 56, 40]


@pytest.mark.parametrize(("shape", "patch", "divisors"), [((133, 563, 563), (48, 128, 128), (16, 32, 32)),
                                                          ((300, 90, 700), (32, 64, 256), (8, 16, 32)),
                                                          ((1000, 1000), (256, 256), (32, 32)),
                                                          ((700, 300), (256, 128), (32, 32))])
@pytest.mark.parametrize("factor", [None, 4])
def test_the_window_is_bounded_divisible_and_never_costlier_than_the_patch(shape, patch, divisors, factor):
    window = inference_window(shape, patch, divisors, max_voxels_factor=factor)
    assert math.prod(window) <= (factor or MAX_WINDOW_VOXELS_FACTOR[len(patch)]) * math.prod(patch)
    assert all(w == p or w % d == 0 for w, p, d in zip(window, patch, divisors))
    assert all(w >= p for w, p in zip(window, patch))
    assert computed_voxels(shape, window) <= computed_voxels(shape, patch)


def test_3d_networks_predict_with_the_patch():
    # a larger 3D window costs more per voxel (measured), so the patch stays
    assert inference_window((133, 563, 563), (48, 128, 128), (16, 32, 32)) == [48, 128, 128]
    assert inference_window((133, 563, 563), (48, 128, 128), (16, 32, 32), max_voxels_factor=4) == [144, 128, 128]


def test_case_cost_counts_slices_mirrorings_and_window_size():
    assert case_cost_in_patches((30, 56, 40), (56, 40), (8, 8), [0, 1]) == 30 * 4
    # 2D: one 640x640 window per 563x563 slice, 1.5625 patches' voxels
    assert case_cost_in_patches((10, 563, 563), (512, 512), (128, 128), None) == 10 * 640 * 640 / 512**2
    assert case_cost_in_patches((133, 563, 563), (48, 128, 128), (16, 32, 32), None) == 320


def test_a_larger_2d_window_predicts_fewer_slices_per_call():
    assert slices_per_call((256, 256)) == 16 and slices_per_call((512, 512)) == 16
    assert slices_per_call((640, 640)) == 10 and slices_per_call((4096, 4096)) == 1
