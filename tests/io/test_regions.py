"""Region-based labels: the definition rules of dataset.json and the conversion both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import parse_dataset_json
from autoseg.io.labels import (
    class_mask,
    class_names,
    class_values,
    evaluated_classes,
    foreground_values,
    label_definition_problem,
    map_values,
    num_network_outputs,
    region_masks_to_label_map,
)

BRATS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3}
HIPPOCAMPUS = {"background": 0, "hippocampus": [1, 2], "posterior": [2]}


def dataset_json(labels: dict, order=None) -> dict:
    content = {"channel_names": {"0": "MRI"}, "labels": labels, "file_ending": ".nii.gz", "numTraining": 2}
    if order is not None:
        content["regions_class_order"] = order
    return content


def test_brain_tumour_regions_are_read_with_their_order(tmp_path):
    description = parse_dataset_json(dataset_json(BRATS, [1, 2, 3]), tmp_path, "dataset.json")
    assert description.regions_class_order == [1, 2, 3]
    assert description.num_classes == 3  # one sigmoid per region, no background output
    assert description.label_values == [0, 1, 2, 3] and description.foreground_labels == [1, 2, 3]
    assert description.to_dict()["regions_class_order"] == [1, 2, 3]
    assert evaluated_classes(BRATS, [1, 2, 3]) == {1: (1, 2, 3), 2: (2, 3), 3: (3,)}
    assert class_names(BRATS, [1, 2, 3]) == {1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}


def test_regions_with_an_ignore_label():
    labels = {**HIPPOCAMPUS, "ignore": 3}
    assert label_definition_problem(labels, [1, 2]) is None
    assert num_network_outputs(labels) == 2
    assert class_values(labels) == [0, 1, 2] and foreground_values(labels) == [1, 2]
    assert map_values(labels) == [0, 1, 2, 3]


@pytest.mark.parametrize("labels, order, problem", [
    (BRATS, None, "need 'regions_class_order'"),
    (BRATS, [1, 2], "has 2 values for 3 regions"),
    (BRATS, [1, 1, 3], "lists a value twice"),
    (BRATS, [1, 1.5, 3], "must be a list of label values"),
    (BRATS, [2, 1, 3], "writes 1 for region 'tumor_core', which is not one of its values [2, 3]"),
    ({"background": 0, "a": [0, 1]}, [1], "region 'a' contains background 0"),
    ({"background": 0, "a": []}, [1], "non-empty list"),
    ({"background": 0, "a": [1, 1]}, [1], "lists a value twice"),
    ({"background": 0, "a": [1, 2], "b": [2, 1]}, [1, 2], "regions 'a' and 'b' have the same values"),
    ({"background": 0, "a": [1, 3]}, [1], "consecutive 0..2"),
    ({"background": 0, "a": [1, 2], "ignore": 2}, [1], "the ignore value 2 is part of a region"),
    ({"background": 0, "a": [2, 3], "ignore": 1}, [2], "'ignore' must have the highest value"),
    ({"background": 0, "a": [1, 2], "ignore": [3]}, [1], "'ignore' must be a single value"),
    ({"a": [1, 2], "b": 3}, [1, 3], "background with value 0"),
    ({"background": 0, "a": 1}, [1], "no label is a region"),
])
def test_inconsistent_regions_are_one_line_errors(tmp_path, labels, order, problem):
    assert problem in label_definition_problem(labels, order)
    with pytest.raises(AutosegInputError, match=r"^dataset\.json: ") as error:
        parse_dataset_json(dataset_json(labels, order), tmp_path, "dataset.json")
    assert "\n" not in str(error.value) and problem in str(error.value)


def test_label_map_to_regions_and_back_is_the_identity_for_nested_regions():
    rng = np.random.default_rng(0)
    for labels, order in ((BRATS, [1, 2, 3]), (HIPPOCAMPUS, [1, 2])):
        label_map = rng.integers(0, max(map_values(labels)) + 1, size=(5, 6, 7))
        classes = evaluated_classes(labels, order)
        masks = np.stack([class_mask(label_map, values) for values in classes.values()])
        restored = region_masks_to_label_map(masks, order, np.zeros_like(label_map))
        np.testing.assert_array_equal(restored, label_map)
        # the same rule on torch tensors
        tensor = torch.from_numpy(label_map)
        torch_masks = torch.stack([class_mask(tensor, values) for values in classes.values()])
        np.testing.assert_array_equal(torch_masks.numpy(), masks)


def test_later_regions_overwrite_earlier_ones_and_unpredicted_voxels_stay_background():
    masks = np.array([[True, True, False, False], [False, True, True, False]])
    out = region_masks_to_label_map(masks, [1, 2], np.zeros(4, np.uint8))
    np.testing.assert_array_equal(out, [1, 2, 2, 0])  # a region predicted alone is still written
