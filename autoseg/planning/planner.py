"""The experiment planner: from a dataset fingerprint and a memory budget to plans.

Pure rules (no I/O): every number in the plans is derived here, and every decision
is recorded with its reason. Spacings in mm, shapes in voxels, ``(z, y, x)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoseg.io.labels import (
    REGION_THRESHOLD,
    foreground_values,
    is_region_based,
    network_regions,
    num_network_outputs,
)
from autoseg.planning.hardware import MemoryBudget
from autoseg.planning.memory import estimate_training_memory_bytes
from autoseg.planning.slice_context import NEIGHBOUR_PADDING_REASON, choose_neighbour_slices
from autoseg.planning.spacing import choose_target_spacing
from autoseg.planning.topology import features_per_stage, topology_for_patch
from autoseg.plans.architectures import ARCHITECTURES
from autoseg.plans.network import NetworkConfig
from autoseg.plans.normalization import ChannelNormalization
from autoseg.plans.schema import ConfigurationPlan, Plans, ResamplingConfig
from autoseg.plans.training import AugmentationConfig, TrainingConfig

#: One batch may cover at most this fraction of all voxels of the dataset.
MAX_BATCH_FRACTION_OF_DATASET = 0.05
MIN_BATCH_SIZE = 2
#: 3d_lowres (and the cascade) are planned when the fullres patch covers less than
#: this fraction of the median image; lowres spacing grows until its patch covers this much.
LOWRES_CREATION_THRESHOLD = 0.25
#: Factor by which the lowres spacing grows per planning step.
LOWRES_SPACING_STEP = 1.03
#: 2d_lowres is planned when the median slice at the 2d spacing has more voxels than this along an
#: in-plane axis; its in-plane spacing is coarsened so that the median slice has at most this many.
#: Measured on 512x512 CT slices (BENCHMARKS.md, "Dice against time budget: large synthetic CT"):
#: one iteration of the smallest 2d network takes 0.57 s on 2 cores, so 10 minutes buy about 700
#: iterations where its Dice needs 1,250-1,700; a 256x256 slice has a quarter of the voxels.
LOWRES_2D_MAX_SLICE_EDGE = 256
#: Non-CT channels are z-scored inside the nonzero mask when cropping shrank the
#: median image below this fraction of its original size.
NONZERO_MASK_CROP_RATIO = 0.75
#: Channel names that mean computed tomography (compared case-insensitively).
CT_CHANNEL_NAMES = ("ct",)
#: 3D patches whose largest/smallest spacing exceeds this are rotated in-plane only.
IN_PLANE_ROTATION_SPACING_RATIO = 3.0


#: A dataset whose smallest class is under this share of the voxels trains with frequency-weighted
#: cross-entropy (Task04's classes are 2-4 % of their cropped volumes and keep nnU-Net's plain one;
#: brain-tumour sub-regions are 0.3-2 %, liver lesions far less).
SMALL_CLASS_VOXEL_FRACTION = 0.01


def choose_cross_entropy_weighting(classes: dict[str, dict]) -> tuple[str, str]:
    """``("frequency" | "none", reason)`` from the fingerprint's ``classes`` (``{value: {"name",
    "voxel_fraction"}}``): frequency weighting when the smallest class is under
    :data:`SMALL_CLASS_VOXEL_FRACTION` of the voxels."""
    present = {value: entry for value, entry in classes.items() if entry.get("voxel_fraction", 0) > 0}
    if not present:
        return "none", "no foreground voxels in the fingerprint: plain cross-entropy"
    value, smallest = min(present.items(), key=lambda item: item[1]["voxel_fraction"])
    share = f"the smallest class, {smallest.get('name', value)}, is {smallest['voxel_fraction']:.3%} of the voxels"
    if smallest["voxel_fraction"] < SMALL_CLASS_VOXEL_FRACTION:
        return "frequency", (f"{share} (< {SMALL_CLASS_VOXEL_FRACTION:.0%}): cross-entropy weights each class of a "
                             "batch by its voxel frequency ** -0.5, so the small class is not drowned by the "
                             "background (plain cross-entropy left small lesions at Dice 0)")
    return "none", f"{share} (>= {SMALL_CLASS_VOXEL_FRACTION:.0%}): plain cross-entropy (nnU-Net's)"


def weight_cross_entropy(configurations: dict[str, ConfigurationPlan], classes: dict[str, dict]) -> None:
    """Set every configuration's ``training.cross_entropy_weighting`` by
    :func:`choose_cross_entropy_weighting`, with its reason under ``reasons["loss"]``."""
    weighting, reason = choose_cross_entropy_weighting(classes)
    for configuration in configurations.values():
        configuration.training.cross_entropy_weighting = weighting
        configuration.reasons["loss"] = reason


def choose_training_config(dimension: int, spacing: Sequence[float]) -> tuple[TrainingConfig, str]:
    """Augmentation suited to the configuration: rotation axes and angles, mirrored axes."""
    spacing = [float(v) for v in spacing]
    if dimension == 2:
        augmentation = AugmentationConfig(rotation_degrees=180.0, rotate_in_plane_only=True, mirror_axes=[0, 1])
        reason = "2D: rotation by up to 180 degrees in the slice plane; mirroring along y and x"
    elif max(spacing) / min(spacing) > IN_PLANE_ROTATION_SPACING_RATIO:
        augmentation = AugmentationConfig(rotate_in_plane_only=True, mirror_axes=[0, 1, 2])
        reason = (f"thick slices (spacing ratio {max(spacing) / min(spacing):.1f} > "
                  f"{IN_PLANE_ROTATION_SPACING_RATIO:g}): rotation in the slice plane only, so slices are "
                  "never interpolated across; mirroring along all axes")
    else:
        augmentation = AugmentationConfig(mirror_axes=[0, 1, 2])
        reason = "near-isotropic: rotation by up to 30 degrees around all axes; mirroring along all axes"
    return TrainingConfig(augmentation=augmentation), reason


@dataclass(frozen=True)
class PatchPlan:
    """Result of fitting patch and batch size to a budget (patch axes order)."""

    patch_size: tuple[int, ...]
    batch_size: int
    network: NetworkConfig
    estimated_memory_bytes: int
    reasons: dict[str, str]


def make_network_config(spacing: Sequence[float], patch_size: Sequence[float], dimension: int,
                        architecture: str = "unet") -> tuple[NetworkConfig, tuple[int, ...]]:
    """U-Net topology for a patch at ``spacing`` and the patch rounded to be divisible by it."""
    spec = ARCHITECTURES.get(architecture)
    topology, patch = topology_for_patch(spacing, patch_size)
    n_stages = topology.n_stages
    blocks = spec.encoder_blocks(n_stages)
    network = NetworkConfig(
        architecture=architecture, dimension=dimension,
        features_per_stage=features_per_stage(n_stages, dimension),
        kernel_sizes=[list(k) for k in topology.kernel_sizes],
        strides=[list(s) for s in topology.strides],
        n_blocks_per_stage_encoder=blocks,
        n_conv_per_stage_decoder=[2] * (n_stages - 1),
    )
    return network, patch


def initial_patch_size(median_shape: Sequence[float]) -> np.ndarray:
    """Start from the median image itself: at the target spacing its voxel shape is its shape in mm."""
    return np.asarray(median_shape, dtype=np.float64)


def fit_patch_and_batch(spacing: Sequence[float], median_shape: Sequence[float], dimension: int,
                        in_channels: int, num_classes: int, num_cases: int, dataset_voxels: float,
                        budget: MemoryBudget, architecture: str = "unet") -> PatchPlan:
    """Largest patch (then batch) whose estimated training memory fits ``budget``.

    The patch starts as the median image (``median_shape`` voxels at ``spacing``) and
    its physically longest axis (mm) shrinks by that axis' divisibility factor until
    the estimate for batch size 2 fits. Then the batch grows while it fits, capped
    so one batch covers at most 5% of the dataset's voxels (``dataset_voxels``).
    """
    def memory(network: NetworkConfig, patch: Sequence[int], batch: int) -> int:
        return estimate_training_memory_bytes(network, patch, batch, in_channels, num_classes,
                                              budget.bytes_per_activation)

    spacing = np.asarray(spacing, dtype=np.float64)
    network, patch = make_network_config(spacing, initial_patch_size(median_shape), dimension, architecture)
    shrink_steps = 0
    while memory(network, patch, MIN_BATCH_SIZE) > budget.budget_bytes:
        factors = network.total_downsampling()
        extent_mm = np.asarray(patch) * spacing
        candidates = [axis for axis in range(dimension) if patch[axis] > factors[axis]]
        if not candidates:
            break
        axis = max(candidates, key=lambda a: (extent_mm[a], patch[a]))
        smaller = list(patch)
        smaller[axis] -= factors[axis]
        network, patch = make_network_config(spacing, smaller, dimension, architecture)
        shrink_steps += 1
    fits = memory(network, patch, MIN_BATCH_SIZE) <= budget.budget_bytes
    patch_voxels = math.prod(patch)
    batch_cap = max(MIN_BATCH_SIZE, int(round(MAX_BATCH_FRACTION_OF_DATASET * dataset_voxels / patch_voxels)))
    per_sample = memory(network, patch, 1) - memory(network, patch, 0)
    fixed = memory(network, patch, 0)
    batch_fit = int((budget.budget_bytes - fixed) // max(per_sample, 1))
    batch_size = max(MIN_BATCH_SIZE, min(batch_fit, batch_cap))
    budget_gib = budget.budget_bytes / 2**30
    patch_reason = (
        f"started from the median image shape {_ints(median_shape)} voxels; "
        + (f"shrank the physically longest axis {shrink_steps} time(s) to fit the memory budget "
           f"({budget_gib:.1f} GiB); " if shrink_steps else "it fits the memory budget; ")
        + f"rounded up to multiples of the total downsampling {list(network.total_downsampling())}"
        + ("" if fits else "; WARNING: even the smallest patch exceeds the budget"))
    if batch_fit >= batch_cap:
        batch_reason = (f"capped at {batch_cap} so one batch covers at most "
                        f"{MAX_BATCH_FRACTION_OF_DATASET:.0%} of the dataset's voxels "
                        f"(memory would allow {batch_fit})")
    elif batch_fit >= MIN_BATCH_SIZE:
        batch_reason = f"largest batch whose estimated memory fits {budget_gib:.1f} GiB"
    else:
        batch_reason = f"minimum batch size {MIN_BATCH_SIZE} (the estimate exceeds the budget)"
    estimate = memory(network, patch, batch_size)
    topology_reason = (
        f"{network.n_stages} stages; pooling steps per axis "
        f"{[sum(1 for s in network.strides if s[a] == 2) for a in range(dimension)]} "
        "(halve an axis while its feature map stays >= 4 voxels and its spacing is within 2x "
        "of the finest); kernel 1 along axes whose spacing is still > 2x the finest; features "
        f"{network.features_per_stage}")
    return PatchPlan(tuple(int(v) for v in patch), int(batch_size), network, int(estimate), {
        "patch_size": patch_reason, "batch_size": batch_reason, "network": topology_reason,
        "estimated_memory_bytes": f"{estimate / 2**30:.2f} GiB of {budget_gib:.1f} GiB budget "
                                  f"({budget.device}, {budget.bytes_per_activation} bytes per activation)"})


def _ints(values: Sequence[float]) -> list[int]:
    return [int(round(v)) for v in values]


RESAMPLING_REASON = (
    "images: cubic convolution (image_order 3) instead of nnU-Net's third-order B-spline, because it is "
    "about 15x faster (0.48 s vs 7.2 s for a 100x512x512 CT resampled to 125x410x410 on one core, "
    "benchmarks/bench_resample.py) for a similar interpolant; "
    "labels: each class interpolated linearly, then argmax; when a case or the target spacing has one "
    "axis more than 3x coarser than the finest, that axis is resampled on its own with nearest neighbour "
    "(thick_axis_order 0): interpolating across thick slices invents anatomy")


def choose_normalization(channel_names: dict[int, str], channel_statistics: dict[int, dict],
                         median_relative_size_after_crop: float) -> list[ChannelNormalization]:
    """Normalization per channel from its name: CT is physical (HU), anything else is z-scored per image."""
    schemes = []
    use_mask = median_relative_size_after_crop < NONZERO_MASK_CROP_RATIO
    for channel, name in sorted(channel_names.items()):
        if name.strip().lower() in CT_CHANNEL_NAMES:
            stats = channel_statistics[channel]
            schemes.append(ChannelNormalization(
                channel=channel, channel_name=name, scheme="ct",
                clip_low=float(stats["percentile_00_5"]), clip_high=float(stats["percentile_99_5"]),
                mean=float(stats["mean"]), std=float(max(stats["std"], 1e-8)),
                reason=("channel named CT: intensities are Hounsfield units, so one dataset-wide mapping: "
                        "clip to the foreground 0.5/99.5 percentiles "
                        f"[{stats['percentile_00_5']:.1f}, {stats['percentile_99_5']:.1f}] HU, then z-score "
                        f"with the foreground mean {stats['mean']:.1f} and std {stats['std']:.1f} HU")))
        else:
            schemes.append(ChannelNormalization(
                channel=channel, channel_name=name, scheme="zscore", use_nonzero_mask=use_mask,
                reason=(f"channel named {name!r} (not CT): no physical intensity scale, so per-image z-score"
                        + (f"; inside the nonzero region because cropping shrank the median image to "
                           f"{median_relative_size_after_crop:.0%} (< {NONZERO_MASK_CROP_RATIO:.0%})"
                           if use_mask else
                           f"; over the whole image (cropping kept {median_relative_size_after_crop:.0%} "
                           f">= {NONZERO_MASK_CROP_RATIO:.0%} of it)"))))
    return schemes


def _configuration(name: str, dimension: int, data_identifier: str, target_spacing, median_shape,
                   patch_plan: PatchPlan, reasons: dict[str, str],
                   previous_stage: str | None = None) -> ConfigurationPlan:
    training, training_reason = choose_training_config(dimension, target_spacing)
    return ConfigurationPlan(
        name=name, dimension=dimension, data_identifier=data_identifier,
        target_spacing=[float(v) for v in target_spacing], patch_size=list(patch_plan.patch_size),
        batch_size=patch_plan.batch_size, median_image_shape=_ints(median_shape),
        network=patch_plan.network, resampling=ResamplingConfig(),
        estimated_memory_bytes=patch_plan.estimated_memory_bytes, previous_stage=previous_stage,
        training=training, reasons={**reasons, **patch_plan.reasons, "resampling": RESAMPLING_REASON,
                                    "augmentation": training_reason})


def _neighbour_slices_configuration(name: str, plan_2d: ConfigurationPlan, slice_spacings: np.ndarray,
                                    in_plane_spacing, median_in_plane, num_channels: int, num_classes: int,
                                    num_cases: int, dataset_voxels: float, budget: MemoryBudget,
                                    architecture: str) -> ConfigurationPlan:
    """``2.5d`` (of ``2d``) or ``2.5d_lowres`` (of ``2d_lowres``): the 2D configuration's spacing, cache and
    patch rules, its input the slice and K neighbours on each side
    (:func:`autoseg.planning.slice_context.choose_neighbour_slices`) of every channel."""
    neighbours, neighbours_reason = choose_neighbour_slices(slice_spacings)
    patch_plan = fit_patch_and_batch(in_plane_spacing, median_in_plane, 2, num_channels * (2 * neighbours + 1),
                                     num_classes, num_cases, dataset_voxels, budget, architecture)
    configuration = _configuration(
        name, 2, plan_2d.data_identifier, in_plane_spacing, median_in_plane, patch_plan,
        {"target_spacing": plan_2d.reasons["target_spacing"],
         "data_identifier": (f"{plan_2d.name}'s cache: the same preprocessing, the neighbours are read from it "
                             "when sampling"),
         "neighbour_slices": neighbours_reason,
         "neighbour_slice_padding": NEIGHBOUR_PADDING_REASON})
    configuration.neighbour_slices = neighbours
    configuration.neighbour_slice_padding = "replicate"
    return configuration


def output_reason(labels: dict) -> str:
    """Why the network has the outputs it has: softmax classes, or one sigmoid per region."""
    if is_region_based(labels):
        regions = ", ".join(f"{name} = {list(values)}" for name, values in network_regions(labels))
        return (f"{num_network_outputs(labels)} sigmoid outputs, one per region ({regions}): dataset.json declares "
                "regions, which overlap, so each is trained with Dice + binary cross-entropy and predicted "
                f"where its probability exceeds {REGION_THRESHOLD:g}; regions_class_order turns them back into "
                "a label map")
    return (f"{num_network_outputs(labels)} softmax outputs, one per class background included, trained with "
            "Dice + cross-entropy; the label map is their argmax")


@dataclass(frozen=True)
class DatasetFacts:
    """What every configuration of one dataset is planned from: per case ``spacings`` (mm) and cropped
    ``shapes`` (voxels), both ``(cases, 3)`` in array axis order, and the network's inputs and outputs."""

    spacings: np.ndarray
    shapes: np.ndarray
    labels: dict
    num_channels: int
    num_classes: int
    budget: MemoryBudget
    architecture: str

    @property
    def num_cases(self) -> int:
        return len(self.shapes)

    @property
    def is_2d_data(self) -> bool:
        return bool(np.all(self.shapes[:, 0] == 1))

    def fit(self, spacing, median_shape, dimension: int, dataset_voxels: float, channels: int | None = None):
        """:func:`fit_patch_and_batch` for this dataset (``channels``: the network's inputs, default the image's)."""
        return fit_patch_and_batch(spacing, median_shape, dimension, channels or self.num_channels, self.num_classes,
                                   self.num_cases, dataset_voxels, self.budget, self.architecture)


