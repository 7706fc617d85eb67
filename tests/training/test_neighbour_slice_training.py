"""2.5D training input: the sampler stacks a slice's neighbours as channels, and augmentation treats the
neighbours of one image channel as one image (same intensity change, blur and low resolution in-plane)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import position_image, write_case

from autoseg.plans.training import AugmentationConfig
from autoseg.training.augmentation import build_training_transforms
from autoseg.training.sampling import PatchSampler


@pytest.fixture(autouse=True)
def _seeded():
    np.random.seed(0)  # noqa: NPY002


def test_the_sampler_stacks_the_sampled_slice_and_its_neighbours(tmp_path):
    shape = (6, 10, 12)
    plane = shape[1] * shape[2]
    image = np.concatenate([position_image(shape), -position_image(shape)])  # two channels, values name voxels
    label = np.zeros(shape, np.int8)
    label[1, 4:6, 4:6] = 1  # foreground on slice 1: forced samples sit next to the volume's end
    label[4, 4:6, 4:6] = 2
    write_case(tmp_path, "case", image, label)
    sampler = PatchSampler(tmp_path, ["case"], (8, 8), 8, 2, oversample_foreground=1.0, seed=0,
                           neighbour_slices=2, neighbour_slice_padding="replicate")
    batch = sampler.sample_batch()
    assert batch["data"].shape == (8, 10, 8, 8) and batch["seg"].shape == (8, 1, 8, 8)
    seen = set()
    for sample, seg in zip(batch["data"], batch["seg"], strict=True):
        itself = sample[2]  # channel c * (2K + 1) + K is the sampled slice
        inside = itself > 0
        z = int((itself[inside].min() - 1) // plane)
        seen.add(z)
        assert seg.max() == label[z].max()  # the label is the sampled slice's
        for j, neighbour in enumerate(np.clip(np.arange(z - 2, z + 3), 0, shape[0] - 1)):
            expected = itself + (neighbour - z) * plane
            assert np.array_equal(sample[j][inside], expected[inside])
            assert np.array_equal(sample[5 + j][inside], -expected[inside])  # channel 1 after channel 0
    assert seen == {1, 4}


def test_zero_padding_leaves_zeros_past_the_first_slice(tmp_path):
    shape = (4, 8, 8)
    label = np.zeros(shape, np.int8)
    label[0, 2:6, 2:6] = 1
    write_case(tmp_path, "case", position_image(shape), label)
    sampler = PatchSampler(tmp_path, ["case"], (8, 8), 2, 2, oversample_foreground=1.0,
                           neighbour_slices=1, neighbour_slice_padding="zero")
    data = sampler.sample_batch()["data"]
    assert data.shape == (2, 3, 8, 8)
    assert not data[:, 0].any() and data[:, 1].all() and data[:, 2].all()


def test_neighbours_are_for_2d_patches_only(tmp_path):
    write_case(tmp_path, "case", position_image((4, 8, 8)), np.ones((4, 8, 8), np.int8))
    with pytest.raises(ValueError, match="need 2D patches"):
        PatchSampler(tmp_path, ["case"], (4, 8, 8), 2, 3, neighbour_slices=1)


def intensity_only(**changes) -> AugmentationConfig:
    off = dict(rotation_probability=0.0, scale_probability=0.0, noise_probability=0.0, blur_probability=0.0,
               brightness_probability=0.0, contrast_probability=0.0, low_resolution_probability=0.0,
               gamma_probability=0.0, inverted_gamma_probability=0.0, mirror_axes=[],
               slice_thickness_probability=0.0, intensity_shift_probability=0.0)
    return replace(AugmentationConfig(), **{**off, **changes})


@pytest.mark.parametrize("transform", ["brightness", "contrast", "gamma", "inverted_gamma", "blur", "low_resolution"])
def test_one_image_channel_gets_one_intensity_change_across_its_neighbours(transform):
    """Every slice of a channel identical in, identical out: a per-slice draw would make them differ."""
    rng = np.random.default_rng(0)
    channels, slices = 2, 5
    planes = rng.uniform(0.5, 2.0, size=(4, channels, 1, 20, 20)).astype(np.float32)
    data = np.repeat(planes, slices, axis=2).reshape(4, channels * slices, 20, 20)
    seg = np.zeros((4, 1, 20, 20), np.int16)
    config = intensity_only(**{f"{transform}_probability": 1.0})
    pipeline = build_training_transforms((20, 20), config, 2, False, 1, slices_per_channel=slices)
    out = pipeline(data=data.copy(), seg=seg)["data"].reshape(4, channels, slices, 20, 20)
    assert out.shape == (4, channels, slices, 20, 20)
    assert not np.allclose(out, data.reshape(out.shape))  # the transform did something
    assert np.allclose(out, out[:, :, :1], atol=1e-5)  # ... the same to every neighbour of a channel
    assert not np.allclose(out[:, 0], out[:, 1] * (out[:, 0].mean() / out[:, 1].mean()))  # channels drawn apart


def test_neighbour_slices_need_2d_batches():
    with pytest.raises(ValueError, match="needs 2D batches"):
        build_training_transforms((8, 8, 8), AugmentationConfig(), 3, False, 1, slices_per_channel=3)


def test_a_planned_2p5d_network_takes_the_stacked_channels_and_segments_the_slice():
    import torch
    from helpers import planner_fingerprint

    from autoseg.model.builders import build_network
    from autoseg.planning.hardware import cpu_budget
    from autoseg.planning.planner import plan_experiment

    fingerprint = planner_fingerprint((36, 50, 35), (1.0, 1.0, 1.0), 260, "MRI")
    plans = plan_experiment(fingerprint, "/raw", cpu_budget(24 * 2**30))
    configuration = plans.configurations["2.5d"]
    network = build_network(configuration.network, plans.input_channels("2.5d"), plans.num_classes).eval()
    batch = torch.zeros((2, plans.num_channels * configuration.slices_per_input, *configuration.patch_size))
    with torch.no_grad():
        logits = network(batch)
    logits = logits[0] if isinstance(logits, (list, tuple)) else logits
    assert tuple(logits.shape) == (2, plans.num_classes, *configuration.patch_size)
    with pytest.raises(RuntimeError):  # a 2d input (one slice per channel) does not fit
        network(torch.zeros((2, plans.num_channels, *configuration.patch_size)))
