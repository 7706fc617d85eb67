"""Region-based training, prediction and scoring rules, each on small crafted arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autoseg.errors import AutosegInputError
from autoseg.evaluation.ensemble import ensemble_folders
from autoseg.evaluation.learn_postprocessing import learn_postprocessing
from autoseg.evaluation.metrics import compute_case_metrics
from autoseg.inference.export import probabilities_to_segmentation, restore_original_shape, restore_segmentation
from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import read_label
from autoseg.io.probabilities import probability_regions, save_probabilities
from autoseg.postprocessing.components import apply_postprocessing, check_postprocessing_steps
from autoseg.training.loss import DeepSupervisionLoss, RegionDiceBCELoss, deep_supervision_weights, downsample_target
from autoseg.training.trainer import pseudo_dice_counts

REGIONS = [(1, 2), (2,)]  # "hippocampus" = anterior + posterior, "posterior"
ORDER = [1, 2]


def test_region_loss_is_dice_plus_bce_of_the_region_masks():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 5, 6)
    target = torch.randint(0, 3, (2, 1, 4, 5, 6))
    masks = torch.cat([(target == 1) | (target == 2), target == 2], dim=1).float()
    bce = RegionDiceBCELoss(REGIONS, weight_dice=0)(logits, target)
    assert float(bce) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, masks)), rel=1e-6)
    dice_loss = RegionDiceBCELoss(REGIONS, weight_bce=0)(logits, target)
    probs = torch.sigmoid(logits)
    dice = [(2 * (probs[:, i] * masks[:, i]).sum() + 1e-5) / (probs[:, i].sum() + masks[:, i].sum() + 1e-5)
            for i in range(2)]
    assert float(dice_loss) == pytest.approx(1 - float(sum(dice) / 2), rel=1e-5)
    perfect = RegionDiceBCELoss(REGIONS)(40 * (2 * masks - 1), target)
    assert float(perfect) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="3 channels for 2 regions"):
        RegionDiceBCELoss(REGIONS)(torch.randn(2, 3, 4, 5, 6), target)


@pytest.mark.parametrize("dimension", [2, 3])
def test_region_loss_gives_ignored_voxels_exactly_zero_gradient(dimension):
    torch.manual_seed(1)
    spatial = (4, 8, 8)[-dimension:]
    target = torch.randint(0, 3, (2, 1, *spatial))
    ignored = torch.rand(2, 1, *spatial) < 0.5
    target[ignored] = 3
    outputs = [torch.randn(2, 2, *spatial, requires_grad=True),
               torch.randn(2, 2, *(s // 2 for s in spatial), requires_grad=True)]
    targets = downsample_target(target, [[1.0] * dimension, [0.5] * dimension])
    loss = DeepSupervisionLoss(RegionDiceBCELoss(REGIONS, ignore_label=3), deep_supervision_weights(2))
    value = loss(outputs, targets)
    value.backward()
    assert torch.isfinite(value)
    for output, downsampled in zip(outputs, targets):
        gradient = output.grad.abs().sum(1, keepdim=True)
        assert torch.all(gradient[downsampled == 3] == 0) and torch.all(gradient[downsampled != 3] > 0)
    nothing = torch.randn(1, 2, 4, 4, requires_grad=True)
    empty = RegionDiceBCELoss(REGIONS, ignore_label=3)(nothing, torch.full((1, 1, 4, 4), 3))
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.all(nothing.grad == 0)


def test_pseudo_dice_of_region_outputs_thresholds_each_sigmoid():
    target = torch.tensor([[[[1, 2, 2, 0, 3]]]])  # (B, 1, y, x); 3 = ignore
    logits = torch.full((1, 2, 1, 5), -5.0)
    logits[0, 0, 0, :4] = 5.0  # hippocampus predicted on the first four voxels (one false positive)
    logits[0, 1, 0, 2] = 5.0  # posterior on one of its two voxels
    logits[0, :, 0, 4] = 5.0  # both on the ignored voxel: counted nowhere
    counts = pseudo_dice_counts(logits, target, REGIONS, ignore_label=3, region_outputs=True)
    assert counts.tolist() == [[3.0, 1.0], [1.0, 0.0], [0.0, 1.0]]


def test_region_probabilities_become_a_label_map_in_regions_class_order():
    probabilities = torch.tensor([[0.9, 0.9, 0.2, 0.6], [0.1, 0.7, 0.3, 0.8]])  # (R, x)
    np.testing.assert_array_equal(probabilities_to_segmentation(probabilities, ORDER), [1, 2, 0, 2])
    np.testing.assert_array_equal(probabilities_to_segmentation(probabilities), [0, 0, 1, 1])  # softmax argmax


def test_restored_region_probabilities_are_zero_outside_the_crop_box():
    properties = {"shape_after_crop": [2, 2, 2], "bounding_box": [[1, 3], [0, 2], [0, 2]],
                  "geometry": {"shape": [4, 2, 2]}, "thick_axis": None}
    probabilities = torch.full((2, 2, 2, 2), 0.8)
    restored = restore_original_shape(probabilities, properties, regions=True)
    assert restored[:, 0].max() == 0 and restored[:, 1:3].min() == pytest.approx(0.8)
    segmentation = restore_segmentation([(probabilities, properties)], regions_class_order=ORDER)
    assert segmentation[0].max() == 0 and np.all(segmentation[1:3] == 2) and segmentation[3].max() == 0
    # an ensemble thresholds the mean: 0.8 and 0.1 average to 0.45, below 0.5
    low = torch.full((2, 2, 2, 2), 0.1)
    ensembled = restore_segmentation([(probabilities, properties), (low, properties)], regions_class_order=ORDER)
    assert ensembled.max() == 0


def test_metrics_and_postprocessing_score_each_region_as_the_union_of_its_values():
    reference = np.zeros((1, 6, 6), np.uint8)
    reference[0, 1:4, 1:4] = 1
    reference[0, 2:4, 2:4] = 2
    prediction = reference.copy()
    prediction[0, 5, 5] = 1  # a stray hippocampus voxel far away
    metrics = compute_case_metrics(reference, prediction, (1.0, 1.0, 1.0), {1: (1, 2), 2: (2,)})
    assert metrics[1]["tp"] == 9 and metrics[1]["fp"] == 1 and metrics[2]["dice"] == 1.0
    steps, report = learn_postprocessing([(prediction, reference)], {1: (1, 2), 2: (2,)})
    assert steps == [{"operation": "keep_largest_component", "labels": None}]  # the foreground step is tried first
    tried = [entry["step"]["labels"] for entry in report["tried"]]
    assert tried == [None, [[1, 2]], [2]]  # then one step per region: its union, or its single value
    np.testing.assert_array_equal(apply_postprocessing(prediction, steps), reference)
    region_step = [{"operation": "keep_largest_component", "labels": [[1, 2]]}]
    assert check_postprocessing_steps(region_step, "plan") == region_step
    np.testing.assert_array_equal(apply_postprocessing(prediction, region_step), reference)
    with pytest.raises(AutosegInputError, match="lists of values"):
        check_postprocessing_steps([{"operation": "keep_largest_component", "labels": [[]]}], "plan")


def test_folder_ensemble_of_region_probabilities_uses_their_regions_class_order(tmp_path):
    geometry = ImageGeometry(shape=(1, 2, 2), spacing=(1.0, 1.0, 1.0), sitk_spacing=(1.0, 1.0, 1.0),
                             sitk_origin=(0.0, 0.0, 0.0), sitk_direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                             file_dimension=3)
    first = np.array([[[[0.9, 0.9], [0.2, 0.6]]], [[[0.1, 0.9], [0.2, 0.2]]]], np.float16)
    second = np.array([[[[0.9, 0.9], [0.2, 0.2]]], [[[0.1, 0.9], [0.2, 0.2]]]], np.float16)
    for folder, probabilities in (("a", first), ("b", second)):
        (tmp_path / folder).mkdir()
        save_probabilities(probabilities, geometry, tmp_path / folder / "case", ORDER)
    assert probability_regions(tmp_path / "a" / "case") == ORDER
    ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "out", save_probabilities=True)
    segmentation, _ = read_label(tmp_path / "out" / "case.nii.gz")
    np.testing.assert_array_equal(segmentation, [[[1, 2], [0, 0]]])  # (0.6 + 0.2) / 2 = 0.4: not hippocampus
    assert probability_regions(tmp_path / "out" / "case") == ORDER
    (tmp_path / "c").mkdir()
    save_probabilities(first, geometry, tmp_path / "c" / "case")  # the same numbers without the regions
    with pytest.raises(AutosegInputError, match="regions_class_order None differs from"):
        ensemble_folders([tmp_path / "a", tmp_path / "c"], tmp_path / "out2")
