"""U-Net topology rules: pooling steps, conv kernels and features per stage.

Spacings in mm, sizes in voxels, both in the patch's axis order (``(z, y, x)`` in
3D, ``(y, x)`` in 2D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autoseg.plans.network import total_downsampling

#: Downsample an axis only while its feature map stays at least this many voxels.
MIN_FEATURE_MAP_SIZE = 4
#: An axis is pooled only while its spacing is at most this many times the finest.
MAX_SPACING_RATIO_FOR_POOLING = 2.0
#: Feature maps of the first stage; doubled per stage up to the cap.
BASE_FEATURES = 32
FEATURE_CAP_3D = 320
FEATURE_CAP_2D = 512


@dataclass(frozen=True)
class Topology:
    """Per-stage strides and conv kernel sizes (stage 0 = full resolution, stride 1)."""

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    def total_downsampling(self) -> tuple[int, ...]:
        """Product of all strides per axis; patch sizes must be divisible by it."""
        return tuple(total_downsampling(self.strides))

    def pooling_steps(self) -> tuple[int, ...]:
        """Number of times each axis is halved."""
        return tuple(sum(1 for stride in self.strides if stride[axis] == 2) for axis in range(len(self.strides[0])))


def _kernel_for(spacing: Sequence[float], previous: Sequence[int] | None) -> tuple[int, ...]:
    """Kernel 3 along axes whose spacing is within 2x of the finest, 1 elsewhere (3 stays 3)."""
    finest = min(spacing)
    kernel = [3 if value / finest <= MAX_SPACING_RATIO_FOR_POOLING else 1 for value in spacing]
    if previous is not None:
        kernel = [max(k, p) for k, p in zip(kernel, previous)]
    return tuple(kernel)


def plan_topology(spacing: Sequence[float], patch_size: Sequence[float],
                  min_feature_map_size: int = MIN_FEATURE_MAP_SIZE) -> Topology:
    """Pooling steps and kernels for a patch of ``patch_size`` voxels at ``spacing`` mm.

    Each step halves every axis that (a) still has a feature map of at least
    ``2 * min_feature_map_size`` voxels and (b) has a spacing at most 2x the finest
    spacing among the axes that can still be pooled. Coarse (thick-slice) axes are
    therefore not pooled until the fine axes have caught up, and get conv kernel 1
    until then (a 3-voxel kernel across 5 mm slices mixes unrelated anatomy).
    """
    current_spacing = [float(v) for v in spacing]
    current_size = [float(v) for v in patch_size]
    kernels = [_kernel_for(current_spacing, None)]
    strides = [tuple(1 for _ in spacing)]
    while True:
        poolable = [axis for axis, size in enumerate(current_size) if size >= 2 * min_feature_map_size]
        if not poolable:
            break
        finest = min(current_spacing[axis] for axis in poolable)
        pooled = [axis for axis in poolable
                  if current_spacing[axis] / finest <= MAX_SPACING_RATIO_FOR_POOLING]
        stride = tuple(2 if axis in pooled else 1 for axis in range(len(spacing)))
        current_spacing = [s * st for s, st in zip(current_spacing, stride)]
        current_size = [s / st for s, st in zip(current_size, stride)]
        strides.append(stride)
        kernels.append(_kernel_for(current_spacing, kernels[-1]))
    return Topology(strides=tuple(strides), kernel_sizes=tuple(kernels))


def make_divisible(patch_size: Sequence[float], factors: Sequence[int]) -> tuple[int, ...]:
    """Round each axis up to a multiple of its factor (so the patch still covers what was asked)."""
    return tuple(max(int(factor), math.ceil(size / factor - 1e-9) * int(factor))
                 for size, factor in zip(patch_size, factors))


def topology_for_patch(spacing: Sequence[float], patch_size: Sequence[float],
                       min_feature_map_size: int = MIN_FEATURE_MAP_SIZE) -> tuple[Topology, tuple[int, ...]]:
    """Topology and a patch size divisible by its total downsampling.

    Rounding can change how often an axis can be pooled, so the topology is
    recomputed for the rounded patch until both agree.
    """
    patch = tuple(float(v) for v in patch_size)
    for _ in range(10):
        topology = plan_topology(spacing, patch, min_feature_map_size)
        rounded = make_divisible(patch, topology.total_downsampling())
        if rounded == tuple(int(v) for v in patch):
            return topology, rounded
        patch = tuple(float(v) for v in rounded)
    topology = plan_topology(spacing, patch, min_feature_map_size)
    return topology, make_divisible(patch, topology.total_downsampling())


def features_per_stage(n_stages: int, dimension: int, base: int = BASE_FEATURES,
                       cap: int | None = None) -> list[int]:
    """``base`` features doubling per stage up to the cap (320 in 3D, 512 in 2D)."""
    if cap is None:
        cap = FEATURE_CAP_3D if dimension == 3 else FEATURE_CAP_2D
    return [min(base * 2 ** stage, cap) for stage in range(n_stages)]
