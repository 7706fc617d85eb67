"""Restoring the label map to the original grid slab by slab gives the whole-volume result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.inference.export import probabilities_to_segmentation, restore_original_shape, restore_segmentation
from autoseg.preprocessing.resample import resample_probabilities, resample_probability_rows


def random_probabilities(shape, classes=3, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((classes,) + tuple(shape), generator=generator)
    return torch.nn.functional.avg_pool3d(logits[None], 3, 1, 1)[0].softmax(0)  # smooth, like a network's


def properties_for(full_shape, box, network_shape, thick_axis=None) -> dict:
    cropped = [stop - start for start, stop in box]
    return {"geometry": {"shape": list(full_shape)}, "bounding_box": [list(b) for b in box],
            "shape_after_crop": cropped, "shape_after_resampling": list(network_shape), "thick_axis": thick_axis}


@pytest.mark.parametrize("thick_axis", [None, 0, 2])
@pytest.mark.parametrize(("network_shape", "cropped_shape"), [((9, 20, 18), (13, 31, 25)),  # upsampled
                                                              ((16, 30, 28), (11, 22, 19))])  # downsampled
def test_rows_match_the_whole_volume_resampling(thick_axis, network_shape, cropped_shape):
    probabilities = random_probabilities(network_shape)
    whole = resample_probabilities(probabilities, cropped_shape, thick_axis)
    for start, stop in [(0, 1), (0, 4), (3, 8), (cropped_shape[0] - 2, cropped_shape[0])]:
        rows = resample_probability_rows(probabilities, cropped_shape, thick_axis, start, stop)
        torch.testing.assert_close(rows, whole[:, start:stop], rtol=0, atol=2e-6)


@pytest.mark.parametrize("thick_axis", [None, 0])
def test_slab_size_does_not_change_the_segmentation(thick_axis):
    network_shape, box, full_shape = (10, 24, 20), [[2, 17], [3, 33], [1, 28]], (20, 36, 30)
    prediction = (random_probabilities(network_shape, seed=1), properties_for(full_shape, box, network_shape,
                                                                              thick_axis))
    reference = restore_segmentation([prediction], slab_voxels=10**9)  # one slab: the whole volume
    for slab_voxels in (1, 30 * 27, 4 * 30 * 27):  # one slice, one slice, four slices
        np.testing.assert_array_equal(restore_segmentation([prediction], slab_voxels=slab_voxels), reference)
    # and it equals the argmax of the full-size restored probabilities (up to float ties)
    restored = restore_original_shape(*prediction)
    full = probabilities_to_segmentation(restored)
    top2 = restored.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5).numpy()
    np.testing.assert_array_equal(reference[clear], full[clear])
    assert clear.mean() > 0.99
    outside = np.ones(full_shape, bool)
    outside[tuple(slice(a, b) for a, b in box)] = False
    assert not reference[outside].any()  # background outside the crop box


def test_an_ensemble_averages_configurations_on_different_grids():
    box, full_shape = [[0, 12], [0, 30], [0, 30]], (12, 30, 30)
    fine = (random_probabilities((12, 30, 30), seed=2), properties_for(full_shape, box, (12, 30, 30)))
    coarse = (random_probabilities((6, 15, 15), seed=3), properties_for(full_shape, box, (6, 15, 15), 0))
    chunked = restore_segmentation([fine, coarse], slab_voxels=2 * 30 * 30)
    average = (restore_original_shape(*fine) + restore_original_shape(*coarse)) / 2
    top2 = average.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5).numpy()
    np.testing.assert_array_equal(chunked[clear], probabilities_to_segmentation(average)[clear])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_class_argmax_is_torch_argmax_with_ties_to_the_lower_class(dtype):
    from autoseg.inference.export import class_argmax

    generator = torch.Generator().manual_seed(0)
    probabilities = torch.randint(0, 4, (5, 6, 7, 8), generator=generator).to(dtype)  # many ties
    labels = class_argmax(probabilities)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, torch.argmax(probabilities.float(), dim=0).numpy())
    many = torch.rand(300, 2, 3, generator=generator)
    assert class_argmax(many).dtype == np.uint16
    np.testing.assert_array_equal(class_argmax(many), torch.argmax(many, dim=0).numpy())