def plan_2d_configurations(facts: DatasetFacts, target: np.ndarray, spacing_reason: str,
                           dataset_voxels: float) -> dict[str, ConfigurationPlan]:
    """``2d`` (in-plane part of the 3D ``target`` spacing, mm), ``2.5d`` beside it on 3D data, and ``2d_lowres``
    (+ ``2.5d_lowres``) when the median slice is larger than :data:`LOWRES_2D_MAX_SLICE_EDGE` along an axis."""
    spacings, shapes = facts.spacings, facts.shapes
    configurations: dict[str, ConfigurationPlan] = {}
    in_plane_spacing = target[1:]  # slices keep their own spacing
    median_in_plane = np.median(shapes[:, 1:] * spacings[:, 1:] / in_plane_spacing, axis=0)
    plan_2d = facts.fit(in_plane_spacing, median_in_plane, 2, dataset_voxels)
    slices_unchanged = bool(np.allclose(spacings[:, 0], target[0], rtol=1e-6)) and not facts.is_2d_data
    configurations["2d"] = _configuration(
        "2d", 2, "3d_fullres" if slices_unchanged else "2d", in_plane_spacing, median_in_plane, plan_2d,
        {"target_spacing": f"in-plane part of the 3D target spacing; {spacing_reason}; slices keep "
                           "their own spacing (2D networks never see across slices)",
         "data_identifier": ("every case already has the target slice spacing, so 2d shares the "
                             "3d_fullres cache" if slices_unchanged else "own cache: slices are not resampled")})
    stacked = (facts.num_channels, facts.num_classes, facts.num_cases, dataset_voxels, facts.budget,
               facts.architecture)
    if not facts.is_2d_data:
        configurations["2.5d"] = _neighbour_slices_configuration(
            "2.5d", configurations["2d"], spacings[:, 0], in_plane_spacing, median_in_plane, *stacked)
    lowres_2d = coarser_slice_spacing(in_plane_spacing, median_in_plane, LOWRES_2D_MAX_SLICE_EDGE)
    if lowres_2d is None:
        return configurations
    lowres_2d_spacing, factor = lowres_2d
    lowres_2d_slice = median_in_plane / factor
    plan_2d_lowres = facts.fit(lowres_2d_spacing, lowres_2d_slice, 2, dataset_voxels)
    configurations["2d_lowres"] = _configuration(
        "2d_lowres", 2, "2d_lowres", lowres_2d_spacing, lowres_2d_slice, plan_2d_lowres,
        {"target_spacing": (f"the 2d in-plane spacing coarsened {factor:.2f}x: the median slice at the 2d "
                            f"spacing is {'x'.join(str(v) for v in _ints(median_in_plane))} voxels, more than "
                            f"{LOWRES_2D_MAX_SLICE_EDGE} along an axis, and is "
                            f"{'x'.join(str(v) for v in _ints(lowres_2d_slice))} at this spacing; an "
                            "iteration costs about 1/factor^2 of 2d's, for time budgets too short for 2d to "
                            "learn (the time-budget choice decides whether it is trained)"),
         "data_identifier": "own cache: a coarser in-plane spacing than 2d's"})
    if not facts.is_2d_data:
        configurations["2.5d_lowres"] = _neighbour_slices_configuration(
            "2.5d_lowres", configurations["2d_lowres"], spacings[:, 0], lowres_2d_spacing, lowres_2d_slice, *stacked)
    return configurations


