"""On-the-fly data augmentation of training patches (batchgenerators transforms).

Batches are dicts ``{"data": float32 (B, C, *spatial), "seg": (B, S, *spatial)}`` with
``spatial`` = ``(z, y, x)`` (3D) or ``(y, x)`` (2D); seg channel 0 is the label map and,
for a cascade, channel 1 the previous stage's predicted label map. The pipeline ends
with ``{"data": float32 (B, C_in, *patch_size), "target": uint8 (B, 1, *patch_size)}``.

Training transform order (see :func:`build_training_transforms`):

1. spatial: rotation / zoom of the sampled region and centre crop to ``patch_size``
   (data cubic, labels nearest, outside = 0); no elastic deformation;
2. intensity, image channels only: Gaussian noise, Gaussian blur, multiplicative
   brightness, contrast, simulated low resolution, inverted gamma, gamma; 2.5D inputs (a slice
   and its neighbours as channels) are viewed as ``(B, C, slices, y, x)`` meanwhile, so the
   neighbours of one image channel share its random intensity change (one image, one contrast)
   and blur and low resolution stay in-plane;
3. mirroring (image and all seg channels together);
4. CT options (image channels only): slice thickness, intensity shift;
5. cascade: seg channel 1 becomes one-hot channels appended to ``data``. This comes
   after every intensity transform, so intensity augmentation never touches them,
   while all spatial transforms (steps 1 and 3) moved them exactly like the label;
6. label channel 0 becomes ``target`` (uint8).

Zoom: ``AugmentationConfig.scale_range`` are object zoom factors (0.7 = objects
shrink to 70 %, i.e. the network sees a 1/0.7 times larger field of view). The
batchgenerators ``scale`` parameter multiplies sampling coordinates, so it gets the
reciprocal range ``(1 / scale_range[1], 1 / scale_range[0])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.crop_and_pad_transforms import CenterCropTransform
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from scipy.ndimage import gaussian_filter

from autoseg.plans.training import AugmentationConfig

__all__ = [
    "InPlaneGaussianBlurTransform",
    "IntensityShiftTransform",
    "NeighbourSlicesAsDepthTransform",
    "LabelToTargetTransform",
    "PerSliceSpatialTransform",
    "PreviousStageToOneHotTransform",
    "SliceThicknessTransform",
    "augmentation_patch_size",
    "build_training_transforms",
    "build_validation_transforms",
    "coordinate_scale_range",
    "default_sample_patch_size",
    "simulate_slice_thickness",
]

#: Rectangular boxes look the same after a rotation by 180 degrees, and a range of +-90
#: degrees per axis already reaches every extent a box can have: larger angles never
#: need a larger sampled region.
_MAX_EFFECTIVE_DEGREES = 90.0
#: Grid search for the largest rotated extent: angular step (degrees) and, in 3D, the
#: most grid points per angle (61**3 rotations, ~16 MB). The Lipschitz bound added on
#: top makes the result an upper bound whatever the step; a finer grid only tightens it.
_GRID_STEP_DEGREES = 0.25
_MAX_GRID_POINTS_3D = 61


def coordinate_scale_range(config: AugmentationConfig) -> tuple[float, float]:
    """batchgenerators ``scale`` (multiplies sampling coordinates) for the object zoom ``config.scale_range``."""
    low, high = sorted(config.scale_range)
    if low <= 0:
        raise ValueError(f"scale_range {config.scale_range} must be positive")
    return 1.0 / high, 1.0 / low


def _rotations_3d(angles: np.ndarray) -> np.ndarray:
    """``R = Rx(a) @ Ry(b) @ Rz(c)`` for every angle triple of ``angles``: (n, n, n, 3, 3), batchgenerators' order."""
    cos, sin = np.cos(angles), np.sin(angles)
    one, zero = np.ones_like(angles), np.zeros_like(angles)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cos, -sin], -1),
                   np.stack([zero, sin, cos], -1)], -2)
    ry = np.stack([np.stack([cos, zero, sin], -1), np.stack([zero, one, zero], -1),
                   np.stack([-sin, zero, cos], -1)], -2)
    rz = np.stack([np.stack([cos, -sin, zero], -1), np.stack([sin, cos, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rx[:, None, None] @ ry[None, :, None] @ rz[None, None, :]


def _max_rotated_half_extent(half: np.ndarray, degrees: float) -> np.ndarray:
    """Upper bound of the half extent per axis of a box with half sizes ``half`` rotated by up to ``degrees``.

    2D: one in-plane angle; 3D: three angles as batchgenerators composes them. A grid
    search plus the Lipschitz bound ``|half|_2 * num_angles * step / 2`` (each
    corner coordinate changes at most ``|half|_2`` per radian of any angle).
    """
    ndim = len(half)
    theta = math.radians(min(abs(degrees), _MAX_EFFECTIVE_DEGREES))
    if theta == 0:
        return half.copy()
    count = int(math.ceil(2 * math.degrees(theta) / _GRID_STEP_DEGREES)) + 1
    if ndim == 3:
        count = min(count, _MAX_GRID_POINTS_3D)
    angles = np.linspace(-theta, theta, count)
    step = 2 * theta / (count - 1)
    if ndim == 2:
        cos, sin = np.abs(np.cos(angles)), np.abs(np.sin(angles))
        extents = np.stack([cos * half[0] + sin * half[1], sin * half[0] + cos * half[1]], -1)
        best = extents.max(0)
        num_angles = 1
    else:
        rotations = _rotations_3d(angles)
        # batchgenerators maps output coordinates p to p @ R, i.e. R^T p.
        best = (np.abs(np.swapaxes(rotations, -1, -2)) @ half).reshape(-1, 3).max(0)
        num_angles = 3
    bound = float(np.linalg.norm(half)) * num_angles * step / 2
    # A rotated box never reaches further than its corners' distance from the centre.
    return np.minimum(best + bound, np.linalg.norm(half))


def augmentation_patch_size(patch_size: Sequence[int], config: AugmentationConfig,
                            dimension: int, max_factor: float = 2.0) -> tuple[int, ...]:
    """Region to sample (voxels, patch axis order) so that rotation and zoom never reach past it.

    Covers rotations up to ``config.rotation_degrees`` (around all three axes in 3D, in-plane
    only for 2D or ``rotate_in_plane_only``, which leaves axis 0 at ``patch_size[0]``) combined
    with a zoom out down to ``scale_range[0]``, so the centre crop to ``patch_size`` has no
    padded corners (apart from the cubic spline's 2-voxel support). Axes keep the parity
    of ``patch_size`` so an un-rotated centre crop is voxel-aligned.

    Cap: each axis is at most ``max_factor * patch_size`` (default 2: at most 8x the patch
    volume in 3D, about what nnU-Net samples for 30 degrees and zoom 0.7). Rotating around
    all three axes at once lets the patch diagonal approach an axis, so the exact region
    would grow to ``zoom * diagonal`` (e.g. 316**3 voxels for a 128**3 patch, 15x its
    volume; sampling and the cubic spline prefilter cost scale with it). Beyond the cap
    only rare worst-case rotation + zoom-out combinations see padded corners. Angles
    beyond 90 degrees count as 90 (a box rotated further reaches no further).
    """
    patch = np.asarray(patch_size, dtype=float)
    if len(patch) != dimension:
        raise ValueError(f"patch_size {tuple(patch_size)} does not have {dimension} axes")
    degrees = config.rotation_degrees if config.rotation_probability > 0 else 0.0
    zoom = max(1.0, coordinate_scale_range(config)[1]) if config.scale_probability > 0 else 1.0
    half = (patch - 1) / 2
    if dimension == 3 and config.rotate_in_plane_only:
        reach = np.concatenate([half[:1], zoom * _max_rotated_half_extent(half[1:], degrees)])
    else:
        reach = zoom * _max_rotated_half_extent(half, degrees)
    # Sampling positions run over centre +- reach, centre = (size - 1) / 2.
    patch_int = patch.astype(int)
    size = np.maximum(np.ceil(2 * reach + 1 - 1e-6).astype(int), patch_int)
    size += (size - patch_int) % 2
    size = np.maximum(np.minimum(size, np.floor(max_factor * patch).astype(int)), patch_int)
    size -= (size - patch_int) % 2
    return tuple(int(v) for v in size)


#: The region a :class:`~autoseg.training.sampling.PatchSampler` should cut for training.
default_sample_patch_size = augmentation_patch_size


# --- transforms batchgenerators does not have ----------------------------------------------
# Like batchgenerators' own transforms these draw from numpy's global random state
# (hence the NPY002 exemptions): the data loader seeds and swaps that state per worker.

class PerSliceSpatialTransform(AbstractTransform):
    """Applies a 2D spatial transform to every slice of 3D batches (in-plane-only augmentation).

    ``data`` (B, C, z, y, x) and ``seg`` (B, S, z, y, x) are centre-cropped along z to
    ``patch_size[0]``, folded to (B, C * z, y, x), transformed (one random rotation/zoom
    per sample, shared by all its slices) and unfolded: slices are never mixed.
    """

    def __init__(self, spatial_2d: AbstractTransform, patch_size: Sequence[int],
                 data_key: str = "data", label_key: str = "seg"):
        self.spatial_2d = spatial_2d
        self.patch_size = tuple(int(v) for v in patch_size)
        self.data_key = data_key
        self.label_key = label_key

    def _fold(self, array: np.ndarray) -> np.ndarray:
        depth = self.patch_size[0]
        if array.shape[2] < depth:
            raise ValueError(f"in-plane augmentation needs {depth} slices, got {array.shape[2]}")
        start = (array.shape[2] - depth) // 2
        array = array[:, :, start: start + depth]
        return np.ascontiguousarray(array).reshape(array.shape[0], -1, *array.shape[3:])

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        seg = data_dict.get(self.label_key)
        batch, channels = data.shape[:2]
        folded = {"data": self._fold(data)}
        if seg is not None:
            folded["seg"] = self._fold(seg)
        folded = self.spatial_2d(**folded)
        data_dict[self.data_key] = folded["data"].reshape(batch, channels, *self.patch_size)
        if seg is not None:
            data_dict[self.label_key] = folded["seg"].reshape(batch, seg.shape[1], *self.patch_size)
        return data_dict


def simulate_slice_thickness(sample: np.ndarray, factor: float, phase: float = 0.0) -> np.ndarray:
    """Keep every ``factor``-th slice of ``sample`` (C, z, y, x) and interpolate linearly back to z slices.

    Kept slices are the nearest ones to ``phase + i * factor``; slices before the first /
    after the last kept one copy it. Returns a new float32 array of the same shape.
    """
    depth = sample.shape[1]
    kept = np.unique(np.round(np.arange(phase, depth, factor)).astype(int))
    kept = kept[(kept >= 0) & (kept < depth)]
    if depth < 2 or factor <= 1 or len(kept) == 0:
        return sample.astype(np.float32, copy=True)
    if len(kept) == 1:
        return np.repeat(sample[:, kept], depth, axis=1).astype(np.float32)
    targets = np.arange(depth)
    index = np.clip(np.searchsorted(kept, targets, side="right") - 1, 0, len(kept) - 2)
    low, high = kept[index], kept[index + 1]
    weight = np.clip((targets - low) / (high - low), 0.0, 1.0).astype(np.float32)[None, :, None, None]
    return ((1 - weight) * sample[:, low] + weight * sample[:, high]).astype(np.float32)


class SliceThicknessTransform(AbstractTransform):
    """CT option: simulate thicker slices along axis 0 of 3D patches (B, C, z, y, x).

    Per sample with probability ``p_per_sample``: a factor ``k`` uniform in ``factor_range``
    and a random phase in ``[0, k)``; see :func:`simulate_slice_thickness`. Labels are kept.
    """

    def __init__(self, factor_range: Sequence[float], p_per_sample: float, data_key: str = "data"):
        self.factor_range = tuple(factor_range)
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        if data.ndim != 5:
            raise ValueError(f"SliceThicknessTransform needs 3D batches (B, C, z, y, x), got {data.shape}")
        for b in range(len(data)):
            if np.random.uniform() < self.p_per_sample:  # noqa: NPY002
                factor = np.random.uniform(*self.factor_range)  # noqa: NPY002
                phase = np.random.uniform(0, factor)  # noqa: NPY002
                data[b] = simulate_slice_thickness(data[b], factor, phase)
        return data_dict


class NeighbourSlicesAsDepthTransform(AbstractTransform):
    """2.5D: view ``data`` (B, C * S, y, x) as (B, C, S, y, x) (``to_depth``), or back (``to_depth=False``).

    The channels of a 2.5D input are each image channel's ``S`` slices in order
    (:mod:`autoseg.preprocessing.neighbour_slices`); in the depth view a per-channel intensity
    transform draws one change per image channel and applies it to all its slices.
    """

    def __init__(self, slices_per_channel: int, to_depth: bool = True, data_key: str = "data"):
        if slices_per_channel < 1:
            raise ValueError(f"slices_per_channel must be >= 1, got {slices_per_channel}")
        self.slices_per_channel = int(slices_per_channel)
        self.to_depth = to_depth
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        slices = self.slices_per_channel
        if self.to_depth:
            if data.ndim != 4 or data.shape[1] % slices:
                raise ValueError(f"2.5D batches must be (B, C * {slices}, y, x), got {data.shape}")
            data_dict[self.data_key] = data.reshape(data.shape[0], data.shape[1] // slices, slices, *data.shape[2:])
        else:
            if data.ndim != 5 or data.shape[2] != slices:
                raise ValueError(f"expected the depth view (B, C, {slices}, y, x), got {data.shape}")
            data_dict[self.data_key] = data.reshape(data.shape[0], -1, *data.shape[3:])
        return data_dict


class InPlaneGaussianBlurTransform(AbstractTransform):
    """Gaussian blur of (B, C, z, y, x) data within each slice (sigma 0 along z), in voxels.

    Per sample with probability ``p_per_sample``, per channel a sigma uniform in ``blur_sigma``
    (batchgenerators' ``GaussianBlurTransform`` with ``different_sigma_per_channel``, but never
    mixing slices: for the 2.5D depth view, whose slices are separate inputs).
    """

    def __init__(self, blur_sigma: Sequence[float], p_per_sample: float, data_key: str = "data"):
        self.blur_sigma = tuple(float(v) for v in blur_sigma)
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        if data.ndim != 5:
            raise ValueError(f"InPlaneGaussianBlurTransform needs (B, C, z, y, x), got {data.shape}")
        for b in range(len(data)):
            if np.random.uniform() < self.p_per_sample:  # noqa: NPY002
                for c in range(data.shape[1]):
                    sigma = np.random.uniform(*self.blur_sigma)  # noqa: NPY002
                    data[b, c] = gaussian_filter(data[b, c], (0.0, sigma, sigma), order=0)
        return data_dict


class IntensityShiftTransform(AbstractTransform):
    """CT option: per sample with probability ``p_per_sample`` add one offset, uniform in ``shift_range``
    (normalized units), to all voxels and channels."""

    def __init__(self, shift_range: Sequence[float], p_per_sample: float, data_key: str = "data"):
        self.shift_range = tuple(shift_range)
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        for b in range(len(data)):
            if np.random.uniform() < self.p_per_sample:  # noqa: NPY002
                data[b] += np.float32(np.random.uniform(*self.shift_range))  # noqa: NPY002
        return data_dict


class PreviousStageToOneHotTransform(AbstractTransform):
    """Cascade: seg channel ``channel`` (previous stage label map) -> float32 one-hot channels appended to data.

    One channel per value of ``labels`` (the foreground labels, in order); the seg
    channel is removed afterwards.
    """

    def __init__(self, labels: Sequence[int], channel: int = 1):
        self.labels = [int(v) for v in labels]
        self.channel = channel

    def __call__(self, **data_dict):
        seg = data_dict["seg"]
        previous = seg[:, self.channel]
        onehot = np.stack([previous == value for value in self.labels], axis=1).astype(np.float32)
        data_dict["data"] = np.concatenate([data_dict["data"].astype(np.float32, copy=False), onehot], axis=1)
        data_dict["seg"] = np.delete(seg, self.channel, axis=1)
        return data_dict


class LabelToTargetTransform(AbstractTransform):
    """Seg channel 0 -> ``target`` uint8 (B, 1, *spatial); ``data`` -> contiguous float32; ``seg`` removed."""

    def __call__(self, **data_dict):
        seg = data_dict.pop("seg")
        label = seg[:, :1]
        if label.size and (label.min() < 0 or label.max() > np.iinfo(np.uint8).max):
            raise ValueError(f"label values [{label.min()}, {label.max()}] do not fit uint8 targets")
        data_dict["target"] = np.ascontiguousarray(label, dtype=np.uint8)
        data_dict["data"] = np.ascontiguousarray(data_dict["data"], dtype=np.float32)
        return data_dict


# --- pipelines ---------------------------------------------------------------------------------

def _cascade_labels(num_foreground_classes: int, foreground_labels: Sequence[int] | None) -> list[int]:
    if foreground_labels is None:
        return list(range(1, num_foreground_classes + 1))
    if len(foreground_labels) != num_foreground_classes:
        raise ValueError(f"{len(foreground_labels)} foreground labels given for "
                         f"{num_foreground_classes} foreground classes")
    return [int(v) for v in foreground_labels]


def _spatial_transform(patch_size: tuple[int, ...], config: AugmentationConfig, dimension: int) -> AbstractTransform:
    in_plane = dimension == 3 and config.rotate_in_plane_only
    theta = math.radians(config.rotation_degrees)
    angle, none = (-theta, theta), (0.0, 0.0)
    transform = SpatialTransform(
        patch_size[1:] if in_plane else patch_size,
        patch_center_dist_from_border=None,
        do_elastic_deform=False,
        do_rotation=config.rotation_probability > 0 and theta > 0,
        angle_x=angle, angle_y=angle if dimension == 3 and not in_plane else none,
        angle_z=angle if dimension == 3 and not in_plane else none,
        p_rot_per_sample=config.rotation_probability,
        do_scale=config.scale_probability > 0, scale=coordinate_scale_range(config),
        p_scale_per_sample=config.scale_probability,
        border_mode_data="constant", border_cval_data=0, order_data=3,
        border_mode_seg="constant", border_cval_seg=0, order_seg=0,
        random_crop=False, p_el_per_sample=0,
    )
    return PerSliceSpatialTransform(transform, patch_size) if in_plane else transform


def build_training_transforms(patch_size: Sequence[int], config: AugmentationConfig, dimension: int,
                              has_previous_stage: bool, num_foreground_classes: int,
                              foreground_labels: Sequence[int] | None = None,
                              slices_per_channel: int = 1) -> Compose:
    """The training augmentation pipeline (order in the module docstring).

    Input: the sampler's batch with regions of at least ``patch_size`` (typically
    :func:`augmentation_patch_size`); output ``data`` float32 (B, C [+ num_foreground_classes],
    *patch_size) and ``target`` uint8 (B, 1, *patch_size). Transforms with probability 0
    are left out. ``foreground_labels`` (cascade) are the label values of the one-hot
    channels, default ``1 .. num_foreground_classes``. ``slices_per_channel`` > 1: 2D batches are
    2.5D inputs of that many slices per image channel (intensity transforms in their depth view).
    """
    if dimension not in (2, 3):
        raise ValueError(f"dimension must be 2 or 3, got {dimension}")
    patch = tuple(int(v) for v in patch_size)
    if len(patch) != dimension:
        raise ValueError(f"patch_size {patch} does not have {dimension} axes")
    if slices_per_channel > 1 and dimension != 2:
        raise ValueError(f"slices_per_channel {slices_per_channel} needs 2D batches, got dimension {dimension}")
    c = config
    transforms: list[AbstractTransform] = [_spatial_transform(patch, c, dimension)]
    stacked = slices_per_channel > 1
    if stacked:
        transforms.append(NeighbourSlicesAsDepthTransform(slices_per_channel))
    transforms += _intensity_transforms(c, dimension, stacked)
    if stacked:
        transforms.append(NeighbourSlicesAsDepthTransform(slices_per_channel, to_depth=False))
    mirror_axes = tuple(sorted({int(a) for a in c.mirror_axes if 0 <= int(a) < dimension}))
    if mirror_axes:
        transforms.append(MirrorTransform(axes=mirror_axes))
    if c.slice_thickness_probability > 0 and dimension == 3:
        transforms.append(SliceThicknessTransform(c.slice_thickness_factor, c.slice_thickness_probability))
    if c.intensity_shift_probability > 0:
        transforms.append(IntensityShiftTransform(c.intensity_shift_range, c.intensity_shift_probability))
    if has_previous_stage:
        transforms.append(PreviousStageToOneHotTransform(_cascade_labels(num_foreground_classes, foreground_labels)))
    transforms.append(LabelToTargetTransform())
    return Compose(transforms)


def _intensity_transforms(c: AugmentationConfig, dimension: int, depth_view: bool) -> list[AbstractTransform]:
    """Step 2 of the module docstring; ``depth_view``: 2.5D data as (B, C, slices, y, x), kept in-plane."""
    transforms: list[AbstractTransform] = []
    if c.noise_probability > 0:
        transforms.append(GaussianNoiseTransform(noise_variance=tuple(c.noise_variance),
                                                 p_per_sample=c.noise_probability))
    if c.blur_probability > 0:
        transforms.append(InPlaneGaussianBlurTransform(c.blur_sigma, c.blur_probability) if depth_view else
                          GaussianBlurTransform(blur_sigma=tuple(c.blur_sigma), different_sigma_per_channel=True,
                                                p_per_sample=c.blur_probability))
    if c.brightness_probability > 0:
        transforms.append(BrightnessMultiplicativeTransform(multiplier_range=tuple(c.brightness_range),
                                                            per_channel=True, p_per_sample=c.brightness_probability))
    if c.contrast_probability > 0:
        transforms.append(ContrastAugmentationTransform(contrast_range=tuple(c.contrast_range),
                                                        p_per_sample=c.contrast_probability))
    if c.low_resolution_probability > 0:
        # Thick-slice data (in-plane-only augmentation) and 2.5D slices are not downsampled across slices.
        ignore_axes = (0,) if (dimension == 3 and c.rotate_in_plane_only) or depth_view else None
        transforms.append(SimulateLowResolutionTransform(
            zoom_range=tuple(c.low_resolution_zoom), per_channel=True, order_downsample=0, order_upsample=3,
            p_per_sample=c.low_resolution_probability, ignore_axes=ignore_axes))
    if c.inverted_gamma_probability > 0:
        transforms.append(GammaTransform(tuple(c.gamma_range), invert_image=True, per_channel=True,
                                         retain_stats=True, p_per_sample=c.inverted_gamma_probability))
    if c.gamma_probability > 0:
        transforms.append(GammaTransform(tuple(c.gamma_range), invert_image=False, per_channel=True,
                                         retain_stats=True, p_per_sample=c.gamma_probability))
    return transforms


def build_validation_transforms(patch_size: Sequence[int], dimension: int, has_previous_stage: bool,
                                num_foreground_classes: int,
                                foreground_labels: Sequence[int] | None = None) -> Compose:
    """Centre crop to ``patch_size`` (+ cascade one-hot channels) and uint8 ``target``; no augmentation."""
    patch = tuple(int(v) for v in patch_size)
    if len(patch) != dimension:
        raise ValueError(f"patch_size {patch} does not have {dimension} axes")
    transforms: list[AbstractTransform] = [CenterCropTransform(patch)]
    if has_previous_stage:
        transforms.append(PreviousStageToOneHotTransform(_cascade_labels(num_foreground_classes, foreground_labels)))
    transforms.append(LabelToTargetTransform())
    return Compose(transforms)
