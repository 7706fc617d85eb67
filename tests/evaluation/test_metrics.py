"""Metrics against hand-computed values, with anisotropic spacing (z, y, x) = (3.0, 1.0, 0.5) mm."""

import numpy as np
import pytest

from autoseg.evaluation.metrics import (
    METRIC_NAMES,
    bounding_box,
    compute_case_metrics,
    dice_score,
    surface_distances,
    surface_mask,
)

SPACING = (3.0, 1.0, 0.5)  # mm, array axis order (z, y, x); voxel volume 1.5 mm^3


def one_label(reference, prediction, spacing=SPACING, **kwargs):
    return compute_case_metrics(reference, prediction, spacing, [1], **kwargs)[1]


def test_overlap_counts_dice_iou_and_volumes():
    reference = np.zeros((4, 5, 6), dtype=np.int16)
    prediction = np.zeros_like(reference)
    reference[1:3, 1:3, 1:4] = 1  # 12 voxels
    prediction[1:3, 1:3, 2:5] = 1  # 12 voxels, 8 shared
    m = one_label(reference, prediction)
    assert set(m) == set(METRIC_NAMES)
    assert (m["tp"], m["fp"], m["fn"]) == (8, 4, 4)
    assert m["dice"] == pytest.approx(16 / 24)
    assert m["iou"] == pytest.approx(8 / 16)
    assert m["reference_volume_ml"] == pytest.approx(12 * 1.5 / 1000)
    assert m["predicted_volume_ml"] == pytest.approx(12 * 1.5 / 1000)
    assert m["volume_difference_ml"] == pytest.approx(0.0)
    assert m["volume_difference_percent"] == pytest.approx(0.0)


def test_volumes_in_ml_and_relative_difference():
    reference = np.zeros((3, 10, 10), dtype=np.int16)
    prediction = np.zeros_like(reference)
    reference[1, 0, :10] = 1  # 10 voxels
    prediction[1, 0, :10] = 1
    prediction[1, 1, :5] = 1  # 15 voxels
    m = one_label(reference, prediction)
    assert m["reference_volume_ml"] == pytest.approx(0.015)
    assert m["predicted_volume_ml"] == pytest.approx(0.0225)
    assert m["volume_difference_ml"] == pytest.approx(0.0075)
    assert m["volume_difference_percent"] == pytest.approx(50.0)
    # under-segmentation gives a negative difference
    m = one_label(prediction, reference)
    assert m["volume_difference_ml"] == pytest.approx(-0.0075)
    assert m["volume_difference_percent"] == pytest.approx(-100 * 5 / 15)


@pytest.mark.parametrize("axis, step_mm", [(0, 3.0), (1, 1.0), (2, 0.5)])
def test_hd95_and_msd_of_cubes_shifted_along_each_axis(axis, step_mm):
    # 2x2x2 cubes (every voxel is a surface voxel) at positions 1..2 and 4..5 along `axis`.
    reference = np.zeros((7, 7, 7), dtype=np.int16)
    prediction = np.zeros_like(reference)
    index_ref = [slice(1, 3)] * 3
    index_pred = [slice(1, 3)] * 3
    index_pred[axis] = slice(4, 6)
    reference[tuple(index_ref)] = 1
    prediction[tuple(index_pred)] = 1
    # Each directed set: four voxels at 2 steps, four at 3 steps.
    m = one_label(reference, prediction)
    assert m["dice"] == 0.0
    assert m["hd95_mm"] == pytest.approx(3 * step_mm)
    assert m["msd_mm"] == pytest.approx(2.5 * step_mm)


def test_nsd_tolerance_includes_or_excludes_the_shift():
    reference = np.zeros((7, 7, 7), dtype=np.int16)
    prediction = np.zeros_like(reference)
    reference[1:3, 1:3, 1:3] = 1
    prediction[4:6, 1:3, 1:3] = 1  # distances 6 mm and 9 mm (z spacing 3 mm)
    assert one_label(reference, prediction, surface_tolerance_mm=5.9)["nsd"] == 0.0
    assert one_label(reference, prediction, surface_tolerance_mm=6.0)["nsd"] == pytest.approx(0.5)
    assert one_label(reference, prediction, surface_tolerance_mm=9.0)["nsd"] == pytest.approx(1.0)
    # A one-slice shift along x is 0.5 mm: inside a 1 mm tolerance, outside 0.4 mm.
    plane_ref = np.zeros((4, 6, 8), dtype=np.int16)
    plane_pred = np.zeros_like(plane_ref)
    plane_ref[:, :, 3] = 1
    plane_pred[:, :, 4] = 1
    assert one_label(plane_ref, plane_pred, surface_tolerance_mm=1.0)["nsd"] == pytest.approx(1.0)
    assert one_label(plane_ref, plane_pred, surface_tolerance_mm=0.4)["nsd"] == 0.0
    m = one_label(plane_ref, plane_pred)
    assert m["hd95_mm"] == pytest.approx(0.5)
    assert m["msd_mm"] == pytest.approx(0.5)