def plan_3d_configurations(facts: DatasetFacts, target: np.ndarray, median_shape: np.ndarray, spacing_reason: str,
                           dataset_voxels: float) -> tuple[dict[str, ConfigurationPlan], str]:
    """``3d_fullres`` at the ``target`` spacing (mm), and ``3d_lowres`` + ``3d_cascade_fullres`` when its patch
    covers less than :data:`LOWRES_CREATION_THRESHOLD` of the ``median_shape`` (voxels); with the reason."""
    configurations: dict[str, ConfigurationPlan] = {}
    plan_3d = facts.fit(target, median_shape, 3, dataset_voxels)
    configurations["3d_fullres"] = _configuration("3d_fullres", 3, "3d_fullres", target, median_shape, plan_3d,
                                                  {"target_spacing": spacing_reason})
    coverage = math.prod(plan_3d.patch_size) / float(np.prod(median_shape))
    lowres = None
    if coverage < LOWRES_CREATION_THRESHOLD:
        lowres = _plan_lowres(target, median_shape, facts.num_channels, facts.num_classes, facts.num_cases,
                              facts.budget, facts.architecture)
    if lowres is not None:
        lowres_spacing, lowres_shape, lowres_plan, lowres_coverage = lowres
        configurations["3d_lowres"] = _configuration(
            "3d_lowres", 3, "3d_lowres", lowres_spacing, lowres_shape, lowres_plan,
            {"target_spacing": (f"fullres spacing coarsened in steps of {LOWRES_SPACING_STEP:g}x "
                                "(thin axes first until within 2x of the thickest) until the patch "
                                f"covers {lowres_coverage:.0%} (>= {LOWRES_CREATION_THRESHOLD:.0%}) of "
                                "the median image")})
        cascade_inputs = facts.num_channels + len(foreground_values(facts.labels))  # image + one-hot previous stage
        cascade_plan = facts.fit(target, median_shape, 3, dataset_voxels, channels=cascade_inputs)
        configurations["3d_cascade_fullres"] = _configuration(
            "3d_cascade_fullres", 3, "3d_fullres", target, median_shape, cascade_plan,
            {"target_spacing": spacing_reason,
             "previous_stage": "refines the 3d_lowres segmentation, given as one-hot extra input channels"},
            previous_stage="3d_lowres")
    reason = (f"2d, 2.5d and 3d_fullres always; the 3d_fullres patch covers {coverage:.0%} of the median image "
              + (f"(< {LOWRES_CREATION_THRESHOLD:.0%}), so 3d_lowres and 3d_cascade_fullres are planned too"
                 if "3d_lowres" in configurations else
                 f"(>= {LOWRES_CREATION_THRESHOLD:.0%}), so no low-resolution cascade is needed"))
    return configurations, reason


