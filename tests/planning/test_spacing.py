"""Target spacing rule: median spacing, with the thick-slice exception."""

import numpy as np
import pytest

from autoseg.planning.spacing import choose_target_spacing, shape_after_resampling


def test_isotropic_data_use_the_median_spacing():
    spacings = np.array([[1.0, 0.8, 0.8], [1.2, 0.9, 0.9], [1.1, 0.7, 0.7]])
    shapes = np.array([[100, 200, 200]] * 3)
    decision = choose_target_spacing(spacings, shapes)
    assert decision.target_spacing == pytest.approx((1.1, 0.8, 0.8))
    assert decision.thick_axis is None
    assert "median" in decision.reason


def test_thick_slices_use_the_10th_percentile_of_the_thick_axis():
    # Slice thickness 1.5..5 mm, in-plane 0.8 mm, few slices: anisotropic.
    thickness = np.array([1.5, 2.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    spacings = np.stack([thickness, np.full(10, 0.8), np.full(10, 0.8)], axis=1)
    shapes = np.stack([np.full(10, 40), np.full(10, 512), np.full(10, 512)], axis=1)
    decision = choose_target_spacing(spacings, shapes)
    assert decision.thick_axis == 0
    assert decision.target_spacing[0] == pytest.approx(np.percentile(thickness, 10))
    assert decision.target_spacing[1:] == pytest.approx((0.8, 0.8))
    assert "anisotropic" in decision.reason


def test_thick_axis_never_finer_than_the_other_axes():
    thickness = np.array([0.5, 0.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    spacings = np.stack([thickness, np.full(10, 0.8), np.full(10, 0.8)], axis=1)
    shapes = np.stack([np.full(10, 40), np.full(10, 512), np.full(10, 512)], axis=1)
    decision = choose_target_spacing(spacings, shapes)
    assert decision.target_spacing[0] == pytest.approx(0.8)


def test_thick_spacing_with_many_slices_is_not_special():
    # 5 mm slices but as many voxels along z as in-plane: the voxel-count condition fails.
    spacings = np.array([[5.0, 0.8, 0.8], [3.0, 0.8, 0.8], [5.0, 0.8, 0.8]])
    shapes = np.array([[300, 256, 256]] * 3)
    decision = choose_target_spacing(spacings, shapes)
    assert decision.thick_axis is None
    assert decision.target_spacing == pytest.approx((5.0, 0.8, 0.8))


def test_shape_after_resampling():
    assert shape_after_resampling([10, 100, 100], [5.0, 1.0, 1.0], [2.5, 2.0, 1.0]).tolist() == [20, 50, 100]
