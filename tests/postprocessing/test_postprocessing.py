import json

import numpy as np
import pytest

from autoseg.errors import AutosegInputError
from autoseg.evaluation.learn_postprocessing import learn_postprocessing
from autoseg.postprocessing.components import apply_postprocessing, keep_largest_component


def organ_case(blob: bool):
    """Label 1 = one organ, label 2 = paired organ (left and right, two components)."""
    reference = np.zeros((8, 30, 30), dtype=np.int16)
    reference[2:6, 4:12, 4:12] = 1
    reference[2:6, 18:24, 2:8] = 2   # left
    reference[2:6, 18:24, 20:27] = 2  # right (larger)
    prediction = reference.copy()
    prediction[2:6, 4:12, 11] = 0  # slightly under-segmented organ
    if blob:
        prediction[6:8, 27:30, 27:30] = 1  # spurious far-away label-1 blob
    return prediction, reference


def test_keep_largest_component_whole_foreground():
    segmentation = np.zeros((4, 10, 10), dtype=np.uint8)
    segmentation[1:3, 0:4, 0:4] = 1
    segmentation[1:3, 0:4, 4:6] = 2  # touches label 1: same foreground component
    segmentation[1, 8, 8] = 1
    segmentation[3, 8, 0] = 2
    result = keep_largest_component(segmentation)
    expected = segmentation.copy()
    expected[1, 8, 8] = 0
    expected[3, 8, 0] = 0
    np.testing.assert_array_equal(result, expected)
    assert result is not segmentation and segmentation[1, 8, 8] == 1  # input untouched


def test_keep_largest_component_per_label():
    segmentation = np.zeros((4, 10, 10), dtype=np.uint8)
    segmentation[1:3, 0:3, 0:3] = 1
    segmentation[1, 8, 8] = 1
    segmentation[1:3, 5:7, 0:2] = 2
    segmentation[1:3, 5:7, 5:8] = 2  # larger label-2 component
    result = keep_largest_component(segmentation, labels=[2])
    assert result[1, 8, 8] == 1  # label 1 not touched
    assert (result[1:3, 5:7, 0:2] == 0).all()
    assert (result[1:3, 5:7, 5:8] == 2).all()
    result = keep_largest_component(segmentation, labels=[1, 2])
    assert result[1, 8, 8] == 0 and (result[1:3, 0:3, 0:3] == 1).all()
    assert np.count_nonzero(result == 2) == 12


def test_connectivity_of_diagonal_voxels():
    segmentation = np.zeros((3, 5, 5), dtype=np.uint8)
    segmentation[1, 1, 1] = 1
    segmentation[1, 1, 2] = 1
    segmentation[2, 2, 3] = 1  # touches (1, 1, 2) only at a corner
    # full connectivity (default): one component, nothing removed
    np.testing.assert_array_equal(keep_largest_component(segmentation), segmentation)
    np.testing.assert_array_equal(keep_largest_component(segmentation, connectivity=3), segmentation)
    # face connectivity: two components, the single voxel goes
    result = keep_largest_component(segmentation, connectivity=1)
    assert result[2, 2, 3] == 0 and result[1, 1, 1] == 1 and result[1, 1, 2] == 1
    # 2D: edge-diagonal neighbours join with 8- but not 4-connectivity
    image = np.zeros((4, 4), dtype=np.uint8)
    image[0, 0] = image[0, 1] = image[1, 2] = 1
    assert np.count_nonzero(keep_largest_component(image)) == 3
    assert np.count_nonzero(keep_largest_component(image, connectivity=1)) == 2


def test_apply_postprocessing_plan():
    prediction, _ = organ_case(blob=True)
    steps = [{"operation": "keep_largest_component", "labels": None},
             {"operation": "keep_largest_component", "labels": [1]}]
    steps = json.loads(json.dumps(steps))
    result = apply_postprocessing(prediction, steps)
    # the whole-foreground step keeps only the organ (largest), removing both label-2 parts and the blob
    assert set(np.unique(result)) == {0, 1}
    np.testing.assert_array_equal(apply_postprocessing(prediction, steps[1:]) == 1,
                                  keep_largest_component(prediction, [1]) == 1)
    np.testing.assert_array_equal(apply_postprocessing(prediction, []), prediction)
    with pytest.raises(AutosegInputError, match="unknown postprocessing operation 'fill_holes'"):
        apply_postprocessing(prediction, [{"operation": "fill_holes"}])


def test_learn_keeps_step_that_removes_spurious_blob_and_rejects_harmful_ones():
    cases = [organ_case(blob=True), organ_case(blob=False)]
    steps, report = learn_postprocessing(cases, [1, 2])
    # whole foreground would delete a whole paired organ (label 2): rejected
    assert report["tried"][0]["step"]["labels"] is None
    assert report["tried"][0]["kept"] is False
    assert report["tried"][0]["dice_after"] < report["tried"][0]["dice_before"]
    # label 1: removing the blob helps; label 2: removing the left organ hurts
    label_1, label_2 = report["tried"][1], report["tried"][2]
    assert label_1["step"] == {"operation": "keep_largest_component", "labels": [1]}
    assert label_1["kept"] is True and label_1["dice_after"] > label_1["dice_before"]
    assert label_2["kept"] is False and label_2["dice_after"] < label_2["dice_before"]
    assert steps == [{"operation": "keep_largest_component", "labels": [1]}]
    assert "improved" in label_1["reason"] and "did not improve" in label_2["reason"]

    # Dice values by hand: organ 256 voxels, prediction 224 (+18 blob voxels in one case)
    dice_clean = 2 * 224 / (256 + 224)
    dice_blob = 2 * 224 / (256 + 224 + 18)
    assert label_1["dice_before"] == pytest.approx((dice_clean + dice_blob) / 2)
    assert label_1["dice_after"] == pytest.approx(dice_clean)
    assert report["dice_after"]["per_label"][1] == pytest.approx(dice_clean)
    assert report["dice_after"]["per_label"][2] == pytest.approx(1.0)
    json.dumps(report)  # JSON-able


def test_learn_keeps_whole_foreground_step_when_it_helps():
    reference = np.zeros((6, 20, 20), dtype=np.int16)
    reference[1:5, 2:10, 2:10] = 1
    reference[1:5, 2:10, 10:14] = 2  # touches label 1: one foreground component
    prediction = reference.copy()
    prediction[0, 17:20, 17:20] = 2  # spurious
    prediction[5, 17:20, 0:2] = 1  # spurious
    steps, report = learn_postprocessing([(prediction, reference)], [1, 2])
    assert steps == [{"operation": "keep_largest_component", "labels": None}]
    assert report["tried"][0]["kept"] is True and report["tried"][0]["dice_after"] == pytest.approx(1.0)
    # after the whole-foreground step nothing is left to improve per label (no strict gain)
    assert [t["kept"] for t in report["tried"][1:]] == [False, False]
    np.testing.assert_array_equal(apply_postprocessing(prediction, steps), reference)


def test_learn_records_connectivity_and_validates_input():
    prediction, reference = organ_case(blob=True)
    steps, report = learn_postprocessing([(prediction, reference)], [1, 2], connectivity=1)
    assert steps == [{"operation": "keep_largest_component", "labels": [1], "connectivity": 1}]
    assert report["connectivity"] == 1
    with pytest.raises(ValueError):
        learn_postprocessing([], [1])
    with pytest.raises(ValueError, match="shape"):
        learn_postprocessing([(prediction, reference[:, :, :-1])], [1])