def test_hd95_is_max_of_directed_percentiles_and_msd_pools_both_sets():
    # Reference: a full 10x10 plane at z=1 (100 surface voxels).
    # Prediction: the same plane plus a separate 4x5 patch at z=3, right above it (6 mm away).
    reference = np.zeros((5, 10, 10), dtype=np.int16)
    reference[1] = 1
    prediction = reference.copy()
    prediction[3, :4, :5] = 1
    m = one_label(reference, prediction)
    # reference -> prediction: 100 zeros; prediction -> reference: 100 zeros and 20 x 6 mm.
    # 95th percentile of the latter: position 0.95 * 119 = 113.05 lies among the 6 mm values.
    assert m["hd95_mm"] == pytest.approx(6.0)
    assert m["msd_mm"] == pytest.approx(20 * 6.0 / 220)
    assert m["nsd"] == pytest.approx(200 / 220)
    assert m["false_positive_components"] == 1
    assert m["false_negative_components"] == 0


def test_hd95_ignores_a_single_outlier_voxel_but_msd_does_not():
    reference = np.zeros((6, 10, 10), dtype=np.int16)
    reference[1] = 1
    prediction = reference.copy()
    prediction[5, 0, 0] = 1  # 4 slices = 12 mm above the plane
    m = one_label(reference, prediction)
    # prediction -> reference: 100 zeros and one 12; percentile position 95 -> 0.
    assert m["hd95_mm"] == 0.0
    assert m["msd_mm"] == pytest.approx(12.0 / 201)


def test_false_positive_and_false_negative_components():
    reference = np.zeros((5, 20, 20), dtype=np.int16)
    prediction = np.zeros_like(reference)
    reference[1:3, 1:4, 1:4] = 1     # found
    reference[1:3, 10:12, 1:3] = 1   # missed
    reference[1:3, 15:18, 15:18] = 1  # missed
    prediction[1:3, 2:5, 2:5] = 1    # overlaps the first
    prediction[3, 10:12, 10:12] = 1  # spurious
    prediction[1, 18, 1] = 1         # spurious
    m = one_label(reference, prediction)
    assert m["false_positive_components"] == 2
    assert m["false_negative_components"] == 2


def test_component_connectivity_diagonal_voxels():
    reference = np.zeros((3, 6, 6), dtype=np.int16)
    prediction = np.zeros_like(reference)
    reference[1, 0, 0] = 1
    prediction[1, 3, 3] = 1
    prediction[2, 4, 4] = 1  # touches (1, 3, 3) only at a corner
    assert one_label(reference, prediction)["false_positive_components"] == 1
    assert one_label(reference, prediction, connectivity=3)["false_positive_components"] == 1
    assert one_label(reference, prediction, connectivity=2)["false_positive_components"] == 2
    assert one_label(reference, prediction, connectivity=1)["false_positive_components"] == 2
    with pytest.raises(ValueError, match="connectivity"):
        one_label(reference, prediction, connectivity=4)


def test_both_empty_is_a_correct_absence():
    empty = np.zeros((3, 4, 5), dtype=np.int16)
    m = one_label(empty, empty.copy())
    assert (m["dice"], m["iou"], m["nsd"], m["hd95_mm"], m["msd_mm"]) == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 0)
    assert m["reference_volume_ml"] == 0.0 and m["volume_difference_ml"] == 0.0
    assert m["volume_difference_percent"] is None
    assert m["false_positive_components"] == 0 and m["false_negative_components"] == 0


def test_empty_reference_with_prediction_is_undefined_distance():
    reference = np.zeros((3, 8, 8), dtype=np.int16)
    prediction = np.zeros_like(reference)
    prediction[1, 1:3, 1:3] = 1
    prediction[1, 6, 6] = 1
    m = one_label(reference, prediction)
    assert (m["dice"], m["iou"], m["nsd"]) == (0.0, 0.0, 0.0)
    assert m["hd95_mm"] is None and m["msd_mm"] is None
    assert m["volume_difference_percent"] is None
    assert m["predicted_volume_ml"] == pytest.approx(5 * 1.5 / 1000)
    assert m["false_positive_components"] == 2
    assert m["false_negative_components"] == 0


def test_empty_prediction_with_reference_is_undefined_distance():
    reference = np.zeros((3, 8, 8), dtype=np.int16)
    reference[1, 1:3, 1:3] = 1
    m = one_label(reference, np.zeros_like(reference))
    assert (m["dice"], m["iou"], m["nsd"]) == (0.0, 0.0, 0.0)
    assert m["hd95_mm"] is None and m["msd_mm"] is None
    assert m["volume_difference_percent"] == pytest.approx(-100.0)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 4)
    assert m["false_positive_components"] == 0
    assert m["false_negative_components"] == 1


