"""Pooling, kernels, features and divisibility of the U-Net topology rule."""

import math

import pytest

from autoseg.planning.topology import features_per_stage, make_divisible, plan_topology, topology_for_patch


def test_isotropic_patch_pools_every_axis_until_4_voxels():
    topology = plan_topology([1.0, 1.0, 1.0], [128, 128, 128])
    assert topology.pooling_steps() == (5, 5, 5)  # 128 -> 4
    assert all(kernel == (3, 3, 3) for kernel in topology.kernel_sizes)
    assert topology.strides[0] == (1, 1, 1)


def test_thick_axis_is_not_pooled_until_the_others_catch_up():
    # 5 mm slices, 0.8 mm in-plane.
    topology = plan_topology([5.0, 0.8, 0.8], [32, 192, 192])
    strides = topology.strides
    assert strides[1] == (1, 2, 2) and strides[2] == (1, 2, 2)  # 0.8 -> 1.6 -> 3.2 mm in-plane
    assert strides[3] == (2, 2, 2)  # now 5 vs 3.2: within 2x, pooled together
    # kernel 1 along z while its spacing is > 2x the finest
    assert topology.kernel_sizes[0] == (1, 3, 3)
    assert topology.kernel_sizes[1] == (1, 3, 3)
    assert topology.kernel_sizes[2] == (3, 3, 3)
    sizes = [32 / math.prod(s[0] for s in strides), 192 / math.prod(s[1] for s in strides)]
    assert min(sizes) >= 4


def test_no_axis_is_pooled_below_4_voxels():
    topology = plan_topology([1.0, 1.0], [20, 64])
    steps = topology.pooling_steps()
    assert steps == (2, 4)  # 20 -> 10 -> 5; 64 -> 4


def test_patch_is_made_divisible_by_the_total_downsampling():
    topology, patch = topology_for_patch([1.0, 1.0, 1.0], [36, 50, 35])
    assert patch == (40, 56, 40)
    assert all(size % factor == 0 for size, factor in zip(patch, topology.total_downsampling()))


def test_make_divisible_rounds_up():
    assert make_divisible([33, 8, 3], [8, 8, 4]) == (40, 8, 4)


@pytest.mark.parametrize("dimension, cap", [(3, 320), (2, 512)])
def test_features_double_up_to_the_cap(dimension, cap):
    features = features_per_stage(8, dimension)
    assert features[:4] == [32, 64, 128, 256]
    assert max(features) == cap
