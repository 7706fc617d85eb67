"""preprocess_case and its inverse: shapes, spacings and headers come back exactly."""

from __future__ import annotations

import numpy as np
import torch

from autoseg.inference.export import export_segmentation, probabilities_to_segmentation, restore_original_shape
from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import read_label
from autoseg.planning.hardware import cpu_budget
from autoseg.planning.planner import plan_experiment
from autoseg.preprocessing.preprocess import preprocess_case


def make_plans(spacing, shape, channel_name="CT"):
    cases = {f"c{i}": {"shape": list(shape), "spacing": list(spacing), "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                       "bounding_box": [[0, s] for s in shape], "shape_after_crop": list(shape),
                       "class_voxels": {"1": 10}} for i in range(5)}
    fingerprint = {"dataset_name": "T", "channel_names": {"0": channel_name}, "labels": {"background": 0, "organ": 1},
                   "file_ending": ".nii.gz", "cases": cases,
                   "channels": {"0": {"mean": 0.0, "std": 100.0, "median": 0.0, "min": -1000.0, "max": 1000.0,
                                      "percentile_00_5": -500.0, "percentile_99_5": 500.0, "num_samples": 10}}}
    return plan_experiment(fingerprint, "/raw", cpu_budget(16 * 2**30))


def make_case(shape=(12, 40, 36), spacing=(4.0, 0.7, 0.7)):
    geometry = ImageGeometry(shape=shape, spacing=spacing, sitk_spacing=spacing[::-1],
                             sitk_origin=(-120.5, 33.0, 7.25), sitk_direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1),
                             file_dimension=3)
    image = np.zeros((1,) + shape, np.float32)
    image[:, 2:11, 5:35, 4:30] = np.random.default_rng(0).normal(0, 50, (1, 9, 30, 26))
    label = np.zeros(shape, np.int16)
    label[4:9, 10:30, 10:25] = 1
    return image, label, geometry


def test_properties_record_crop_and_resampling():
    image, label, geometry = make_case()
    plans = make_plans([3.0, 1.0, 1.0], (12, 40, 36))
    configuration = plans.configurations["3d_fullres"]
    case = preprocess_case(image, geometry, plans, configuration, label)
    properties = case.properties
    # the RAS-like direction (x and y reversed) is made canonical first: the box is in canonical order
    assert properties["orientation"] == {"axes": [0, 1, 2], "flipped": [False, True, True]}
    assert properties["bounding_box"] == [[2, 11], [40 - 35, 40 - 5], [36 - 30, 36 - 4]]
    assert properties["shape_after_crop"] == [9, 30, 26]
    assert properties["target_spacing"] == configuration.target_spacing
    assert list(case.image.shape[1:]) == properties["shape_after_resampling"] == list(case.label.shape)
    assert properties["thick_axis"] == 0  # 4 mm vs 0.7 mm
    assert set(properties["class_locations"]) == {"1"}
    z, y, x = properties["class_locations"]["1"][0]
    assert case.label[z, y, x] == 1


def test_2d_configuration_keeps_each_case_slices():
    image, label, geometry = make_case()
    plans = make_plans([3.0, 1.0, 1.0], (12, 40, 36))
    case = preprocess_case(image, geometry, plans, plans.configurations["2d"], label)
    assert case.properties["target_spacing"][0] == 4.0
    assert case.image.shape[1] == 9  # the cropped slices, not resampled


def test_round_trip_restores_shape_labels_and_header(tmp_path):
    image, label, geometry = make_case()
    plans = make_plans([3.0, 1.0, 1.0], (12, 40, 36))
    case = preprocess_case(image, geometry, plans, plans.configurations["3d_fullres"], label)
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(case.label.astype(np.int64)), 2)
    probabilities = one_hot.permute(3, 0, 1, 2).float()
    restored = restore_original_shape(probabilities, case.properties)
    assert tuple(restored.shape[1:]) == geometry.shape
    segmentation = probabilities_to_segmentation(restored)
    assert (segmentation == label).mean() > 0.98
    export_segmentation(segmentation, case.properties, tmp_path / "seg.nii.gz")
    written, written_geometry = read_label(tmp_path / "seg.nii.gz")
    np.testing.assert_allclose(written_geometry.sitk_origin, geometry.sitk_origin)
    np.testing.assert_allclose(written_geometry.sitk_spacing, geometry.sitk_spacing)
    np.testing.assert_allclose(written_geometry.sitk_direction, geometry.sitk_direction)
    np.testing.assert_array_equal(written, segmentation)
