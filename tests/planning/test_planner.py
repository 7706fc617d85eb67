"""Planner decisions: normalization, configurations, cascade threshold, batch cap, reasons."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CT_STATS
from helpers import planner_fingerprint as fingerprint

from autoseg.planning.hardware import cpu_budget, gpu_budget
from autoseg.planning.planner import LOWRES_CREATION_THRESHOLD, choose_normalization, plan_experiment
from autoseg.plans import Plans


def test_ct_channel_is_clipped_to_foreground_percentiles_and_z_scored():
    schemes = choose_normalization({0: "CT"}, {0: CT_STATS}, 1.0)
    assert schemes[0].scheme == "ct"
    assert (schemes[0].clip_low, schemes[0].clip_high) == (-50.0, 300.0)
    assert (schemes[0].mean, schemes[0].std) == (100.0, 50.0)
    assert "Hounsfield" in schemes[0].reason


@pytest.mark.parametrize("fraction, use_mask", [(0.5, True), (0.9, False)])
def test_mri_is_z_scored_per_image_with_mask_when_cropping_shrinks_it(fraction, use_mask):
    schemes = choose_normalization({0: "T2"}, {0: CT_STATS}, fraction)
    assert schemes[0].scheme == "zscore"
    assert schemes[0].use_nonzero_mask is use_mask


def test_multichannel_gets_a_scheme_per_channel():
    schemes = choose_normalization({0: "CT", 1: "PET"}, {0: CT_STATS, 1: CT_STATS}, 1.0)
    assert [s.scheme for s in schemes] == ["ct", "zscore"]


def test_small_images_get_2d_2p5d_and_3d_fullres_only():
    plans = plan_experiment(fingerprint((36, 50, 35), (1.0, 1.0, 1.0), 260, "MRI"), "/raw", cpu_budget(24 * 2**30))
    assert list(plans.configurations) == ["2d", "2.5d", "3d_fullres"]
    assert plans.configurations["3d_fullres"].patch_size == [40, 56, 40]
    assert plans.configurations["2d"].patch_size == [56, 40]
    assert plans.configurations["2d"].data_identifier == "3d_fullres"  # nothing to resample along z


def test_2p5d_is_2d_with_neighbouring_slices_as_input_channels():
    plans = plan_experiment(fingerprint((36, 50, 35), (1.0, 1.0, 1.0), 260, "MRI"), "/raw", cpu_budget(24 * 2**30))
    flat, stacked = plans.configurations["2d"], plans.configurations["2.5d"]
    assert stacked.dimension == 2 and stacked.neighbour_slices == 2 and stacked.neighbour_slice_padding == "replicate"
    assert stacked.target_spacing == flat.target_spacing and stacked.data_identifier == flat.data_identifier
    assert stacked.patch_size == flat.patch_size and stacked.training.augmentation == flat.training.augmentation
    assert plans.input_channels("2.5d") == 5 and plans.input_channels("2d") == 1
    assert "5 slices per input" in stacked.reasons["neighbour_slices"]
    assert "replicate" in stacked.reasons["neighbour_slice_padding"]
    assert flat.neighbour_slices == 0 and plans.configurations["3d_fullres"].neighbour_slices == 0


def test_thick_slices_give_one_neighbour_and_2d_images_no_2p5d():
    thick = plan_experiment(fingerprint((40, 256, 256), (5.0, 0.8, 0.8), 20), "/raw", cpu_budget(24 * 2**30))
    assert thick.configurations["2.5d"].neighbour_slices == 1
    assert thick.input_channels("2.5d") == 3
    images = plan_experiment(fingerprint((1, 256, 256), (999.0, 0.5, 0.5), 20, "MRI"), "/raw", cpu_budget(24 * 2**30))
    assert "2.5d" not in images.configurations
    assert "no neighbouring slices" in images.reasons["configurations"]


def test_batch_covers_at_most_5_percent_of_the_dataset():
    plans = plan_experiment(fingerprint((36, 50, 35), (1.0, 1.0, 1.0), 260, "MRI"), "/raw", cpu_budget(24 * 2**30))
    for configuration in plans.configurations.values():
        patch_voxels = np.prod(configuration.patch_size)
        assert configuration.batch_size * patch_voxels <= 0.05 * 36 * 50 * 35 * 260 + patch_voxels
    assert "5%" in plans.configurations["2d"].reasons["batch_size"]


def test_large_images_get_a_cascade_whose_lowres_patch_covers_more():
    plans = plan_experiment(fingerprint((400, 512, 512), (1.0, 0.8, 0.8), 30), "/raw",
                            gpu_budget(8 * 2**30, "t", "t"))
    assert set(plans.configurations) == {"2d", "2.5d", "2d_lowres", "2.5d_lowres", "3d_fullres", "3d_lowres",
                                         "3d_cascade_fullres"}
    fullres, lowres = plans.configurations["3d_fullres"], plans.configurations["3d_lowres"]
    fullres_coverage = np.prod(fullres.patch_size) / np.prod(fullres.median_image_shape)
    lowres_coverage = np.prod(lowres.patch_size) / np.prod(lowres.median_image_shape)
    assert fullres_coverage < LOWRES_CREATION_THRESHOLD <= lowres_coverage * 1.01
    assert all(low > full for low, full in zip(lowres.target_spacing, fullres.target_spacing))
    cascade = plans.configurations["3d_cascade_fullres"]
    assert cascade.previous_stage == "3d_lowres" and cascade.data_identifier == "3d_fullres"
    assert plans.input_channels("3d_cascade_fullres") == 1 + 2
    flat, stacked = plans.configurations["2d_lowres"], plans.configurations["2.5d_lowres"]
    assert stacked.target_spacing == flat.target_spacing and stacked.data_identifier == flat.data_identifier
    assert stacked.neighbour_slices == 2 and "2d_lowres's cache" in stacked.reasons["data_identifier"]


def test_anisotropic_data_get_2d_cache_and_thick_axis_kernels():
    plans = plan_experiment(fingerprint((30, 256, 256), (5.0, 0.8, 0.8), 20, thickness=[3.0, 4.0, 5.0]), "/raw",
                            gpu_budget(8 * 2**30, "t", "t"))
    fullres = plans.configurations["3d_fullres"]
    assert fullres.network.kernel_sizes[0] == [1, 3, 3]
    assert fullres.network.strides[1] == [1, 2, 2]
    assert plans.configurations["2d"].data_identifier == "2d"  # slices of varying thickness are kept as they are


def test_slices_larger_than_256_voxels_get_a_coarser_2d_configuration():
    plans = plan_experiment(fingerprint((300, 512, 512), (1.0, 0.8, 0.8), 20), "/raw", cpu_budget(24 * 2**30))
    full, coarse = plans.configurations["2d"], plans.configurations["2d_lowres"]
    assert coarse.dimension == 2 and coarse.data_identifier == "2d_lowres" and not coarse.previous_stage
    assert coarse.target_spacing == pytest.approx([1.6, 1.6])  # 512 voxels of 0.8 mm -> 256 of 1.6 mm
    assert coarse.median_image_shape == [256, 256] and max(coarse.patch_size) <= 256
    assert np.prod(coarse.patch_size) <= np.prod(full.patch_size) / 4
    assert "coarsened 2.00x" in coarse.reasons["target_spacing"] and "2d_lowres" in plans.reasons["configurations"]
    # a 240x240 brain MRI slice is small enough already
    brain = plan_experiment(fingerprint((155, 240, 240), (1.0, 1.0, 1.0), 20, "T1"), "/raw", cpu_budget(24 * 2**30))
    assert "2d_lowres" not in brain.configurations


def test_coarser_slice_spacing_keeps_the_aspect_and_stops_at_the_edge():
    from autoseg.planning.planner import coarser_slice_spacing

    spacing, factor = coarser_slice_spacing([0.5, 0.7], [1024, 600])
    assert factor == pytest.approx(4.0) and spacing == pytest.approx([2.0, 2.8])
    assert coarser_slice_spacing([0.8, 0.8], [256, 200]) is None


def test_2d_images_get_only_the_2d_configuration():
    plans = plan_experiment(fingerprint((1, 256, 256), (999.0, 0.5, 0.5), 20), "/raw", cpu_budget(16 * 2**30))
    assert list(plans.configurations) == ["2d"]


def test_every_decision_has_a_reason_and_plans_round_trip():
    plans = plan_experiment(fingerprint((200, 400, 400), (2.5, 0.8, 0.8), 30), "/raw", gpu_budget(8 * 2**30, "t", "t"))
    for configuration in plans.configurations.values():
        for key in ("target_spacing", "patch_size", "batch_size", "network"):
            assert configuration.reasons[key]
    assert plans.reasons["configurations"] and plans.reasons["memory_budget"]
    assert all(entry.reason for entry in plans.normalization)
    assert Plans.from_dict(plans.to_dict()).to_dict() == plans.to_dict()


def test_no_gpu_plans_say_so():
    plans = plan_experiment(fingerprint((36, 50, 35), (1.0, 1.0, 1.0)), "/raw", cpu_budget(24 * 2**30))
    assert plans.memory_budget["device"] == "cpu"
    assert "no CUDA GPU" in plans.memory_budget["reason"]


def test_a_class_under_one_percent_of_the_voxels_gets_frequency_weighted_cross_entropy():
    from autoseg.planning.planner import choose_cross_entropy_weighting

    hippocampus = {"1": {"name": "anterior", "voxel_fraction": 0.025},
                   "2": {"name": "posterior", "voxel_fraction": 0.027}}
    assert choose_cross_entropy_weighting(hippocampus)[0] == "none"
    tumour = {"1": {"name": "necrosis", "voxel_fraction": 0.003}, "2": {"name": "edema", "voxel_fraction": 0.014}}
    weighting, reason = choose_cross_entropy_weighting(tumour)
    assert weighting == "frequency" and "necrosis, is 0.300% of the voxels" in reason
    assert choose_cross_entropy_weighting({"1": {"name": "x", "voxel_fraction": 0.0}})[0] == "none"