def plan_experiment(fingerprint: dict, raw_dataset: str, budget: MemoryBudget,
                    architecture: str = "unet") -> Plans:
    """Plans for every configuration of a dataset from its fingerprint (see ``fingerprint.py``)."""
    cases = list(fingerprint["cases"].values())
    channel_names = {int(k): v for k, v in fingerprint["channel_names"].items()}
    labels = dict(fingerprint["labels"])
    facts = DatasetFacts(np.array([case["spacing"] for case in cases], dtype=np.float64),
                         np.array([case["shape_after_crop"] for case in cases], dtype=np.float64),
                         labels, len(channel_names), num_network_outputs(labels), budget, architecture)
    spacing_decision = choose_target_spacing(facts.spacings, facts.shapes)
    target = np.array(spacing_decision.target_spacing)
    median_shape = np.median(facts.shapes * facts.spacings / target, axis=0)
    dataset_voxels = float(np.prod(median_shape) * facts.num_cases)
    plan_reasons: dict[str, str] = {}
    configurations = plan_2d_configurations(facts, target, spacing_decision.reason, dataset_voxels)
    if facts.is_2d_data:
        plan_reasons["configurations"] = "2D images: only 2d configurations apply (no neighbouring slices for 2.5d)"
    else:
        planned_3d, plan_reasons["configurations"] = plan_3d_configurations(
            facts, target, median_shape, spacing_decision.reason, dataset_voxels)
        configurations.update(planned_3d)
    if "2d_lowres" in configurations:
        plan_reasons["configurations"] += (f"; the median slice has more than {LOWRES_2D_MAX_SLICE_EDGE} voxels "
                                           "along an axis, so 2d_lowres (and its 2.5d_lowres) is planned too")
    plan_reasons["network_outputs"] = output_reason(labels)
    weight_cross_entropy(configurations, fingerprint.get("classes", {}))
    median_relative_size = float(np.median([
        np.prod(case["shape_after_crop"]) / np.prod(case["shape"]) for case in cases]))
    channel_statistics = {int(k): v for k, v in fingerprint["channels"].items()}
    normalization = choose_normalization(channel_names, channel_statistics, median_relative_size)
    plan_reasons["memory_budget"] = budget.reason
    return Plans(
        dataset_name=fingerprint["dataset_name"], raw_dataset=str(raw_dataset),
        channel_names={str(k): v for k, v in sorted(channel_names.items())}, labels=labels,
        file_ending=fingerprint["file_ending"], num_training_cases=facts.num_cases,
        memory_budget=budget.to_dict(), normalization=normalization, configurations=configurations,
        reasons=plan_reasons, regions_class_order=fingerprint.get("regions_class_order"))


