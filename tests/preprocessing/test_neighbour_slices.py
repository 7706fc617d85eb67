"""The 2.5D stacking rule: which slices, in which channel order, and what stands past the ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.preprocessing.neighbour_slices import neighbour_slice_indices, stack_neighbour_slices


def numbered_volume(channels: int = 2, slices: int = 5, size: int = 3) -> np.ndarray:
    """(C, Z, y, x) whose every voxel holds 100 * channel + slice + 1, so a stacked value names its source."""
    values = 100 * np.arange(channels)[:, None] + np.arange(slices)[None, :] + 1
    return np.broadcast_to(values[:, :, None, None], (channels, slices, size, size)).astype(np.float32).copy()


def test_indices_are_the_neighbours_clipped_at_the_ends():
    indices, inside = neighbour_slice_indices(np.array([0, 2, 4]), 5, 2)
    assert indices.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [2, 3, 4, 4, 4]]
    assert inside.tolist() == [[False, False, True, True, True], [True] * 5, [True, True, True, False, False]]


def test_channel_order_is_channel_major_with_slices_in_increasing_z():
    stacked = stack_neighbour_slices(numbered_volume(), 2, 1)
    assert stacked.shape == (6, 3, 3)
    assert stacked[:, 0, 0].tolist() == [2, 3, 4, 102, 103, 104]  # c0 z1..z3, then c1 z1..z3
    assert stacked[1].tolist() == numbered_volume()[0, 2].tolist()  # channel c * (2K + 1) + K is the slice itself


@pytest.mark.parametrize(("padding", "expected"), [("replicate", [1, 1, 1, 2, 3]), ("zero", [0, 0, 1, 2, 3])])
def test_ends_replicate_the_end_slice_or_put_zeros(padding, expected):
    stacked = stack_neighbour_slices(numbered_volume(channels=1), 0, 2, padding)
    assert stacked[:, 0, 0].tolist() == expected
    last = stack_neighbour_slices(numbered_volume(channels=1), 4, 2, padding)
    assert last[:, 0, 0].tolist() == ([3, 4, 5, 5, 5] if padding == "replicate" else [3, 4, 5, 0, 0])


def test_a_slice_range_gives_each_slice_its_own_stack():
    volume = numbered_volume()
    ranged = stack_neighbour_slices(volume, slice(1, 4), 2, "zero")
    assert ranged.shape == (10, 3, 3, 3)
    for offset, z in enumerate(range(1, 4)):
        assert np.array_equal(ranged[:, offset], stack_neighbour_slices(volume, z, 2, "zero"))


@pytest.mark.parametrize("padding", ["replicate", "zero"])
def test_torch_tensors_stack_as_numpy_arrays_do(padding):
    volume = np.random.default_rng(0).normal(size=(2, 6, 4, 5)).astype(np.float32)
    expected = stack_neighbour_slices(volume, slice(0, 6), 3, padding)
    got = stack_neighbour_slices(torch.from_numpy(volume), slice(0, 6), 3, padding)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert np.array_equal(got.numpy(), expected)


def test_no_neighbours_is_the_slice_and_a_memory_map_is_read_in_place(tmp_path):
    path = tmp_path / "image.npy"
    np.save(path, numbered_volume())
    mapped = np.load(path, mmap_mode="r")
    assert np.array_equal(stack_neighbour_slices(mapped, 3, 0), numbered_volume()[:, 3])
    assert np.array_equal(stack_neighbour_slices(mapped[:, :, 1:2, :], 0, 1)[:, 0, 0], [1, 1, 2, 101, 101, 102])


def test_a_one_slice_volume_and_bad_arguments():
    one = numbered_volume(channels=1, slices=1)
    assert stack_neighbour_slices(one, 0, 2)[:, 0, 0].tolist() == [1] * 5
    with pytest.raises(ValueError, match="padding must be one of"):
        stack_neighbour_slices(one, 0, 1, "mirror")
    with pytest.raises(ValueError, match="neighbours must be >= 0"):
        neighbour_slice_indices(0, 3, -1)
