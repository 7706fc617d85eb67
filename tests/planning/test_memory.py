"""The training-memory estimate grows with patch, batch and depth; plans fit their budget."""

import pytest

from autoseg.planning.hardware import cpu_budget, gpu_budget
from autoseg.planning.memory import estimate_training_memory_bytes
from autoseg.planning.planner import fit_patch_and_batch, make_network_config


def estimate(patch, batch, spacing=(1.0, 1.0, 1.0)):
    network, patch = make_network_config(spacing, patch, len(patch))
    return estimate_training_memory_bytes(network, patch, batch, 1, 3, 2)


def test_estimate_grows_with_batch_size():
    values = [estimate((64, 64, 64), batch) for batch in (1, 2, 3, 8)]
    assert values == sorted(values) and len(set(values)) == 4


def test_estimate_grows_with_patch_size():
    values = [estimate((size, size, size), 2) for size in (16, 32, 48, 64, 96, 128)]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_estimate_grows_with_channels_and_classes():
    network, patch = make_network_config((1.0, 1.0, 1.0), (64, 64, 64), 3)
    base = estimate_training_memory_bytes(network, patch, 2, 1, 2, 2)
    assert estimate_training_memory_bytes(network, patch, 2, 4, 2, 2) > base
    assert estimate_training_memory_bytes(network, patch, 2, 1, 8, 2) > base


def test_typical_gpu_plan_is_in_the_expected_range():
    # nnU-Net-like plans on ~10 GB GPUs train 128^3 patches with batch 2 in mixed precision.
    gigabytes = estimate((128, 128, 128), 2) / 2**30
    assert 3 < gigabytes < 10


@pytest.mark.parametrize("budget", [gpu_budget(int(4 * 2**30), "test", "test"),
                                    gpu_budget(int(11 * 2**30), "test", "test"),
                                    cpu_budget(int(16 * 2**30))])
@pytest.mark.parametrize("median_shape, spacing", [((200, 512, 512), (1.0, 0.8, 0.8)),
                                                   ((60, 512, 512), (5.0, 0.8, 0.8)),
                                                   ((36, 50, 35), (1.0, 1.0, 1.0))])
def test_plans_fit_their_budget(budget, median_shape, spacing):
    voxels = float(median_shape[0] * median_shape[1] * median_shape[2] * 100)
    plan = fit_patch_and_batch(spacing, median_shape, 3, 1, 3, 100, voxels, budget)
    assert plan.estimated_memory_bytes <= budget.budget_bytes
    assert plan.batch_size >= 2
    assert all(p <= max(m, f) for p, m, f in
               zip(plan.patch_size, [s + 16 for s in median_shape], plan.network.total_downsampling()))
    factors = plan.network.total_downsampling()
    assert all(size % factor == 0 for size, factor in zip(plan.patch_size, factors))


def test_bigger_budget_gives_a_bigger_patch():
    small = fit_patch_and_batch((1.0, 1.0, 1.0), (300, 300, 300), 3, 1, 3, 50, 300**3 * 50.0,
                                gpu_budget(int(4 * 2**30), "t", "t"))
    large = fit_patch_and_batch((1.0, 1.0, 1.0), (300, 300, 300), 3, 1, 3, 50, 300**3 * 50.0,
                                gpu_budget(int(40 * 2**30), "t", "t"))
    assert small.patch_size[0] * small.patch_size[1] * small.patch_size[2] < \
        large.patch_size[0] * large.patch_size[1] * large.patch_size[2]


@pytest.mark.parametrize("architecture", ["unet", "residual_encoder_unet"])
@pytest.mark.parametrize("spacing, patch", [((1.0, 1.0, 1.0), (40, 56, 40)), ((5.0, 0.8, 0.8), (16, 128, 128)),
                                            ((1.0, 1.0), (56, 40))])
def test_parameter_count_matches_the_built_network(architecture, spacing, patch):
    from autoseg.model.builders import build_network
    from autoseg.model.builders import count_module_parameters as count_module
    from autoseg.plans.architectures import count_parameters

    network, _ = make_network_config(spacing, patch, len(patch), architecture)
    assert count_parameters(network, 2, 4) == count_module(build_network(network, 2, 4))