def coarser_slice_spacing(in_plane_spacing: Sequence[float], median_slice: Sequence[float],
                          max_edge: int = LOWRES_2D_MAX_SLICE_EDGE) -> tuple[np.ndarray, float] | None:
    """The in-plane spacing (mm, ``(y, x)``) of 2d_lowres and its factor over ``in_plane_spacing``:
    both axes coarsened by one factor so the median slice (``median_slice`` voxels, ``(y, x)``) has at most
    ``max_edge`` voxels along each; None when it already has."""
    factor = float(np.max(median_slice)) / max_edge
    if factor <= 1.0:
        return None
    return np.asarray(in_plane_spacing, dtype=np.float64) * factor, factor


def _plan_lowres(fullres_spacing: np.ndarray, fullres_median_shape: np.ndarray, num_channels: int,
                 num_classes: int, num_cases: int, budget: MemoryBudget, architecture: str):
    """Coarsen the spacing until the patch covers the lowres creation threshold of the median image."""
    spacing = fullres_spacing.astype(np.float64).copy()
    for _ in range(500):
        thickest = spacing.max()
        thin_axes = thickest / spacing > 2
        if thin_axes.any():
            spacing[thin_axes] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        median_shape = fullres_median_shape * fullres_spacing / spacing
        dataset_voxels = float(np.prod(median_shape) * num_cases)
        plan = fit_patch_and_batch(spacing, median_shape, 3, num_channels, num_classes, num_cases,
                                   dataset_voxels, budget, architecture)
        coverage = math.prod(plan.patch_size) / float(np.prod(median_shape))
        if coverage >= LOWRES_CREATION_THRESHOLD:
            return spacing, median_shape, plan, coverage
    return None