def test_labels_are_evaluated_separately():
    reference = np.zeros((3, 6, 6), dtype=np.int16)
    reference[1, :3, :3] = 1
    reference[1, 3:, 3:] = 2
    prediction = reference.copy()
    prediction[1, 3:, 3:] = 1  # label 2 predicted as label 1
    metrics = compute_case_metrics(reference, prediction, SPACING, [1, 2, 3])
    assert metrics[1]["dice"] == pytest.approx(2 * 9 / (9 + 18))
    assert metrics[2]["dice"] == 0.0 and metrics[2]["hd95_mm"] is None
    assert metrics[3]["dice"] == 1.0  # absent from both


def test_identical_masks():
    rng = np.random.default_rng(0)
    reference = (rng.random((6, 12, 12)) > 0.6).astype(np.int16)
    m = one_label(reference, reference.copy())
    assert (m["dice"], m["iou"], m["nsd"], m["hd95_mm"], m["msd_mm"]) == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert m["false_positive_components"] == 0 and m["false_negative_components"] == 0


def test_bounding_box_crop_equals_full_computation():
    rng = np.random.default_rng(42)
    for trial in range(6):
        shape = (12, 30, 25)
        reference = np.zeros(shape, dtype=bool)
        prediction = np.zeros(shape, dtype=bool)
        # Random boxes, some touching the array border, plus random speckle.
        for mask in (reference, prediction):
            for _ in range(2):
                start = rng.integers(0, np.array(shape) - 2)
                stop = np.minimum(start + rng.integers(2, 8, size=3), shape)
                mask[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = True
            if trial % 2:
                mask |= rng.random(shape) > 0.995
        cropped = surface_distances(reference, prediction, SPACING, crop=True)
        full = surface_distances(reference, prediction, SPACING, crop=False)
        for a, b in zip(cropped, full, strict=True):
            np.testing.assert_array_equal(a, b)
    # A small object far from the array border: the crop is much smaller than the array.
    reference = np.zeros((20, 60, 60), dtype=bool)
    prediction = np.zeros_like(reference)
    reference[8:12, 20:30, 20:30] = True
    prediction[9:12, 22:33, 19:28] = True
    box = bounding_box(reference | prediction, margin=1)
    assert box == (slice(7, 13), slice(19, 34), slice(18, 31))
    for a, b in zip(surface_distances(reference, prediction, SPACING, crop=True),
                    surface_distances(reference, prediction, SPACING, crop=False), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.size > 0


def test_two_dimensional_arrays_and_singleton_slice_axis():
    reference = np.zeros((10, 10), dtype=np.int16)
    prediction = np.zeros_like(reference)
    reference[2:6, 2:6] = 1
    prediction[2:6, 4:8] = 1  # shifted 2 columns = 1 mm at 0.5 mm spacing
    m2d = compute_case_metrics(reference, prediction, (1.0, 0.5), [1])[1]
    assert m2d["dice"] == pytest.approx(0.5)
    # Contour (not area) distances: the left contour column at 1 mm, the rest 0 or 0.5 mm.
    assert m2d["hd95_mm"] == pytest.approx(1.0)
    # A 2D image stored as (1, y, x) with the fake 999 mm slice spacing gives the same distances.
    m3d = compute_case_metrics(reference[None], prediction[None], (999.0, 1.0, 0.5), [1])[1]
    for key in ("dice", "iou", "hd95_mm", "msd_mm", "nsd", "false_positive_components"):
        assert m3d[key] == pytest.approx(m2d[key])


def test_input_validation():
    a = np.zeros((3, 4, 5), dtype=np.int16)
    with pytest.raises(ValueError, match="shape"):
        compute_case_metrics(a, np.zeros((3, 4, 6), dtype=np.int16), SPACING, [1])
    with pytest.raises(ValueError, match="spacing"):
        compute_case_metrics(a, a, (1.0, 1.0), [1])


def test_dice_score_helper_matches_metrics():
    reference = np.zeros((3, 6, 6), dtype=bool)
    prediction = np.zeros_like(reference)
    assert dice_score(reference, prediction) == 1.0
    reference[1, :3, :3] = True
    assert dice_score(reference, prediction) == 0.0
    prediction[1, 1:4, 1:4] = True
    expected = one_label(reference.astype(np.int16), prediction.astype(np.int16))["dice"]
    assert dice_score(reference, prediction) == pytest.approx(expected)
    assert expected == pytest.approx(2 * 4 / 18)


def test_surface_uses_face_connected_erosion():
    # An L-shape: 6x6 block without its top-right 3x3 quadrant (27 pixels).
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:7, 1:7] = True
    mask[1:4, 4:7] = False
    surface = surface_mask(mask)
    # Interior = all four face neighbours inside: 8 pixels, among them (4, 3) next to the
    # concave corner (its diagonal neighbour (3, 4) is outside).
    assert np.count_nonzero(surface) == 27 - 8
    assert not surface[4, 3] and surface[4, 4]
    cube = np.zeros((6, 6, 6), dtype=bool)
    cube[1:5, 1:5, 1:5] = True
    assert np.count_nonzero(surface_mask(cube)) == 64 - 8
    # voxels on the array border are surface
    assert surface_mask(np.ones((3, 3), dtype=bool)).sum() == 8
